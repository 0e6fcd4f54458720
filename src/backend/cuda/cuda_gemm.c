// Dense products through cuBLASLt. For each new shape the heuristic's
// candidate algorithms are timed on the real operands (in
// kiln_kernel_options.gemm_trial_rounds interleaved rounds, keeping each
// candidate's best) and the fastest is kept for the life of the backend.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

#define GEMM_CANDIDATES 8
#define GEMM_TRIAL_RUNS 3

typedef struct gemm_key {
    int m, n, k;
    kiln_cuda_type type;
    bool accumulate, bias;
    bool out16; // D in the inputs' 16-bit type instead of float
} gemm_key;

typedef struct gemm_entry {
    gemm_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t w, x, d;
    cublasLtMatmulAlgo_t algo;
} gemm_entry;

struct cuda_gemm_cache {
    gemm_entry *entries;
    int n, cap;
};

static void entry_destroy(gemm_entry *e) {
    if (e->op) cublasLtMatmulDescDestroy(e->op);
    if (e->w) cublasLtMatrixLayoutDestroy(e->w);
    if (e->x) cublasLtMatrixLayoutDestroy(e->x);
    if (e->d) cublasLtMatrixLayoutDestroy(e->d);
}

cuda_gemm_cache *cuda_gemm_cache_create(void) { return calloc(1, sizeof(cuda_gemm_cache)); }

void cuda_gemm_cache_free(cuda_gemm_cache *cache) {
    if (!cache) return;
    for (int i = 0; i < cache->n; i++) entry_destroy(&cache->entries[i]);
    free(cache->entries);
    free(cache);
}

static bool same_key(const gemm_key *a, const gemm_key *b) {
    return a->m == b->m && a->n == b->n && a->k == b->k && a->type == b->type && a->accumulate == b->accumulate &&
           a->bias == b->bias && a->out16 == b->out16;
}

// Column-major view: W [m][k] row-major is a k x m matrix, used transposed;
// X [n][k] row-major is k x n; D [n][m] row-major is m x n.
static cublasStatus_t describe(const gemm_key *key, gemm_entry *e) {
    const cudaDataType_t in = key->type == KILN_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_16F;
    cublasStatus_t s = cublasLtMatmulDescCreate(&e->op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const cublasOperation_t trans = CUBLAS_OP_T, none = CUBLAS_OP_N;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none);
    if (s == CUBLAS_STATUS_SUCCESS && key->bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bias_type = CUDA_R_32F;
        s = cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi);
        if (s == CUBLAS_STATUS_SUCCESS)
            s = cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                               sizeof bias_type);
    }
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&e->w, in, key->k, key->m, key->k);
    if (s == CUBLAS_STATUS_SUCCESS) s = cublasLtMatrixLayoutCreate(&e->x, in, key->k, key->n, key->k);
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatrixLayoutCreate(&e->d, key->out16 ? in : CUDA_R_32F, key->m, key->n, key->m);
    return s;
}

static cublasStatus_t run(cuda_impl *c, gemm_entry *e, const cublasLtMatmulAlgo_t *algo, const void *w,
                          const void *x, void *d, const float *bias, bool accumulate) {
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    if (bias) {
        cublasStatus_t s = cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                          sizeof bias);
        if (s != CUBLAS_STATUS_SUCCESS) return s;
    }
    return cublasLtMatmul(c->lt, e->op, &alpha, w, e->w, x, e->x, &beta, d, e->d, d, e->d, algo, c->lt_workspace,
                          c->lt_workspace_bytes, c->stream);
}

