// Matrix-vector products for decode (1 to 8 tokens): the weights stream from
// memory exactly once, with 16-byte loads that bypass L1 (the activations live
// there), several loads in flight per lane; for one token the next round's
// loads go out before this round's arithmetic. Each warp owns whole output units
// (a row; gate and up rows for SwiGLU; a RoPE pair of Q/K/V rows), 8 warps per
// block; the epilogues add bias and residual, apply SwiGLU, or rotate and
// write the KV cache.
#include "backend/cuda/cuda_matvec.cuh"

#define LOADS_IN_FLIGHT 4

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

// 8 consecutive inputs of token t at chunk c: from L1 (global, read-only) or
// from the block's staged copy in shared memory.
template <bool STAGED>
static __device__ __forceinline__ void load_x8(const float *x, int k, int t, int c, float4 &a, float4 &b) {
    const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * k) + 2 * c;
    if (STAGED) {
        a = xp[0];
        b = xp[1];
    } else {
        a = __ldg(xp);
        b = __ldg(xp + 1);
    }
}

static __device__ __forceinline__ float dot8(const float wf[8], const float4 &a, const float4 &b, float acc) {
    acc = fmaf(wf[0], a.x, acc);
    acc = fmaf(wf[1], a.y, acc);
    acc = fmaf(wf[2], a.z, acc);
    acc = fmaf(wf[3], a.w, acc);
    acc = fmaf(wf[4], b.x, acc);
    acc = fmaf(wf[5], b.y, acc);
    acc = fmaf(wf[6], b.z, acc);
    return fmaf(wf[7], b.w, acc);
}

// One round of loads: LOADS chunks (32 apart) of each of the R rows.
template <int R, int LOADS>
static __device__ __forceinline__ void load_round(const uint4 *const rows[R], int c, uint4 (&w)[R][LOADS]) {
#pragma unroll
    for (int u = 0; u < LOADS; u++)
#pragma unroll
        for (int r = 0; r < R; r++) w[r][u] = load_stream(rows[r] + c + 32 * u);
}

// acc += the round's weights (chunks c, c + 32, ...) . x.
template <int NT, int R, bool BF16, bool STAGED, int LOADS>
static __device__ __forceinline__ void round_dot(const uint4 (&w)[R][LOADS], const float *x, int k, int c,
                                                 float acc[R][NT]) {
#pragma unroll
    for (int u = 0; u < LOADS; u++) {
        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) unpack8<BF16>(w[r][u], wf[r]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float4 xa, xb;
            load_x8<STAGED>(x, k, t, c + 32 * u, xa, xb);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][t] = dot8(wf[r], xa, xb, acc[r][t]);
        }
    }
}

// acc[r][t] += row_r . x[t] over this lane's chunks (8 elements each) of R
// rows that share the input (R = 2: SwiGLU's gate and up): each input chunk
// is read once for all R rows. PIPE: the next round's loads are issued before
// this round's arithmetic, so a lane never waits with nothing in flight (two
// rounds of registers).
template <int NT, int R, bool BF16, bool STAGED, int LOADS, bool PIPE>
static __device__ __forceinline__ void rows_dot(const uint4 *const rows[R], const float *x, int k, int lane,
                                                float acc[R][NT]) {
    const int chunks = k / 8;
    int c = lane;
    if (PIPE) {
        if (c + 32 * (LOADS - 1) < chunks) {
            uint4 cur[R][LOADS];
            load_round<R, LOADS>(rows, c, cur);
            for (;;) {
                const int next = c + 32 * LOADS;
                const bool more = next + 32 * (LOADS - 1) < chunks;
                uint4 nxt[R][LOADS];
                if (more) load_round<R, LOADS>(rows, next, nxt);
                round_dot<NT, R, BF16, STAGED, LOADS>(cur, x, k, c, acc);
                c = next;
                if (!more) break;
#pragma unroll
                for (int u = 0; u < LOADS; u++)
#pragma unroll
                    for (int r = 0; r < R; r++) cur[r][u] = nxt[r][u];
            }
        }
    } else {
        for (; c + 32 * (LOADS - 1) < chunks; c += 32 * LOADS) {
            uint4 w[R][LOADS];
            load_round<R, LOADS>(rows, c, w);
            round_dot<NT, R, BF16, STAGED, LOADS>(w, x, k, c, acc);
        }
    }
    for (; c < chunks; c += 32) {
        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) unpack8<BF16>(load_stream(rows[r] + c), wf[r]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float4 xa, xb;
            load_x8<STAGED>(x, k, t, c, xa, xb);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][t] = dot8(wf[r], xa, xb, acc[r][t]);
        }
    }
}

