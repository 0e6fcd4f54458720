// The small kernels of a forward step: RMSNorm, embedding rows, RoPE fused
// with the KV-cache write, SwiGLU, and the 16-bit conversion of GEMM inputs.
// Each reads and writes its data once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_pdl.cuh"

static __device__ __forceinline__ float block_sum(float v, float *shared32) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, n_warps = (blockDim.x + 31) / 32;
    if (lane == 0) shared32[warp] = v;
    __syncthreads();
    v = lane < n_warps ? shared32[lane] : 0.0f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads(); // shared32 may be reused by the caller
    return v;
}

template <typename T> static __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> static __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }

// One block per row. T: float, or a 16-bit type written straight into a
// GEMM's input.
template <typename T> __global__ void rmsnorm_kernel(const float *x, const float *weight, T *y, int dim, float eps) {
    __shared__ float partial[32];
    pdl_wait();
    const float *row = x + (size_t)blockIdx.x * dim;
    T *out = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += row[i] * row[i];
    const float inv = rsqrtf(block_sum(ss, partial) / (float)dim + eps);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = from_f<T>(row[i] * inv * weight[i]);
    pdl_allow_next(); // late: dependents launched early would hold SM slots while they wait
}

template <typename T>
static cudaError_t launch_rmsnorm(cudaStream_t stream, const float *x, const float *weight, T *y, int n, int dim,
                                  float eps, bool pdl) {
    if (n <= 0 || dim <= 0) return cudaSuccess;
    launch_maybe_pdl(pdl, rmsnorm_kernel<T>, dim3(n), dim3(dim >= 1024 ? 1024 : ((dim + 31) / 32) * 32), 0, stream, x,
                     weight, y, dim, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t kiln_cuda_rmsnorm(cudaStream_t stream, const float *x, const float *weight, float *y, int n,
                                         int dim, float eps, bool pdl) {
    return launch_rmsnorm(stream, x, weight, y, n, dim, eps, pdl);
}

extern "C" cudaError_t kiln_cuda_rmsnorm16(cudaStream_t stream, const float *x, const float *weight, void *y,
                                           kiln_cuda_type type, int n, int dim, float eps, bool pdl) {
    if (type == KILN_CUDA_BF16) return launch_rmsnorm(stream, x, weight, static_cast<__nv_bfloat16 *>(y), n, dim, eps, pdl);
    if (type == KILN_CUDA_F16) return launch_rmsnorm(stream, x, weight, static_cast<__half *>(y), n, dim, eps, pdl);
    return cudaErrorInvalidValue;
}

static __device__ __forceinline__ float load_as_float(const void *p, size_t i, kiln_cuda_type type) {
    switch (type) {
    case KILN_CUDA_F16: return __half2float(static_cast<const __half *>(p)[i]);
    case KILN_CUDA_BF16: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    default: return static_cast<const float *>(p)[i];
    }
}

__global__ void get_rows_kernel(const void *table, kiln_cuda_type type, int dim, const int32_t *ids, float *out) {
    pdl_wait();
    const size_t base = (size_t)ids[blockIdx.x] * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = load_as_float(table, base + i, type);
    pdl_allow_next();
}

extern "C" cudaError_t kiln_cuda_get_rows(cudaStream_t stream, const void *table, kiln_cuda_type type, int dim,
                                          const int32_t *ids, int n, float *out, bool pdl) {
    if (n <= 0) return cudaSuccess;
    launch_maybe_pdl(pdl, get_rows_kernel, dim3(n), dim3(256), 0, stream, table, type, dim, ids, out);
    return cudaGetLastError();
}

// Grid (token, slice of heads): q heads then k heads, and the v rows of the
// slice's kv heads. The rotation angles of the token are computed once per
// block (in double, as on the CPU: long contexts keep their precision) and
// shared by every head; then each pair of q and k is rotated, k and v stored
// as f16 in the token's cache slot.
__global__ void rope_kv_kernel(const kiln_cuda_rope_kv_args a, int heads_per_block) {
    extern __shared__ float2 cos_sin[]; // [rot_dim / 2]
    pdl_wait();
    const int t = blockIdx.x, p = a.pos[t], half_rot = a.rot_dim / 2, hd = a.head_dim;
    for (int i = threadIdx.x; i < half_rot; i += blockDim.x) {
        double s, c;
        sincos((double)p * a.inv_freq[i], &s, &c);
        cos_sin[i] = make_float2((float)c, (float)s);
    }
    const int32_t block = a.block_tables[(size_t)a.seq[t] * a.max_blocks_per_seq + p / a.block_size];
    const size_t slot = ((size_t)block * a.block_size + p % a.block_size) * (size_t)a.n_kv_heads * hd;
    __half *kc = static_cast<__half *>(a.k_cache) + slot, *vc = static_cast<__half *>(a.v_cache) + slot;
    float *q = a.q + (size_t)t * a.n_heads * hd, *k = a.k + (size_t)t * a.n_kv_heads * hd;
    const float *v = a.v + (size_t)t * a.n_kv_heads * hd;
    const int h0 = blockIdx.y * heads_per_block, h1 = min(h0 + heads_per_block, a.n_heads + a.n_kv_heads);
    __syncthreads(); // cos_sin is complete
    for (int j = threadIdx.x; j < (h1 - h0) * half_rot; j += blockDim.x) {
        const int head = h0 + j / half_rot, i = j % half_rot;
        const bool is_q = head < a.n_heads;
        const int kvh = head - a.n_heads;
        float *x = is_q ? q + (size_t)head * hd : k + (size_t)kvh * hd;
        const int ia = a.interleaved ? 2 * i : i, ib = a.interleaved ? 2 * i + 1 : i + half_rot;
        const float2 cs = cos_sin[i];
        const float xa = x[ia], xb = x[ib];
        const float ra = xa * cs.x - xb * cs.y, rb = xa * cs.y + xb * cs.x;
        x[ia] = ra;
        x[ib] = rb;
        if (!is_q) {
            kc[(size_t)kvh * hd + ia] = __float2half_rn(ra);
            kc[(size_t)kvh * hd + ib] = __float2half_rn(rb);
        }
    }
    // The slice's kv heads: dimensions past rot_dim are not rotated; V is stored as it is.
    const int kv0 = max(h0 - a.n_heads, 0), kv1 = max(h1 - a.n_heads, 0), pass = hd - a.rot_dim;
    for (int j = threadIdx.x; j < (kv1 - kv0) * pass; j += blockDim.x) {
        const int head = kv0 + j / pass, d = a.rot_dim + j % pass;
        kc[(size_t)head * hd + d] = __float2half_rn(k[(size_t)head * hd + d]);
    }
    for (int j = kv0 * hd + threadIdx.x; j < kv1 * hd; j += blockDim.x) vc[j] = __float2half_rn(v[j]);
    pdl_allow_next();
}

extern "C" cudaError_t kiln_cuda_rope_kv_store(cudaStream_t stream, const kiln_cuda_rope_kv_args *a) {
    if (a->n_tokens <= 0) return cudaSuccess;
    if (a->rot_dim % 2 || a->rot_dim > a->head_dim) return cudaErrorInvalidValue;
    // Few tokens (decode): spread each token's heads over 8 blocks so that more
    // than one SM works on them; a prompt chunk has blocks enough.
    const int heads = a->n_heads + a->n_kv_heads, slices = a->n_tokens < 64 ? (heads < 8 ? heads : 8) : 1;
    const int per_block = (heads + slices - 1) / slices;
    const size_t smem = sizeof(float2) * (size_t)(a->rot_dim / 2 > 0 ? a->rot_dim / 2 : 1);
    launch_maybe_pdl(a->pdl, rope_kv_kernel, dim3((unsigned)a->n_tokens, (unsigned)((heads + per_block - 1) / per_block)),
                     dim3(256), smem, stream, *a, per_block);
    return cudaGetLastError();
}

__global__ void swiglu_kernel(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = gate[i];
        out[i] = g / (1.0f + __expf(-g)) * up[i];
    }
}

static unsigned grid_for(size_t n) {
    size_t blocks = (n + 255) / 256;
    return (unsigned)(blocks < 65536 ? (blocks ? blocks : 1) : 65536);
}

extern "C" cudaError_t kiln_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, float *out,
                                        size_t n) {
    swiglu_kernel<<<grid_for(n), 256, 0, stream>>>(gate, up, out, n);
    return cudaGetLastError();
}

