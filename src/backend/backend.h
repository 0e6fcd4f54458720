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
    const int32_t *block_tables; // [n_seqs][max_blocks_per_seq] backend memory
} kiln_kv_view;

// Where each token of a batch sits: which sequence (row of block_tables), at
// which position. Tokens of one sequence are contiguous and in increasing
// position; token i attends to positions 0..pos[i] of its sequence.
typedef struct kiln_batch_layout {
    int n_tokens;
    const int32_t *pos; // [n_tokens] backend memory
    const int32_t *seq; // [n_tokens] backend memory
    // All tokens belong to one sequence at consecutive positions (a prompt
    // chunk); lets a backend pick its prefill attention kernel.
    bool one_seq;
} kiln_batch_layout;

typedef struct kiln_rope_params {
    int rot_dim;              // rotated dims of each head (<= head_dim)
    float theta;              // base
    const float *freq_factors; // [rot_dim / 2] divisors of the frequencies (Llama 3 scaling) or NULL
    int interleaved;          // 1: pairs (2i, 2i+1) as in GGUF llama; 0: halves (i, i + rot_dim/2) as in HF
} kiln_rope_params;

typedef struct kiln_backend kiln_backend;

#define KILN_LINEAR_MAX 4

// RoPE and the KV-cache write folded into the Q/K/V projection (count 3):
// after the products, y[0] (n_heads heads) and y[1] are rotated at the batch's
// positions and k, v (y[1], y[2]) stored into the layer's cache, as
// rope_kv_store does. A backend may fuse this into the product's epilogue.
typedef struct kiln_linear_rope {
    const kiln_kv_view *kv;
    kiln_kv_layer layer;
    const kiln_batch_layout *batch;
    const kiln_rope_params *params;
    int n_heads;
} kiln_linear_rope;

// ys[i] = W_i x (+ bias_i) for up to KILN_LINEAR_MAX weights that share the
// input x [n][k] (Q, K, V; gate, up): the input is prepared once.
//   accumulate: y[0] += W_0 x (the residual add; count must be 1)
//   glu:        count 2 (gate, up): y[0] = silu(W_0 x) * (W_1 x); y[1] is
//               scratch the backend may or may not write
//   norm:       the input is RMSNorm(x) * norm (epsilon norm_eps), not x
//   rope:       see kiln_linear_rope (count 3, no accumulate, no glu)
typedef struct kiln_linear_args {
    int count;
    const kiln_tensor *w[KILN_LINEAR_MAX];
    const float *bias[KILN_LINEAR_MAX]; // [w[i]->ne[1]] or NULL
    float *y[KILN_LINEAR_MAX];          // [n][w[i]->ne[1]]
    const float *x;                     // [n][w[0]->ne[0]]
    int n;
    bool accumulate;
    bool glu;
    const float *norm;                  // [w[0]->ne[0]] or NULL
    float norm_eps;
    const kiln_linear_rope *rope;       // or NULL
    // Hand-offs between neighbouring operations, set only by the backend's
    // plan for the step (`plan`, backend/step.c), never by model code:
    // next_norm: the next operation reads y[0] (accumulate) through RMSNorm
    // with these weights ([w[0]->ne[1]]), so this one may prepare that read;
    // prepared_input: this operation is that next one (it may take what the
    // previous one prepared, if it did).
    const float *next_norm;
    bool prepared_input;
} kiln_linear_args;

// The SwiGLU feed-forward block with its residual add:
//   x[n][dim] += W_down (silu(W_gate h) * (W_up h))
// gate and up are [n][ffn] float buffers the backend may use as scratch (in
// any format: their contents afterwards are unspecified).
// With norm set, h is RMSNorm(h) * norm first (h may then be x itself).
typedef struct kiln_mlp_args {
    const kiln_tensor *w_gate, *w_up, *w_down;
    const float *h; // [n][dim] input
    float *x;       // [n][dim] residual stream
    float *gate, *up;
    int n;
    const float *norm; // [dim] or NULL
    float norm_eps;
    const float *next_norm; // the hand-offs of kiln_linear_args: for x (the down projection's output)
    bool prepared_input;    // for h (the gate and up products' input)
} kiln_mlp_args;

// Sampling done by the backend next to the logits (see kiln_cuda_sample):
// only the token id crosses to the host. u is a uniform number in [0, 1).
typedef struct kiln_backend_sample_args {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float u;
} kiln_backend_sample_args;

typedef struct kiln_backend_memory {
    uint64_t weights;   // bytes of weights in backend memory (0: used in place)
    uint64_t in_use;    // bytes the backend holds now
    uint64_t free;      // bytes the device still has (0: not known)
    uint64_t total;     // device memory (0: not known)
} kiln_backend_memory;

// One operation of a step as the model issued it, recorded so that the
// backend's plan sees the whole step before any of it runs (backend/step.c).
typedef enum kiln_op_kind {
    KILN_OP_GET_ROWS,
    KILN_OP_LINEAR,
    KILN_OP_MLP,
    KILN_OP_ATTENTION,
    KILN_OP_COPY,
} kiln_op_kind;

typedef struct kiln_op {
    kiln_op_kind kind;
    union {
        struct {
            const kiln_tensor *table;
            const int32_t *ids;
            int n;
            float *out;
        } get_rows;
        kiln_linear_args linear; // .rope points at `rope` below
        kiln_mlp_args mlp;
        struct {
            const kiln_kv_view *kv;
            kiln_kv_layer layer;
            const float *q;
            int n_heads;
            float scale;
            float *out;
        } attention;             // its batch is `batch` below
        struct {
            void *dst;
            const void *src;
            size_t n;
        } copy;
    };
    kiln_linear_rope rope;       // copies of what the arguments pointed at
    kiln_batch_layout batch;
} kiln_op;