// The first lines of this lane's part of a row, towards L2 before the wait
// for the previous kernel or the staging of the input (the weights depend on
// neither).
static __device__ __forceinline__ void prefetch_row(const uint4 *row, int k, int lane) {
    const int chunks = k / 8;
#pragma unroll
    for (int u = 0; u < LOADS_IN_FLIGHT; u++)
        if (lane + 32 * u < chunks) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + lane + 32 * u));
}

// What a warp's output unit is: one row (PLAIN), a row of gate and the same
// row of up (GLU), or a rotation pair of rows of q, k or v (ROPE).
enum { MV_PLAIN, MV_GLU, MV_ROPE };

// How the input is normalised: not at all; RMSNorm staged by each block in
// shared memory (STAGED); or prepared by the residual product before
// (PREPARED: x already times the weights, the inverse RMS from its sums of
// squares).
enum { NK_NONE, NK_STAGED, NK_PREPARED };

// The tokens' inverse RMS from the producer's per-block sums of squares, in
// one fixed order (the same result on every run); every lane of the warp
// gets it.
template <int NT>
static __device__ __forceinline__ void prepared_inv(const kiln_cuda_matvec_args &a, int lane, float inv[NT]) {
    static_assert(KILN_MATVEC_SS_PARTS % 128 == 0, "whole float4 rounds of the warp");
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *parts = reinterpret_cast<const float4 *>(a.ss + (size_t)t * KILN_MATVEC_SS_PARTS);
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < KILN_MATVEC_SS_PARTS / 128; i++) {
            const float4 v = __ldg(parts + lane + 32 * i);
            ss += (v.x + v.y) + (v.z + v.w);
        }
        inv[t] = rsqrtf(warp_sum(ss) / (float)a.k + a.norm_eps);
    }
}

// Deep rounds: one token, one row per unit, its input neither normalised
// nor prepared, and not pipelined: twice the loads in flight per lane, for
// the small products whose time is mostly the first round trips. Measured
// faster (docs/perf.md, "Switches removed"), so the same products with the
// usual loads are no longer built.
template <int NT, int MODE, int NK, bool PIPE> constexpr bool matvec_deep(void) {
    return NT == 1 && MODE == MV_PLAIN && NK == NK_NONE && !PIPE;
}

// Blocks per SM the register budget must allow: decode's 1 or 2 tokens keep
// many warps in flight; the widest form (8 tokens, two rows) is held to 128
// registers, two blocks rather than one.
// PIPE (one token): pipelined rounds in the registers of one unpipelined
// round, split in two (4 loads a row, 2 for two-row units).
template <int NT, int MODE, int NK, bool PIPE> constexpr int matvec_min_blocks(void) {
    if (PIPE || matvec_deep<NT, MODE, NK, PIPE>()) return 4;
    if (NT == 1) return MODE != MV_PLAIN ? 4 : 5;
    if (NT == 2) return 4;
    return MODE != MV_PLAIN && NT == 8 ? 2 : 0; // 0: the compiler's choice
}

// Loads in flight per row and round.
template <int NT, int MODE, int NK, bool PIPE> constexpr int matvec_loads(void) {
    if (PIPE) return MODE == MV_PLAIN ? LOADS_IN_FLIGHT : LOADS_IN_FLIGHT / 2;
    return matvec_deep<NT, MODE, NK, PIPE>() ? 2 * LOADS_IN_FLIGHT : LOADS_IN_FLIGHT;
}

// Unit u's weight i and rows ra (and rb for two-row units) of that weight.
template <int MODE>
static __device__ __forceinline__ void unit_rows(const kiln_cuda_matvec_args &a, int u, int &i, int &ra, int &rb,
                                                 int &pair) {
    i = 0;
    if (MODE == MV_GLU) {
        ra = rb = u;
    } else if (MODE == MV_PLAIN) {
        while (u >= a.rows[i]) u -= a.rows[i++];
        ra = rb = u;
    } else { // the pair (p, p + hd/2), or (2p, 2p + 1), of head h
        while (u >= a.rows[i] / 2) u -= a.rows[i++] / 2;
        const int half = a.rope.head_dim / 2, h = u / half;
        pair = u % half;
        ra = h * a.rope.head_dim + (a.rope.interleaved ? 2 * pair : pair);
        rb = ra + (a.rope.interleaved ? 1 : half);
    }
}

