// kiln_cpu_matmul: the driver. Quantizes the activations once per call into a
// shared buffer, then each thread walks its share of the output rows a panel
// of KILN_MR rows at a time: unpack the panel once, multiply it with every
// token (so each weight byte read from memory is used n_tokens times).
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/simd_kernels.h"

bool kiln_cpu_matmul_supports(kiln_dtype dtype) {
    switch (dtype) {
    case KILN_F32:
    case KILN_F16:
    case KILN_BF16:
    case KILN_Q4_0:
    case KILN_Q4_1:
    case KILN_Q5_0:
    case KILN_Q5_1:
    case KILN_Q8_0:
    case KILN_Q4_K:
    case KILN_Q5_K:
    case KILN_Q6_K: return true;
    default: return false;
    }
}

// A grow-only scratch buffer, zeroed when it grows (so padding is never NaN).
typedef struct scratch {
    void *p;
    size_t cap;
} scratch;

static void *scratch_get(scratch *s, size_t bytes) {
    if (bytes <= s->cap) return s->p;
    const size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(64, rounded);
    if (!p) return NULL;
    memset(p, 0, rounded);
    free(s->p);
    s->p = p;
    s->cap = rounded;
    return p;
}

// Activations: owned by whichever team thread ran the `single` that filled
// them; the closing barrier of every call keeps it from being regrown while
// another thread still reads it. Panels: private to each thread.
static _Thread_local scratch act_scratch, panel_scratch;

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

static kiln_act_kind act_kind_of(kiln_dtype dtype) {
    return dtype == KILN_Q4_K || dtype == KILN_Q5_K || dtype == KILN_Q6_K ? KILN_ACT_Q8_K : KILN_ACT_Q8_32;
}

static void fill_nan(float *y, int64_t ldy, int n_tokens, int64_t r0, int64_t r1) {
    for (int t = 0; t < n_tokens; t++)
        for (int64_t r = r0; r < r1; r++) y[(int64_t)t * ldy + r] = NAN;
}

// The rows [r0, r1) of one thread, in whole tiles.
static void thread_rows(int64_t rows, int tid, int nth, int64_t *r0, int64_t *r1) {
    const int64_t tiles = (rows + KILN_MR - 1) / KILN_MR;
    const int64_t per = (tiles + nth - 1) / nth;
    *r0 = per * tid * KILN_MR;
    *r1 = per * (tid + 1) * KILN_MR;
    if (*r0 > rows) *r0 = rows;
    if (*r1 > rows) *r1 = rows;
}

// Float activations: F32 rows are used in place, F16/BF16 rows converted, and
// (precise mode) quantized rows dequantized with the scalar reference, a panel
// at a time: the model is never dequantized as a whole.
static void matmul_float(const kiln_tensor *w, const float *x, int n, float *y, int64_t ldy, int64_t r0, int64_t r1,
                         kiln_simd_level level) {
    const int64_t k = w->ne[0];
    const kiln_dtype_traits *traits = kiln_dtype_info((uint32_t)w->dtype);
    uint64_t row_bytes = 0;
    kiln_dtype_row_bytes(w->dtype, (uint64_t)k, &row_bytes);
    float *panel = NULL;
    if (w->dtype != KILN_F32) {
        panel = scratch_get(&panel_scratch, (size_t)KILN_MR * (size_t)k * sizeof(float));
        if (!panel) {
            fill_nan(y, ldy, n, r0, r1);
            return;
        }
    }
    const kiln_fkernel_fn kernel = level == KILN_SIMD_AVX512 ? kiln_fkernel_avx512
                                   : level == KILN_SIMD_AVX2 ? kiln_fkernel_avx2
                                                             : kiln_fkernel_scalar;
    for (int64_t r = r0; r < r1; r += KILN_MR) {
        const int nrows = r1 - r < KILN_MR ? (int)(r1 - r) : KILN_MR;
        const float *rows[KILN_MR];
        for (int i = 0; i < KILN_MR; i++) {
            const int src = i < nrows ? i : 0; // pad with a real row; its results are dropped
            const uint8_t *row = (const uint8_t *)w->data + (size_t)(r + src) * (size_t)row_bytes;
            if (w->dtype == KILN_F32) {
                rows[i] = (const float *)row;
            } else {
                rows[i] = panel + (size_t)i * (size_t)k;
                if (i >= nrows) continue;
                if (traits->is_quantized)
                    kiln_dequantize_row(w->dtype, row, panel + (size_t)i * (size_t)k, k);
                else
                    kiln_convert_row(w->dtype, row, panel + (size_t)i * (size_t)k, k, level);
            }
        }
        kernel(rows, k, x, 0, n, y + r, ldy, nrows);
    }
}

