// Launchers of the CUDA backend's matrix-vector, normalisation, embedding,
// RoPE/KV and conversion kernels, callable from C. Like cuda_kernels.h: they
// only enqueue work on `stream` and return cudaGetLastError().
#ifndef KILN_BACKEND_CUDA_OPS_H
#define KILN_BACKEND_CUDA_OPS_H

#include <stdbool.h>
#include <stdint.h>

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// Element types of device weights and of GEMM inputs.
typedef enum kiln_cuda_type { KILN_CUDA_F16, KILN_CUDA_BF16, KILN_CUDA_F32 } kiln_cuda_type;

#define KILN_MATVEC_MAX_TOKENS 8
#define KILN_MATVEC_MAX_WEIGHTS 4

#define KILN_MATVEC_NORM_MAX_TOKENS 2
// Slots a token of per-block sums of squares (next_ss, ss below): the most
// blocks a producing launch may have.
#define KILN_MATVEC_SS_PARTS 1024

// The Q/K/V form's RoPE and cache write (has_rope; count 3: q, k, v): each
// warp takes a rotation pair of rows (i, i + head_dim/2, or 2i, 2i + 1 when
// interleaved), rotates q's and k's at pos[t], and stores k's and v's as f16
// into the token's slot of the paged cache (layout of kiln_cuda_kv in
// cuda_kernels.h). Whole heads rotate (rot_dim == head_dim).
typedef struct kiln_cuda_matvec_rope {
    const double *inv_freq; // [head_dim / 2] device
    bool interleaved;
    int head_dim;
    int n_kv_heads;
    const int32_t *pos; // [n_tokens] device
    const int32_t *seq; // [n_tokens] device
    const int32_t *block_tables;
    int max_blocks_per_seq;
    int block_size;
    void *k_cache; // f16
    void *v_cache; // f16
} kiln_cuda_matvec_rope;

// y_i[t][r] (+)= sum_c W_i[r][c] x[t][c] (+ bias_i[r]) for tokens t < n_tokens
// (1..KILN_MATVEC_MAX_TOKENS) and the rows of up to 4 weights of one type
// (row-major [rows_i][k], k a multiple of 8, rows 16-byte aligned).
// glu (count 2): y_0[t][r] = silu(W_0 x) * (W_1 x); y_1 is not written.
typedef struct kiln_cuda_matvec_args {
    int count;
    kiln_cuda_type type;
    const void *w[KILN_MATVEC_MAX_WEIGHTS];
    const float *bias[KILN_MATVEC_MAX_WEIGHTS];
    float *y[KILN_MATVEC_MAX_WEIGHTS];
    int rows[KILN_MATVEC_MAX_WEIGHTS];
    int k;
    const float *x; // [n_tokens][k]
    int n_tokens;
    bool accumulate; // y_0 += (count 1)
    bool glu;
    // The input is RMSNorm(x) * norm: each block stages x * norm in shared
    // memory and computes the tokens' inverse RMS itself. At most
    // KILN_MATVEC_NORM_MAX_TOKENS tokens.
    const float *norm; // [k] or NULL
    float norm_eps;
    bool has_rope;
    kiln_cuda_matvec_rope rope;
    bool pipe;       // one token: each round's loads go out before the previous round's arithmetic
    // A residual product (accumulate, count 1, no glu or rope, at most
    // KILN_MATVEC_NORM_MAX_TOKENS tokens) whose result is next read through
    // RMSNorm with weights next_norm [rows_0] prepares that read: next_x[t][r]
    // = y_0[t][r] * next_norm[r] (after the add) and next_ss[t][b] = the sum
    // of y_0[t][r]^2 over block b's rows, KILN_MATVEC_SS_PARTS slots a token
    // (the slots past the grid zeroed).
    const float *next_norm;
    float *next_x;
    float *next_ss;
    // The read so prepared (norm NULL, at most KILN_MATVEC_NORM_MAX_TOKENS
    // tokens): x holds next_x, and each token's inverse RMS,
    // 1 / sqrt(sum(ss[t][:]) / k + norm_eps), scales the sums: the kernel
    // starts on the weights at once, with no staging of its input.
    const float *ss;
} kiln_cuda_matvec_args;

