// Matrix-vector products for decode (1 to 8 tokens): the weights stream from
// memory exactly once, with 16-byte loads that bypass L1 (the activations live
// there), several loads in flight per lane; for one token the next round's
// loads go out before this round's arithmetic. Each warp owns whole output units
// (a row; gate and up rows for SwiGLU; a RoPE pair of Q/K/V rows), 8 warps per
// block; the epilogues add bias and residual, apply SwiGLU, or rotate and
// write the KV cache.
#include "backend/cuda/cuda_matvec.cuh"
#include "backend/cuda/cuda_pdl.cuh"

// Warp w of block b owns output units [(b * WARPS + w) * per_warp, + per_warp).
template <int NT, bool BF16, int MODE, bool NORM, bool DEEP, int PIPE>
__global__ void __launch_bounds__(WARPS_PER_BLOCK * 32, matvec_min_blocks<NT, MODE, DEEP, PIPE>())
    matvec_kernel(const kiln_cuda_matvec_args a, int units, int per_warp) {
    extern __shared__ float4 staged[]; // NORM: [NT][k] floats
    constexpr int R = MODE == MV_PLAIN ? 1 : 2;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int u0 = (blockIdx.x * WARPS_PER_BLOCK + warp) * per_warp, u1 = min(u0 + per_warp, units);
    const size_t row_chunks = (size_t)a.k / 8;
    constexpr int LOADS = matvec_loads<MODE, DEEP, PIPE>();
    int i, ra, rb, pair = 0;
    uint4 pre[R][LOADS];
    bool have_pre = false;
    if ((a.pdl || NORM) && u0 < u1) {
        unit_rows<MODE>(a, u0, i, ra, rb, pair);
        const uint4 *rows[R];
        rows[0] = static_cast<const uint4 *>(a.w[i]) + (size_t)ra * row_chunks;
        if (R == 2) rows[R - 1] = static_cast<const uint4 *>(a.w[MODE == MV_GLU ? 1 : i]) + (size_t)rb * row_chunks;
        if (a.preload) have_pre = first_loads<R, LOADS>(rows, a.k, lane, pre);
        if (!have_pre)
#pragma unroll
            for (int r = 0; r < R; r++) prefetch_row(rows[r], a.k, lane);
    }
    if (a.pdl_one_wait) { // the other warps wait at the block barrier instead
        if (warp == 0) pdl_wait();
        __syncthreads();
    } else {
        pdl_wait();
    }
    if (a.pdl_early) pdl_allow_next();
    const float *x = a.x;
    float inv[NT];
    if (NORM) { // before any warp leaves: it synchronises
        stage_normed<NT, true>(a.x, a.norm, a.k, a.norm_eps, reinterpret_cast<float *>(staged), inv);
        x = reinterpret_cast<const float *>(staged);
    }
    matvec_units<NT, BF16, MODE, NORM, true, LOADS, PIPE == 1 || PIPE == 2 || PIPE == 4>(a, u0, u1, x, inv, lane, pre,
                                                                                         have_pre);
    // Late by default: dependents launched at the start would hold SM slots
    // while they wait (measured slower on the H200).
    if (!a.pdl_early) pdl_allow_next();
}

// Rows per warp: one while the grid fits the blocks the SMs hold at once,
// more once it does not, so that every warp gets the same number of rows.
template <int NT, bool BF16, int MODE, bool NORM, bool DEEP, int PIPE = 0>
static cudaError_t launch_form(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    // Asked once per form and shared-memory size (k changes it for NORM):
    // the answer only depends on them, and prompt chunks launch uncaptured.
    static int sms, per_sm;
    static size_t known_smem = (size_t)-1;
    if (!sms && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) sms = 0;
    const size_t smem = NORM ? sizeof(float) * (size_t)NT * (size_t)a->k : 0;
    if (smem != known_smem) {
        if (NORM && smem > 48 * 1024) {
            cudaError_t e = cudaFuncSetAttribute(matvec_kernel<NT, BF16, MODE, NORM, DEEP, PIPE>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
            if (e != cudaSuccess) return e;
        }
        cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, matvec_kernel<NT, BF16, MODE, NORM, DEEP, PIPE>, WARPS_PER_BLOCK * 32, smem);
        if (e != cudaSuccess) return e;
        known_smem = smem;
    }
    const int resident_warps = (per_sm > 0 ? per_sm : 1) * (sms > 0 ? sms : 1) * WARPS_PER_BLOCK;
    const int per_warp = (units + resident_warps - 1) / resident_warps, per_block = per_warp * WARPS_PER_BLOCK;
    const dim3 grid((unsigned)((units + per_block - 1) / per_block)), block(WARPS_PER_BLOCK * 32);
    return launch_maybe_pdl(a->pdl, matvec_kernel<NT, BF16, MODE, NORM, DEEP, PIPE>, grid, block, smem, stream, *a, units,
                            per_warp);
}

