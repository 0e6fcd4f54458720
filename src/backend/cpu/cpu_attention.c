// Attention over the paged KV cache on the CPU. Work items are (token, KV
// head): the query heads that share a KV head are done together, so each K
// and V row is loaded once for the whole group (or, with too few items for
// the threads, one head each). Three passes per item: scores, softmax
// (vectorised exp), weighted sum of V.
#include <math.h>
#include <stdlib.h>
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

// Inlined into attend_item below, so that they take its target.
static inline float dot_f32(const float *a, const float *b, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline void axpy_f32(float *acc, float w, const float *v, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) acc[i] += w * v[i];
}

// e^x for x <= 0 (softmax after subtracting the max): 2^(x log2 e) split into
// an integer power and a degree-6 polynomial of the fraction; relative error
// ~2e-7, and plain arithmetic, so the loop below vectorises.
static inline float softmax_inplace(float *s, int n) {
    float max = -INFINITY, sum = 0.0f;
    for (int i = 0; i < n; i++) max = s[i] > max ? s[i] : max;
#pragma omp simd reduction(+ : sum)
    for (int i = 0; i < n; i++) {
        float t = (s[i] - max) * 1.44269504088896341f;
        t = t < -126.0f ? -126.0f : t;
        float whole = floorf(t), f = t - whole;
        float p = 1.535336188319500e-4f;
        p = p * f + 1.339887440266574e-3f;
        p = p * f + 9.618437357674640e-3f;
        p = p * f + 5.550332471162809e-2f;
        p = p * f + 2.402264791363012e-1f;
        p = p * f + 6.931472028550421e-1f;
        p = p * f + 1.0f;
        union { uint32_t u; float f; } scale = {.u = (uint32_t)((int32_t)whole + 127) << 23};
        s[i] = p * scale.f;
        sum += s[i];
    }
    return sum;
}

static void load_f16(const uint16_t *src, float *dst, int n) {
    for (int i = 0; i < n; i++) dst[i] = kiln_f16_to_f32(src[i]);
}

// One work item: heads [h0, h0 + count) of token t, all reading KV head kvh.
// Compiled per instruction set with the helpers above inlined: an indirect
// call per position and head would cost as much as the 64-element dot itself.
KILN_CLONES static void attend_item(const kiln_kv_view *kv, kiln_kv_layer layer, int seq, int len, int kvh,
                                    const float *qg, int count, float scale, float *scores, float *og) {
    const int d = kv->head_dim, bs = kv->block_size;
    const size_t row = (size_t)kv->n_kv_heads * d;
    const int32_t *table = kv->block_tables + (size_t)seq * kv->max_blocks_per_seq;
    float buf[512]; // head_dim <= 512 is checked at model load
    // Walk the sequence a block at a time: slots inside a block are contiguous.
    for (int p0 = 0; p0 < len; p0 += bs) {
        const size_t base = (size_t)table[p0 / bs] * bs * row + (size_t)kvh * d;
        const int in_block = len - p0 < bs ? len - p0 : bs;
        for (int j = 0; j < in_block; j++) {
            const float *kp = (const float *)layer.k + base + (size_t)j * row;
            if (kv->dtype == KILN_F16) {
                load_f16((const uint16_t *)layer.k + base + (size_t)j * row, buf, d);
                kp = buf;
            }
            for (int g = 0; g < count; g++)
                scores[(size_t)g * len + p0 + j] = dot_f32(qg + (size_t)g * d, kp, d) * scale;
        }
    }
    float inv_sum[64]; // n_heads / n_kv_heads <= 64 is checked at model load
    for (int g = 0; g < count; g++) inv_sum[g] = 1.0f / softmax_inplace(scores + (size_t)g * len, len);
    memset(og, 0, sizeof(float) * (size_t)count * d);
    for (int p0 = 0; p0 < len; p0 += bs) {
        const size_t base = (size_t)table[p0 / bs] * bs * row + (size_t)kvh * d;
        const int in_block = len - p0 < bs ? len - p0 : bs;
        for (int j = 0; j < in_block; j++) {
            const float *vp = (const float *)layer.v + base + (size_t)j * row;
            if (kv->dtype == KILN_F16) {
                load_f16((const uint16_t *)layer.v + base + (size_t)j * row, buf, d);
                vp = buf;
            }
            for (int g = 0; g < count; g++) axpy_f32(og + (size_t)g * d, scores[(size_t)g * len + p0 + j], vp, d);
        }
    }
    for (int g = 0; g < count; g++)
        for (int i = 0; i < d; i++) og[(size_t)g * d + i] *= inv_sum[g];
}

void kiln_cpu_attention(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                        const float *q, int n_heads, float scale, float *out) {
    const int d = kv->head_dim, group = n_heads / kv->n_kv_heads;
    // Heads per work item: a whole group shares each K/V load, unless that
    // leaves too few items to keep every thread busy (decode of one token).
    const int per_item = batch->n_tokens * kv->n_kv_heads >= 4 * kiln_cpu_threads(be) ? group : 1;
    const int items_per_token = n_heads / per_item, n_items = batch->n_tokens * items_per_token;
    int max_len = 1;
    for (int t = 0; t < batch->n_tokens; t++) max_len = batch->pos[t] + 1 > max_len ? batch->pos[t] + 1 : max_len;
#pragma omp parallel num_threads(kiln_cpu_threads(be))
    {
        // Scores of one item: [heads][positions].
        float *scores = malloc(sizeof(float) * (size_t)per_item * (size_t)max_len);
#pragma omp for schedule(dynamic, 1)
        for (int item = 0; item < n_items; item++) {
            const int t = item / items_per_token, h0 = (item % items_per_token) * per_item;
            float *og = out + ((size_t)t * n_heads + (size_t)h0) * d;
            if (!scores) { // out of memory: make it visible rather than silently stale
                for (int i = 0; i < per_item * d; i++) og[i] = NAN;
                continue;
            }
            attend_item(kv, layer, batch->seq[t], batch->pos[t] + 1, h0 / group,
                        q + ((size_t)t * n_heads + (size_t)h0) * d, per_item, scale, scores, og);
        }
        free(scores);
    }
}
