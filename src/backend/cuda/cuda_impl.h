// The CUDA backend's state, shared by its host files. They are layered: each
// calls only the files below it, never one above, and all of them call the
// kernels' launchers (cuda_kernels.h, cuda_ops.h):
//   cuda_backend.c          the operations table: device set-up and teardown,
//                           memory, copies, attention, sampling, graphs, configure
//   cuda_linear.c           linear and mlp: the matrix-vector kernel or cuBLASLt
//   cuda_plan.c             a step's plan (which product prepares the next RMSNorm)
//   cuda_weights.c          weight conversion and upload
//   cuda_rope.c             RoPE frequency tables and rope_kv_store
//   cuda_gemm.c             cuBLASLt products, an algorithm timed per shape
//   cuda_matvec_tune.c      the one-token matrix-vector form timed per shape
//   cuda_scratch.c          device buffers that grow on demand
//   cuda_cublaslt_loader.c  cuBLASLt, loaded on first use
#ifndef KILN_BACKEND_CUDA_IMPL_H
#define KILN_BACKEND_CUDA_IMPL_H

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "backend/backend.h"
#include "backend/cuda/cuda_ops.h"

// A device buffer that grows on demand; growth happens only outside graph
// capture (the first decode step runs uncaptured for this reason).
typedef struct cuda_scratch {
    void *ptr;
    size_t bytes;
} cuda_scratch;

typedef struct cuda_gemm_cache cuda_gemm_cache;

// RoPE inverse frequencies on the device, one table per parameter set.
typedef struct cuda_rope_table {
    int rot_dim;
    float theta;
    float *factors; // copy of the frequency divisors, or NULL
    double *inv_freq;
} cuda_rope_table;

// The one-token matrix-vector form timed fastest for a product shape
// (cuda_matvec_tune.c).
typedef struct cuda_matvec_choice {
    kiln_cuda_type type;
    int k, count, rows[KILN_MATVEC_MAX_WEIGHTS];
    bool glu, rope, norm, accumulate;
    bool prepared, prepares; // reads a prepared RMSNorm (ss); prepares one (next_x)
    bool pipe;
} cuda_matvec_choice;

#define CUDA_MATVEC_CHOICES 32

// What the last residual product left prepared for the next RMSNorm
// (kiln_cuda_matvec_args.next_norm): prep_x holds y * norm, prep_ss its
// per-block sums of squares. y NULL: nothing. Only the operation the step's
// plan made its reader takes it (cuda_plan.c); every linear and mlp clears it.
typedef struct cuda_prepared_norm {
    const float *y;
    const float *norm;
    int n, k;
} cuda_prepared_norm;
#define CUDA_MAX_ROPE_TABLES 4
#define CUDA_STAGING_BUFFERS 2

typedef struct cuda_impl {
    int device;
    struct cudaDeviceProp prop;
    cudaStream_t stream;
    cudaStream_t upload;          // weight uploads, overlapping host-side conversion
    cudaError_t error;            // first failure since the last sync
    const char *error_where;
    cublasLtHandle_t lt;
    void *lt_workspace;
    size_t lt_workspace_bytes;
    cuda_gemm_cache *gemm_cache;
    cuda_scratch gemm_input;      // 16-bit copy of a GEMM's input
    cuda_scratch gemm_trial;      // output of the algorithm trials
    cuda_scratch attention_ws;    // split-K partial results
    cuda_scratch attention_counters; // split-K arrival counters: zeroed when allocated, left zero by every launch
    cuda_scratch sample_ws;
    int32_t *sampled;             // device: the sampled id
    int32_t *sampled_host;        // pinned
    cudaEvent_t sampled_ready;    // sampled_host holds the last draw
    cuda_rope_table rope[CUDA_MAX_ROPE_TABLES];
    int n_rope;
    // Weight upload: pinned staging buffers, each free once its event fired.
    void *staging[CUDA_STAGING_BUFFERS];
    cudaEvent_t staging_free[CUDA_STAGING_BUFFERS];
    size_t staging_bytes;
    int staging_next;
    uint64_t weight_bytes;
    uint64_t allocated;           // bytes held through alloc
    void **retired;               // outgrown scratch buffers (graphs may still use them)
    int n_retired;
    const char *gemm_error;       // cuBLASLt's status of the last failure
    bool capturing;
    // The engine's kernel choices (cuda_configure, kiln_kernel_options).
    bool portable;                // no Hopper-only paths at all
    int matvec_pipe_mode;         // 0 or 1 for every shape; -1: timed per shape
    int gemm_trial_rounds;        // cuBLASLt candidates timed in this many interleaved rounds
    size_t matvec_x_limit;        // 2 to 8 tokens take the matrix-vector kernel while their inputs total at most this
    cuda_matvec_choice matvec_choices[CUDA_MATVEC_CHOICES];
    int n_matvec_choices;
    cuda_scratch norm_buf;        // RMS-normalised inputs for the other paths
    cuda_prepared_norm prepared;
    cuda_scratch prep_x, prep_ss;
} cuda_impl;