template <typename T> __global__ void swiglu16_kernel(T *gate, const T *up, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        const float g = to_f(gate[i]);
        gate[i] = from_f<T>(g / (1.0f + __expf(-g)) * to_f(up[i]));
    }
}

extern "C" cudaError_t kiln_cuda_swiglu16(cudaStream_t stream, void *gate, const void *up, kiln_cuda_type type,
                                          size_t n) {
    if (type == KILN_CUDA_BF16)
        swiglu16_kernel<<<grid_for(n), 256, 0, stream>>>(static_cast<__nv_bfloat16 *>(gate),
                                                         static_cast<const __nv_bfloat16 *>(up), n);
    else if (type == KILN_CUDA_F16)
        swiglu16_kernel<<<grid_for(n), 256, 0, stream>>>(static_cast<__half *>(gate), static_cast<const __half *>(up),
                                                         n);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

__global__ void convert_kernel(const float *src, void *dst, kiln_cuda_type type, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        if (type == KILN_CUDA_BF16)
            static_cast<__nv_bfloat16 *>(dst)[i] = __float2bfloat16_rn(src[i]);
        else
            static_cast<__half *>(dst)[i] = __float2half_rn(src[i]);
    }
}

extern "C" cudaError_t kiln_cuda_convert(cudaStream_t stream, const float *src, void *dst, kiln_cuda_type type,
                                         size_t n) {
    if (type == KILN_CUDA_F32) return cudaErrorInvalidValue;
    convert_kernel<<<grid_for(n), 256, 0, stream>>>(src, dst, type, n);
    return cudaGetLastError();
}
