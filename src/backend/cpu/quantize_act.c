// Activation quantization for the integer kernels. Same formulas and float
// operation order as kiln_quantize_row (ggml's *_ref), so the kernels see
// exactly the activations the test oracle sees.
#include <math.h>
#include <string.h>

#include "backend/cpu/simd_kernels.h"
#include "core/dtype.h"

// Q8_0 / Q8_1 codes of one group of 32; returns the f16-rounded scale.
static float quant_group32(const float *x, int8_t *q) {
    float amax = 0.0f;
    for (int j = 0; j < KILN_GROUP; j++) amax = fmaxf(amax, fabsf(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int j = 0; j < KILN_GROUP; j++) q[j] = (int8_t)roundf(x[j] * id);
    return kiln_f16_to_f32(kiln_f32_to_f16(d));
}

// ggml's nearest_int (round half to even), valid for |x| < 2^22.
static int nearest_int(float x) {
    const float val = x + 12582912.f;
    int32_t i;
    memcpy(&i, &val, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

// Q8_K codes of one super-block of 256; returns its scale.
static float quant_block256(const float *x, int8_t *q) {
    float max = 0.0f, amax = 0.0f;
    for (int j = 0; j < 256; j++) {
        const float ax = fabsf(x[j]);
        if (ax > amax) {
            amax = ax;
            max = x[j];
        }
    }
    if (amax == 0.0f) {
        memset(q, 0, 256);
        return 0.0f;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < 256; j++) {
        const int v = nearest_int(iscale * x[j]);
        q[j] = (int8_t)(v < 127 ? v : 127);
    }
    return 1.0f / iscale;
}

static void quantize_token(kiln_act_kind kind, const float *x, int64_t k, int8_t *q, float *dx, float *sx,
                           float *xs16, int g, int gp) {
    if (kind == KILN_ACT_Q8_K) {
        for (int64_t b = 0; b < k / 256; b++) {
            const float d = quant_block256(x + b * 256, q + b * 256);
            for (int j = 0; j < 8; j++) dx[b * 8 + j] = d;
        }
    } else {
        for (int i = 0; i < g; i++) dx[i] = quant_group32(x + (int64_t)i * KILN_GROUP, q + (int64_t)i * KILN_GROUP);
    }
    for (int i = 0; i < g; i++) {
        int s0 = 0, s1 = 0;
        for (int j = 0; j < 16; j++) {
            s0 += q[i * KILN_GROUP + j];
            s1 += q[i * KILN_GROUP + 16 + j];
        }
        // Exact for Q8_0/Q8_1 (|sum| < 2^12 times an 11-bit f16 scale); one
        // float rounding for Q8_K, whose scale is a full float.
        sx[i] = dx[i] * (float)(s0 + s1);
        xs16[2 * i] = dx[i] * (float)s0;
        xs16[2 * i + 1] = dx[i] * (float)s1;
    }
    memset(q + (int64_t)g * KILN_GROUP, 0, (size_t)(gp - g) * KILN_GROUP);
    for (int i = g; i < gp; i++) {
        dx[i] = sx[i] = 0.0f;
        xs16[2 * i] = xs16[2 * i + 1] = 0.0f;
    }
}

void kiln_quantize_act(kiln_act_kind kind, const float *x, int64_t k, int t0, int t1, const kiln_act *a,
                       kiln_simd_level level) {
    (void)level;
    for (int t = t0; t < t1; t++) {
        quantize_token(kind, x + (int64_t)t * k, k, a->q + (int64_t)t * a->gp * KILN_GROUP, a->dx + (int64_t)t * a->gp,
                       a->sx + (int64_t)t * a->gp, a->xs16 + (int64_t)t * 2 * a->gp, a->g, a->gp);
    }
}