// The rotation of pair `pair` at token t's position (the angle in double,
// as on the CPU), for q and k (i < 2); computed before the products, so that
// its latency hides under the weights' arrival.
static __device__ __forceinline__ float2 rope_angle(const kiln_cuda_matvec_args &a, int t, int i, int pair) {
    if (i >= 2) return make_float2(1.0f, 0.0f);
    double s, c;
    sincos((double)a.rope.pos[t] * a.rope.inv_freq[pair], &s, &c);
    return make_float2((float)c, (float)s);
}

// The ROPE unit's outputs for token t: q and k rotated by cs (cos, sin), k
// and v also stored as f16 into the token's cache slot.
static __device__ __forceinline__ void rope_store(const kiln_cuda_matvec_args &a, int t, int i, int ra, int rb,
                                                  float2 cs, float va, float vb) {
    const kiln_cuda_matvec_rope &r = a.rope;
    const int pos = r.pos[t];
    if (i < 2) {
        const float ya = va * cs.x - vb * cs.y, yb = va * cs.y + vb * cs.x;
        va = ya;
        vb = yb;
    }
    const size_t out = (size_t)t * a.rows[i];
    a.y[i][out + ra] = va;
    a.y[i][out + rb] = vb;
    if (i > 0) {
        const int32_t block = r.block_tables[(size_t)r.seq[t] * r.max_blocks_per_seq + pos / r.block_size];
        const size_t slot = ((size_t)block * r.block_size + pos % r.block_size) * (size_t)r.n_kv_heads * r.head_dim;
        __half *cache = static_cast<__half *>(i == 1 ? r.k_cache : r.v_cache) + slot;
        cache[ra] = __float2half_rn(va);
        cache[rb] = __float2half_rn(vb);
    }
}

// Output units [u0, u1) of a, one warp: the products over x (global or
// staged) and the epilogue. inv: the tokens' inverse RMS (NK_STAGED, and
// NK_PREPARED once have_inv; else the warp waits for warp 0's in s_inv at its
// first use and sets have_inv). next_ss: this lane's token's sum of the new
// residual's squares over the units (a.next_x: lane t holds token t's).
template <int NT, bool BF16, int MODE, int NK, int LOADS, bool PIPE>
static __device__ __forceinline__ void matvec_units(const kiln_cuda_matvec_args &a, int u0, int u1, const float *x,
                                                    float (&inv)[NT], bool &have_inv, const float *s_inv, int lane,
                                                    float &next_ss) {
    constexpr int R = MODE == MV_PLAIN ? 1 : 2;
    const size_t row_chunks = (size_t)a.k / 8;
    int i, ra, rb, pair = 0;
    for (int u = u0; u < u1; u++) {
        unit_rows<MODE>(a, u, i, ra, rb, pair);
        const uint4 *rows[R];
        rows[0] = static_cast<const uint4 *>(a.w[i]) + (size_t)ra * row_chunks;
        if (R == 2) rows[R - 1] = static_cast<const uint4 *>(a.w[MODE == MV_GLU ? 1 : i]) + (size_t)rb * row_chunks;
        float acc[R][NT];
#pragma unroll
        for (int q = 0; q < R; q++)
#pragma unroll
            for (int t = 0; t < NT; t++) acc[q][t] = 0.0f;
        // Lane t writes token t's outputs: its rotation goes out with the loads.
        const float2 cs = MODE == MV_ROPE && lane < NT ? rope_angle(a, lane, i, pair) : make_float2(1.0f, 0.0f);
        rows_dot<NT, R, BF16, NK == NK_STAGED, LOADS, PIPE>(rows, x, a.k, lane, acc);
        if (NK == NK_PREPARED && !have_inv) { // warp 0 computed it at the start
            asm volatile("bar.sync 1, %0;" ::"n"(WARPS_PER_BLOCK * 32) : "memory");
#pragma unroll
            for (int t = 0; t < NT; t++) inv[t] = s_inv[t];
            have_inv = true;
        }
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int q = 0; q < R; q++) {
                acc[q][t] = warp_sum(acc[q][t]);
                if (NK != NK_NONE) acc[q][t] *= inv[t];
            }
        // Every lane holds every sum; lane t writes token t.
#pragma unroll
        for (int t = 0; t < NT; t++) {
            if (lane != t) continue;
            if (MODE == MV_GLU) {
                const float g = acc[0][t];
                a.y[0][(size_t)t * a.rows[0] + ra] = g / (1.0f + __expf(-g)) * acc[R - 1][t];
            } else if (MODE == MV_ROPE) {
                const float *bias = a.bias[i];
                rope_store(a, t, i, ra, rb, cs, acc[0][t] + (bias ? bias[ra] : 0.0f),
                           acc[R - 1][t] + (bias ? bias[rb] : 0.0f));
            } else {
                const size_t out = (size_t)t * a.rows[i] + ra;
                const float v = acc[0][t] + (a.bias[i] ? a.bias[i][ra] : 0.0f);
                if (a.accumulate) {
                    const float y = a.y[i][out] + v;
                    a.y[i][out] = y;
                    if (a.next_x) { // the next RMSNorm's input, prepared
                        a.next_x[out] = y * a.next_norm[ra];
                        next_ss = fmaf(y, y, next_ss);
                    }
                } else {
                    a.y[i][out] = v;
                }
            }
        }
    }
}


