// Attention over the paged KV cache on the CPU: one pass per (token, head)
// with an online softmax, so no score buffer of context length is needed.
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "core/dtype.h"

#define KILN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

static inline size_t kv_slot(const kiln_kv_view *kv, int seq, int p) {
    int32_t block = kv->block_tables[(size_t)seq * kv->max_blocks_per_seq + p / kv->block_size];
    return (size_t)block * kv->block_size + (size_t)(p % kv->block_size);
}

static void store_row(kiln_dtype dtype, void *cache, size_t offset, const float *src, int n) {
    if (dtype == KILN_F16) {
        uint16_t *dst = (uint16_t *)cache + offset;
        for (int i = 0; i < n; i++) dst[i] = kiln_f32_to_f16(src[i]);
    } else {
        memcpy((float *)cache + offset, src, (size_t)n * sizeof(float));
    }
}

void kiln_cpu_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                       const float *k, const float *v) {
    (void)be;
    const int row = kv->n_kv_heads * kv->head_dim;
    for (int t = 0; t < batch->n_tokens; t++) {
        size_t offset = kv_slot(kv, batch->seq[t], batch->pos[t]) * (size_t)row;
        store_row(kv->dtype, layer.k, offset, k + (size_t)t * row, row);
        store_row(kv->dtype, layer.v, offset, v + (size_t)t * row, row);
    }
}

KILN_CLONES static float dot_f32(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

KILN_CLONES static void scale_axpy_f32(float *acc, float acc_scale, float w, const float *v, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) acc[i] = acc[i] * acc_scale + w * v[i];
}

static void load_f16(const uint16_t *src, float *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = kiln_f16_to_f32(src[i]);
}

void kiln_cpu_attention(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                        const float *q, int n_heads, float scale, float *out) {
    const int d = kv->head_dim, group = n_heads / kv->n_kv_heads;
    const size_t row = (size_t)kv->n_kv_heads * d;
    const int n_items = batch->n_tokens * n_heads;
#pragma omp parallel for num_threads(be->n_threads) schedule(dynamic, 4)
    for (int item = 0; item < n_items; item++) {
        const int t = item / n_heads, h = item % n_heads, kvh = h / group;
        const float *qh = q + (size_t)item * d;
        float *acc = out + (size_t)item * d;
        float kbuf[512], vbuf[512]; // head_dim <= 512 is checked at model load
        float max = -INFINITY, sum = 0.0f;
        memset(acc, 0, (size_t)d * sizeof(float));
        for (int p = 0; p <= batch->pos[t]; p++) {
            size_t offset = kv_slot(kv, batch->seq[t], p) * row + (size_t)kvh * d;
            const float *kp, *vp;
            if (kv->dtype == KILN_F16) {
                load_f16((const uint16_t *)layer.k + offset, kbuf, d);
                load_f16((const uint16_t *)layer.v + offset, vbuf, d);
                kp = kbuf;
                vp = vbuf;
            } else {
                kp = (const float *)layer.k + offset;
                vp = (const float *)layer.v + offset;
            }
            float s = dot_f32(qh, kp, d) * scale;
            float acc_scale = 1.0f;
            if (s > max) {
                acc_scale = expf(max - s);
                sum *= acc_scale;
                max = s;
            }
            float w = expf(s - max);
            sum += w;
            scale_axpy_f32(acc, acc_scale, w, vp, d);
        }
        float inv = 1.0f / sum;
        for (int i = 0; i < d; i++) acc[i] *= inv;
    }
}
