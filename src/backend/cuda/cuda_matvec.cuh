// Device pieces of the matrix-vector kernel (cuda_matvec.cu); the weight load
// is also what bench/cuda_read_patterns.cu reads with.
#ifndef KILN_BACKEND_CUDA_MATVEC_CUH
#define KILN_BACKEND_CUDA_MATVEC_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

#define WARPS_PER_BLOCK 8

// 16 bytes of weights that nothing will read again: no L1 allocation.
static __device__ __forceinline__ uint4 load_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The block's input for NORM: xs[t] = x[t] * norm (the inverse RMS is applied
// to the sums at the end), and inv[t] = 1 / sqrt(mean(x[t]^2) + eps). Every
// thread must arrive: it synchronises.
template <int NT>
static __device__ __forceinline__ void stage_normed(const float *x, const float *norm, int k, float eps, float *xs,
                                                    float inv[NT]) {
    __shared__ float partial[WARPS_PER_BLOCK][NT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float4 *g4 = reinterpret_cast<const float4 *>(norm);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x + (size_t)t * k);
        float4 *xs4 = reinterpret_cast<float4 *>(xs + (size_t)t * k);
        float ss = 0.0f;
        for (int c = threadIdx.x; c < k / 4; c += blockDim.x) {
            const float4 v = __ldg(x4 + c), g = __ldg(g4 + c);
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            xs4[c] = make_float4(v.x * g.x, v.y * g.y, v.z * g.z, v.w * g.w);
        }
        ss = warp_sum(ss);
        if (lane == 0) partial[warp][t] = ss;
    }
    __syncthreads();
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float total = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS_PER_BLOCK; w++) total += partial[w][t];
        inv[t] = rsqrtf(total / (float)k + eps);
    }
}

#endif
