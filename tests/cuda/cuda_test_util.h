// Shared pieces of the GPU tests: skip visibly (exit 77) where no GPU is
// present, check CUDA calls, draw random inputs.
#ifndef KILN_TEST_CUDA_UTIL_H
#define KILN_TEST_CUDA_UTIL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

static inline void kiln_test_require_gpu(void) {
    // Unbuffered: a test killed under compute-sanitizer still shows how far it got.
    setvbuf(stdout, NULL, _IONBF, 0);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device (%s): GPU tests run on the GPU machine (scripts/gpu-run.sh)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        exit(77);
    }
}

#define CUDA_CHECK(call)                                                                                    \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));          \
            abort();                                                                                        \
        }                                                                                                   \
    } while (0)

// xorshift64*: reproducible inputs; every test draws fresh values per case.
static inline uint64_t kiln_test_rand_u64(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}
// uniform in [-1, 1)
static inline float kiln_test_rand_f(uint64_t *s) {
    return (float)((double)(kiln_test_rand_u64(s) >> 11) * 0x1.0p-52 - 1.0);
}

#endif
