// Several single-token matrix-vector products in one launch: a decode layer's
// O projection, SwiGLU, down projection and the next layer's Q/K/V run as
// phases of one persistent kernel, with a grid-wide barrier between them.
// Why: as separate kernels each product pays its ramp (the first round trips
// to memory) and its drain (the last warps finishing while the rest of the
// card idles); the small products ran at 2.7-3.0 TB/s against 4.1 for the
// large one (H200). Here every warp issues the first loads of its next
// phase's weights (which depend on nothing) before it waits at the barrier,
// so they are in flight while the slowest warps finish.
//
// The grid is exactly the blocks the SMs hold at once (a cooperative launch,
// which fails rather than deadlock when they do not fit). Inputs written by
// an earlier phase are read with plain loads, never the read-only path; the
// barrier (fences, as cooperative groups' grid sync) makes them visible.
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_matvec.cuh"

// The four forms a decode step chains: O and down (plain, twice the loads in
// flight), SwiGLU and Q/K/V with RMSNorm, and the logits (plain with RMSNorm).
enum { CHAIN_PLAIN, CHAIN_PLAIN_NORM, CHAIN_GLU_NORM, CHAIN_ROPE_NORM };

// Blocks of 8 warps per SM: at three (80 registers a thread) the next
// phase's loads held across the barrier barely spill, at four (64) they do
// (~350 bytes a thread); 24 warps an SM still keep ~13 MB of loads in flight.
// KILN_CUDA_CHAIN_BLOCKS=4 takes four, for A/B runs.

struct chain_params {
    kiln_cuda_matvec_args phase[KILN_MATVEC_CHAIN_MAX];
    int units[KILN_MATVEC_CHAIN_MAX];
    int form[KILN_MATVEC_CHAIN_MAX];
    int n;
    unsigned *barrier; // {arrived, generation}
};

// Every block arrives, the last one resets the count and opens the next
// generation. Thread 0 reads the generation before arriving (it cannot move
// until every block has arrived), so it cannot miss the opening.
static __device__ void grid_barrier(unsigned *barrier) {
    __syncthreads();
    if (threadIdx.x == 0) {
        volatile unsigned *generation = barrier + 1;
        const unsigned seen = *generation;
        __threadfence(); // this block's writes before its arrival
        if (atomicAdd(barrier, 1u) == gridDim.x - 1) {
            atomicExch(barrier, 0u);
            __threadfence();
            atomicAdd(barrier + 1, 1u);
        } else {
            while (*generation == seen) __nanosleep(32);
        }
        __threadfence(); // the other blocks' writes before this block's reads
    }
    __syncthreads();
}

// Warp gw's first unit of a phase and the first round of its loads, into pre
// (R x LOADS of the 8 registers). False when the warp has no unit there.
template <int MODE, int LOADS>
static __device__ __forceinline__ bool chain_preload_form(const kiln_cuda_matvec_args &a, int units, int gw,
                                                          int warps, int lane, uint4 (&pre)[8]) {
    constexpr int R = MODE == MV_PLAIN ? 1 : 2;
    const int per_warp = (units + warps - 1) / warps, u0 = gw * per_warp;
    if (u0 >= units) return false;
    int i, ra, rb, pair;
    unit_rows<MODE>(a, u0, i, ra, rb, pair);
    const size_t row_chunks = (size_t)a.k / 8;
    const uint4 *rows[R];
    rows[0] = static_cast<const uint4 *>(a.w[i]) + (size_t)ra * row_chunks;
    if (R == 2) rows[R - 1] = static_cast<const uint4 *>(a.w[MODE == MV_GLU ? 1 : i]) + (size_t)rb * row_chunks;
    uint4 p[R][LOADS];
    if (!first_loads<R, LOADS>(rows, a.k, lane, p)) return false;
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int u = 0; u < LOADS; u++) pre[r * LOADS + u] = p[r][u];
    return true;
}

// One phase for warp gw: its units, after the block stages RMSNorm's input
// (every thread arrives there).
template <bool BF16, int MODE, bool NORM, int LOADS>
static __device__ __forceinline__ void chain_phase_form(const kiln_cuda_matvec_args &a, int units, int gw, int warps,
                                                        int lane, float *staged, const uint4 (&pre)[8],
                                                        bool have_pre) {
    constexpr int R = MODE == MV_PLAIN ? 1 : 2;
    const int per_warp = (units + warps - 1) / warps, u0 = gw * per_warp, u1 = min(u0 + per_warp, units);
    const float *x = a.x;
    float inv[1];
    if (NORM) {
        stage_normed<1, false>(a.x, a.norm, a.k, a.norm_eps, staged, inv);
        x = staged;
    }
    uint4 p[R][LOADS];
#pragma unroll
    for (int r = 0; r < R; r++)
#pragma unroll
        for (int u = 0; u < LOADS; u++) p[r][u] = pre[r * LOADS + u];
    matvec_units<1, BF16, MODE, NORM, false, LOADS>(a, u0, u1, x, inv, lane, p, have_pre);
}

