// The small kernels of a forward step: RMSNorm, embedding rows, RoPE fused
// with the KV-cache write, SwiGLU, and the 16-bit conversion of GEMM inputs.
// Each reads and writes its data once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

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

// 4 values to T[4] at p (16 bytes for float, 8 for the 16-bit types; p aligned).
template <typename T> static __device__ __forceinline__ void store4(T *p, float a, float b, float c, float d);
template <> __device__ __forceinline__ void store4<float>(float *p, float a, float b, float c, float d) {
    *reinterpret_cast<float4 *>(p) = make_float4(a, b, c, d);
}
template <> __device__ __forceinline__ void store4<__half>(__half *p, float a, float b, float c, float d) {
    __half2 lo = __floats2half2_rn(a, b), hi = __floats2half2_rn(c, d);
    *reinterpret_cast<uint2 *>(p) = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
}
template <>
__device__ __forceinline__ void store4<__nv_bfloat16>(__nv_bfloat16 *p, float a, float b, float c, float d) {
    __nv_bfloat162 lo = __floats2bfloat162_rn(a, b), hi = __floats2bfloat162_rn(c, d);
    *reinterpret_cast<uint2 *>(p) = make_uint2(*reinterpret_cast<uint32_t *>(&lo), *reinterpret_cast<uint32_t *>(&hi));
}

// One block per row. T: float, or a 16-bit type written straight into a
// GEMM's input. Rows of a multiple of 4 move as float4s (VEC).
template <typename T, bool VEC>
__global__ void rmsnorm_kernel(const float *x, const float *weight, T *y, int dim, float eps) {
    __shared__ float partial[32];
    const float *row = x + (size_t)blockIdx.x * dim;
    T *out = y + (size_t)blockIdx.x * dim;
    float ss = 0.0f;
    if (VEC) {
        const float4 *row4 = reinterpret_cast<const float4 *>(row);
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            const float4 v = row4[i];
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += row[i] * row[i];
    }
    const float inv = rsqrtf(block_sum(ss, partial) / (float)dim + eps);
    if (VEC) {
        const float4 *row4 = reinterpret_cast<const float4 *>(row), *w4 = reinterpret_cast<const float4 *>(weight);
        for (int i = threadIdx.x; i < dim / 4; i += blockDim.x) {
            const float4 v = row4[i], w = w4[i];
            store4<T>(out + 4 * i, v.x * inv * w.x, v.y * inv * w.y, v.z * inv * w.z, v.w * inv * w.w);
        }
    } else {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) out[i] = from_f<T>(row[i] * inv * weight[i]);
    }
}

template <typename T>
static cudaError_t launch_rmsnorm(cudaStream_t stream, const float *x, const float *weight, T *y, int n, int dim,
                                  float eps) {
    if (n <= 0 || dim <= 0) return cudaSuccess;
    // Many rows (a prompt chunk): 256 threads each, several blocks per SM;
    // one row (decode): up to 1024 threads, so that one SM finishes sooner.
    const int per_thread_items = dim % 4 == 0 ? dim / 4 : dim, cap = n >= 64 ? 256 : 1024;
    const int threads = per_thread_items >= cap ? cap : ((per_thread_items + 31) / 32) * 32;
    if (dim % 4 == 0 && ((uintptr_t)x | (uintptr_t)weight | (uintptr_t)y) % 16 == 0)
        rmsnorm_kernel<T, true><<<dim3(n), dim3(threads), 0, stream>>>(x, weight, y, dim, eps);
    else
        rmsnorm_kernel<T, false><<<dim3(n), dim3(threads), 0, stream>>>(x, weight, y, dim, eps);
    return cudaGetLastError();
}

extern "C" cudaError_t kiln_cuda_rmsnorm(cudaStream_t stream, const float *x, const float *weight, float *y, int n,
                                         int dim, float eps) {
    return launch_rmsnorm(stream, x, weight, y, n, dim, eps);
}

extern "C" cudaError_t kiln_cuda_rmsnorm16(cudaStream_t stream, const float *x, const float *weight, void *y,
                                           kiln_cuda_type type, int n, int dim, float eps) {
    if (type == KILN_CUDA_BF16) return launch_rmsnorm(stream, x, weight, static_cast<__nv_bfloat16 *>(y), n, dim, eps);
    if (type == KILN_CUDA_F16) return launch_rmsnorm(stream, x, weight, static_cast<__half *>(y), n, dim, eps);
    return cudaErrorInvalidValue;
}

