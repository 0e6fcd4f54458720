// Matrix-vector products for 1 to 8 tokens on tensor cores (KILN_CUDA_MATVEC_TC=1,
// off until measured). Why: decode's products lose their time to arithmetic,
// not to the reads (pure reads of the same shapes reach 95% of the card's
// bandwidth, docs/perf.md); the FMA form spends ~19 instructions per 16
// bytes of weights (two float4 loads of x, unpacking, 8 FMAs), this one ~5.
//
// One block (8 warps) per 16-row block of the weights; warp w takes the
// 32-column rounds w, w + 8, ... of k. Lane (g = lane / 4, t = lane % 4)
// loads 16 bytes of rows g and g + 8 at column c = 32 q + 8 t: their 32-bit
// words are, unchanged, the A fragments of two mma.m16n8k16 (k relabelled:
// the first takes columns c .. c + 3, the second c + 4 .. c + 7, the same
// relabelling for the B fragment, which is x of token g at those columns,
// rounded to the weights' 16-bit type as the GEMM path rounds it). The
// accumulators are rows g, g + 8 x tokens 2t, 2t + 1; the block adds its
// warps' in shared memory and writes the epilogue (bias, residual, SwiGLU).
// RMSNorm (1 or 2 tokens): the block stages x * norm, and the inverse RMS is
// applied before the rounding, as on the GEMM path. Not the RoPE form: Q/K/V
// keeps the FMA kernel. tools/check_tc_fragments.py checks this index
// mapping on the CPU against PTX's fragment layouts.
#include "backend/cuda/cuda_matvec.cuh"

#define TC_ROWS 16
#define TC_COLS 32 // columns of k per round of a warp

// c += a (16x16, row) * b (16x8, col), 16-bit inputs, f32 accumulators.
template <bool BF16>
static __device__ __forceinline__ void mma_tc(float c[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                              uint32_t b0, uint32_t b1) {
    if (BF16)
        asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
    else
        asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two floats as one 16-bit pair, lo in the low half (the lower k).
template <bool BF16> static __device__ __forceinline__ uint32_t pack2(float lo, float hi) {
    if (BF16) {
        __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&v);
    }
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t *>(&v);
}

// R = 1: one weight (count 1); R = 2: SwiGLU's gate and up. Rounds of U
// columns-groups are loaded together before their products.
template <bool BF16, int R, bool NORM>
__global__ void __launch_bounds__(WARPS_PER_BLOCK * 32) matvec_tc_kernel(const kiln_cuda_matvec_args a) {
    constexpr int U = R == 1 ? 4 : 2;
    extern __shared__ float4 staged4[]; // NORM: [n_tokens][k] floats
    __shared__ float red[WARPS_PER_BLOCK][R][TC_ROWS][8];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int nt = a.n_tokens, k = a.k, rows = a.rows[0], r0 = blockIdx.x * TC_ROWS;
    const float *x = a.x;
    float inv[2] = {1.0f, 1.0f};
    if (NORM) { // nt is 1 or 2 (the caller normalises larger batches itself)
        float *xs = reinterpret_cast<float *>(staged4);
        if (nt == 1) {
            float one[1];
            stage_normed<1>(a.x, a.norm, k, a.norm_eps, xs, one);
            inv[0] = one[0];
        } else {
            stage_normed<2>(a.x, a.norm, k, a.norm_eps, xs, inv);
        }
        x = xs;
    }
    const bool lo_ok = r0 + g < rows, hi_ok = r0 + g + 8 < rows;
    const size_t row_chunks = (size_t)k / 8;
    const uint4 *w_lo[R], *w_hi[R];
#pragma unroll
    for (int m = 0; m < R; m++) {
        const uint4 *w = static_cast<const uint4 *>(a.w[m]);
        w_lo[m] = w + (size_t)(lo_ok ? r0 + g : 0) * row_chunks;
        w_hi[m] = w + (size_t)(hi_ok ? r0 + g + 8 : 0) * row_chunks;
    }
    const float *xg = x + (size_t)(g < nt ? g : 0) * k; // token g's input
    float acc[R][4];
#pragma unroll
    for (int m = 0; m < R; m++) acc[m][0] = acc[m][1] = acc[m][2] = acc[m][3] = 0.0f;

    const int rounds = (k + TC_COLS - 1) / TC_COLS;
    for (int q0 = warp; q0 < rounds; q0 += WARPS_PER_BLOCK * U) {
        uint4 lo[R][U], hi[R][U];
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = (q0 + u * WARPS_PER_BLOCK) * TC_COLS + 8 * t; // this lane's 8 columns
            const bool in = c < k;
#pragma unroll
            for (int m = 0; m < R; m++) {
                lo[m][u] = in && lo_ok ? load_stream(w_lo[m] + c / 8) : make_uint4(0, 0, 0, 0);
                hi[m][u] = in && hi_ok ? load_stream(w_hi[m] + c / 8) : make_uint4(0, 0, 0, 0);
            }
        }
#pragma unroll
        for (int u = 0; u < U; u++) {
            const int c = (q0 + u * WARPS_PER_BLOCK) * TC_COLS + 8 * t;
            uint32_t b[4] = {0, 0, 0, 0};
            if (c < k && g < nt) {
                float4 xa, xb;
                if (NORM) {
                    xa = reinterpret_cast<const float4 *>(xg + c)[0];
                    xb = reinterpret_cast<const float4 *>(xg + c)[1];
                } else {
                    xa = __ldg(reinterpret_cast<const float4 *>(xg + c));
                    xb = __ldg(reinterpret_cast<const float4 *>(xg + c) + 1);
                }
                if (NORM) { // round x * norm * inv, as the GEMM path's RMSNorm does
                    const float s = g == 0 ? inv[0] : inv[1];
                    xa.x *= s, xa.y *= s, xa.z *= s, xa.w *= s, xb.x *= s, xb.y *= s, xb.z *= s, xb.w *= s;
                }
                b[0] = pack2<BF16>(xa.x, xa.y), b[1] = pack2<BF16>(xa.z, xa.w);
                b[2] = pack2<BF16>(xb.x, xb.y), b[3] = pack2<BF16>(xb.z, xb.w);
            }
#pragma unroll
            for (int m = 0; m < R; m++) {
                mma_tc<BF16>(acc[m], lo[m][u].x, hi[m][u].x, lo[m][u].y, hi[m][u].y, b[0], b[1]);
                mma_tc<BF16>(acc[m], lo[m][u].z, hi[m][u].z, lo[m][u].w, hi[m][u].w, b[2], b[3]);
            }
        }
    }
    // acc[m]: (row g, token 2t), (g, 2t + 1), (g + 8, 2t), (g + 8, 2t + 1).
#pragma unroll
    for (int m = 0; m < R; m++) {
        red[warp][m][g][2 * t] = acc[m][0];
        red[warp][m][g][2 * t + 1] = acc[m][1];
        red[warp][m][g + 8][2 * t] = acc[m][2];
        red[warp][m][g + 8][2 * t + 1] = acc[m][3];
    }
    __syncthreads();
    if (threadIdx.x >= TC_ROWS * 8) return;
    const int i = threadIdx.x / 8, tok = threadIdx.x % 8, r = r0 + i;
    if (tok >= nt || r >= rows) return;
    float sum[R];
#pragma unroll
    for (int m = 0; m < R; m++) {
        sum[m] = 0.0f;
#pragma unroll
        for (int w = 0; w < WARPS_PER_BLOCK; w++) sum[m] += red[w][m][i][tok];
    }
    const size_t out = (size_t)tok * rows + r;
    if (R == 2) {
        const float gate = sum[0];
        a.y[0][out] = gate / (1.0f + __expf(-gate)) * sum[R - 1];
    } else {
        const float v = sum[0] + (a.bias[0] ? a.bias[0][r] : 0.0f);
        if (a.accumulate)
            a.y[0][out] += v;
        else
            a.y[0][out] = v;
    }
}

