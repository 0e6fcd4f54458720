// Scalar reference (de)quantization, bit-compatible with ggml's *_ref
// functions in ggml-quants.c: same formulas, same float32 operation order, so
// results match ggml (and gguf-py) exactly. The SIMD kernels are tested
// against these.
#include <assert.h>
#include <math.h>
#include <string.h>

#include "core/dtype.h"
#include "core/quant.h"

#define H2F(h) kiln_f16_to_f32(h)

static void dequant_q4_0(const kiln_block_q4_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d);
        for (int j = 0; j < KILN_QK / 2; j++) {
            const int x0 = (b[i].qs[j] & 0x0F) - 8;
            const int x1 = (b[i].qs[j] >> 4) - 8;
            y[j] = (float)x0 * d;
            y[j + KILN_QK / 2] = (float)x1 * d;
        }
    }
}

static void dequant_q4_1(const kiln_block_q4_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d), m = H2F(b[i].m);
        for (int j = 0; j < KILN_QK / 2; j++) {
            y[j] = (float)(b[i].qs[j] & 0x0F) * d + m;
            y[j + KILN_QK / 2] = (float)(b[i].qs[j] >> 4) * d + m;
        }
    }
}

static void dequant_q5_0(const kiln_block_q5_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d);
        uint32_t qh;
        memcpy(&qh, b[i].qh, sizeof qh);
        for (int j = 0; j < KILN_QK / 2; j++) {
            const uint8_t xh0 = (uint8_t)(((qh >> j) << 4) & 0x10);
            const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = ((b[i].qs[j] & 0x0F) | xh0) - 16;
            const int x1 = ((b[i].qs[j] >> 4) | xh1) - 16;
            y[j] = (float)x0 * d;
            y[j + KILN_QK / 2] = (float)x1 * d;
        }
    }
}

static void dequant_q5_1(const kiln_block_q5_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d), m = H2F(b[i].m);
        uint32_t qh;
        memcpy(&qh, b[i].qh, sizeof qh);
        for (int j = 0; j < KILN_QK / 2; j++) {
            const uint8_t xh0 = (uint8_t)(((qh >> j) << 4) & 0x10);
            const uint8_t xh1 = (uint8_t)((qh >> (j + 12)) & 0x10);
            const int x0 = (b[i].qs[j] & 0x0F) | xh0;
            const int x1 = (b[i].qs[j] >> 4) | xh1;
            y[j] = (float)x0 * d + m;
            y[j + KILN_QK / 2] = (float)x1 * d + m;
        }
    }
}