static inline cuda_impl *cuda_of(kiln_backend *be) { return (cuda_impl *)be->impl; }

// Records the first CUDA failure; sync() reports it.
static inline void cuda_note(cuda_impl *c, cudaError_t e, const char *where) {
    if (e != cudaSuccess && c->error == cudaSuccess) {
        c->error = e;
        c->error_where = where;
    }
}

static inline kiln_cuda_type kiln_cuda_type_of(kiln_dtype dtype) {
    return dtype == KILN_BF16 ? KILN_CUDA_BF16 : dtype == KILN_F16 ? KILN_CUDA_F16 : KILN_CUDA_F32;
}

// Loads cuBLASLt (cuda_cublaslt_loader.c) on first use: NULL once loaded,
// else a message that says what is missing.
const char *cuda_cublaslt_load(void);

// Scratch buffers (cuda_scratch.c). Makes s hold at least bytes (contents not
// kept); false on failure, or inside a capture when s would have to grow.
bool cuda_scratch_reserve(cuda_impl *c, cuda_scratch *s, size_t bytes);
void cuda_scratch_release(cuda_scratch *s);
// Frees the outgrown buffers kept for graphs (when the backend goes).
void cuda_scratch_free_retired(cuda_impl *c);

// RoPE (cuda_rope.c): the device table of inv_freq for these parameters
// (NULL when it cannot be made), the rope_kv_store operation, and the
// tables' end.
const double *cuda_rope_inv_freq(cuda_impl *c, const kiln_rope_params *rope);
void cuda_rope_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                        float *q, int n_heads, float *k, const float *v, const kiln_rope_params *rope);
void cuda_rope_tables_free(cuda_impl *c);

// Weights (cuda_weights.c).
bool cuda_supports(kiln_backend *be, kiln_dtype type);
uint64_t cuda_weight_bytes(kiln_backend *be, const kiln_tensor *src);
kiln_status cuda_weight_load(kiln_backend *be, const kiln_tensor *src, void *dst, kiln_tensor *out);
kiln_status cuda_weights_done(kiln_backend *be);
void cuda_staging_free(cuda_impl *c);

// The plan for a step (cuda_plan.c): which residual product prepares the
// next product's RMSNorm.
void cuda_plan(kiln_backend *be, kiln_op *ops, int n);

// Dense products (cuda_linear.c, cuda_gemm.c).
void cuda_linear(kiln_backend *be, const kiln_linear_args *a);
// D[n][m] (+)= X[n][k] W[m][k]^T (+ bias[m]); X and W 16-bit of one type, D f32.
cudaError_t cuda_gemm(cuda_impl *c, kiln_cuda_type type, const void *w, const void *x, float *d, const float *bias,
                      int m, int n, int k, bool accumulate);
// The same with D in the 16-bit input type when out16 (no bias then).
cudaError_t cuda_gemm_ex(cuda_impl *c, kiln_cuda_type type, const void *w, const void *x, void *d, bool out16,
                         const float *bias, int m, int n, int k, bool accumulate);
void cuda_mlp(kiln_backend *be, const kiln_mlp_args *a);
// Whether a's product (one token) runs pipelined: as configured, or the form
// timed fastest for its shape (timed on the first uncaptured call).
bool cuda_matvec_pipe_for(cuda_impl *c, const kiln_cuda_matvec_args *a);
// KILN_CUDA_TUNE_LOG=1: the timed choices (matrix-vector forms, cuBLASLt
// algorithms) are printed to stderr.
bool cuda_tune_log(void);
cuda_gemm_cache *cuda_gemm_cache_create(void);
void cuda_gemm_cache_free(cuda_gemm_cache *cache);

#endif
