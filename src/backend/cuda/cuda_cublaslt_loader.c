// cuBLASLt, loaded when the CUDA backend is first used rather than when
// libkiln is: a CPU-only machine (no CUDA libraries) can load libkiln and run
// on the CPU. These definitions stand in for the library's own: each loads
// libcublasLt.so.<major> once and calls through to it.
#include <cublasLt.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#include "backend/cuda/cuda_impl.h"

#define STR_(x) #x
#define STR(x) STR_(x)
#define CUBLASLT_SONAME "libcublasLt.so." STR(CUBLAS_VER_MAJOR)

// Every function kiln calls: name, return type, parameters, arguments.
#define CUBLASLT_FUNCTIONS(X)                                                                                      \
    X(cublasLtCreate, (cublasLtHandle_t * h), (h))                                                                 \
    X(cublasLtDestroy, (cublasLtHandle_t h), (h))                                                                  \
    X(cublasLtMatmul,                                                                                              \
      (cublasLtHandle_t h, cublasLtMatmulDesc_t op, const void *alpha, const void *A, cublasLtMatrixLayout_t a,    \
       const void *B, cublasLtMatrixLayout_t b, const void *beta, const void *C, cublasLtMatrixLayout_t c,          \
       void *D, cublasLtMatrixLayout_t d, const cublasLtMatmulAlgo_t *algo, void *ws, size_t ws_bytes,             \
       cudaStream_t stream),                                                                                       \
      (h, op, alpha, A, a, B, b, beta, C, c, D, d, algo, ws, ws_bytes, stream))                                    \
    X(cublasLtMatmulAlgoGetHeuristic,                                                                              \
      (cublasLtHandle_t h, cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,            \
       cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref, int n,                 \
       cublasLtMatmulHeuristicResult_t results[], int *found),                                                      \
      (h, op, a, b, c, d, pref, n, results, found))                                                                \
    X(cublasLtMatmulDescCreate, (cublasLtMatmulDesc_t * desc, cublasComputeType_t compute, cudaDataType_t scale),  \
      (desc, compute, scale))                                                                                      \
    X(cublasLtMatmulDescDestroy, (cublasLtMatmulDesc_t desc), (desc))                                              \
    X(cublasLtMatmulDescSetAttribute,                                                                              \
      (cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void *buf, size_t n),                \
      (desc, attr, buf, n))                                                                                        \
    X(cublasLtMatmulPreferenceCreate, (cublasLtMatmulPreference_t * pref), (pref))                                 \
    X(cublasLtMatmulPreferenceDestroy, (cublasLtMatmulPreference_t pref), (pref))                                  \
    X(cublasLtMatmulPreferenceSetAttribute,                                                                        \
      (cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void *buf, size_t n),    \
      (pref, attr, buf, n))                                                                                        \
    X(cublasLtMatrixLayoutCreate,                                                                                  \
      (cublasLtMatrixLayout_t * layout, cudaDataType type, uint64_t rows, uint64_t cols, int64_t ld),              \
      (layout, type, rows, cols, ld))                                                                              \
    X(cublasLtMatrixLayoutDestroy, (cublasLtMatrixLayout_t layout), (layout))

#define DECLARE_POINTER(name, params, args) static cublasStatus_t(*p_##name) params;
CUBLASLT_FUNCTIONS(DECLARE_POINTER)

static pthread_once_t once = PTHREAD_ONCE_INIT;
static char load_error[512];
static bool loaded;

static void load(void) {
    void *lib = dlopen(CUBLASLT_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(load_error, sizeof load_error, "cannot load %s (%s); install the CUDA runtime libraries or run "
                 "with --device cpu", CUBLASLT_SONAME, dlerror());
        return;
    }
#define RESOLVE(name, params, args)                                                                                 \
    if (!(*(void **)&p_##name = dlsym(lib, #name))) {                                                              \
        snprintf(load_error, sizeof load_error, "%s has no %s: a cuBLASLt older than CUDA %d?", CUBLASLT_SONAME,   \
                 #name, CUBLAS_VER_MAJOR);                                                                         \
        return;                                                                                                    \
    }
    CUBLASLT_FUNCTIONS(RESOLVE)
    loaded = true;
}

const char *cuda_cublaslt_load(void) {
    pthread_once(&once, load);
    return loaded ? NULL : load_error;
}

#define DEFINE_WRAPPER(name, params, args)                                                                          \
    cublasStatus_t CUBLASWINAPI name params {                                                                      \
        if (cuda_cublaslt_load()) return CUBLAS_STATUS_NOT_INITIALIZED;                                            \
        return p_##name args;                                                                                      \
    }
CUBLASLT_FUNCTIONS(DEFINE_WRAPPER)
