// Float conversions (f16, bf16), type traits and the quantization properties
// that hold independently of ggml. Bit-exactness against ggml/gguf-py for
// every type is checked with fixtures in tests/formats/test_gguf.c.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/dtype.h"
#include "core/quant.h"

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t xorshift32(uint32_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    return *s;
}

static void test_f16_known_values(void **state) {
    (void)state;
    assert_int_equal(kiln_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(kiln_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(kiln_f32_to_f16(65504.0f), 0x7bff);           // largest finite
    assert_int_equal(kiln_f32_to_f16(65519.99f), 0x7bff);          // just below the inf tie
    assert_int_equal(kiln_f32_to_f16(65520.0f), 0x7c00);           // tie rounds to even = inf
    assert_int_equal(kiln_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(kiln_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(kiln_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(kiln_f32_to_f16(ldexpf(1, -24)), 0x0001);     // smallest subnormal
    assert_int_equal(kiln_f32_to_f16(ldexpf(1, -25)), 0x0000);     // tie to even (0)
    assert_int_equal(kiln_f32_to_f16(ldexpf(3, -25)), 0x0002);     // tie to even (2)
    assert_int_equal(kiln_f32_to_f16(ldexpf(1, -14)), 0x0400);     // smallest normal
    assert_int_equal(kiln_f32_to_f16(1.0f + ldexpf(1, -11)), 0x3c00); // tie to even
    assert_int_equal(kiln_f32_to_f16(1.0f + ldexpf(3, -11)), 0x3c02);
    assert_true((kiln_f32_to_f16(NAN) & 0x7fff) > 0x7c00);
    assert_true(kiln_f16_to_f32(0x0001) == ldexpf(1, -24));
    assert_true(kiln_f16_to_f32(0x03ff) == ldexpf(1023, -24));    // largest subnormal
    assert_true(kiln_f16_to_f32(0x7bff) == 65504.0f);
    assert_true(isinf(kiln_f16_to_f32(0xfc00)) && kiln_f16_to_f32(0xfc00) < 0);
    assert_true(isnan(kiln_f16_to_f32(0x7e00)));
    assert_true(isnan(kiln_f16_to_f32(0x7c01)));
    assert_int_equal(f2u(kiln_f16_to_f32(0x8000)), 0x80000000u);
}

// Every half value decodes to the value its fields define and encodes back to
// itself (NaN stays NaN with its sign).
static void test_f16_exhaustive_round_trip(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = kiln_f16_to_f32((uint16_t)h);
        const uint32_t e = (h >> 10) & 0x1f, m = h & 0x3ff;
        const float sign = (h & 0x8000) ? -1.0f : 1.0f;
        if (e == 31) {
            assert_true(m ? isnan(f) : isinf(f));
        } else {
            const float ref = e ? sign * ldexpf((float)(1024 + m), (int)e - 25) : sign * ldexpf((float)m, -24);
            assert_true(f2u(f) == f2u(ref));
        }
        const uint16_t back = kiln_f32_to_f16(f);
        if (e == 31 && m) {
            assert_true((back & 0x7c00) == 0x7c00 && (back & 0x3ff) != 0 && (back & 0x8000) == (h & 0x8000));
        } else {
            assert_int_equal(back, h);
        }
    }
}

#ifdef __FLT16_MAX__
// The compiler's own float -> _Float16 conversion (IEEE round to nearest even)
// is the reference for a spread of f32 bit patterns covering every exponent.
static void test_f32_to_f16_matches_compiler(void **state) {
    (void)state;
    uint32_t seed = 12345;
    for (uint64_t i = 0; i < (1u << 22); i++) {
        const uint32_t bits = (i & 1) ? xorshift32(&seed) : (uint32_t)(i * 2047u);
        const float f = u2f(bits);
        const _Float16 ref = (_Float16)f;
        uint16_t ref_bits;
        memcpy(&ref_bits, &ref, 2);
        const uint16_t got = kiln_f32_to_f16(f);
        if (isnan(f)) {
            assert_true((got & 0x7fff) > 0x7c00);
        } else if (got != ref_bits) {
            fail_msg("f32 %08x: got f16 %04x, compiler %04x", bits, got, ref_bits);
        }
    }
}
#endif

static void test_bf16(void **state) {
    (void)state;
    // Decoding: a bf16 is the top half of an f32.
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = kiln_bf16_to_f32((uint16_t)h);
        const uint32_t e = (h >> 7) & 0xff, m = h & 0x7f;
        const float sign = (h & 0x8000) ? -1.0f : 1.0f;
        if (e == 255) {
            assert_true(m ? isnan(f) : isinf(f));
        } else {
            const float ref = e ? sign * ldexpf((float)(128 + m), (int)e - 134) : sign * ldexpf((float)m, -133);
            assert_true(f2u(f) == f2u(ref));
            assert_int_equal(kiln_f32_to_bf16(f), h);
        }
    }
    // Encoding rounds to nearest, ties to even.
    assert_int_equal(kiln_f32_to_bf16(u2f(0x3f808000u)), 0x3f80); // tie, even below
    assert_int_equal(kiln_f32_to_bf16(u2f(0x3f818000u)), 0x3f82); // tie, even above
    assert_int_equal(kiln_f32_to_bf16(u2f(0x3f808001u)), 0x3f81);
    assert_int_equal(kiln_f32_to_bf16(u2f(0x3f807fffu)), 0x3f80);
    assert_int_equal(kiln_f32_to_bf16(u2f(0x7f7f8000u)), 0x7f80);   // max finite tie -> inf
    assert_int_equal(kiln_f32_to_bf16(u2f(0x00008000u)), 0x0000);   // subnormal tie -> 0
    assert_int_equal(kiln_f32_to_bf16(u2f(0x7f800001u)), 0x7fc0);   // signalling NaN quieted, not inf
    assert_int_equal(kiln_f32_to_bf16(u2f(0xff800000u)), 0xff80);
    // Nearest-ness on random finite values: no other bf16 is closer.
    uint32_t seed = 777;
    for (int i = 0; i < 1000000; i++) {
        const float f = u2f(xorshift32(&seed));
        if (!isfinite(f)) continue;
        const uint16_t b = kiln_f32_to_bf16(f);
        const double err = fabs((double)f - (double)kiln_bf16_to_f32(b));
        const double lo = fabs((double)f - (double)kiln_bf16_to_f32((uint16_t)(b - 1)));
        const double hi = fabs((double)f - (double)kiln_bf16_to_f32((uint16_t)(b + 1)));
        if ((b & 0x7fff) != 0x7f80 && (b & 0x7fff) != 0) assert_true(err <= lo && err <= hi);
    }
}

static void test_traits(void **state) {
    (void)state;
    assert_null(kiln_dtype_info(4)); // Q4_2, removed from ggml
    assert_null(kiln_dtype_info(16)); // IQ2_XXS: not supported
    assert_null(kiln_dtype_info(1000));
    assert_string_equal(kiln_dtype_name(KILN_Q6_K), "Q6_K");
    uint64_t bytes;
    assert_true(kiln_dtype_row_bytes(KILN_Q4_K, 512, &bytes));
    assert_int_equal(bytes, 2 * sizeof(kiln_block_q4_k));
    assert_false(kiln_dtype_row_bytes(KILN_Q4_K, 100, &bytes));
    assert_false(kiln_dtype_row_bytes(KILN_F32, UINT64_MAX / 2, &bytes)); // overflow
}

static void test_quantize_rejects(void **state) {
    (void)state;
    float x[256] = {0};
    uint8_t out[1024];
    assert_false(kiln_quantize_row(KILN_Q4_0, x, out, 32));  // no reference quantizer for weights
    assert_false(kiln_quantize_row(KILN_Q4_K, x, out, 256));
    assert_false(kiln_quantize_row(KILN_Q8_0, x, out, 33));  // not a whole block
    assert_false(kiln_quantize_row(KILN_Q8_K, x, out, 128));
}

// Q8_0 / Q8_1: every element within half a step of the input (plus the f16
// rounding of the scale, at most 2^-11 relative, times |q| <= 127).
static void test_q8_0_q8_1_error_bound(void **state) {
    (void)state;
    enum { N = 32 * 8 };
    float x[N], y[N];
    uint32_t seed = 99;
    for (int i = 0; i < N; i++) x[i] = ((float)(xorshift32(&seed) % 20001) - 10000.0f) / 777.0f;
    for (int i = 64; i < 96; i++) x[i] = 0.0f; // a zero block
    kiln_block_q8_0 q0[N / 32];
    kiln_block_q8_1 q1[N / 32];
    assert_true(kiln_quantize_row(KILN_Q8_0, x, q0, N));
    assert_true(kiln_quantize_row(KILN_Q8_1, x, q1, N));
    for (int b = 0; b < N / 32; b++) {
        const float d = kiln_f16_to_f32(q0[b].d);
        assert_true(d == kiln_f16_to_f32(q1[b].d));
        int sum = 0, max_q = 0;
        for (int j = 0; j < 32; j++) {
            assert_int_equal(q0[b].qs[j], q1[b].qs[j]);
            sum += q1[b].qs[j];
            max_q = abs(q0[b].qs[j]) > max_q ? abs(q0[b].qs[j]) : max_q;
        }
        assert_true(max_q == 127 || d == 0.0f);
        // s = d * sum(q), rounded to f16 (from the unrounded d, hence the tolerance)
        const float s = kiln_f16_to_f32(q1[b].s);
        assert_true(fabsf(s - d * (float)sum) <= fabsf(d * (float)sum) * 0x1p-10f + 1e-6f);
    }
    kiln_dequantize_row(KILN_Q8_0, q0, y, N);
    for (int i = 0; i < N; i++) {
        const float d = kiln_f16_to_f32(q0[i / 32].d);
        assert_true(fabsf(x[i] - y[i]) <= 0.5f * d + 127.0f * d * 0x1p-11f + 1e-6f);
    }
    for (int i = 64; i < 96; i++) assert_true(y[i] == 0.0f);
    kiln_dequantize_row(KILN_Q8_1, q1, y, N);
    for (int i = 0; i < N; i++) {
        const float d = kiln_f16_to_f32(q1[i / 32].d);
        assert_true(fabsf(x[i] - y[i]) <= 0.5f * d + 127.0f * d * 0x1p-11f + 1e-6f);
    }
}

// Q8_K: the largest-magnitude element maps to exactly -127 (or 127), bsums
// are the group sums, and the round trip is within half a step.
static void test_q8_k_properties(void **state) {
    (void)state;
    enum { N = 512 };
    float x[N], y[N];
    uint32_t seed = 4242;
    for (int i = 0; i < N; i++) x[i] = ((float)(xorshift32(&seed) % 2001) - 1000.0f) / 13.0f;
    x[17] = 500.0f; // block 0: positive extreme -> q = -127 with negative d
    for (int i = 256; i < N; i++) x[i] = 0.0f;
    kiln_block_q8_k q[2];
    assert_true(kiln_quantize_row(KILN_Q8_K, x, q, N));
    assert_int_equal(q[0].qs[17], -127);
    assert_true(q[0].d < 0.0f);
    for (int g = 0; g < 16; g++) {
        int sum = 0;
        for (int k = 0; k < 16; k++) sum += q[0].qs[g * 16 + k];
        assert_int_equal(q[0].bsums[g], sum);
    }
    assert_true(q[1].d == 0.0f); // all-zero block
    for (int j = 0; j < 256; j++) assert_int_equal(q[1].qs[j], 0);
    kiln_dequantize_row(KILN_Q8_K, q, y, N);
    for (int i = 0; i < 256; i++) assert_true(fabsf(x[i] - y[i]) <= 0.5f * fabsf(q[0].d) * 1.0001f);
    for (int i = 256; i < N; i++) assert_true(y[i] == 0.0f);
}

// Float types quantize and dequantize through the scalar conversions.
static void test_float_rows(void **state) {
    (void)state;
    const float x[4] = {1.0f, -0.0f, 65520.0f, 1e-8f};
    uint16_t h[4];
    float y[4];
    assert_true(kiln_quantize_row(KILN_F16, x, h, 4));
    for (int i = 0; i < 4; i++) assert_int_equal(h[i], kiln_f32_to_f16(x[i]));
    kiln_dequantize_row(KILN_F16, h, y, 4);
    assert_true(y[0] == 1.0f && signbit(y[1]) && isinf(y[2]) && y[3] == 0.0f); // 1e-8 < 2^-25 underflows
    assert_true(kiln_quantize_row(KILN_BF16, x, h, 4));
    for (int i = 0; i < 4; i++) assert_int_equal(h[i], kiln_f32_to_bf16(x[i]));
    assert_true(kiln_quantize_row(KILN_F32, x, y, 4));
    assert_memory_equal(x, y, sizeof x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_known_values),
        cmocka_unit_test(test_f16_exhaustive_round_trip),
#ifdef __FLT16_MAX__
        cmocka_unit_test(test_f32_to_f16_matches_compiler),
#endif
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_traits),
        cmocka_unit_test(test_quantize_rejects),
        cmocka_unit_test(test_q8_0_q8_1_error_bound),
        cmocka_unit_test(test_q8_k_properties),
        cmocka_unit_test(test_float_rows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
