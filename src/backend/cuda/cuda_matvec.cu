// Matrix-vector products for decode (1 to 8 tokens): the weights stream from
// memory exactly once, with 16-byte loads that bypass L1 (the activations live
// there), several loads in flight per lane. One warp per output row (two rows,
// gate and up, for the SwiGLU form), 8 warps per block.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"
#include "backend/cuda/cuda_pdl.cuh"

#define WARPS_PER_BLOCK 8
#define LOADS_IN_FLIGHT 4

// 16 bytes of weights that nothing will read again: no L1 allocation.
static __device__ __forceinline__ uint4 load_stream(const uint4 *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

template <bool BF16> static __device__ __forceinline__ void unpack8(const uint4 &u, float f[8]) {
    const uint32_t words[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; i++) {
        if (BF16) {
            // bf16 is the top half of a float
            f[2 * i] = __uint_as_float(words[i] << 16);
            f[2 * i + 1] = __uint_as_float(words[i] & 0xffff0000u);
        } else {
            __half2 h = *reinterpret_cast<const __half2 *>(&words[i]);
            float2 p = __half22float2(h);
            f[2 * i] = p.x;
            f[2 * i + 1] = p.y;
        }
    }
}

template <int NT>
static __device__ __forceinline__ void dot8(const float wf[8], const float *x, int k, int chunk, float acc[NT]) {
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * k) + 2 * chunk;
        float4 a = __ldg(xp), b = __ldg(xp + 1);
        acc[t] = fmaf(wf[0], a.x, acc[t]);
        acc[t] = fmaf(wf[1], a.y, acc[t]);
        acc[t] = fmaf(wf[2], a.z, acc[t]);
        acc[t] = fmaf(wf[3], a.w, acc[t]);
        acc[t] = fmaf(wf[4], b.x, acc[t]);
        acc[t] = fmaf(wf[5], b.y, acc[t]);
        acc[t] = fmaf(wf[6], b.z, acc[t]);
        acc[t] = fmaf(wf[7], b.w, acc[t]);
    }
}

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// The RMSNorm weights of chunk c folded into the 8 weights of that chunk.
template <bool NORM> static __device__ __forceinline__ void fold_norm(float wf[8], const float *norm, int c) {
    if (!NORM) return;
    const float4 *g = reinterpret_cast<const float4 *>(norm) + 2 * c;
    const float4 g0 = __ldg(g), g1 = __ldg(g + 1);
    wf[0] *= g0.x, wf[1] *= g0.y, wf[2] *= g0.z, wf[3] *= g0.w;
    wf[4] *= g1.x, wf[5] *= g1.y, wf[6] *= g1.z, wf[7] *= g1.w;
}

// acc[t] += row . x[t] over this lane's chunks of the row (8 elements each),
// with the RMSNorm weights folded in when NORM.
template <int NT, bool BF16, bool NORM>
static __device__ __forceinline__ void row_dot(const uint4 *row, const float *x, int k, int lane, const float *norm,
                                               float acc[NT]) {
    const int chunks = k / 8;
    int c = lane;
    for (; c + 32 * (LOADS_IN_FLIGHT - 1) < chunks; c += 32 * LOADS_IN_FLIGHT) {
        uint4 w[LOADS_IN_FLIGHT];
#pragma unroll
        for (int u = 0; u < LOADS_IN_FLIGHT; u++) w[u] = load_stream(row + c + 32 * u);
#pragma unroll
        for (int u = 0; u < LOADS_IN_FLIGHT; u++) {
            float wf[8];
            unpack8<BF16>(w[u], wf);
            fold_norm<NORM>(wf, norm, c + 32 * u);
            dot8<NT>(wf, x, k, c + 32 * u, acc);
        }
    }
    for (; c < chunks; c += 32) {
        float wf[8];
        unpack8<BF16>(load_stream(row + c), wf);
        fold_norm<NORM>(wf, norm, c);
        dot8<NT>(wf, x, k, c, acc);
    }
}

