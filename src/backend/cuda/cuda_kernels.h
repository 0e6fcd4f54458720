// Launchers of kiln's own CUDA kernels, callable from C. Every launcher only
// enqueues work on `stream` (no synchronisation, no allocation), so a decode
// step can be captured in a CUDA graph. Pointers are device memory unless a
// comment says otherwise. Shapes are row-major, first index slowest.
#ifndef KILN_BACKEND_CUDA_KERNELS_H
#define KILN_BACKEND_CUDA_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// ---- Attention over the paged KV cache (cuda_attention.cu) ---------------
//
// Cache layout (dtype F16): a layer's K (and V) is an array of blocks of
// `block_size` slots; slot s of block b holds [n_kv_heads][head_dim] halves at
// element offset ((b * block_size + s) * n_kv_heads + h) * head_dim. Logical
// position p of sequence q lives in block block_tables[q * max_blocks_per_seq
// + p / block_size], slot p % block_size.
typedef struct kiln_cuda_kv {
    const void *k;              // __half, layer's K blocks
    const void *v;              // __half, layer's V blocks
    const int32_t *block_tables; // [n_seqs][max_blocks_per_seq] device
    int max_blocks_per_seq;
    int block_size;
    int n_kv_heads;
    int head_dim;               // 64, 128 (others: see kiln_cuda_attention_supports)
} kiln_cuda_kv;

// Token t (of n_tokens) belongs to sequence seq[t] at position pos[t] and
// attends to positions 0..pos[t] of that sequence (causal). q and out are
// [n_tokens][n_heads][head_dim] float32; grouped-query: query head h reads kv
// head h / (n_heads / n_kv_heads). out = softmax(q k^T * scale) v.
typedef struct kiln_cuda_attention_args {
    kiln_cuda_kv kv;
    int n_tokens;
    const int32_t *pos;  // [n_tokens] device
    const int32_t *seq;  // [n_tokens] device
    const float *q;
    float *out;
    int n_heads;
    float scale;
    // Decode: kiln_cuda_attention_decode_counters() bytes of counters, zero
    // before the first launch (kiln_cuda_attention_decode_counters_clear);
    // every launch leaves them zero, whatever its shape.
    int *counters;
} kiln_cuda_attention_args;

bool kiln_cuda_attention_supports(int head_dim);

// Decode (split-K / flash-decoding): each token independently, its positions
// split into chunks whose partial softmax results are combined, all in one
// launch. The grid depends only on n_tokens, n_heads and
// kv.max_blocks_per_seq, never on the positions, so a captured graph stays
// valid as the sequence grows. q and out must be 16-byte aligned.
//
// workspace (16-byte aligned): at least kiln_cuda_attention_decode_workspace()
// bytes of partial results, no initial contents needed; a.counters: see
// kiln_cuda_attention_args. Launches sharing them must not run concurrently.
size_t kiln_cuda_attention_decode_workspace(int n_tokens, int n_heads, int head_dim, int max_blocks_per_seq);
size_t kiln_cuda_attention_decode_counters(int n_tokens, int n_heads);
// Zeroes `bytes` of counters on `stream` (a memset; may be captured).
cudaError_t kiln_cuda_attention_decode_counters_clear(cudaStream_t stream, int *counters, size_t bytes);
cudaError_t kiln_cuda_attention_decode(cudaStream_t stream, const kiln_cuda_attention_args *a, void *workspace);

// Prefill (FlashAttention-style, tensor cores): every token of the batch
// belongs to ONE sequence, positions consecutive (pos[t] = pos[0] + t; pos[0]
// may be > 0 when earlier chunks are already in the cache). Reads K and V of
// all positions 0..pos[n-1] from the cache (the new ones were stored first).
cudaError_t kiln_cuda_attention_prefill(cudaStream_t stream, const kiln_cuda_attention_args *a);

// ---- Sampling on the GPU (cuda_sample.cu) --------------------------------
//
// Same semantics as the CPU sampler (src/runtime/sampler.c), without the
// penalties: temperature <= 0 is greedy (argmax, lowest id on ties); else
// logits / temperature, keep the top_k largest (0: all), softmax over them,
// keep the smallest prefix (by descending probability) of mass >= top_p,
// keep those with probability >= min_p * the best one's, then draw with the
// uniform number u in [0, 1) from the kept tokens' renormalised probabilities.
typedef struct kiln_cuda_sample_params {
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float u;
    bool portable; // no programmatic dependent launch even on Hopper (kiln_kernel_options.portable)
} kiln_cuda_sample_params;

// Writes the chosen id to *out (device). workspace: kiln_cuda_sample_workspace() bytes.
size_t kiln_cuda_sample_workspace(int vocab);
cudaError_t kiln_cuda_sample(cudaStream_t stream, const float *logits, int vocab, const kiln_cuda_sample_params *p,
                             void *workspace, int32_t *out);

#ifdef __cplusplus
}
#endif
#endif
