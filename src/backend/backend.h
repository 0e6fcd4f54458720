// The seam between model code and devices. A backend is a table of the same
// operations for every device (CPU now, CUDA next); model code calls only
// these, on buffers the backend allocated. Activations are float32; weights
// stay in their stored type (kiln_tensor views that the backend prepared).
#ifndef KILN_BACKEND_BACKEND_H
#define KILN_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

// Paged KV cache, as the backend sees it: each layer's K and V live in
// fixed-size blocks of `block_size` token slots; a sequence's logical position
// p lives in slot block_table[p / block_size] * block_size + p % block_size.
// Slot layout: [n_kv_heads][head_dim] floats (dtype KILN_F32 or KILN_F16).
typedef struct kiln_kv_layer {
    void *k;
    void *v;
} kiln_kv_layer;

typedef struct kiln_kv_view {
    kiln_dtype dtype;
    int block_size;
    int n_kv_heads;
    int head_dim;
    int max_blocks_per_seq;     // row length of block_tables
    const int32_t *block_tables; // [n_seqs][max_blocks_per_seq]
} kiln_kv_view;

// Where each token of a batch sits: which sequence (row of block_tables), at
// which position. Tokens of one sequence are contiguous and in increasing
// position; token i attends to positions 0..pos[i] of its sequence.
typedef struct kiln_batch_layout {
    int n_tokens;
    const int32_t *pos; // [n_tokens]
    const int32_t *seq; // [n_tokens]
} kiln_batch_layout;

typedef struct kiln_rope_params {
    int rot_dim;              // rotated dims of each head (<= head_dim)
    float theta;              // base
    const float *freq_factors; // [rot_dim / 2] divisors of the frequencies (Llama 3 scaling) or NULL
    int interleaved;          // 1: pairs (2i, 2i+1) as in GGUF llama; 0: halves (i, i + rot_dim/2) as in HF
} kiln_rope_params;

typedef struct kiln_backend kiln_backend;

typedef struct kiln_backend_ops {
    const char *name;
    void (*destroy)(kiln_backend *be);

    void *(*alloc)(kiln_backend *be, size_t bytes); // zeroed; NULL on failure
    void (*free)(kiln_backend *be, void *ptr);

    // out[t][dim] = row ids[t] of table (ne[0] = dim)
    void (*get_rows)(kiln_backend *be, const kiln_tensor *table, const int32_t *ids, int n, float *out);
    // y[t][w->ne[1]] = W x[t], x[t] has w->ne[0] floats; rows of y are ldy apart
    void (*matmul)(kiln_backend *be, const kiln_tensor *w, const float *x, int n, float *y, int64_t ldy);
    // ys[i] = W_i x for count <= 4 weights that share the input (Q, K, V;
    // gate, up): one pass, the input prepared once; rows of ys[i] are ws[i]->ne[1] apart
    void (*matmul_multi)(kiln_backend *be, const kiln_tensor *const *ws, float *const *ys, int count, const float *x,
                         int n);
    // y[t][i] += bias[i]
    void (*add_bias)(kiln_backend *be, float *y, const float *bias, int n, int dim);
    // y[t] = x[t] / rms(x[t]) * weight; y may alias x
    void (*rmsnorm)(kiln_backend *be, const float *x, const float *weight, float *y, int n, int dim, float eps);
    // y[i] += x[i]
    void (*add)(kiln_backend *be, float *y, const float *x, size_t n);
    // in-place rotation of x[t][n_heads][head_dim] at positions pos[t]
    void (*rope)(kiln_backend *be, float *x, int n, int n_heads, int head_dim, const int32_t *pos,
                 const kiln_rope_params *rope);
    // writes k[t], v[t] ([n_kv_heads][head_dim]) into the slots of their positions
    void (*kv_store)(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                     const float *k, const float *v);
    // out[t][n_heads][head_dim] = softmax(q k^T * scale) v over positions 0..pos[t]
    // of the token's sequence; grouped-query: head h reads kv head h / (n_heads / n_kv_heads)
    void (*attention)(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                      const float *q, int n_heads, float scale, float *out);
    // out[i] = silu(gate[i]) * up[i]
    void (*swiglu)(kiln_backend *be, const float *gate, const float *up, float *out, size_t n);
    // copies n bytes within backend memory, or between it and host memory
    void (*copy)(kiln_backend *be, void *dst, const void *src, size_t n);
    void (*to_host)(kiln_backend *be, void *dst, const void *src, size_t n);
    void (*from_host)(kiln_backend *be, void *dst, const void *src, size_t n);
} kiln_backend_ops;

struct kiln_backend {
    const kiln_backend_ops *ops;
    int n_threads;
    bool precise; // float activations in matrix products (no 8-bit rounding)
    void *impl;
};

kiln_status kiln_backend_cpu_create(int n_threads, bool precise, kiln_backend **out);

static inline void kiln_backend_destroy(kiln_backend *be) {
    if (be) be->ops->destroy(be);
}

#endif