static __device__ __forceinline__ float load_as_float(const void *p, size_t i, kiln_cuda_type type) {
    switch (type) {
    case KILN_CUDA_F16: return __half2float(static_cast<const __half *>(p)[i]);
    case KILN_CUDA_BF16: return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    default: return static_cast<const float *>(p)[i];
    }
}

// An id outside the table gives a row of zeros, never a read out of bounds:
// ids can come from the device (a draw that failed reads -1; the host sees
// the failure and drops the step), where the host never checked them.
__global__ void get_rows_kernel(const void *table, kiln_cuda_type type, int dim, int rows, const int32_t *ids,
                                float *out) {
    const int32_t id = ids[blockIdx.x];
    const bool valid = id >= 0 && id < rows;
    const size_t base = valid ? (size_t)id * dim : 0;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        out[(size_t)blockIdx.x * dim + i] = valid ? load_as_float(table, base + i, type) : 0.0f;
}

extern "C" cudaError_t kiln_cuda_get_rows(cudaStream_t stream, const void *table, kiln_cuda_type type, int dim,
                                          int rows, const int32_t *ids, int n, float *out) {
    if (n <= 0) return cudaSuccess;
    get_rows_kernel<<<dim3(n), dim3(256), 0, stream>>>(table, type, dim, rows, ids, out);
    return cudaGetLastError();
}

// What a block of the RoPE kernels works on: its token's rows of q, k and v,
// the token's cache slot, and its slice [h0, h1) of the q heads then k heads.
// rope_token_begin also fills cos_sin (the token's rotation angles, computed
// in double as on the CPU: long contexts keep their precision) and waits
// until every thread has it.
typedef struct rope_token {
    float *q, *k;
    const float *v;
    __half *kc, *vc;
    int h0, h1;
} rope_token;

static __device__ __forceinline__ rope_token rope_token_begin(const kiln_cuda_rope_kv_args &a, int heads_per_block,
                                                              float2 *cos_sin) {
    const int t = blockIdx.x, p = a.pos[t], hd = a.head_dim;
    for (int i = threadIdx.x; i < a.rot_dim / 2; i += blockDim.x) {
        double s, c;
        sincos((double)p * a.inv_freq[i], &s, &c);
        cos_sin[i] = make_float2((float)c, (float)s);
    }
    const int32_t block = a.block_tables[(size_t)a.seq[t] * a.max_blocks_per_seq + p / a.block_size];
    const size_t slot = ((size_t)block * a.block_size + p % a.block_size) * (size_t)a.n_kv_heads * hd;
    rope_token r;
    r.kc = static_cast<__half *>(a.k_cache) + slot, r.vc = static_cast<__half *>(a.v_cache) + slot;
    r.q = a.q + (size_t)t * a.n_heads * hd, r.k = a.k + (size_t)t * a.n_kv_heads * hd;
    r.v = a.v + (size_t)t * a.n_kv_heads * hd;
    r.h0 = blockIdx.y * heads_per_block, r.h1 = min(r.h0 + heads_per_block, a.n_heads + a.n_kv_heads);
    __syncthreads(); // cos_sin is complete
    return r;
}

