// Portable kernels: the fallback on CPUs without AVX2, and the plainest
// statement of what the SIMD kernels compute (see simd_kernels.h).
#include "backend/cpu/simd_kernels.h"

// The terms that do not need the per-element dot: mins and code offsets.
static float panel_corrections(const kiln_panel *p, const kiln_act *a, int r, int t) {
    const float *mw = p->mw + (int64_t)r * p->gp, *sx = a->sx + (int64_t)t * a->gp;
    const float *dw16 = p->dw16 + (int64_t)r * 2 * p->gp, *xs16 = a->xs16 + (int64_t)t * 2 * a->gp;
    float mins = 0.0f, offs = 0.0f;
    for (int i = 0; i < p->g; i++) mins += mw[i] * sx[i];
    for (int h = 0; h < 2 * p->g; h++) offs += dw16[h] * xs16[h];
    return mins - (float)p->offset * offs;
}

void kiln_qkernel_scalar(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy, int nrows) {
    for (int t = t0; t < t1; t++) {
        const int8_t *xq = a->q + (int64_t)t * a->gp * KILN_GROUP;
        const float *dx = a->dx + (int64_t)t * a->gp;
        for (int r = 0; r < nrows; r++) {
            const uint8_t *wq = p->q + (int64_t)r * p->gp * KILN_GROUP;
            const float *dw16 = p->dw16 + (int64_t)r * 2 * p->gp;
            float acc = 0.0f;
            for (int i = 0; i < p->g; i++) {
                int s0 = 0, s1 = 0;
                for (int j = 0; j < 16; j++) {
                    s0 += wq[i * 32 + j] * xq[i * 32 + j];
                    s1 += wq[i * 32 + 16 + j] * xq[i * 32 + 16 + j];
                }
                acc += dx[i] * (dw16[2 * i] * (float)s0 + dw16[2 * i + 1] * (float)s1);
            }
            y[(int64_t)t * ldy + r] = acc + panel_corrections(p, a, r, t);
        }
    }
}

void kiln_fkernel_scalar(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1, float *y,
                         int64_t ldy, int nrows) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (int64_t)t * k;
        for (int r = 0; r < nrows; r++) {
            float acc = 0.0f;
            for (int64_t i = 0; i < k; i++) acc += rows[r][i] * xt[i];
            y[(int64_t)t * ldy + r] = acc;
        }
    }
}