// Times the heuristic's candidates (into a scratch output, so that an
// accumulating product does not add more than once) and keeps the fastest.
static cublasStatus_t choose_algo(cuda_impl *c, gemm_entry *e, const void *w, const void *x, const float *bias) {
    cublasLtMatmulPreference_t pref;
    cublasStatus_t s = cublasLtMatmulPreferenceCreate(&pref);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    s = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &c->lt_workspace_bytes,
                                             sizeof c->lt_workspace_bytes);
    cublasLtMatmulHeuristicResult_t found[GEMM_CANDIDATES];
    int n_found = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(c->lt, e->op, e->w, e->x, e->d, e->d, pref, GEMM_CANDIDATES, found,
                                           &n_found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s != CUBLAS_STATUS_SUCCESS) return s;
    if (n_found == 0) return CUBLAS_STATUS_NOT_SUPPORTED;
    e->algo = found[0].algo;
    const size_t out_bytes = (e->key.out16 ? 2 : 4) * (size_t)e->key.m * (size_t)e->key.n;
    if (n_found == 1 || c->capturing || !cuda_scratch_reserve(c, &c->gemm_trial, out_bytes)) return s;
    cudaEvent_t start, stop;
    if (cudaEventCreate(&start) != cudaSuccess) return s;
    if (cudaEventCreate(&stop) != cudaSuccess) {
        cudaEventDestroy(start);
        return s;
    }
    float times[GEMM_CANDIDATES];
    bool usable[GEMM_CANDIDATES] = {false};
    for (int i = 0; i < GEMM_CANDIDATES; i++) times[i] = 1e30f;
    for (int i = 0; i < n_found; i++) {
        usable[i] = found[i].state == CUBLAS_STATUS_SUCCESS &&
                    run(c, e, &found[i].algo, w, x, c->gemm_trial.ptr, bias, false) == CUBLAS_STATUS_SUCCESS;
    }
    for (int round = 0; round < c->gemm_trial_rounds; round++)
        for (int i = 0; i < n_found; i++) {
            if (!usable[i]) continue;
            cudaEventRecord(start, c->stream);
            for (int r = 0; r < GEMM_TRIAL_RUNS; r++) run(c, e, &found[i].algo, w, x, c->gemm_trial.ptr, bias, false);
            cudaEventRecord(stop, c->stream);
            float ms = 0;
            if (cudaEventSynchronize(stop) == cudaSuccess && cudaEventElapsedTime(&ms, start, stop) == cudaSuccess &&
                ms < times[i])
                times[i] = ms;
        }
    int chosen = 0;
    for (int i = 1; i < n_found; i++)
        if (times[i] < times[chosen]) chosen = i;
    if (times[chosen] < 1e30f) e->algo = found[chosen].algo;
    if (cuda_tune_log()) { // each shape's candidates (the heuristic's fixed order), their times, the choice
        fprintf(stderr, "kiln cuda: gemm m %d n %d k %d%s%s%s: candidate us", e->key.m, e->key.n, e->key.k,
                e->key.accumulate ? " accumulate" : "", e->key.bias ? " bias" : "", e->key.out16 ? " out16" : "");
        for (int i = 0; i < n_found; i++) {
            if (usable[i])
                fprintf(stderr, " %.1f", 1000.0f * times[i] / GEMM_TRIAL_RUNS);
            else
                fprintf(stderr, " -");
        }
        fprintf(stderr, " -> %d\n", chosen);
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return CUBLAS_STATUS_SUCCESS;
}

static gemm_entry *find_or_add(cuda_impl *c, const gemm_key *key, const void *w, const void *x, const float *bias,
                               cublasStatus_t *status) {
    cuda_gemm_cache *cache = c->gemm_cache;
    for (int i = 0; i < cache->n; i++)
        if (same_key(&cache->entries[i].key, key)) return &cache->entries[i];
    if (cache->n == cache->cap) {
        int cap = cache->cap ? 2 * cache->cap : 32;
        gemm_entry *grown = realloc(cache->entries, sizeof *grown * (size_t)cap);
        if (!grown) {
            *status = CUBLAS_STATUS_ALLOC_FAILED;
            return NULL;
        }
        cache->entries = grown;
        cache->cap = cap;
    }
    gemm_entry *e = &cache->entries[cache->n];
    memset(e, 0, sizeof *e);
    e->key = *key;
    if ((*status = describe(key, e)) != CUBLAS_STATUS_SUCCESS || (*status = choose_algo(c, e, w, x, bias)) !=
                                                                     CUBLAS_STATUS_SUCCESS) {
        entry_destroy(e);
        return NULL;
    }
    cache->n++;
    return e;
}

// cuBLAS's own status strings live in libcublas, which kiln does not link.
static const char *status_name(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLASLt not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLASLt could not allocate";
    case CUBLAS_STATUS_INVALID_VALUE: return "cuBLASLt: invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "cuBLASLt: not supported on this GPU";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "cuBLASLt: execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "cuBLASLt: internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "cuBLASLt: no algorithm for this shape or alignment";
    default: return "cuBLASLt: failed";
    }
}

cudaError_t cuda_gemm(cuda_impl *c, kiln_cuda_type type, const void *w, const void *x, float *d, const float *bias,
                      int m, int n, int k, bool accumulate) {
    return cuda_gemm_ex(c, type, w, x, d, false, bias, m, n, k, accumulate);
}

cudaError_t cuda_gemm_ex(cuda_impl *c, kiln_cuda_type type, const void *w, const void *x, void *d, bool out16,
                         const float *bias, int m, int n, int k, bool accumulate) {
    const gemm_key key = {.m = m, .n = n, .k = k, .type = type, .accumulate = accumulate, .bias = bias != NULL,
                          .out16 = out16};
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    gemm_entry *e = find_or_add(c, &key, w, x, bias, &s);
    if (e) s = run(c, e, &e->algo, w, x, d, bias, accumulate);
    if (s != CUBLAS_STATUS_SUCCESS) {
        c->gemm_error = status_name(s);
        return cudaErrorNotSupported;
    }
    return cudaGetLastError();
}