// One product of a fused call: weight, output, output row stride.
typedef struct matmul_job {
    const kiln_tensor *w;
    float *y;
    int64_t ldy;
} matmul_job;

// Runs on every thread of the current team (a team of one outside parallel).
// All jobs share x and have the same type and width, so the activations are
// quantized once for all of them (Q, K and V; gate and up).
static void matmul_team(const matmul_job *jobs, int n_jobs, const float *x, int n, bool float_act) {
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
    const kiln_simd_level level = kiln_simd_level_now();
    const kiln_dtype dtype = jobs[0].w->dtype;
    const int64_t k = jobs[0].w->ne[0];
    int64_t r0, r1;

    if (float_act || dtype == KILN_F32 || dtype == KILN_F16 || dtype == KILN_BF16) {
        for (int j = 0; j < n_jobs; j++) {
            thread_rows(jobs[j].w->ne[1], tid, nth, &r0, &r1);
            matmul_float(jobs[j].w, x, n, jobs[j].y, jobs[j].ldy, r0, r1, level);
        }
#pragma omp barrier
        return;
    }

    const int g = (int)(k / KILN_GROUP), gp = (g + KILN_GPAD - 1) / KILN_GPAD * KILN_GPAD;
    const size_t q_bytes = round64((size_t)n * (size_t)gp * KILN_GROUP);
    const size_t f_bytes = round64((size_t)n * (size_t)gp * sizeof(float));
    void *abuf;
#pragma omp single copyprivate(abuf)
    abuf = scratch_get(&act_scratch, q_bytes + 4 * f_bytes);
    if (!abuf) {
        for (int j = 0; j < n_jobs; j++) {
            thread_rows(jobs[j].w->ne[1], tid, nth, &r0, &r1);
            fill_nan(jobs[j].y, jobs[j].ldy, n, r0, r1);
        }
#pragma omp barrier
        return;
    }
    const kiln_act act = {
        .g = g,
        .gp = gp,
        .q = abuf,
        .dx = (float *)((char *)abuf + q_bytes),
        .sx = (float *)((char *)abuf + q_bytes + f_bytes),
        .xs16 = (float *)((char *)abuf + q_bytes + 2 * f_bytes),
    };
    // Every thread quantizes a share of the tokens; all wait for all.
    kiln_quantize_act(act_kind_of(dtype), x, k, (int)((int64_t)n * tid / nth), (int)((int64_t)n * (tid + 1) / nth),
                      &act, level);
#pragma omp barrier

    const size_t pq = round64((size_t)KILN_MR * (size_t)gp * KILN_GROUP);
    const size_t pf = round64((size_t)KILN_MR * (size_t)gp * sizeof(float));
    char *pbuf = scratch_get(&panel_scratch, pq + 3 * pf);
    const kiln_panel panel = {
        .g = g,
        .gp = gp,
        .offset = kiln_panel_offset(dtype),
        .q = (uint8_t *)pbuf,
        .dw16 = (float *)(pbuf + pq),
        .mw = (float *)(pbuf + pq + 2 * pf),
    };
    const kiln_qkernel_fn kernel = level == KILN_SIMD_AVX512 ? kiln_qkernel_avx512
                                   : level == KILN_SIMD_AVX2 ? kiln_qkernel_avx2
                                                             : kiln_qkernel_scalar;
    uint64_t row_bytes = 0;
    kiln_dtype_row_bytes(dtype, (uint64_t)k, &row_bytes);
    for (int j = 0; j < n_jobs; j++) {
        const matmul_job *job = &jobs[j];
        thread_rows(job->w->ne[1], tid, nth, &r0, &r1);
        if (r0 < r1 && !pbuf) {
            fill_nan(job->y, job->ldy, n, r0, r1);
            continue;
        }
        for (int64_t r = r0; r < r1; r += KILN_MR) {
            const int nrows = r1 - r < KILN_MR ? (int)(r1 - r) : KILN_MR;
            kiln_unpack_rows(dtype, (const uint8_t *)job->w->data + (size_t)r * row_bytes, row_bytes, nrows, &panel,
                             level);
            kernel(&panel, &act, 0, n, job->y + r, job->ldy, nrows);
        }
    }
    // The activation buffer is reused by the next call: nobody may leave
    // while others still read it. Also makes all of y visible on return.
#pragma omp barrier
}