// Warp w of block b owns output units [(b * WARPS + w) * per_warp, + per_warp).
template <int NT, bool BF16, int MODE, int NK, bool PIPE>
__global__ void __launch_bounds__(WARPS_PER_BLOCK * 32, matvec_min_blocks<NT, MODE, NK, PIPE>())
    matvec_kernel(const kiln_cuda_matvec_args a, int units, int per_warp) {
    extern __shared__ float4 staged[]; // NK_STAGED: [NT][k] floats
    __shared__ float s_inv[NT];        // NK_PREPARED: warp 0's inverse RMS for the others
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int u0 = (blockIdx.x * WARPS_PER_BLOCK + warp) * per_warp, u1 = min(u0 + per_warp, units);
    // The first weights are on their way while the block stages its input.
    if (NK == NK_STAGED && u0 < u1) {
        int i, ra, rb, pair;
        unit_rows<MODE>(a, u0, i, ra, rb, pair);
        const size_t row_chunks = (size_t)a.k / 8;
        prefetch_row(static_cast<const uint4 *>(a.w[i]) + (size_t)ra * row_chunks, a.k, lane);
        if (MODE != MV_PLAIN)
            prefetch_row(static_cast<const uint4 *>(a.w[MODE == MV_GLU ? 1 : i]) + (size_t)rb * row_chunks, a.k, lane);
    }
    const float *x = a.x;
    float inv[NT];
    bool have_inv = NK != NK_PREPARED;
    if (NK == NK_STAGED) { // before any warp leaves: it synchronises
        stage_normed<NT>(a.x, a.norm, a.k, a.norm_eps, reinterpret_cast<float *>(staged), inv);
        x = reinterpret_cast<const float *>(staged);
    } else if (NK == NK_PREPARED && warp == 0) {
        // One warp sums the producer's parts while the others start on their
        // weights; they wait for it (barrier 1) only at their first result.
        prepared_inv<NT>(a, lane, inv);
        if (lane == 0)
#pragma unroll
            for (int t = 0; t < NT; t++) s_inv[t] = inv[t];
        __syncwarp();
        asm volatile("bar.arrive 1, %0;" ::"n"(WARPS_PER_BLOCK * 32) : "memory");
        have_inv = true;
    }
    float next_ss = 0.0f;
    matvec_units<NT, BF16, MODE, NK, matvec_loads<NT, MODE, NK, PIPE>(), PIPE>(a, u0, u1, x, inv, have_inv, s_inv,
                                                                                lane, next_ss);
    if (!have_inv) asm volatile("bar.sync 1, %0;" ::"n"(WARPS_PER_BLOCK * 32) : "memory"); // a warp without units
    if (MODE == MV_PLAIN && NT <= KILN_MATVEC_NORM_MAX_TOKENS && a.next_x) { // block-uniform
        __shared__ float s_ss[WARPS_PER_BLOCK][NT];
        if (lane < NT) s_ss[warp][lane] = next_ss;
        __syncthreads();
        if (threadIdx.x < NT) {
            float total = 0.0f;
#pragma unroll
            for (int w = 0; w < WARPS_PER_BLOCK; w++) total += s_ss[w][threadIdx.x];
            a.next_ss[(size_t)threadIdx.x * KILN_MATVEC_SS_PARTS + blockIdx.x] = total;
        }
        if (blockIdx.x == 0) // the slots no block owns
            for (int i = threadIdx.x; i < NT * KILN_MATVEC_SS_PARTS; i += blockDim.x)
                if (i % KILN_MATVEC_SS_PARTS >= (int)gridDim.x) a.next_ss[i] = 0.0f;
    }
}

