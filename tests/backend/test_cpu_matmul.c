// kiln_cpu_matmul against a float64 reference, for every weight type, every
// SIMD path this CPU has, thread counts 1/2 and the in-team mode.
//
// The reference quantizes x with the scalar oracle kiln_quantize_row (Q8_0,
// Q8_1 or Q8_K, as the kernel does) and dequantizes it and W with
// kiln_dequantize_row, then sums w*x in double. The kernel's remaining error
// is float rounding: a few roundings per element (scales d*sc, dx*dw, the
// int->float conversion) plus a float accumulation of at most k/16 + 16
// terms per lane, i.e. well under 200 * 2^-24 ~ 1.2e-5 of sum |w*x| for
// k <= 1536; the tolerance 1e-4 * sum |w*x| leaves a margin but catches any
// wrong element (one code off by one moves the sum by ~1/127/k of it... no:
// by d*|x|, which for these shapes is > 1e-3 of sum |w*x|).
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/simd_kernels.h"
#include "core/quant.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}
static float rndf(float lo, float hi) { return lo + (hi - lo) * (float)(rnd() & 0xFFFFFF) / (float)0x1000000; }

static const kiln_dtype all_types[] = {KILN_Q4_0, KILN_Q4_1, KILN_Q5_0, KILN_Q5_1, KILN_Q8_0, KILN_Q4_K,
                                       KILN_Q5_K, KILN_Q6_K, KILN_F32,  KILN_F16,  KILN_BF16};

static bool is_k_type(kiln_dtype t) { return t == KILN_Q4_K || t == KILN_Q5_K || t == KILN_Q6_K; }

static kiln_dtype act_type(kiln_dtype t) {
    switch (t) {
    case KILN_Q4_1:
    case KILN_Q5_1: return KILN_Q8_1;
    case KILN_Q4_0:
    case KILN_Q5_0:
    case KILN_Q8_0: return KILN_Q8_0;
    case KILN_Q4_K:
    case KILN_Q5_K:
    case KILN_Q6_K: return KILN_Q8_K;
    default: return KILN_F32; // float weights take float activations
    }
}

static void put_f16(uint8_t *p, float f) {
    uint16_t h = kiln_f32_to_f16(f);
    memcpy(p, &h, 2);
}