static void dequant_q8_0(const kiln_block_q8_0 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d);
        for (int j = 0; j < KILN_QK; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

static void dequant_q8_1(const kiln_block_q8_1 *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK) {
        const float d = H2F(b[i].d);
        for (int j = 0; j < KILN_QK; j++) y[j] = (float)b[i].qs[j] * d;
    }
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block.
static void scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

static void dequant_q4_k(const kiln_block_q4_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *q = b[i].qs;
        const float d = H2F(b[i].d), min = H2F(b[i].dmin);
        for (int j = 0, is = 0; j < KILN_QK_K; j += 64, is += 2, q += 32) {
            uint8_t sc, m;
            scale_min_k4(is, b[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0xF) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

static void dequant_q5_k(const kiln_block_q5_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const uint8_t *ql = b[i].qs, *qh = b[i].qh;
        const float d = H2F(b[i].d), min = H2F(b[i].dmin);
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < KILN_QK_K; j += 64, is += 2, ql += 32) {
            uint8_t sc, m;
            scale_min_k4(is, b[i].scales, &sc, &m);
            const float d1 = d * sc, m1 = min * m;
            scale_min_k4(is + 1, b[i].scales, &sc, &m);
            const float d2 = d * sc, m2 = min * m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
            u1 = (uint8_t)(u1 << 2);
            u2 = (uint8_t)(u2 << 2);
        }
    }
}

static void dequant_q6_k(const kiln_block_q6_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++) {
        const float d = H2F(b[i].d);
        const uint8_t *ql = b[i].ql, *qh = b[i].qh;
        const int8_t *sc = b[i].scales;
        for (int n = 0; n < KILN_QK_K; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = (int8_t)((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = (int8_t)((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = (int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = (int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is + 0] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
        }
    }
}

static void dequant_q8_k(const kiln_block_q8_k *b, float *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, y += KILN_QK_K)
        for (int j = 0; j < KILN_QK_K; j++) y[j] = b[i].d * (float)b[i].qs[j];
}

void kiln_dequantize_row(kiln_dtype dtype, const void *src, float *dst, int64_t n) {
    const kiln_dtype_traits *t = kiln_dtype_info((uint32_t)dtype);
    assert(t && n >= 0 && n % t->block_elems == 0);
    const int64_t nb = n / (int64_t)t->block_elems;
    switch (dtype) {
    case KILN_F32: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case KILN_F16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = kiln_f16_to_f32(h[i]);
        break;
    }
    case KILN_BF16: {
        const uint16_t *h = src;
        for (int64_t i = 0; i < n; i++) dst[i] = kiln_bf16_to_f32(h[i]);
        break;
    }
    case KILN_Q4_0: dequant_q4_0(src, dst, nb); break;
    case KILN_Q4_1: dequant_q4_1(src, dst, nb); break;
    case KILN_Q5_0: dequant_q5_0(src, dst, nb); break;
    case KILN_Q5_1: dequant_q5_1(src, dst, nb); break;
    case KILN_Q8_0: dequant_q8_0(src, dst, nb); break;
    case KILN_Q8_1: dequant_q8_1(src, dst, nb); break;
    case KILN_Q4_K: dequant_q4_k(src, dst, nb); break;
    case KILN_Q5_K: dequant_q5_k(src, dst, nb); break;
    case KILN_Q6_K: dequant_q6_k(src, dst, nb); break;
    case KILN_Q8_K: dequant_q8_k(src, dst, nb); break;
    case KILN_DTYPE_COUNT: break;
    }
}

// ggml's nearest_int: round half to even via the 1.5 * 2^23 trick (valid for
// |x| < 2^22, which holds for the scaled values of Q8_K).
static int nearest_int(float x) {
    const float val = x + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static float block_absmax(const float *x, int n) {
    float amax = 0.0f;
    for (int j = 0; j < n; j++) amax = fmaxf(amax, fabsf(x[j]));
    return amax;
}

static void quant_q8_0(const float *x, kiln_block_q8_0 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += KILN_QK) {
        const float d = block_absmax(x, KILN_QK) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = kiln_f32_to_f16(d);
        for (int j = 0; j < KILN_QK; j++) y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

static void quant_q8_1(const float *x, kiln_block_q8_1 *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += KILN_QK) {
        const float d = block_absmax(x, KILN_QK) / 127.0f;
        const float id = d != 0.0f ? 1.0f / d : 0.0f;
        y[i].d = kiln_f32_to_f16(d);
        int sum = 0;
        for (int j = 0; j < KILN_QK; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = kiln_f32_to_f16((float)sum * d);
    }
}

static void quant_q8_k(const float *x, kiln_block_q8_k *y, int64_t nb) {
    for (int64_t i = 0; i < nb; i++, x += KILN_QK_K) {
        // The signed value of largest magnitude (first one on ties) sets the scale.
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < KILN_QK_K; j++) {
            const float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        // -127 (not -128) as in current ggml, so that the extreme maps to -127.
        const float iscale = -127.0f / max;
        for (int j = 0; j < KILN_QK_K; j++) {
            const int v = nearest_int(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < KILN_QK_K / 16; j++) {
            int sum = 0;
            for (int k = 0; k < 16; k++) sum += y[i].qs[j * 16 + k];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1.0f / iscale;
    }
}

bool kiln_quantize_row(kiln_dtype dtype, const float *src, void *dst, int64_t n) {
    const kiln_dtype_traits *t = kiln_dtype_info((uint32_t)dtype);
    if (!t || n < 0 || n % t->block_elems != 0) return false;
    const int64_t nb = n / (int64_t)t->block_elems;
    switch (dtype) {
    case KILN_F32: memcpy(dst, src, (size_t)n * sizeof(float)); return true;
    case KILN_F16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = kiln_f32_to_f16(src[i]);
        return true;
    }
    case KILN_BF16: {
        uint16_t *h = dst;
        for (int64_t i = 0; i < n; i++) h[i] = kiln_f32_to_bf16(src[i]);
        return true;
    }
    case KILN_Q8_0: quant_q8_0(src, dst, nb); return true;
    case KILN_Q8_1: quant_q8_1(src, dst, nb); return true;
    case KILN_Q8_K: quant_q8_k(src, dst, nb); return true;
    default: return false;
    }
}
