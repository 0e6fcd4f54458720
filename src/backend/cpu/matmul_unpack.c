// Unpacking of quantized weight rows into the common panel form (see
// simd_kernels.h): w = dw16 * (q - offset) + mw. Scalar code for every type;
// AVX2 versions for Q4_0 and the default model's types (Q4_1, Q8_0), whose unpacking
// is on the decode path where it is not amortized over many tokens.
#include <immintrin.h>
#include <stdbool.h>
#include <string.h>

#include "backend/cpu/simd_kernels.h"
#include "core/quant.h"

#define H2F(h) kiln_f16_to_f32(h)

int kiln_panel_offset(kiln_dtype dtype) {
    switch (dtype) {
    case KILN_Q4_0: return 8;
    case KILN_Q5_0: return 16;
    case KILN_Q8_0: return 128;
    case KILN_Q6_K: return 32;
    default: return 0;
    }
}

// Nibble codes of a simple 4-bit block: element j low nibble, j + 16 high.
static void nibbles(const uint8_t *qs, uint8_t *q) {
    for (int j = 0; j < 16; j++) {
        q[j] = qs[j] & 0x0F;
        q[j + 16] = qs[j] >> 4;
    }
}

static void add_high_bits(const uint8_t qh_bytes[4], uint8_t *q) {
    uint32_t qh;
    memcpy(&qh, qh_bytes, sizeof qh);
    for (int j = 0; j < 32; j++) q[j] |= (uint8_t)(((qh >> j) & 1) << 4);
}

static void scale_min_k4(int j, const uint8_t *s, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}

// One row, scalar. q: g * 32 codes, dw16: 2g scales, mw: g mins.
static void unpack_row_scalar(kiln_dtype dtype, const uint8_t *row, int g, uint8_t *q, float *dw16, float *mw) {
    for (int i = 0; i < g; i++) {
        uint8_t *qi = q + (int64_t)i * 32;
        float d = 0.0f, m = 0.0f;
        switch (dtype) {
        case KILN_Q4_0:
        case KILN_Q4_1:
        case KILN_Q5_0:
        case KILN_Q5_1:
        case KILN_Q8_0: {
            // Blocks may be unaligned (18/20/22/24/34 bytes): copy them out.
            union {
                kiln_block_q4_0 q4_0;
                kiln_block_q4_1 q4_1;
                kiln_block_q5_0 q5_0;
                kiln_block_q5_1 q5_1;
                kiln_block_q8_0 q8_0;
            } b;
            const uint32_t bytes = kiln_dtype_info(dtype)->block_bytes;
            memcpy(&b, row + (int64_t)i * bytes, bytes);
            if (dtype == KILN_Q4_0) {
                d = H2F(b.q4_0.d);
                nibbles(b.q4_0.qs, qi);
            } else if (dtype == KILN_Q4_1) {
                d = H2F(b.q4_1.d);
                m = H2F(b.q4_1.m);
                nibbles(b.q4_1.qs, qi);
            } else if (dtype == KILN_Q5_0) {
                d = H2F(b.q5_0.d);
                nibbles(b.q5_0.qs, qi);
                add_high_bits(b.q5_0.qh, qi);
            } else if (dtype == KILN_Q5_1) {
                d = H2F(b.q5_1.d);
                m = H2F(b.q5_1.m);
                nibbles(b.q5_1.qs, qi);
                add_high_bits(b.q5_1.qh, qi);
            } else {
                d = H2F(b.q8_0.d);
                for (int j = 0; j < 32; j++) qi[j] = (uint8_t)(b.q8_0.qs[j] + 128);
            }
            dw16[2 * i] = dw16[2 * i + 1] = d;
            mw[i] = m;
            break;
        }
        case KILN_Q4_K:
        case KILN_Q5_K: {
            // Sub-block j of a super-block: 64-element chunk j / 2, nibble j & 1.
            const int j = i % 8;
            const uint8_t *sb = row + (int64_t)(i / 8) * (dtype == KILN_Q4_K ? 144 : 176);
            uint16_t dh, dminh;
            memcpy(&dh, sb, 2);
            memcpy(&dminh, sb + 2, 2);
            const uint8_t *scales = sb + 4;
            const uint8_t *qs = dtype == KILN_Q4_K ? sb + 16 : sb + 48;
            uint8_t sc, mn;
            scale_min_k4(j, scales, &sc, &mn);
            const int shift = (j & 1) * 4;
            for (int l = 0; l < 32; l++) qi[l] = (qs[(j / 2) * 32 + l] >> shift) & 0x0F;
            if (dtype == KILN_Q5_K) {
                const uint8_t *qh = sb + 16;
                for (int l = 0; l < 32; l++) qi[l] |= (uint8_t)(((qh[l] >> j) & 1) << 4);
            }
            dw16[2 * i] = dw16[2 * i + 1] = H2F(dh) * (float)sc;
            mw[i] = -(H2F(dminh) * (float)mn);
            break;
        }
        case KILN_Q6_K: {
            // Group k of a 128-element half n: ql bytes n*64 + (k&1)*32, nibble
            // k >= 2, 2 high bits at qh[n*32 + l] >> 2k, scales sc[n*8 + 2k + l/16].
            const uint8_t *sb = row + (int64_t)(i / 8) * 210;
            const int n = (i % 8) / 4, k = i % 4;
            const uint8_t *ql = sb + n * 64 + (k & 1) * 32, *qh = sb + 128 + n * 32;
            const int8_t *sc = (const int8_t *)(sb + 192) + n * 8 + 2 * k;
            uint16_t dh;
            memcpy(&dh, sb + 208, 2);
            const int lshift = k >= 2 ? 4 : 0;
            for (int l = 0; l < 32; l++)
                qi[l] = (uint8_t)(((ql[l] >> lshift) & 0x0F) | (((qh[l] >> (2 * k)) & 3) << 4));
            const float dd = H2F(dh);
            dw16[2 * i] = dd * (float)sc[0];
            dw16[2 * i + 1] = dd * (float)sc[1];
            mw[i] = 0.0f;
            break;
        }
        default: break;
        }
    }
}