// One row of random weights of type t: quantized by the oracle where it can,
// otherwise random code bytes with small finite f16 scales.
static void make_row(kiln_dtype t, uint8_t *dst, int64_t k) {
    float *f = malloc((size_t)k * sizeof(float));
    for (int64_t i = 0; i < k; i++) f[i] = rndf(-1.0f, 1.0f);
    const kiln_dtype_traits *tr = kiln_dtype_info(t);
    uint64_t bytes = 0;
    assert_true(kiln_dtype_row_bytes(t, (uint64_t)k, &bytes));
    if (t == KILN_F16 || t == KILN_BF16) {
        for (int64_t i = 0; i < k; i++) {
            uint16_t h = t == KILN_F16 ? kiln_f32_to_f16(f[i]) : kiln_f32_to_bf16(f[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else if (t == KILN_F32 || t == KILN_Q8_0) {
        assert_true(kiln_quantize_row(t, f, dst, k));
    } else {
        for (uint64_t i = 0; i < bytes; i++) dst[i] = (uint8_t)rnd();
        const int64_t nb = k / tr->block_elems;
        for (int64_t b = 0; b < nb; b++) {
            uint8_t *blk = dst + b * tr->block_bytes;
            switch (t) {
            case KILN_Q4_0:
            case KILN_Q5_0: put_f16(blk, rndf(0.001f, 0.1f)); break;
            case KILN_Q4_1:
            case KILN_Q5_1:
                put_f16(blk, rndf(0.001f, 0.1f));
                put_f16(blk + 2, rndf(-0.8f, 0.2f));
                break;
            case KILN_Q4_K:
            case KILN_Q5_K:
                put_f16(blk, rndf(0.0001f, 0.01f));
                put_f16(blk + 2, rndf(0.0001f, 0.01f));
                break;
            case KILN_Q6_K: put_f16(blk + 208, rndf(0.0001f, 0.01f)); break;
            default: fail();
            }
        }
    }
    free(f);
}

typedef struct case_data {
    kiln_dtype type;
    int64_t k, rows;
    int n;
    uint8_t *raw;       // allocation
    kiln_tensor w;      // data at an odd-even, unaligned offset inside raw
    float *x;           // [n][k]
    double *ref, *mag;  // [n][rows]: sum w*x and sum |w*x|
} case_data;

static void build_case(case_data *c, kiln_dtype type, int64_t k, int64_t rows, int n) {
    c->type = type;
    c->k = k;
    c->rows = rows;
    c->n = n;
    uint64_t row_bytes = 0;
    assert_true(kiln_dtype_row_bytes(type, (uint64_t)k, &row_bytes));
    // Quantized rows land 2 bytes past a 32-byte boundary: GGUF only aligns
    // whole tensors, and 18/20/34-byte blocks leave rows unaligned anyway.
    const size_t shift = type == KILN_F32 ? 0 : 34;
    c->raw = malloc(row_bytes * (size_t)rows + shift + 64);
    uint8_t *data = c->raw + shift;
    for (int64_t r = 0; r < rows; r++) make_row(type, data + (size_t)r * row_bytes, k);
    c->w = (kiln_tensor){.name = "w", .dtype = type, .n_dims = 2, .ne = {k, rows, 1, 1}, .data = data,
                         .nbytes = row_bytes * (uint64_t)rows};
    c->x = malloc((size_t)n * (size_t)k * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n * k; i++) c->x[i] = rndf(-2.0f, 2.0f);
    if (n > 2) c->x[k + 3] = 0.0f; // an exact zero
    if (k >= 64) memset(c->x, 0, 32 * sizeof(float)); // an all-zero group (d = 0)

    float *wd = malloc((size_t)k * sizeof(float)), *xd = malloc((size_t)n * (size_t)k * sizeof(float));
    const kiln_dtype at = act_type(type);
    uint64_t act_bytes = 0;
    assert_true(kiln_dtype_row_bytes(at, (uint64_t)k, &act_bytes));
    void *xq = malloc(act_bytes);
    for (int t = 0; t < n; t++) {
        if (at == KILN_F32) {
            memcpy(xd + (int64_t)t * k, c->x + (int64_t)t * k, (size_t)k * sizeof(float));
        } else {
            assert_true(kiln_quantize_row(at, c->x + (int64_t)t * k, xq, k));
            kiln_dequantize_row(at, xq, xd + (int64_t)t * k, k);
        }
    }
    c->ref = malloc((size_t)n * (size_t)rows * sizeof(double));
    c->mag = malloc((size_t)n * (size_t)rows * sizeof(double));
    for (int64_t r = 0; r < rows; r++) {
        kiln_dequantize_row(type, data + (size_t)r * row_bytes, wd, k);
        for (int t = 0; t < n; t++) {
            double s = 0.0, m = 0.0;
            for (int64_t i = 0; i < k; i++) {
                const double p = (double)wd[i] * (double)xd[(int64_t)t * k + i];
                s += p;
                m += fabs(p);
            }
            c->ref[(int64_t)t * rows + r] = s;
            c->mag[(int64_t)t * rows + r] = m;
        }
    }
    free(xq);
    free(wd);
    free(xd);
}

static void free_case(case_data *c) {
    free(c->raw);
    free(c->x);
    free(c->ref);
    free(c->mag);
}

static const uint32_t POISON = 0x7FC0DEADu; // a NaN no kernel produces

static float *poisoned(size_t n) {
    float *y = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) memcpy(&y[i], &POISON, 4);
    return y;
}

static bool is_poison(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u == POISON;
}

// y (rows ldy apart) against the reference; the ldy - rows tail must be untouched.
static void check_result(const case_data *c, const float *y, int64_t ldy, const char *what) {
    for (int t = 0; t < c->n; t++) {
        for (int64_t r = 0; r < ldy; r++) {
            const float v = y[(int64_t)t * ldy + r];
            if (r >= c->rows) {
                if (!is_poison(v)) fail_msg("%s: wrote past the row end at t=%d r=%lld", what, t, (long long)r);
                continue;
            }
            if (is_poison(v)) fail_msg("%s: y[%d][%lld] not written", what, t, (long long)r);
            const double ref = c->ref[(int64_t)t * c->rows + r], mag = c->mag[(int64_t)t * c->rows + r];
            const double err = fabs((double)v - ref);
            if (!(err <= 1e-4 * mag + 1e-30))
                fail_msg("%s: type %s k=%lld rows=%lld n=%d: y[%d][%lld] = %.9g, ref %.9g (sum|wx| %.4g)", what,
                         kiln_dtype_name(c->type), (long long)c->k, (long long)c->rows, c->n, t, (long long)r, v, ref,
                         mag);
        }
    }
}

static const char *paths[] = {"scalar", "avx2", "avx512"};

static void run_case(kiln_dtype type, int64_t k, int64_t rows, int n) {
    case_data c;
    build_case(&c, type, k, rows, n);
    const int64_t ldy = rows + 3;
    for (int p = -1; p < 3; p++) {
        if (p >= 0 && !kiln_cpu_force_simd(paths[p])) continue; // this CPU lacks it
        for (int threads = 1; threads <= 2; threads++) {
            float *y = poisoned((size_t)n * (size_t)ldy);
            kiln_cpu_matmul(&c.w, c.x, n, y, ldy, threads);
            char what[64];
            snprintf(what, sizeof what, "%s/%d threads", p < 0 ? "auto" : paths[p], threads);
            check_result(&c, y, ldy, what);
            free(y);
        }
        // Inside a team: every thread calls, the rows are shared out.
        float *y = poisoned((size_t)n * (size_t)ldy);
#pragma omp parallel num_threads(2)
        kiln_cpu_matmul(&c.w, c.x, n, y, ldy, 2);
        check_result(&c, y, ldy, p < 0 ? "auto/in-team" : paths[p]);
        free(y);
        kiln_cpu_force_simd(NULL);
    }
    free_case(&c);
}

static void test_all_types(void **state) {
    (void)state;
    static const int64_t rows_list[] = {1, 7, 33};
    static const int n_list[] = {1, 3, 8, 17, 64};
    for (size_t ti = 0; ti < sizeof all_types / sizeof all_types[0]; ti++) {
        const kiln_dtype t = all_types[ti];
        const int64_t ks[] = {is_k_type(t) ? 256 : 32, is_k_type(t) ? 512 : 96, 768};
        for (size_t ki = 0; ki < 3; ki++)
            for (size_t ri = 0; ri < 3; ri++)
                for (size_t ni = 0; ni < 5; ni++) run_case(t, ks[ki], rows_list[ri], n_list[ni]);
    }
}

// The default model's shapes (Q4_1 layers, Q8_0 output), a row count that
// is no multiple of the tile, and a prefill-sized batch.
static void test_model_shapes(void **state) {
    (void)state;
    run_case(KILN_Q4_1, 576, 577, 17);
    run_case(KILN_Q4_1, 1536, 192, 64);
    run_case(KILN_Q8_0, 576, 577, 1);
    run_case(KILN_Q8_0, 576, 130, 130);
    run_case(KILN_Q6_K, 1536, 577, 5);
    run_case(KILN_F16, 576, 577, 9);
}

// The kernels' own activation quantization must be bit-identical to the
// oracle's, or the reference above would not describe what they compute.
static void test_act_quantization_matches_oracle(void **state) {
    (void)state;
    const int64_t k = 512;
    float x[512];
    for (int i = 0; i < k; i++) x[i] = rndf(-3.0f, 3.0f);
    for (int i = 0; i < 32; i++) x[64 + i] = (float)(i - 16) * 0.25f; // halves: rounding ties
    memset(x + 128, 0, 32 * sizeof(float));
    const int gp = 16;
    int8_t q[16 * 32];
    float dx[16], sx[16], xs16[32];
    const kiln_act a = {.g = 16, .gp = gp, .q = q, .dx = dx, .sx = sx, .xs16 = xs16};
    for (int kind = 0; kind < 2; kind++) {
        kiln_quantize_act(kind == 0 ? KILN_ACT_Q8_32 : KILN_ACT_Q8_K, x, k, 0, 1, &a, kiln_simd_level_detect());
        if (kind == 0) {
            kiln_block_q8_0 ref[16];
            assert_true(kiln_quantize_row(KILN_Q8_0, x, ref, k));
            for (int b = 0; b < 16; b++) {
                assert_memory_equal(ref[b].qs, q + b * 32, 32);
                assert_true(dx[b] == kiln_f16_to_f32(ref[b].d));
            }
        } else {
            kiln_block_q8_k ref[2];
            assert_true(kiln_quantize_row(KILN_Q8_K, x, ref, k));
            for (int b = 0; b < 2; b++) {
                assert_memory_equal(ref[b].qs, q + b * 256, 256);
                for (int j = 0; j < 8; j++) assert_true(dx[b * 8 + j] == ref[b].d);
            }
        }
    }
}

static void test_get_rows(void **state) {
    (void)state;
    const int64_t dim = 64, vocab = 5;
    kiln_block_q8_0 blocks[10];
    float src[640];
    for (int i = 0; i < 640; i++) src[i] = rndf(-1.0f, 1.0f);
    assert_true(kiln_quantize_row(KILN_Q8_0, src, blocks, 320));
    const kiln_tensor w = {.name = "emb", .dtype = KILN_Q8_0, .n_dims = 2, .ne = {dim, vocab, 1, 1},
                           .data = blocks, .nbytes = sizeof blocks};
    const int32_t ids[3] = {4, 0, 4};
    float out[3 * 64];
    kiln_cpu_get_rows(&w, ids, 3, out);
    for (int t = 0; t < 3; t++)
        for (int i = 0; i < dim; i++) {
            const kiln_block_q8_0 *b = &blocks[ids[t] * 2 + i / 32];
            assert_true(out[t * dim + i] == (float)b->qs[i % 32] * kiln_f16_to_f32(b->d));
        }
}

static void test_force_and_names(void **state) {
    (void)state;
    assert_false(kiln_cpu_force_simd("neon"));
    assert_true(kiln_cpu_force_simd("scalar"));
    assert_string_equal(kiln_cpu_simd_name(), "scalar");
    assert_true(kiln_cpu_force_simd(NULL));
    assert_true(kiln_cpu_matmul_supports(KILN_Q4_1));
    assert_false(kiln_cpu_matmul_supports(KILN_Q8_K));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_act_quantization_matches_oracle),
        cmocka_unit_test(test_force_and_names),
        cmocka_unit_test(test_get_rows),
        cmocka_unit_test(test_model_shapes),
        cmocka_unit_test(test_all_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