cudaError_t kiln_cuda_matvec(cudaStream_t stream, const kiln_cuda_matvec_args *a);


// Largest float input (n_tokens * k * 4 bytes) for which the CUDA backend's
// linear sends more than one token to kiln_cuda_matvec by default
// (kiln_kernel_options.matvec_max_input_bytes; cuda_linear.c says why).
#define KILN_CUDA_MATVEC_X_LIMIT_DEFAULT ((size_t)16 << 10)

// y[t] = x[t] * rsqrt(mean(x[t]^2) + eps) * weight, for n rows of dim; y may alias x.
cudaError_t kiln_cuda_rmsnorm(cudaStream_t stream, const float *x, const float *weight, float *y, int n, int dim,
                              float eps);

// out[t][:] = row ids[t] of table [rows][dim] (f16, bf16 or f32) as float;
// an id outside [0, rows) gives zeros.
cudaError_t kiln_cuda_get_rows(cudaStream_t stream, const void *table, kiln_cuda_type type, int dim, int rows,
                               const int32_t *ids, int n, float *out);

// RoPE on q [n][n_heads][head_dim] and k [n][n_kv_heads][head_dim] (in place)
// at positions pos[t], with inv_freq [rot_dim / 2] (theta^(-2i/rot_dim) /
// factor_i); then k and v go as f16 into the paged cache slots of their
// positions (layout of kiln_cuda_kv in cuda_kernels.h).
typedef struct kiln_cuda_rope_kv_args {
    float *q;
    float *k;
    const float *v;
    int n_tokens;
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int rot_dim;
    bool interleaved;         // pairs (2i, 2i+1); else halves (i, i + rot_dim/2)
    const double *inv_freq;   // [rot_dim / 2] device, double: angles of long contexts keep their precision
    const int32_t *pos;       // [n] device
    const int32_t *seq;       // [n] device
    void *k_cache;            // __half
    void *v_cache;
    const int32_t *block_tables;
    int max_blocks_per_seq;
    int block_size;
} kiln_cuda_rope_kv_args;

cudaError_t kiln_cuda_rope_kv_store(cudaStream_t stream, const kiln_cuda_rope_kv_args *a);

// The same, written as `type` (F16 or BF16) into y: a GEMM's input.
cudaError_t kiln_cuda_rmsnorm16(cudaStream_t stream, const float *x, const float *weight, void *y,
                                kiln_cuda_type type, int n, int dim, float eps);

// out[i] = silu(gate[i]) * up[i]
cudaError_t kiln_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, float *out, size_t n);

// y[i] += x[i] for i < n (the residual add of a GEMM written apart).
cudaError_t kiln_cuda_add(cudaStream_t stream, float *y, const float *x, size_t n);

// Reads bytes (a multiple of 16, 16-byte aligned) of p and keeps nothing: an
// L2 flush with no write-back when p is larger than L2 (sink: 4 bytes that
// are never written in practice).
cudaError_t kiln_cuda_read_through(cudaStream_t stream, const void *p, size_t bytes, unsigned *sink);

// gate[i] = silu(gate[i]) * up[i] on 16-bit values of `type` (float math).
cudaError_t kiln_cuda_swiglu16(cudaStream_t stream, void *gate, const void *up, kiln_cuda_type type, size_t n);

// dst[i] = (type) src[i] for the GEMM's 16-bit inputs.
cudaError_t kiln_cuda_convert(cudaStream_t stream, const float *src, void *dst, kiln_cuda_type type, size_t n);


#ifdef __cplusplus
}
#endif
#endif