// Grid (token, slice of heads): q heads then k heads, and the v rows of the
// slice's kv heads. The rotation angles of the token are computed once per
// block and shared by every head; then each pair of q and k is rotated, k and
// v stored as f16 in the token's cache slot.
__global__ void rope_kv_kernel(const kiln_cuda_rope_kv_args a, int heads_per_block) {
    extern __shared__ float2 cos_sin[]; // [rot_dim / 2]
    const rope_token r = rope_token_begin(a, heads_per_block, cos_sin);
    const int half_rot = a.rot_dim / 2, hd = a.head_dim;
    for (int j = threadIdx.x; j < (r.h1 - r.h0) * half_rot; j += blockDim.x) {
        const int head = r.h0 + j / half_rot, i = j % half_rot;
        const bool is_q = head < a.n_heads;
        const int kvh = head - a.n_heads;
        float *x = is_q ? r.q + (size_t)head * hd : r.k + (size_t)kvh * hd;
        const int ia = a.interleaved ? 2 * i : i, ib = a.interleaved ? 2 * i + 1 : i + half_rot;
        const float2 cs = cos_sin[i];
        const float xa = x[ia], xb = x[ib];
        const float ra = xa * cs.x - xb * cs.y, rb = xa * cs.y + xb * cs.x;
        x[ia] = ra;
        x[ib] = rb;
        if (!is_q) {
            r.kc[(size_t)kvh * hd + ia] = __float2half_rn(ra);
            r.kc[(size_t)kvh * hd + ib] = __float2half_rn(rb);
        }
    }
    // The slice's kv heads: dimensions past rot_dim are not rotated; V is stored as it is.
    const int kv0 = max(r.h0 - a.n_heads, 0), kv1 = max(r.h1 - a.n_heads, 0), pass = hd - a.rot_dim;
    for (int j = threadIdx.x; j < (kv1 - kv0) * pass; j += blockDim.x) {
        const int head = kv0 + j / pass, d = a.rot_dim + j % pass;
        r.kc[(size_t)head * hd + d] = __float2half_rn(r.k[(size_t)head * hd + d]);
    }
    for (int j = kv0 * hd + threadIdx.x; j < kv1 * hd; j += blockDim.x) r.vc[j] = __float2half_rn(r.v[j]);
}

// rope_kv_kernel with 16-byte accesses (a prompt chunk moves tens of MB
// through it): each thread rotates 4 pairs of a head, from two float4 (the
// halves' 4 consecutive dimensions, or 8 consecutive interleaved ones), and
// stores k and v as 4 halves. Needs rot_dim / 2 and head_dim - rot_dim
// multiples of 4 (every model kiln knows); otherwise rope_kv_kernel.
static __device__ __forceinline__ uint2 pack_half4(float4 f) {
    const __half2 lo = __floats2half2_rn(f.x, f.y), hi = __floats2half2_rn(f.z, f.w);
    return make_uint2(*reinterpret_cast<const uint32_t *>(&lo), *reinterpret_cast<const uint32_t *>(&hi));
}

__global__ void rope_kv4_kernel(const kiln_cuda_rope_kv_args a, int heads_per_block) {
    extern __shared__ float2 cos_sin[]; // [rot_dim / 2]
    const rope_token r = rope_token_begin(a, heads_per_block, cos_sin);
    const int half_rot = a.rot_dim / 2, hd = a.head_dim;
    const int quads = half_rot / 4; // 4 pairs a thread
    for (int j = threadIdx.x; j < (r.h1 - r.h0) * quads; j += blockDim.x) {
        const int head = r.h0 + j / quads, i = (j % quads) * 4;
        const bool is_q = head < a.n_heads;
        const int kvh = head - a.n_heads;
        float *x = is_q ? r.q + (size_t)head * hd : r.k + (size_t)kvh * hd;
        // (xa, xb) of pairs i .. i + 3, and where they live
        const int oa = a.interleaved ? 2 * i : i, ob = a.interleaved ? 2 * i + 4 : i + half_rot;
        const float4 f0 = *reinterpret_cast<const float4 *>(x + oa), f1 = *reinterpret_cast<const float4 *>(x + ob);
        float xa[4], xb[4];
        if (a.interleaved)
            xa[0] = f0.x, xb[0] = f0.y, xa[1] = f0.z, xb[1] = f0.w, xa[2] = f1.x, xb[2] = f1.y, xa[3] = f1.z, xb[3] = f1.w;
        else
            xa[0] = f0.x, xa[1] = f0.y, xa[2] = f0.z, xa[3] = f0.w, xb[0] = f1.x, xb[1] = f1.y, xb[2] = f1.z, xb[3] = f1.w;
        float ra[4], rb[4];
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const float2 cs = cos_sin[i + u];
            ra[u] = xa[u] * cs.x - xb[u] * cs.y, rb[u] = xa[u] * cs.y + xb[u] * cs.x;
        }
        const float4 g0 = a.interleaved ? make_float4(ra[0], rb[0], ra[1], rb[1]) : make_float4(ra[0], ra[1], ra[2], ra[3]);
        const float4 g1 = a.interleaved ? make_float4(ra[2], rb[2], ra[3], rb[3]) : make_float4(rb[0], rb[1], rb[2], rb[3]);
        *reinterpret_cast<float4 *>(x + oa) = g0;
        *reinterpret_cast<float4 *>(x + ob) = g1;
        if (!is_q) {
            *reinterpret_cast<uint2 *>(r.kc + (size_t)kvh * hd + oa) = pack_half4(g0);
            *reinterpret_cast<uint2 *>(r.kc + (size_t)kvh * hd + ob) = pack_half4(g1);
        }
    }
    // The slice's kv heads: dimensions past rot_dim are not rotated; V is stored as it is.
    const int kv0 = max(r.h0 - a.n_heads, 0), kv1 = max(r.h1 - a.n_heads, 0), pass4 = (hd - a.rot_dim) / 4;
    for (int j = threadIdx.x; j < (kv1 - kv0) * pass4; j += blockDim.x) {
        const size_t e = (size_t)(kv0 + j / pass4) * hd + a.rot_dim + (j % pass4) * 4;
        *reinterpret_cast<uint2 *>(r.kc + e) = pack_half4(*reinterpret_cast<const float4 *>(r.k + e));
    }
    for (int j = kv0 * hd / 4 + threadIdx.x; j < kv1 * hd / 4; j += blockDim.x)
        *reinterpret_cast<uint2 *>(r.vc + 4 * (size_t)j) = pack_half4(reinterpret_cast<const float4 *>(r.v)[j]);
}