// Q4_0 (18-byte blocks: d, qs) or Q4_1 (20-byte blocks: d, m, qs).
__attribute__((target("avx2,f16c"))) static void unpack_row_q4_avx2(const uint8_t *row, int g, bool has_min,
                                                                      uint8_t *q, float *dw16, float *mw) {
    const __m128i low4 = _mm_set1_epi8(0x0F);
    const int block = has_min ? 20 : 18, qs_at = has_min ? 4 : 2;
    for (int i = 0; i < g; i++) {
        const uint8_t *b = row + (int64_t)i * block;
        uint16_t dh, mh = 0;
        memcpy(&dh, b, 2);
        if (has_min) memcpy(&mh, b + 2, 2);
        const __m128i qs = _mm_loadu_si128((const __m128i *)(b + qs_at));
        _mm_storeu_si128((__m128i *)(q + i * 32), _mm_and_si128(qs, low4));
        _mm_storeu_si128((__m128i *)(q + i * 32 + 16), _mm_and_si128(_mm_srli_epi16(qs, 4), low4));
        const float d = _cvtsh_ss(dh);
        dw16[2 * i] = dw16[2 * i + 1] = d;
        mw[i] = _cvtsh_ss(mh);
    }
}

__attribute__((target("avx2,f16c"))) static void unpack_row_q8_0_avx2(const uint8_t *row, int g, uint8_t *q,
                                                                        float *dw16, float *mw) {
    const __m256i bias = _mm256_set1_epi8((char)0x80);
    for (int i = 0; i < g; i++) {
        const uint8_t *b = row + (int64_t)i * 34;
        uint16_t dh;
        memcpy(&dh, b, 2);
        const __m256i qs = _mm256_loadu_si256((const __m256i *)(b + 2));
        _mm256_storeu_si256((__m256i *)(q + i * 32), _mm256_xor_si256(qs, bias)); // q + 128
        const float d = _cvtsh_ss(dh);
        dw16[2 * i] = dw16[2 * i + 1] = d;
        mw[i] = 0.0f;
    }
}

void kiln_unpack_rows(kiln_dtype dtype, const uint8_t *rows, size_t row_bytes, int nrows, const kiln_panel *p,
                      kiln_simd_level level) {
    for (int r = 0; r < nrows; r++) {
        const uint8_t *row = rows + (size_t)r * row_bytes;
        uint8_t *q = p->q + (int64_t)r * p->gp * KILN_GROUP;
        float *dw16 = p->dw16 + (int64_t)r * 2 * p->gp, *mw = p->mw + (int64_t)r * p->gp;
        if (level >= KILN_SIMD_AVX2 && (dtype == KILN_Q4_0 || dtype == KILN_Q4_1)) {
            unpack_row_q4_avx2(row, p->g, dtype == KILN_Q4_1, q, dw16, mw);
        } else if (level >= KILN_SIMD_AVX2 && dtype == KILN_Q8_0) {
            unpack_row_q8_0_avx2(row, p->g, q, dw16, mw);
        } else {
            unpack_row_scalar(dtype, row, p->g, q, dw16, mw);
        }
        // Padding groups: zero codes and scales, so they add nothing (and no NaN).
        const int pad = p->gp - p->g;
        memset(q + (int64_t)p->g * KILN_GROUP, 0, (size_t)pad * KILN_GROUP);
        memset(dw16 + 2 * p->g, 0, (size_t)pad * 2 * sizeof(float));
        memset(mw + p->g, 0, (size_t)pad * sizeof(float));
    }
}