template <bool BF16, int R, bool NORM> static cudaError_t launch_tc(cudaStream_t stream, const kiln_cuda_matvec_args *a) {
    const size_t smem = NORM ? sizeof(float) * (size_t)a->n_tokens * (size_t)a->k : 0;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(matvec_tc_kernel<BF16, R, NORM>,
                                             cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e != cudaSuccess) return e;
    }
    const unsigned blocks = (unsigned)((a->rows[0] + TC_ROWS - 1) / TC_ROWS);
    matvec_tc_kernel<BF16, R, NORM><<<blocks, WARPS_PER_BLOCK * 32, smem, stream>>>(*a);
    return cudaGetLastError();
}

extern "C" bool kiln_cuda_matvec_tc_takes(const kiln_cuda_matvec_args *a) {
    return a->n_tokens >= 1 && a->n_tokens <= 8 && a->type != KILN_CUDA_F32 && a->k > 0 && a->k % 8 == 0 &&
           !a->has_rope && (a->glu ? a->count == 2 && !a->bias[0] && !a->bias[1] : a->count == 1) &&
           (!a->norm || a->n_tokens <= KILN_MATVEC_NORM_MAX_TOKENS) && !(a->glu && a->accumulate) &&
           !a->next_x && !a->ss; // the prepared RMSNorm is the FMA kernel's
}

extern "C" cudaError_t kiln_cuda_matvec_tc(cudaStream_t stream, const kiln_cuda_matvec_args *a) {
    if (!kiln_cuda_matvec_tc_takes(a)) return cudaErrorInvalidValue;
    if (a->rows[0] <= 0) return cudaSuccess;
    const bool bf16 = a->type == KILN_CUDA_BF16, norm = a->norm != NULL;
    if (a->glu) {
        if (bf16) return norm ? launch_tc<true, 2, true>(stream, a) : launch_tc<true, 2, false>(stream, a);
        return norm ? launch_tc<false, 2, true>(stream, a) : launch_tc<false, 2, false>(stream, a);
    }
    if (bf16) return norm ? launch_tc<true, 1, true>(stream, a) : launch_tc<true, 1, false>(stream, a);
    return norm ? launch_tc<false, 1, true>(stream, a) : launch_tc<false, 1, false>(stream, a);
}
