// AVX-512 VNNI kernels: two 32-element groups per 512-bit register, u8 x s8
// dot products with vpdpbusd, KILN_MR rows x 4 tokens per inner loop so each
// weight vector is used 4 times and each activation vector KILN_MR times.
#include <immintrin.h>

#include "backend/cpu/simd_kernels.h"

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define NT 4 // tokens per tile

// The two floats at p broadcast to lanes 0-7 and 8-15.
AVX512 INLINE __m512 halves(const float *p, __m512i idx) {
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i *)p))));
}

// Sum of a[i] * b[i] for i < n (n a multiple of 16).
AVX512 INLINE float dot16(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    return _mm512_reduce_add_ps(acc);
}

AVX512 INLINE void qtile(const kiln_panel *p, const kiln_act *a, int t, const int nt, float *y, int64_t ldy,
                         int nrows) {
    const int gp = p->gp, pairs = (p->g + 1) / 2; // an odd last group pairs with a zero padding group
    const __m512i idx_h = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i idx_q = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    __m512 acc[KILN_MR][NT];
    for (int r = 0; r < KILN_MR; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = _mm512_setzero_ps();
    const int8_t *xq = a->q + (int64_t)t * gp * KILN_GROUP;
    const float *dx = a->dx + (int64_t)t * gp;
    for (int pr = 0; pr < pairs; pr++) {
        __m512i xv[NT];
        __m512 dxv[NT];
        for (int j = 0; j < nt; j++) {
            xv[j] = _mm512_loadu_si512(xq + (int64_t)j * gp * KILN_GROUP + pr * 64);
            dxv[j] = halves(dx + (int64_t)j * gp + 2 * pr, idx_h);
        }
        for (int r = 0; r < KILN_MR; r++) {
            // Lane l of a vpdpbusd result sums bytes 4l..4l+3: lanes 0-3, 4-7,
            // 8-11, 12-15 cover the four 16-element halves, scaled by dw16.
            const __m512i wv = _mm512_loadu_si512(p->q + (int64_t)r * gp * KILN_GROUP + pr * 64);
            const __m512 dwv =
                _mm512_permutexvar_ps(idx_q, _mm512_castps128_ps512(_mm_loadu_ps(p->dw16 + (int64_t)r * 2 * gp + 4 * pr)));
            for (int j = 0; j < nt; j++) {
                const __m512i d = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wv, xv[j]);
                acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), _mm512_mul_ps(dwv, dxv[j]), acc[r][j]);
            }
        }
    }
    for (int r = 0; r < nrows; r++) {
        const float *mw = p->mw + (int64_t)r * gp, *dw16 = p->dw16 + (int64_t)r * 2 * gp;
        for (int j = 0; j < nt; j++) {
            float v = _mm512_reduce_add_ps(acc[r][j]) + dot16(mw, a->sx + (int64_t)(t + j) * gp, gp);
            if (p->offset) v -= (float)p->offset * dot16(dw16, a->xs16 + (int64_t)(t + j) * 2 * gp, 2 * gp);
            y[(int64_t)(t + j) * ldy + r] = v;
        }
    }
}

AVX512 void kiln_qkernel_avx512(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy,
                                int nrows) {
    int t = t0;
    for (; t + NT <= t1; t += NT) qtile(p, a, t, NT, y, ldy, nrows);
    switch (t1 - t) {
    case 3: qtile(p, a, t, 3, y, ldy, nrows); break;
    case 2: qtile(p, a, t, 2, y, ldy, nrows); break;
    case 1: qtile(p, a, t, 1, y, ldy, nrows); break;
    default: break;
    }
}

AVX512 INLINE void ftile(const float *const rows[KILN_MR], int64_t k, const float *x, int t, const int nt, float *y,
                         int64_t ldy, int nrows) {
    __m512 acc[KILN_MR][NT];
    for (int r = 0; r < KILN_MR; r++)
        for (int j = 0; j < nt; j++) acc[r][j] = _mm512_setzero_ps();
    for (int64_t i = 0; i < k; i += 16) {
        const __mmask16 m = k - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (k - i)) - 1);
        __m512 xv[NT];
        for (int j = 0; j < nt; j++) xv[j] = _mm512_maskz_loadu_ps(m, x + (int64_t)(t + j) * k + i);
        for (int r = 0; r < KILN_MR; r++) {
            const __m512 wv = _mm512_maskz_loadu_ps(m, rows[r] + i);
            for (int j = 0; j < nt; j++) acc[r][j] = _mm512_fmadd_ps(wv, xv[j], acc[r][j]);
        }
    }
    for (int r = 0; r < nrows; r++)
        for (int j = 0; j < nt; j++) y[(int64_t)(t + j) * ldy + r] = _mm512_reduce_add_ps(acc[r][j]);
}

AVX512 void kiln_fkernel_avx512(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1,
                                float *y, int64_t ldy, int nrows) {
    int t = t0;
    for (; t + NT <= t1; t += NT) ftile(rows, k, x, t, NT, y, ldy, nrows);
    switch (t1 - t) {
    case 3: ftile(rows, k, x, t, 3, y, ldy, nrows); break;
    case 2: ftile(rows, k, x, t, 2, y, ldy, nrows); break;
    case 1: ftile(rows, k, x, t, 1, y, ldy, nrows); break;
    default: break;
    }
}