// inv[t] = 1 / sqrt(mean(x[t]^2) + eps), computed by the whole block (every
// thread must arrive: it synchronises).
template <int NT>
static __device__ __forceinline__ void block_inv_rms(const float *x, int k, float eps, float inv[NT]) {
    __shared__ float partial[WARPS_PER_BLOCK][NT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float ss[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) ss[t] = 0.0f;
    for (int c = threadIdx.x; c < k / 4; c += blockDim.x) {
#pragma unroll
        for (int t = 0; t < NT; t++) {
            const float4 v = __ldg(reinterpret_cast<const float4 *>(x + (size_t)t * k) + c);
            ss[t] += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
        }
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float total = warp_sum(ss[t]);
        if (lane == 0) partial[warp][t] = total;
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

// The first lines of this lane's part of a row, towards L2 while the
// previous kernel finishes (the weights do not depend on it).
static __device__ __forceinline__ void prefetch_row(const uint4 *row, int k, int lane) {
    const int chunks = k / 8;
#pragma unroll
    for (int u = 0; u < LOADS_IN_FLIGHT; u++)
        if (lane + 32 * u < chunks) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + lane + 32 * u));
}

template <int NT, bool BF16, bool GLU, bool NORM>
__global__ void __launch_bounds__(WARPS_PER_BLOCK * 32) matvec_kernel(const kiln_cuda_matvec_args a) {
    pdl_allow_next();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    int r = blockIdx.x * WARPS_PER_BLOCK + warp, i = 0;
    bool active;
    if (GLU) {
        active = r < a.rows[0];
    } else {
        while (i < a.count && r >= a.rows[i]) r -= a.rows[i++];
        active = i < a.count;
    }
    const size_t row_chunks = (size_t)a.k / 8;
    if (a.pdl && active) {
        prefetch_row(static_cast<const uint4 *>(a.w[i]) + (size_t)r * row_chunks, a.k, lane);
        if (GLU) prefetch_row(static_cast<const uint4 *>(a.w[1]) + (size_t)r * row_chunks, a.k, lane);
    }
    pdl_wait();
    float inv[NT];
    if (NORM) block_inv_rms<NT>(a.x, a.k, a.norm_eps, inv); // before any warp leaves: it synchronises
    if (!active) return;
    float acc[NT], acc_up[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = acc_up[t] = 0.0f;
    row_dot<NT, BF16, NORM>(static_cast<const uint4 *>(a.w[i]) + (size_t)r * row_chunks, a.x, a.k, lane, a.norm,
                            acc);
    if (GLU)
        row_dot<NT, BF16, NORM>(static_cast<const uint4 *>(a.w[1]) + (size_t)r * row_chunks, a.x, a.k, lane, a.norm,
                                acc_up);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        acc[t] = warp_sum(acc[t]);
        if (GLU) acc_up[t] = warp_sum(acc_up[t]);
        if (NORM) acc[t] *= inv[t], acc_up[t] *= inv[t];
    }
    // Every lane holds every sum; lane t writes token t.
#pragma unroll
    for (int t = 0; t < NT; t++) {
        if (lane != t) continue;
        const size_t out = (size_t)t * a.rows[i] + r;
        if (GLU) {
            float g = acc[t];
            a.y[0][out] = g / (1.0f + __expf(-g)) * acc_up[t];
        } else {
            float v = acc[t] + (a.bias[i] ? a.bias[i][r] : 0.0f);
            if (a.accumulate)
                a.y[i][out] += v;
            else
                a.y[i][out] = v;
        }
    }
}

template <int NT, bool BF16> static void launch(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    dim3 grid((unsigned)((units + WARPS_PER_BLOCK - 1) / WARPS_PER_BLOCK)), block(WARPS_PER_BLOCK * 32);
    if (a->glu && a->norm)
        launch_maybe_pdl(a->pdl, matvec_kernel<NT, BF16, true, true>, grid, block, 0, stream, *a);
    else if (a->glu)
        launch_maybe_pdl(a->pdl, matvec_kernel<NT, BF16, true, false>, grid, block, 0, stream, *a);
    else if (a->norm)
        launch_maybe_pdl(a->pdl, matvec_kernel<NT, BF16, false, true>, grid, block, 0, stream, *a);
    else
        launch_maybe_pdl(a->pdl, matvec_kernel<NT, BF16, false, false>, grid, block, 0, stream, *a);
}

template <bool BF16> static void launch_tokens(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    switch (a->n_tokens) {
    case 1: launch<1, BF16>(stream, a, units); break;
    case 2: launch<2, BF16>(stream, a, units); break;
    case 3: launch<3, BF16>(stream, a, units); break;
    case 4: launch<4, BF16>(stream, a, units); break;
    case 5: launch<5, BF16>(stream, a, units); break;
    case 6: launch<6, BF16>(stream, a, units); break;
    case 7: launch<7, BF16>(stream, a, units); break;
    default: launch<8, BF16>(stream, a, units); break;
    }
}

extern "C" cudaError_t kiln_cuda_matvec(cudaStream_t stream, const kiln_cuda_matvec_args *a) {
    if (a->n_tokens < 1 || a->n_tokens > KILN_MATVEC_MAX_TOKENS || a->count < 1 ||
        a->count > KILN_MATVEC_MAX_WEIGHTS || a->k % 8 != 0 || (a->glu && a->count != 2) ||
        (a->accumulate && a->count != 1) || a->type == KILN_CUDA_F32)
        return cudaErrorInvalidValue;
    int units = 0;
    for (int i = 0; i < a->count; i++) units += a->rows[i];
    if (a->glu) units = a->rows[0];
    if (units <= 0) return cudaSuccess;
    if (a->type == KILN_CUDA_BF16)
        launch_tokens<true>(stream, a, units);
    else
        launch_tokens<false>(stream, a, units);
    return cudaGetLastError();
}
