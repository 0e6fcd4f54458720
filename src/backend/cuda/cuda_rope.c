// RoPE on the CUDA backend: the device tables of inverse frequencies (one per
// parameter set, kept for the backend's life) and the rope_kv_store
// operation. The matrix-vector kernel's Q/K/V epilogue (cuda_linear.c) reads
// the same tables.
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

// Device table of theta^(-2i/rot_dim) / factor_i for these RoPE parameters.
const double *cuda_rope_inv_freq(cuda_impl *c, const kiln_rope_params *rope) {
    for (int i = 0; i < c->n_rope; i++) {
        const cuda_rope_table *r = &c->rope[i];
        const size_t factor_bytes = sizeof(float) * (size_t)(rope->rot_dim / 2);
        bool same_factors = !r->factors == !rope->freq_factors &&
                            (!r->factors || memcmp(r->factors, rope->freq_factors, factor_bytes) == 0);
        if (r->rot_dim == rope->rot_dim && r->theta == rope->theta && same_factors) return r->inv_freq;
    }
    if (c->n_rope == CUDA_MAX_ROPE_TABLES || c->capturing) return NULL;
    const int half = rope->rot_dim / 2;
    double *host = malloc(sizeof(double) * (size_t)(half ? half : 1));
    float *factors = rope->freq_factors ? malloc(sizeof(float) * (size_t)(half ? half : 1)) : NULL;
    double *dev = NULL;
    if (!host || (rope->freq_factors && !factors) ||
        cudaMalloc((void **)&dev, sizeof(double) * (size_t)(half ? half : 1)) != cudaSuccess) {
        free(host);
        free(factors);
        return NULL;
    }
    if (factors) memcpy(factors, rope->freq_factors, sizeof(float) * (size_t)half);
    for (int i = 0; i < half; i++) {
        host[i] = pow((double)rope->theta, -2.0 * i / rope->rot_dim);
        if (rope->freq_factors) host[i] /= rope->freq_factors[i];
    }
    cudaError_t e = cudaMemcpy(dev, host, sizeof(double) * (size_t)half, cudaMemcpyHostToDevice);
    free(host);
    if (e != cudaSuccess) {
        cudaFree(dev);
        free(factors);
        return NULL;
    }
    c->rope[c->n_rope++] =
        (cuda_rope_table){.rot_dim = rope->rot_dim, .theta = rope->theta, .factors = factors, .inv_freq = dev};
    return dev;
}

void cuda_rope_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                        float *q, int n_heads, float *k, const float *v, const kiln_rope_params *rope) {
    cuda_impl *c = cuda_of(be);
    const double *inv_freq = cuda_rope_inv_freq(c, rope);
    if (!inv_freq) {
        cuda_note(c, cudaErrorMemoryAllocation, "rope frequency table (at most 4 RoPE settings per backend)");
        return;
    }
    if (kv->dtype != KILN_F16) {
        cuda_note(c, cudaErrorInvalidValue, "rope_kv_store (the CUDA KV cache is F16)");
        return;
    }
    kiln_cuda_rope_kv_args a = {.q = q, .k = k, .v = v, .n_tokens = batch->n_tokens, .n_heads = n_heads,
                                .n_kv_heads = kv->n_kv_heads, .head_dim = kv->head_dim, .rot_dim = rope->rot_dim,
                                .interleaved = rope->interleaved != 0, .inv_freq = inv_freq, .pos = batch->pos,
                                .seq = batch->seq, .k_cache = layer.k, .v_cache = layer.v,
                                .block_tables = kv->block_tables, .max_blocks_per_seq = kv->max_blocks_per_seq,
                                .block_size = kv->block_size};
    cuda_note(c, kiln_cuda_rope_kv_store(c->stream, &a), "rope_kv_store");
}

void cuda_rope_tables_free(cuda_impl *c) {
    for (int i = 0; i < c->n_rope; i++) {
        cudaFree(c->rope[i].inv_freq);
        free(c->rope[i].factors);
    }
    c->n_rope = 0;
}