// The normalising form stages [NT][k] floats per block: decode's 1 or 2
// tokens (kiln_cuda_matvec refuses more).
template <int NT, bool BF16, int MODE>
static cudaError_t launch_mode(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    if constexpr (NT == 1) {
        if (a->pipe == 1)
            return a->norm ? launch_form<NT, BF16, MODE, true, false, 1>(stream, a, units)
                           : launch_form<NT, BF16, MODE, false, false, 1>(stream, a, units);
        if (a->pipe == 2)
            return a->norm ? launch_form<NT, BF16, MODE, true, false, 2>(stream, a, units)
                           : launch_form<NT, BF16, MODE, false, false, 2>(stream, a, units);
        if (a->pipe == 4)
            return a->norm ? launch_form<NT, BF16, MODE, true, false, 4>(stream, a, units)
                           : launch_form<NT, BF16, MODE, false, false, 4>(stream, a, units);
        if (a->pipe == 3) // DEEP as unpipelined for plain products
            return a->norm ? launch_form<NT, BF16, MODE, true, false, 3>(stream, a, units)
                           : MODE == MV_PLAIN && a->deep_loads
                                 ? launch_form<NT, BF16, MODE, false, MODE == MV_PLAIN, 3>(stream, a, units)
                                 : launch_form<NT, BF16, MODE, false, false, 3>(stream, a, units);
    }
    if (a->norm) return launch_form<NT, BF16, MODE, NT <= KILN_MATVEC_NORM_MAX_TOKENS, false>(stream, a, units);
    if (NT == 1 && MODE == MV_PLAIN && a->deep_loads)
        return launch_form<NT, BF16, MODE, false, NT == 1 && MODE == MV_PLAIN>(stream, a, units);
    return launch_form<NT, BF16, MODE, false, false>(stream, a, units);
}

template <int NT, bool BF16> static cudaError_t launch(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    if (a->glu) return launch_mode<NT, BF16, MV_GLU>(stream, a, units);
    if (a->has_rope) return launch_mode<NT, BF16, MV_ROPE>(stream, a, units);
    return launch_mode<NT, BF16, MV_PLAIN>(stream, a, units);
}

template <bool BF16> static cudaError_t launch_tokens(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    switch (a->n_tokens) {
    case 1: return launch<1, BF16>(stream, a, units);
    case 2: return launch<2, BF16>(stream, a, units);
    case 3: return launch<3, BF16>(stream, a, units);
    case 4: return launch<4, BF16>(stream, a, units);
    case 5: return launch<5, BF16>(stream, a, units);
    case 6: return launch<6, BF16>(stream, a, units);
    case 7: return launch<7, BF16>(stream, a, units);
    default: return launch<8, BF16>(stream, a, units);
    }
}

static bool rope_args_ok(const kiln_cuda_matvec_args *a) {
    const kiln_cuda_matvec_rope *r = &a->rope;
    return a->count == 3 && !a->glu && !a->accumulate && r->head_dim > 0 && r->head_dim % 2 == 0 &&
           r->n_kv_heads > 0 && a->rows[0] % r->head_dim == 0 && a->rows[1] == r->n_kv_heads * r->head_dim &&
           a->rows[2] == a->rows[1] && r->inv_freq && r->pos && r->seq && r->block_tables && r->block_size > 0 &&
           r->max_blocks_per_seq > 0 && r->k_cache && r->v_cache;
}

static bool matvec_args_ok(const kiln_cuda_matvec_args *a) {
    return a->n_tokens >= 1 && a->n_tokens <= KILN_MATVEC_MAX_TOKENS && a->count >= 1 &&
           a->count <= KILN_MATVEC_MAX_WEIGHTS && a->k % 8 == 0 && a->k > 0 && (!a->glu || a->count == 2) &&
           (!a->accumulate || a->count == 1) && a->type != KILN_CUDA_F32 &&
           (!a->norm || a->n_tokens <= KILN_MATVEC_NORM_MAX_TOKENS) && (!a->has_rope || rope_args_ok(a));
}

extern "C" cudaError_t kiln_cuda_matvec(cudaStream_t stream, const kiln_cuda_matvec_args *a) {
    if (!matvec_args_ok(a)) return cudaErrorInvalidValue;
    int units = 0;
    for (int i = 0; i < a->count; i++) units += a->rows[i];
    if (a->glu) units = a->rows[0];
    if (a->has_rope) units /= 2;
    if (units <= 0) return cudaSuccess;
    const cudaError_t e = a->type == KILN_CUDA_BF16 ? launch_tokens<true>(stream, a, units)
                                                    : launch_tokens<false>(stream, a, units);
    return e != cudaSuccess ? e : cudaGetLastError();
}
