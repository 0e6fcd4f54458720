// Fused products of one input (Q, K, V; gate, up) give exactly what separate
// calls give, with the same and with mixed weight types.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cpu/cpu_matmul.h"
#include "core/quant.h"

enum { K = 96, TOKENS = 5 };

static float frand(void) { return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f; }

// A weight of `rows` rows of K elements, quantized from random floats.
static kiln_tensor make_weight(kiln_dtype dtype, int rows) {
    uint64_t row_bytes;
    assert_true(kiln_dtype_row_bytes(dtype, K, &row_bytes));
    uint8_t *data = malloc(row_bytes * rows);
    float src[K];
    for (int r = 0; r < rows; r++) {
        for (int i = 0; i < K; i++) src[i] = frand();
        assert_true(kiln_quantize_row(dtype, src, data + row_bytes * r, K));
    }
    return (kiln_tensor){.name = "w", .dtype = dtype, .n_dims = 2, .ne = {K, rows, 1, 1}, .data = data,
                         .nbytes = row_bytes * rows};
}

static void check(kiln_dtype d0, kiln_dtype d1, kiln_dtype d2, bool precise) {
    kiln_tensor w[3] = {make_weight(d0, 37), make_weight(d1, 12), make_weight(d2, 12)};
    const kiln_tensor *ws[3] = {&w[0], &w[1], &w[2]};
    float x[TOKENS * K], *fused[3], *alone[3];
    for (int i = 0; i < TOKENS * K; i++) x[i] = frand();
    for (int j = 0; j < 3; j++) {
        size_t n = (size_t)TOKENS * w[j].ne[1];
        fused[j] = malloc(sizeof(float) * n);
        alone[j] = malloc(sizeof(float) * n);
        for (size_t i = 0; i < n; i++) fused[j][i] = NAN;
        kiln_cpu_matmul_ex(&w[j], x, TOKENS, alone[j], w[j].ne[1], 2, precise);
    }
    kiln_cpu_matmul_multi(ws, fused, 3, x, TOKENS, 2, precise);
    for (int j = 0; j < 3; j++) {
        assert_memory_equal(fused[j], alone[j], sizeof(float) * TOKENS * w[j].ne[1]);
        free(fused[j]);
        free(alone[j]);
        free((void *)w[j].data);
    }
}

static void test_fused_equals_separate(void **state) {
    (void)state;
    srand(7);
    check(KILN_Q8_0, KILN_Q8_0, KILN_Q8_0, false); // one activation pass for all three
    check(KILN_F16, KILN_F16, KILN_F16, false);
    check(KILN_Q8_0, KILN_Q8_0, KILN_Q8_0, true);  // precise mode
    check(KILN_Q8_0, KILN_F32, KILN_BF16, false);  // mixed: falls back to separate products
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fused_equals_separate)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