static __device__ __forceinline__ bool chain_preload(const chain_params &p, int s, int gw, int warps, int lane,
                                                     uint4 (&pre)[8]) {
    const kiln_cuda_matvec_args &a = p.phase[s];
    switch (p.form[s]) {
    case CHAIN_PLAIN: return chain_preload_form<MV_PLAIN, 2 * LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, pre);
    case CHAIN_PLAIN_NORM: return chain_preload_form<MV_PLAIN, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, pre);
    case CHAIN_GLU_NORM: return chain_preload_form<MV_GLU, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, pre);
    default: return chain_preload_form<MV_ROPE, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, pre);
    }
}

template <bool BF16>
static __device__ __forceinline__ void chain_phase(const chain_params &p, int s, int gw, int warps, int lane,
                                                   float *staged, const uint4 (&pre)[8], bool have_pre) {
    const kiln_cuda_matvec_args &a = p.phase[s];
    switch (p.form[s]) {
    case CHAIN_PLAIN:
        chain_phase_form<BF16, MV_PLAIN, false, 2 * LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, staged, pre,
                                                                     have_pre);
        break;
    case CHAIN_PLAIN_NORM:
        chain_phase_form<BF16, MV_PLAIN, true, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, staged, pre, have_pre);
        break;
    case CHAIN_GLU_NORM:
        chain_phase_form<BF16, MV_GLU, true, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, staged, pre, have_pre);
        break;
    default:
        chain_phase_form<BF16, MV_ROPE, true, LOADS_IN_FLIGHT>(a, p.units[s], gw, warps, lane, staged, pre, have_pre);
        break;
    }
}

template <bool BF16, int MIN_BLOCKS>
__global__ void __launch_bounds__(WARPS_PER_BLOCK * 32, MIN_BLOCKS) matvec_chain_kernel(const chain_params p) {
    extern __shared__ float4 staged4[]; // the NORM phases' input, [k] floats
    float *staged = reinterpret_cast<float *>(staged4);
    const int lane = threadIdx.x % 32, warps = gridDim.x * WARPS_PER_BLOCK;
    const int gw = blockIdx.x * WARPS_PER_BLOCK + threadIdx.x / 32;
    uint4 pre[8];
    bool have_pre = chain_preload(p, 0, gw, warps, lane, pre);
    for (int s = 0; s < p.n; s++) {
        chain_phase<BF16>(p, s, gw, warps, lane, staged, pre, have_pre);
        if (s + 1 == p.n) break;
        have_pre = chain_preload(p, s + 1, gw, warps, lane, pre); // in flight across the barrier
        grid_barrier(p.barrier);
    }
}

static int chain_form(const kiln_cuda_matvec_args *a) {
    if (a->glu) return CHAIN_GLU_NORM;
    if (a->has_rope) return CHAIN_ROPE_NORM;
    return a->norm ? CHAIN_PLAIN_NORM : CHAIN_PLAIN;
}

extern "C" cudaError_t kiln_cuda_matvec_chain(cudaStream_t stream, const kiln_cuda_matvec_args *a, int n,
                                              unsigned *barrier) {
    if (n < 1 || n > KILN_MATVEC_CHAIN_MAX || !barrier) return cudaErrorInvalidValue;
    chain_params p = {};
    p.n = n;
    p.barrier = barrier;
    size_t smem = 0;
    for (int s = 0; s < n; s++) {
        if (!kiln_cuda_matvec_chainable(&a[s]) || a[s].type != a[0].type) return cudaErrorInvalidValue;
        p.phase[s] = a[s];
        p.form[s] = chain_form(&a[s]);
        int units = 0;
        for (int i = 0; i < a[s].count; i++) units += a[s].rows[i];
        if (a[s].glu) units = a[s].rows[0];
        if (a[s].has_rope) units /= 2;
        p.units[s] = units;
        if (a[s].norm && sizeof(float) * (size_t)a[s].k > smem) smem = sizeof(float) * (size_t)a[s].k;
    }
    static int four = -1;
    if (four < 0) {
        const char *env = getenv("KILN_CUDA_CHAIN_BLOCKS");
        four = env && strcmp(env, "4") == 0;
    }
    const int form = (a[0].type == KILN_CUDA_BF16) * 2 + four;
    void (*const kernels[4])(chain_params) = {matvec_chain_kernel<false, 3>, matvec_chain_kernel<false, 4>,
                                              matvec_chain_kernel<true, 3>, matvec_chain_kernel<true, 4>};
    void (*kernel)(chain_params) = kernels[form];
    // Blocks per SM for this kernel and shared-memory size, asked once per size.
    static int sms, per_sm[4];
    static size_t known_smem[4] = {(size_t)-1, (size_t)-1, (size_t)-1, (size_t)-1};
    if (!sms && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) return cudaErrorUnknown;
    if (smem != known_smem[form]) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
        if (e == cudaSuccess)
            e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm[form], kernel, WARPS_PER_BLOCK * 32, smem);
        if (e != cudaSuccess) return e;
        if (per_sm[form] < 1) return cudaErrorInvalidConfiguration;
        known_smem[form] = smem;
    }
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3((unsigned)(per_sm[form] * sms));
    cfg.blockDim = dim3(WARPS_PER_BLOCK * 32);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeCooperative;
    attr.val.cooperative = 1;
    cfg.attrs = &attr;
    cfg.numAttrs = 1;
    cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, p);
    return e != cudaSuccess ? e : cudaGetLastError();
}