extern "C" cudaError_t kiln_cuda_rope_kv_store(cudaStream_t stream, const kiln_cuda_rope_kv_args *a) {
    if (a->n_tokens <= 0) return cudaSuccess;
    if (a->rot_dim % 2 || a->rot_dim > a->head_dim) return cudaErrorInvalidValue;
    // Few tokens (decode): spread each token's heads over 8 blocks so that more
    // than one SM works on them; a prompt chunk has blocks enough.
    const int heads = a->n_heads + a->n_kv_heads, slices = a->n_tokens < 64 ? (heads < 8 ? heads : 8) : 1;
    const int per_block = (heads + slices - 1) / slices;
    const size_t smem = sizeof(float2) * (size_t)(a->rot_dim / 2 > 0 ? a->rot_dim / 2 : 1);
    const bool aligned = (((uintptr_t)a->q | (uintptr_t)a->k | (uintptr_t)a->v) & 15) == 0 &&
                         (((uintptr_t)a->k_cache | (uintptr_t)a->v_cache) & 7) == 0;
    const bool vec = aligned && a->rot_dim > 0 && (a->rot_dim / 2) % 4 == 0 && (a->head_dim - a->rot_dim) % 4 == 0;
    const dim3 grid((unsigned)a->n_tokens, (unsigned)((heads + per_block - 1) / per_block));
    if (vec)
        rope_kv4_kernel<<<grid, dim3(256), smem, stream>>>(*a, per_block);
    else
        rope_kv_kernel<<<grid, dim3(256), smem, stream>>>(*a, per_block);
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

// y += x, 4 at a time (n4 float4 groups, 0 when unaligned), the rest one by one.
__global__ void add_kernel(float *y, const float *x, size_t n, size_t n4) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t i = first; i < n4; i += stride) {
        float4 a = reinterpret_cast<float4 *>(y)[i];
        const float4 b = reinterpret_cast<const float4 *>(x)[i];
        a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
        reinterpret_cast<float4 *>(y)[i] = a;
    }
    for (size_t i = 4 * n4 + first; i < n; i += stride) y[i] += x[i];
}

extern "C" cudaError_t kiln_cuda_add(cudaStream_t stream, float *y, const float *x, size_t n) {
    if (n == 0) return cudaSuccess;
    const size_t n4 = ((uintptr_t)y | (uintptr_t)x) % 16 ? 0 : n / 4;
    add_kernel<<<grid_for(n - 3 * n4), 256, 0, stream>>>(y, x, n, n4);
    return cudaGetLastError();
}

// Reads n4 16-byte words and keeps nothing: what the buffer held before
// leaves L2 with no write-back, as the previous kernel's clean lines do. The
// store never happens (no word of a memset buffer has four distinct parts)
// but keeps the loads alive.
__global__ void read_through_kernel(const uint4 *p, size_t n4, unsigned *sink) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    uint4 acc = make_uint4(0, 0, 0, 0);
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n4; i += stride) {
        const uint4 v = __ldcg(p + i);
        acc.x ^= v.x, acc.y ^= v.y, acc.z ^= v.z, acc.w ^= v.w;
    }
    if (acc.x == 1u && acc.y == 2u && acc.z == 3u && acc.w == 4u) *sink = acc.x;
}