// Rows per warp: one while the grid fits the blocks the SMs hold at once,
// more once it does not, so that every warp gets the same number of rows
// (and a producing launch at most KILN_MATVEC_SS_PARTS blocks).
template <int NT, bool BF16, int MODE, int NK, bool PIPE = false>
static cudaError_t launch_form(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    // Asked once per form and shared-memory size (k changes it for NK_STAGED):
    // the answer only depends on them, and prompt chunks launch uncaptured.
    static int sms, per_sm;
    static size_t known_smem = (size_t)-1;
    if (!sms && cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0) != cudaSuccess) sms = 0;
    const size_t smem = NK == NK_STAGED ? sizeof(float) * (size_t)NT * (size_t)a->k : 0;
    if (smem != known_smem) {
        if (NK == NK_STAGED && smem > 48 * 1024) {
            cudaError_t e = cudaFuncSetAttribute(matvec_kernel<NT, BF16, MODE, NK, PIPE>,
                                                 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
            if (e != cudaSuccess) return e;
        }
        cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
            &per_sm, matvec_kernel<NT, BF16, MODE, NK, PIPE>, WARPS_PER_BLOCK * 32, smem);
        if (e != cudaSuccess) return e;
        known_smem = smem;
    }
    const int resident_warps = (per_sm > 0 ? per_sm : 1) * (sms > 0 ? sms : 1) * WARPS_PER_BLOCK;
    int per_warp = (units + resident_warps - 1) / resident_warps;
    if (a->next_x) per_warp = max(per_warp, (units + KILN_MATVEC_SS_PARTS * WARPS_PER_BLOCK - 1) /
                                                (KILN_MATVEC_SS_PARTS * WARPS_PER_BLOCK));
    const int per_block = per_warp * WARPS_PER_BLOCK;
    const dim3 grid((unsigned)((units + per_block - 1) / per_block)), block(WARPS_PER_BLOCK * 32);
    matvec_kernel<NT, BF16, MODE, NK, PIPE><<<grid, block, smem, stream>>>(*a, units, per_warp);
    return cudaGetLastError();
}

// The normalising forms take decode's 1 or 2 tokens (kiln_cuda_matvec
// refuses more); the staged one keeps [NT][k] floats per block.
template <int NT, bool BF16, int MODE>
static cudaError_t launch_mode(cudaStream_t stream, const kiln_cuda_matvec_args *a, int units) {
    constexpr bool NORMS = NT <= KILN_MATVEC_NORM_MAX_TOKENS;
    constexpr int STAGED = NORMS ? NK_STAGED : NK_NONE, PREPARED = NORMS ? NK_PREPARED : NK_NONE;
    if constexpr (NT == 1) {
        if (a->pipe)
            return a->norm ? launch_form<NT, BF16, MODE, STAGED, true>(stream, a, units)
                   : a->ss ? launch_form<NT, BF16, MODE, PREPARED, true>(stream, a, units)
                           : launch_form<NT, BF16, MODE, NK_NONE, true>(stream, a, units);
    }
    if (a->norm) return launch_form<NT, BF16, MODE, STAGED>(stream, a, units);
    if (a->ss) return launch_form<NT, BF16, MODE, PREPARED>(stream, a, units);
    return launch_form<NT, BF16, MODE, NK_NONE>(stream, a, units);
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
    const bool producer_ok = !a->next_x || (a->next_norm && a->next_ss && a->accumulate && a->count == 1 &&
                                            !a->glu && !a->has_rope && a->n_tokens <= KILN_MATVEC_NORM_MAX_TOKENS);
    const bool prepared_ok = !a->ss || (!a->norm && a->n_tokens <= KILN_MATVEC_NORM_MAX_TOKENS);
    return a->n_tokens >= 1 && a->n_tokens <= KILN_MATVEC_MAX_TOKENS && a->count >= 1 &&
           a->count <= KILN_MATVEC_MAX_WEIGHTS && a->k % 8 == 0 && a->k > 0 && (!a->glu || a->count == 2) &&
           (!a->accumulate || a->count == 1) && a->type != KILN_CUDA_F32 &&
           (!a->norm || a->n_tokens <= KILN_MATVEC_NORM_MAX_TOKENS) && (!a->has_rope || rope_args_ok(a)) &&
           producer_ok && prepared_ok;
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
