// What the current GPU can do at best, measured: the ceilings that kiln's own
// kernels are compared against in `kiln bench --device cuda`.
#ifndef KILN_BACKEND_CUDA_CEILINGS_H
#define KILN_BACKEND_CUDA_CEILINGS_H

#include <cuda_runtime.h>

#ifdef __cplusplus
extern "C" {
#endif

// GB/s are 1e9 bytes per second; medians of 11 timed runs after warm-up.
typedef struct kiln_cuda_ceilings {
    double read_gbps;        // streaming read of min(4 GiB, free/2) bytes (bytes read / time)
    double copy_gbps;        // cudaMemcpy device-to-device of up to 2 GiB ((read + written bytes) / time)
    double gemm_bf16_tflops; // cuBLASLt 8192^3 GEMM, bf16 in and out, fp32 accumulate (2 m n k / time)
} kiln_cuda_ceilings;

// Measures on the current device and frees everything it allocated. On error
// the fields not measured yet are 0 and the first error is returned (cuBLASLt
// failures map to cudaErrorNotSupported / cudaErrorMemoryAllocation /
// cudaErrorUnknown). Typically under a second (cuBLASLt set-up included).
cudaError_t kiln_cuda_measure_ceilings(kiln_cuda_ceilings *out);

#ifdef __cplusplus
}
#endif

#endif