extern "C" cudaError_t kiln_cuda_read_through(cudaStream_t stream, const void *p, size_t bytes, unsigned *sink) {
    if (bytes < 16) return cudaSuccess;
    read_through_kernel<<<grid_for(bytes / 16), 256, 0, stream>>>(static_cast<const uint4 *>(p), bytes / 16, sink);
    return cudaGetLastError();
}

extern "C" cudaError_t kiln_cuda_swiglu(cudaStream_t stream, const float *gate, const float *up, float *out,
                                        size_t n) {
    swiglu_kernel<<<grid_for(n), 256, 0, stream>>>(gate, up, out, n);
    return cudaGetLastError();
}

// 8 values at a time (16-byte loads and stores; n8 groups, 0 when the
// buffers are not 16-byte aligned), the rest one by one.
template <typename T> __global__ void swiglu16_kernel(T *gate, const T *up, size_t n, size_t n8) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    uint4 *g8 = reinterpret_cast<uint4 *>(gate);
    const uint4 *u8 = reinterpret_cast<const uint4 *>(up);
    for (size_t i = first; i < n8; i += stride) {
        uint4 gv = g8[i];
        const uint4 uv = u8[i];
        T *g = reinterpret_cast<T *>(&gv);
        const T *u = reinterpret_cast<const T *>(&uv);
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const float x = to_f(g[j]);
            g[j] = from_f<T>(x / (1.0f + __expf(-x)) * to_f(u[j]));
        }
        g8[i] = gv;
    }
    for (size_t i = 8 * n8 + first; i < n; i += stride) {
        const float g = to_f(gate[i]);
        gate[i] = from_f<T>(g / (1.0f + __expf(-g)) * to_f(up[i]));
    }
}

extern "C" cudaError_t kiln_cuda_swiglu16(cudaStream_t stream, void *gate, const void *up, kiln_cuda_type type,
                                          size_t n) {
    const size_t n8 = ((uintptr_t)gate | (uintptr_t)up) % 16 ? 0 : n / 8;
    if (type == KILN_CUDA_BF16)
        swiglu16_kernel<<<grid_for(n - 7 * n8), 256, 0, stream>>>(static_cast<__nv_bfloat16 *>(gate),
                                                                  static_cast<const __nv_bfloat16 *>(up), n, n8);
    else if (type == KILN_CUDA_F16)
        swiglu16_kernel<<<grid_for(n - 7 * n8), 256, 0, stream>>>(static_cast<__half *>(gate),
                                                                  static_cast<const __half *>(up), n, n8);
    else
        return cudaErrorInvalidValue;
    return cudaGetLastError();
}

// 4 values at a time (a float4 in, 8 bytes out; n4 groups, 0 when the
// buffers are not aligned for that), the rest one by one.
template <typename T> __global__ void convert_kernel(const float *src, T *dst, size_t n, size_t n4) {
    const size_t stride = (size_t)gridDim.x * blockDim.x, first = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
    for (size_t i = first; i < n4; i += stride) {
        const float4 v = reinterpret_cast<const float4 *>(src)[i];
        store4<T>(dst + 4 * i, v.x, v.y, v.z, v.w);
    }
    for (size_t i = 4 * n4 + first; i < n; i += stride) dst[i] = from_f<T>(src[i]);
}

extern "C" cudaError_t kiln_cuda_convert(cudaStream_t stream, const float *src, void *dst, kiln_cuda_type type,
                                         size_t n) {
    if (type == KILN_CUDA_F32) return cudaErrorInvalidValue;
    const size_t n4 = (uintptr_t)src % 16 || (uintptr_t)dst % 8 ? 0 : n / 4;
    if (type == KILN_CUDA_BF16)
        convert_kernel<<<grid_for(n - 3 * n4), 256, 0, stream>>>(src, static_cast<__nv_bfloat16 *>(dst), n, n4);
    else
        convert_kernel<<<grid_for(n - 3 * n4), 256, 0, stream>>>(src, static_cast<__half *>(dst), n, n4);
    return cudaGetLastError();
}