// A backend is three tables, split as ggml splits its seam: the device
// (what it can do, its memory, the weights), its stream (transfers to and
// from the host, waiting, graphs), and the operations a step is made of.

typedef struct kiln_device_ops {
    const char *name;
    // The device in words ("2 threads, avx512-vnni kernels", the GPU's name).
    const char *(*describe)(kiln_backend *be);
    void (*destroy)(kiln_backend *be);
    void *(*alloc)(kiln_backend *be, size_t bytes); // zeroed; NULL on failure
    void (*free)(kiln_backend *be, void *ptr);
    void (*memory)(kiln_backend *be, kiln_backend_memory *out);
    // Weights. weight_bytes: backend memory a weight needs (0: the backend
    // reads the host copy in place); weight_load converts src into dst (that
    // many bytes of backend memory) and describes the result in *out.
    bool (*supports)(kiln_backend *be, kiln_dtype type);
    bool (*supports_head_dim)(kiln_backend *be, int head_dim);
    uint64_t (*weight_bytes)(kiln_backend *be, const kiln_tensor *src);
    kiln_status (*weight_load)(kiln_backend *be, const kiln_tensor *src, void *dst, kiln_tensor *out);
    // Waits until every weight_load has landed.
    kiln_status (*weights_done)(kiln_backend *be);
    // Optional: applies the engine's kernel choices (kiln_kernel_options in
    // kiln.h); a backend without choices leaves it NULL.
    kiln_status (*configure)(kiln_backend *be, const kiln_kernel_options *k);
} kiln_device_ops;

typedef struct kiln_stream_ops {
    void (*to_host)(kiln_backend *be, void *dst, const void *src, size_t n);
    void (*from_host)(kiln_backend *be, void *dst, const void *src, size_t n);
    // Status of the work queued so far (asynchronous backends report kernel
    // failures here); KILN_OK on synchronous ones.
    kiln_status (*sync)(kiln_backend *be);
    // The failures known so far, without waiting for queued work.
    kiln_status (*check)(kiln_backend *be);
    // Optional (NULL where the backend has none): records the work queued
    // between graph_begin and graph_end as a graph that graph_launch
    // replays; buffers keep their addresses.
    kiln_status (*graph_begin)(kiln_backend *be);
    kiln_status (*graph_end)(kiln_backend *be, void **graph);
    kiln_status (*graph_launch)(kiln_backend *be, void *graph);
    void (*graph_free)(kiln_backend *be, void *graph);
} kiln_stream_ops;

typedef struct kiln_backend_ops {
    // out[t][dim] = row ids[t] of table (ne[0] = dim)
    void (*get_rows)(kiln_backend *be, const kiln_tensor *table, const int32_t *ids, int n, float *out);
    void (*linear)(kiln_backend *be, const kiln_linear_args *a);
    void (*mlp)(kiln_backend *be, const kiln_mlp_args *a);
    // Rotates q [n][n_heads][head_dim] and k [n][n_kv_heads][head_dim] in
    // place at positions batch->pos, then writes k and v into the cache slots
    // of those positions.
    void (*rope_kv_store)(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer,
                          const kiln_batch_layout *batch, float *q, int n_heads, float *k, const float *v,
                          const kiln_rope_params *rope);
    // out[t][n_heads][head_dim] = softmax(q k^T * scale) v over positions 0..pos[t]
    // of the token's sequence; grouped-query: head h reads kv head h / (n_heads / n_kv_heads)
    void (*attention)(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                      const float *q, int n_heads, float scale, float *out);
    // Copies n bytes within backend memory, in the order of the other operations.
    void (*copy)(kiln_backend *be, void *dst, const void *src, size_t n);

    // Optional (NULL where the backend has none).
    // Draws a token from logits [vocab] in backend memory.
    kiln_status (*sample)(kiln_backend *be, const float *logits, int vocab, const kiln_backend_sample_args *a,
                          int32_t *id);
    // The same in two halves, so that work can be queued between them:
    // sample_start queues the draw (and, when dev_id is not NULL, a copy of
    // the id into that backend int32); sample_finish waits for the draw alone
    // (not for work queued after it) and gives the id.
    kiln_status (*sample_start)(kiln_backend *be, const float *logits, int vocab, const kiln_backend_sample_args *a,
                                int32_t *dev_id);
    kiln_status (*sample_finish)(kiln_backend *be, int32_t *id);
    // The backend's plan for a step, given all its operations in order
    // before any runs; it may set their hand-off fields (next_norm,
    // prepared_input). Backends with a plan get their steps recorded
    // (kiln_step_begin in backend/step.h).
    void (*plan)(kiln_backend *be, kiln_op *ops, int n);
} kiln_backend_ops;

// What every backend states about its device; its own settings (threads,
// streams, handles) live behind impl.
struct kiln_backend {
    const kiln_device_ops *device;
    const kiln_stream_ops *stream;
    const kiln_backend_ops *ops;
    kiln_dtype kv_dtype; // what its KV cache stores
    int step_tokens;     // tokens a prompt step should carry for its matrix products to reach their rate
    void *impl;
};

kiln_status kiln_backend_cpu_create(int n_threads, bool precise, kiln_backend **out);

// The CUDA backend on device `device`; KILN_ERR_UNSUPPORTED with a message
// when kiln was built without CUDA or no usable GPU is present.
kiln_status kiln_backend_cuda_create(int device, kiln_backend **out);
// Number of usable CUDA devices (0 in a CPU-only build or without a driver).
int kiln_cuda_device_count(void);

static inline void kiln_backend_destroy(kiln_backend *be) {
    if (be) be->device->destroy(be);
}

#endif
