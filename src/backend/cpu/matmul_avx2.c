// AVX2 + FMA kernels: one 32-element group per 256-bit register, u8 x s8 dot
// products with vpmaddubsw + vpmaddwd, KILN_MR rows x 2 tokens per inner loop
// (16 ymm registers allow no more). Q8_0 codes (0..255 after the +128 bias)
// would saturate vpmaddubsw, so Q8_0 uses the sign trick on signed codes.
#include <immintrin.h>
#include <stdbool.h>

#include "backend/cpu/simd_kernels.h"
#include "core/dtype.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define NT 2

AVX2 INLINE float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 INLINE float dot8(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    return hsum8(acc);
}

AVX2 INLINE void qtile(const kiln_panel *p, const kiln_act *a, int t, const int nt, const bool signed8, float *y,
                       int64_t ldy, int nrows) {
    const int gp = p->gp;
    const __m256i idx = _mm256_set_epi32(1, 1, 1, 1, 0, 0, 0, 0), ones = _mm256_set1_epi16(1);
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    __m256 acc[KILN_MR][NT];
    for (int r = 0; r < KILN_MR; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = _mm256_setzero_ps();
    const int8_t *xq = a->q + (int64_t)t * gp * KILN_GROUP;
    const float *dx = a->dx + (int64_t)t * gp;
    for (int i = 0; i < p->g; i++) {
        __m256i xv[NT];
        __m256 dxv[NT];
        for (int j = 0; j < nt; j++) {
            xv[j] = _mm256_loadu_si256((const __m256i *)(xq + (int64_t)j * gp * KILN_GROUP + i * 32));
            dxv[j] = _mm256_broadcast_ss(dx + (int64_t)j * gp + i);
        }
        for (int r = 0; r < KILN_MR; r++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(p->q + (int64_t)r * gp * KILN_GROUP + i * 32));
            const __m256 dwv = _mm256_permutevar8x32_ps(
                _mm256_castps128_ps256(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)(p->dw16 + (int64_t)r * 2 * gp + 2 * i)))),
                idx);
            __m256i ws = wv;
            if (signed8) {
                ws = _mm256_xor_si256(wv, bias); // back to the signed Q8_0 value
                wv = _mm256_abs_epi8(ws);
            }
            for (int j = 0; j < nt; j++) {
                const __m256i xs = signed8 ? _mm256_sign_epi8(xv[j], ws) : xv[j];
                const __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xs), ones);
                acc[r][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), _mm256_mul_ps(dwv, dxv[j]), acc[r][j]);
            }
        }
    }
    const int offset = signed8 ? 0 : p->offset;
    for (int r = 0; r < nrows; r++) {
        const float *mw = p->mw + (int64_t)r * gp, *dw16 = p->dw16 + (int64_t)r * 2 * gp;
        for (int j = 0; j < nt; j++) {
            float v = hsum8(acc[r][j]) + dot8(mw, a->sx + (int64_t)(t + j) * gp, gp);
            if (offset) v -= (float)offset * dot8(dw16, a->xs16 + (int64_t)(t + j) * 2 * gp, 2 * gp);
            y[(int64_t)(t + j) * ldy + r] = v;
        }
    }
}

AVX2 void kiln_qkernel_avx2(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy,
                            int nrows) {
    const bool signed8 = p->offset == 128;
    int t = t0;
    if (signed8) {
        for (; t + NT <= t1; t += NT) qtile(p, a, t, NT, true, y, ldy, nrows);
        if (t < t1) qtile(p, a, t, 1, true, y, ldy, nrows);
    } else {
        for (; t + NT <= t1; t += NT) qtile(p, a, t, NT, false, y, ldy, nrows);
        if (t < t1) qtile(p, a, t, 1, false, y, ldy, nrows);
    }
}

AVX2 INLINE void ftile(const float *const rows[KILN_MR], int64_t k, const float *x, int t, const int nt, float *y,
                       int64_t ldy, int nrows) {
    __m256 acc[KILN_MR][NT];
    for (int r = 0; r < KILN_MR; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = _mm256_setzero_ps();
    const int64_t k8 = k - k % 8;
    for (int64_t i = 0; i < k8; i += 8) {
        __m256 xv[NT];
        for (int j = 0; j < nt; j++) xv[j] = _mm256_loadu_ps(x + (int64_t)(t + j) * k + i);
        for (int r = 0; r < KILN_MR; r++) {
            const __m256 wv = _mm256_loadu_ps(rows[r] + i);
            for (int j = 0; j < nt; j++) acc[r][j] = _mm256_fmadd_ps(wv, xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < nrows; r++)
        for (int j = 0; j < nt; j++) {
            float v = hsum8(acc[r][j]);
            for (int64_t i = k8; i < k; i++) v += rows[r][i] * x[(int64_t)(t + j) * k + i];
            y[(int64_t)(t + j) * ldy + r] = v;
        }
}

AVX2 void kiln_fkernel_avx2(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1, float *y,
                            int64_t ldy, int nrows) {
    int t = t0;
    for (; t + NT <= t1; t += NT) ftile(rows, k, x, t, NT, y, ldy, nrows);
    if (t < t1) ftile(rows, k, x, t, 1, y, ldy, nrows);
}

AVX2 static void convert_row_avx2(kiln_dtype dtype, const void *src, float *dst, int64_t k) {
    const uint16_t *h = src;
    int64_t i = 0;
    for (; i + 8 <= k; i += 8) {
        const __m128i v = _mm_loadu_si128((const __m128i *)(h + i));
        const __m256 f = dtype == KILN_F16 ? _mm256_cvtph_ps(v)
                                           : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16));
        _mm256_storeu_ps(dst + i, f);
    }
    for (; i < k; i++) dst[i] = dtype == KILN_F16 ? kiln_f16_to_f32(h[i]) : kiln_bf16_to_f32(h[i]);
}

void kiln_convert_row(kiln_dtype dtype, const void *src, float *dst, int64_t k, kiln_simd_level level) {
    if (level >= KILN_SIMD_AVX2) {
        convert_row_avx2(dtype, src, dst, k);
        return;
    }
    const uint16_t *h = src;
    for (int64_t i = 0; i < k; i++) dst[i] = dtype == KILN_F16 ? kiln_f16_to_f32(h[i]) : kiln_bf16_to_f32(h[i]);
}
