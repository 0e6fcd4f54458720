// Programmatic dependent launch (Hopper, sm_90): a kernel launched this way is
// scheduled while the one before it drains, and waits for that kernel's
// results at pdl_wait(); work that does not depend on them (the weights a
// matrix-vector product streams) can start earlier. On older GPUs the launch
// attribute is not set and both calls are no-ops.
#ifndef KILN_BACKEND_CUDA_PDL_CUH
#define KILN_BACKEND_CUDA_PDL_CUH

#include <cuda_runtime.h>

// Before the first read of anything the previous kernel wrote, and before the
// first write of anything it may still read.
static __device__ __forceinline__ void pdl_wait(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel be scheduled now (it still waits for this one's end
// at its own pdl_wait()).
static __device__ __forceinline__ void pdl_allow_next(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

template <typename... Params, typename... Args>
static cudaError_t launch_maybe_pdl(bool pdl, void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem,
                                    cudaStream_t stream, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    if (pdl) {
        cfg.attrs = &attr;
        cfg.numAttrs = 1;
    }
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}

#endif