static bool shape_ok(const kiln_tensor *w) {
    const kiln_dtype_traits *t = kiln_dtype_info((uint32_t)w->dtype);
    return t && kiln_cpu_matmul_supports(w->dtype) && w->ne[0] > 0 && w->ne[0] % (t->is_quantized ? 32 : 1) == 0 &&
           w->ne[0] % t->block_elems == 0 && w->ne[0] <= INT32_MAX / 2;
}

static void run_jobs(const matmul_job *jobs, int n_jobs, const float *x, int n_tokens, int n_threads,
                     bool float_activations) {
    if (omp_in_parallel() || n_threads <= 1) {
        matmul_team(jobs, n_jobs, x, n_tokens, float_activations);
    } else {
#pragma omp parallel num_threads(n_threads)
        matmul_team(jobs, n_jobs, x, n_tokens, float_activations);
    }
}

void kiln_cpu_matmul(const kiln_tensor *w, const float *x, int n_tokens, float *y, int64_t ldy, int n_threads) {
    kiln_cpu_matmul_ex(w, x, n_tokens, y, ldy, n_threads, false);
}

void kiln_cpu_matmul_ex(const kiln_tensor *w, const float *x, int n_tokens, float *y, int64_t ldy, int n_threads,
                        bool float_activations) {
    if (n_tokens <= 0 || w->ne[1] <= 0) return;
    // Callers (the model loader) validate shapes; a mismatch here is a bug, and
    // NaN outputs make it visible without reading out of bounds.
    if (!shape_ok(w)) {
        fill_nan(y, ldy, n_tokens, 0, w->ne[1]);
        return;
    }
    const matmul_job job = {w, y, ldy};
    run_jobs(&job, 1, x, n_tokens, n_threads, float_activations);
}

void kiln_cpu_matmul_multi(const kiln_tensor *const *ws, float *const *ys, int count, const float *x, int n_tokens,
                           int n_threads, bool float_activations) {
    matmul_job jobs[KILN_MATMUL_MAX_FUSED];
    bool fusable = count <= KILN_MATMUL_MAX_FUSED;
    for (int i = 0; fusable && i < count; i++)
        fusable = shape_ok(ws[i]) && ws[i]->ne[1] > 0 && ws[i]->dtype == ws[0]->dtype && ws[i]->ne[0] == ws[0]->ne[0];
    if (!fusable || n_tokens <= 0) {
        for (int i = 0; i < count; i++) kiln_cpu_matmul_ex(ws[i], x, n_tokens, ys[i], ws[i]->ne[1], n_threads, float_activations);
        return;
    }
    for (int i = 0; i < count; i++) jobs[i] = (matmul_job){ws[i], ys[i], ws[i]->ne[1]};
    run_jobs(jobs, count, x, n_tokens, n_threads, float_activations);
}
