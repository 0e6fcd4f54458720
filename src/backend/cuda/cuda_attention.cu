// Attention over the paged F16 KV cache (declared in cuda_kernels.h). Both
// kernels feed the tensor cores f16 (queries times the scale, probabilities)
// and accumulate in float32; softmax runs in float32 with log2(e) folded into
// the scale. Only sm_80 instructions (cp.async, ldmatrix, mma.sync): one code
// path for Ampere, Ada and Hopper.
//
// Decode (split-K, "flash-decoding"): one block per (token, kv head, chunk of
// DEC_CHUNK_BLOCKS cache blocks) handles every query head of that kv head's
// group, so K and V are read once per group. The block stages its chunk's K
// and V in shared memory with cp.async, every load in flight at once (the
// kernel is bound by memory bandwidth), and writes a partial (max, sum,
// unnormalised output); the last block of a (token, kv head) to finish merges
// the chunks, in the same launch. Chunks past a token's position only count
// themselves, so the grid depends only on the batch shape and a captured graph
// stays valid as sequences grow.
//
// Prefill (FlashAttention-2): one block per (128 query rows, query head),
// 4 warps of 32 rows; K/V tiles of 32 positions double-buffered through
// cp.async; S = Q K^T and O += P V with mma.sync m16n8k16; online softmax;
// the K/V loop stops at the last position the block's last query sees.
#include <cuda_fp16.h>
#include <math.h>

#include "backend/cuda/cuda_attention.cuh"
#include "backend/cuda/cuda_kernels.h"

// ---- decode -----------------------------------------------------------------
//
// Each warp of a block owns 32 positions of the chunk: it loads their K and V
// rows into its own part of shared memory (cp.async, every load in flight at
// once), then computes scores and P.V on tensor cores against the group's
// queries, staged once per block as the 16 rows of an mma A operand (rows past
// the group are zero), keeping its own running max and sum. No block barrier
// stands between a warp's loads and its arithmetic; the warps' partials are
// merged at the end. The arithmetic is far below the time the chunk takes to
// arrive, so the kernel runs at memory speed.
//
// The chunks are combined in the same launch (one launch less per layer): a
// block counts itself done on a per-(token, kv head, head group) counter in
// the workspace, and the block that brings the count to n_chunks merges the
// group's live chunks and resets the counter to zero for the next launch.
// Every block counts, the empty chunks past a token's position included, so
// the grid and the count never depend on positions.

#define DEC_WARPS 4
#define DEC_CHUNK_BLOCKS 8 // cache blocks per chunk: 128 positions at block_size 16
#define DEC_THREADS (DEC_WARPS * 32)
#define DEC_TILE (DEC_WARPS * 32) // positions staged at once: 32 per warp
#define DEC_MAX_GROUP 16          // query heads per block (the mma's 16 rows); larger groups take several blocks

typedef struct dec_params {
    const __half *k, *v;
    const int32_t *block_tables;
    int max_blocks, block_size, n_kv;
    const int32_t *pos, *seq;
    const float *q;
    float *out;
    int n_heads, group, n_hgroups, n_chunks;
    float qscale; // scale * log2(e): scores come out in log2 units
    // Counters [n_tokens][n_heads] (one per block column: n_kv * n_hgroups <=
    // n_heads), in their own buffer so that no partial ever lands on one.
    int *counters;
    // Workspace: one region of ws_token bytes per token: at ws_ml, float2
    // (max in log2 units, sum) [n_heads][n_chunks]; at ws_o, float
    // unnormalised outputs [n_heads][n_chunks][D].
    unsigned char *ws;
    size_t ws_token, ws_ml, ws_o;
} dec_params;

template <int D> static constexpr __host__ __device__ size_t dec_smem_bytes(void) {
    return 2 * (size_t)DEC_TILE * (D + 8) * sizeof(__half)      // K, V tiles (rows padded by 16 bytes)
           + (size_t)DEC_MAX_GROUP * (D + 8) * sizeof(__half)   // queries, scaled, f16
           + (size_t)DEC_WARPS * DEC_MAX_GROUP * sizeof(float2); // each warp's (max, sum) per head
}

// One chunk's partials: positions c0 .. min(c0 + chunk_len, pos + 1) - 1 of
// token t (c0 <= pos), for query heads h0 .. h0 + nh - 1 of kv head kvh.
template <int D>
static __device__ __forceinline__ void dec_partials(const dec_params &p, unsigned char *smem, int t, int chunk,
                                                    int kvh, int h0, int nh, int pos, int seq, int c0, int chunk_len) {
    constexpr int LD = D + 8;     // halves per staged row: the pad puts ldmatrix's 8 rows on distinct banks
    constexpr int NCOL = D / 8;   // 16-byte pieces per row
    constexpr int RED_LD = D + 8; // floats per row of the merge buffer (conflict-free float2 stores)
    static_assert(DEC_WARPS * DEC_MAX_GROUP * RED_LD * sizeof(float) <= 2 * DEC_TILE * LD * sizeof(__half),
                  "merge buffer must fit in the K and V tiles");
    __half *sK = reinterpret_cast<__half *>(smem);
    __half *sV = sK + DEC_TILE * LD;
    __half *sQ = sV + DEC_TILE * LD;
    float2 *s_ml = reinterpret_cast<float2 *>(sQ + DEC_MAX_GROUP * LD); // [DEC_WARPS][DEC_MAX_GROUP]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int grp = lane >> 2, tig = lane & 3; // mma fragment coordinates: row group, thread in group
    const int n_valid = min(chunk_len, pos + 1 - c0);
    const int32_t *table = p.block_tables + (size_t)seq * p.max_blocks;
    const int w0 = warp * 32; // the warp's first row of a tile
    __half *wK = sK + w0 * LD, *wV = sV + w0 * LD;

    // The group's queries, loaded before the block table is read: they do
    // not depend on it, and their latency hides under that chain's.
    constexpr int Q_ROUNDS = DEC_MAX_GROUP * NCOL / DEC_THREADS;
    static_assert(DEC_MAX_GROUP * NCOL % DEC_THREADS == 0, "whole rounds of the block");
    float4 q_parts[Q_ROUNDS][2];
#pragma unroll
    for (int it = 0; it < Q_ROUNDS; it++) {
        const int i = tid + it * DEC_THREADS, r = i / NCOL, c = i % NCOL;
        q_parts[it][0] = q_parts[it][1] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (r < nh) {
            const float4 *src = reinterpret_cast<const float4 *>(p.q + ((size_t)t * p.n_heads + h0 + r) * D + c * 8);
            q_parts[it][0] = src[0];
            q_parts[it][1] = src[1];
        }
    }

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f}; // heads grp, grp + 8 over this warp's positions

    for (int ts = 0; ts < n_valid; ts += DEC_TILE) {
        const int rows = min(32, n_valid - ts - w0); // the warp's valid rows in this tile (<= 0: none)
        if (rows > 0) {
            // Lane l finds row l; a row's 16-byte pieces go to consecutive lanes.
            // Rows past the chunk's end are zero-filled, not read.
            const long long my_off =
                lane < rows ? kv_row_offset(table, c0 + ts + w0 + lane, p.block_size, p.n_kv, kvh, D) : -1;
#pragma unroll 4
            for (int it = 0; it < NCOL; it++) {
                const int i = lane + it * 32, r = i / NCOL, c = i % NCOL;
                const long long off = __shfl_sync(0xffffffffu, my_off, r);
                cp_async_16(wK + r * LD + c * 8, p.k + (off >= 0 ? off + c * 8 : 0), off >= 0);
            }
            cp_async_commit();
#pragma unroll 4
            for (int it = 0; it < NCOL; it++) {
                const int i = lane + it * 32, r = i / NCOL, c = i % NCOL;
                const long long off = __shfl_sync(0xffffffffu, my_off, r);
                cp_async_16(wV + r * LD + c * 8, p.v + (off >= 0 ? off + c * 8 : 0), off >= 0);
            }
            cp_async_commit();
        }
        if (ts == 0) { // queries of the group -> f16 rows (scale and log2(e) folded in); rows past the group: 0
#pragma unroll
            for (int it = 0; it < Q_ROUNDS; it++) {
                const int i = tid + it * DEC_THREADS, r = i / NCOL, c = i % NCOL;
                const float4 a = q_parts[it][0], b = q_parts[it][1];
                const float s = p.qscale;
                *reinterpret_cast<uint4 *>(sQ + r * LD + c * 8) =
                    make_uint4(pack_half2(a.x * s, a.y * s), pack_half2(a.z * s, a.w * s),
                               pack_half2(b.x * s, b.y * s), pack_half2(b.z * s, b.w * s));
            }
            __syncthreads(); // sQ is complete (the K/V loads stay in flight)
        }
        if (rows > 0) { // warp-uniform
            float s[4][4];
#pragma unroll
            for (int i = 0; i < 4; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
            cp_async_wait<1>(); // this lane's K pieces have landed
            __syncwarp();       // ... and every lane's
            // S = Q K^T over the warp's 32 positions (fragment layout as in the prefill kernel).
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                uint32_t qf[4]; // reloaded per tile rather than held: fewer live registers
                ldmatrix_x4(qf, sQ + ((lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);
#pragma unroll
                for (int np = 0; np < 2; np++) {
                    uint32_t b[4];
                    ldmatrix_x4(b, wK + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8);
                    mma_16816(s[2 * np], qf, b[0], b[1]);
                    mma_16816(s[2 * np + 1], qf, b[2], b[3]);
                }
            }
            if (rows < 32) { // the warp's positions run past the chunk's end
#pragma unroll
                for (int nt = 0; nt < 4; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (nt * 8 + tig * 2 + (e & 1) >= rows) s[nt][e] = -INFINITY;
            }
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = fmaxf(fmaxf(s[0][2 * r], s[0][2 * r + 1]), fmaxf(s[1][2 * r], s[1][2 * r + 1]));
                mx = fmaxf(mx, fmaxf(fmaxf(s[2][2 * r], s[2][2 * r + 1]), fmaxf(s[3][2 * r], s[3][2 * r + 1])));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_row[r], mx); // finite: the warp's first position is valid
                const float alpha = exp2f(m_row[r] - m_new);
                m_row[r] = m_new;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < 4; nt++) {
                    s[nt][2 * r] = exp2f(s[nt][2 * r] - m_new);
                    s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_new);
                    sum += s[nt][2 * r] + s[nt][2 * r + 1];
                }
                l_row[r] = l_row[r] * alpha + sum;
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++) o[dt][2 * r] *= alpha, o[dt][2 * r + 1] *= alpha;
            }
            cp_async_wait<0>(); // V has landed
            __syncwarp();
#pragma unroll
            for (int kk = 0; kk < 2; kk++) {
                const uint32_t a[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                       pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, wV + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
                    mma_16816(o[2 * dp], a, b[0], b[1]);
                    mma_16816(o[2 * dp + 1], a, b[2], b[3]);
                }
            }
            __syncwarp(); // every lane is done with the warp's rows before the next tile's loads
        }
    }

    // Merge the warps: each leaves (max, sum, output) per head; a warp that saw
    // no position has max -inf and output 0 and drops out with weight 0.
#pragma unroll
    for (int r = 0; r < 2; r++) {
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 1);
        l_row[r] += __shfl_xor_sync(0xffffffffu, l_row[r], 2);
    }
    __syncthreads(); // the K and V tiles are free
    float *red = reinterpret_cast<float *>(smem); // [DEC_WARPS][DEC_MAX_GROUP][RED_LD]
#pragma unroll
    for (int r = 0; r < 2; r++) {
        if (grp + r * 8 < nh) { // rows past the group hold nothing to keep
            float *dst = red + (warp * DEC_MAX_GROUP + grp + r * 8) * RED_LD + tig * 2;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++)
                *reinterpret_cast<float2 *>(dst + dt * 8) = make_float2(o[dt][2 * r], o[dt][2 * r + 1]);
            if (tig == 0) s_ml[warp * DEC_MAX_GROUP + grp + r * 8] = make_float2(m_row[r], l_row[r]);
        }
    }
    __syncthreads();
    unsigned char *tws = p.ws + (size_t)t * p.ws_token;
    const size_t part0 = (size_t)h0 * p.n_chunks + chunk; // head h0 + g: + g * n_chunks
    float *part_o = reinterpret_cast<float *>(tws + p.ws_o) + part0 * D;
    float2 *part_ml = reinterpret_cast<float2 *>(tws + p.ws_ml) + part0;
    for (int i = tid; i < nh * D; i += DEC_THREADS) {
        const int g = i / D, d = i % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, s_ml[w * DEC_MAX_GROUP + g].x);
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) sum += exp2f(s_ml[w * DEC_MAX_GROUP + g].x - mx) * red[(w * DEC_MAX_GROUP + g) * RED_LD + d];
        part_o[(size_t)g * p.n_chunks * D + d] = sum;
    }
    if (tid < nh) {
        float mx = -INFINITY, total = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, s_ml[w * DEC_MAX_GROUP + tid].x);
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) total += exp2f(s_ml[w * DEC_MAX_GROUP + tid].x - mx) * s_ml[w * DEC_MAX_GROUP + tid].y;
        part_ml[(size_t)tid * p.n_chunks] = make_float2(mx, total);
    }
}

// The last block of a (token, kv head, head group) merges the n_active live
// chunks of each of its nh heads: running max and sum in log2 units, as the
// blocks merged their warps. A thread holds a float4 of a chunk's output row
// (D / 4 threads per row), so the block reads SLOTS rows at a time; each slot
// has U chunks in flight. With fewer heads than slots, a head's
// chunks are split over several slots and merged in shared memory. Partials
// are read with ld.global.cg: from L2, where the other SMs' writes are, never
// from this SM's L1.
template <int D>
static __device__ __forceinline__ void dec_combine(const dec_params &p, unsigned char *smem, int t, int h0, int nh,
                                                   int n_active) {
    constexpr int TPR = D / 4;               // threads per output row
    constexpr int SLOTS = DEC_THREADS / TPR; // rows read at once by the block
    // Chunks whose partials a thread has in flight at once. Registers: at
    // D = 64 the kernel must stay within 96 (5 blocks per SM on Hopper, as
    // shared memory allows); at D = 128 shared memory allows 3 blocks, so up
    // to 168 cost nothing.
    constexpr int U = D == 128 ? 16 : 8;
    static_assert(SLOTS * TPR * sizeof(float4) + SLOTS * sizeof(float2) <= dec_smem_bytes<D>(), "merge buffer");
    const int tid = threadIdx.x, slot = tid / TPR, c4 = tid % TPR;
    const int sph = max(1, SLOTS / nh); // slots per head; sph > 1 only when nh * sph <= SLOTS: one head per slot
    const int part = slot % sph;
    const unsigned char *tws = p.ws + (size_t)t * p.ws_token;
    float4 *s_acc = reinterpret_cast<float4 *>(smem);             // [SLOTS][TPR]
    float2 *s_ml = reinterpret_cast<float2 *>(s_acc + SLOTS * TPR); // [SLOTS]

    for (int g = slot / sph; g < nh; g += SLOTS / sph) {
        const size_t row0 = (size_t)(h0 + g) * p.n_chunks;
        const float2 *ml = reinterpret_cast<const float2 *>(tws + p.ws_ml) + row0;
        const float4 *po = reinterpret_cast<const float4 *>(tws + p.ws_o) + row0 * TPR + c4;
        float m = -INFINITY, l = 0.0f;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        // The slot's batches are U consecutive chunks (loads at constant
        // offsets from one address); part j takes batches j, j + sph, ...
#pragma unroll 1 // one batch's registers, not several
        for (int c = part * U; c < n_active; c += U * sph) {
            float2 e[U];
            float4 v[U];
            const float2 *mlc = ml + c;
            const float4 *poc = po + (size_t)c * TPR;
            // Opaque to the compiler: else it hoists base + u * stride out of
            // the loop as 2U 64-bit registers; this way the loads take
            // constant offsets from two.
            asm("" : "+l"(mlc), "+l"(poc));
            const int n = n_active - c; // chunks of this batch: min(n, U)
#pragma unroll
            for (int u = 0; u < U; u++) { // every load first, then the arithmetic
                e[u] = u < n ? __ldcg(mlc + u) : make_float2(-INFINITY, 0.0f);
                v[u] = u < n ? __ldcg(poc + u * TPR) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
#pragma unroll
            for (int u = 0; u < U; u++) {
                if (u < n) { // a live chunk: finite max
                    const float m_new = fmaxf(m, e[u].x), a = exp2f(m - m_new), b = exp2f(e[u].x - m_new);
                    l = l * a + e[u].y * b;
                    acc.x = acc.x * a + v[u].x * b;
                    acc.y = acc.y * a + v[u].y * b;
                    acc.z = acc.z * a + v[u].z * b;
                    acc.w = acc.w * a + v[u].w * b;
                    m = m_new;
                }
            }
        }
        if (sph == 1) { // the slot saw all of the head's chunks
            const float inv = 1.0f / l;
            reinterpret_cast<float4 *>(p.out + ((size_t)t * p.n_heads + h0 + g) * D)[c4] =
                make_float4(acc.x * inv, acc.y * inv, acc.z * inv, acc.w * inv);
        } else { // a slot without chunks leaves (-inf, 0) and 0: weight 0 below
            s_acc[slot * TPR + c4] = acc;
            if (c4 == 0) s_ml[slot] = make_float2(m, l);
        }
    }
    if (sph > 1) { // block-uniform
        __syncthreads();
        for (int i = tid; i < nh * TPR; i += DEC_THREADS) {
            const int g = i / TPR, c = i % TPR;
            float mx = -INFINITY;
            for (int j = 0; j < sph; j++) mx = fmaxf(mx, s_ml[g * sph + j].x); // finite: part 0 has chunk 0
            float total = 0.0f;
            float4 sum = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            for (int j = 0; j < sph; j++) {
                const float2 e = s_ml[g * sph + j];
                const float4 a = s_acc[(g * sph + j) * TPR + c];
                const float w = exp2f(e.x - mx);
                total += w * e.y;
                sum.x += w * a.x, sum.y += w * a.y, sum.z += w * a.z, sum.w += w * a.w;
            }
            const float inv = 1.0f / total;
            reinterpret_cast<float4 *>(p.out + ((size_t)t * p.n_heads + h0 + g) * D)[c] =
                make_float4(sum.x * inv, sum.y * inv, sum.z * inv, sum.w * inv);
        }
    }
}

// Grid (n_kv * n_hgroups, n_tokens, n_chunks): one block per (kv head x head
// group, token, chunk).
template <int D> __global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(const dec_params p) {
    extern __shared__ __align__(16) unsigned char smem[];
    __shared__ int s_last;

    const int kvh = blockIdx.x / p.n_hgroups, hg = blockIdx.x % p.n_hgroups;
    const int t = blockIdx.y, chunk = blockIdx.z;
    const int h0 = kvh * p.group + hg * DEC_MAX_GROUP;
    const int nh = min(DEC_MAX_GROUP, p.group - hg * DEC_MAX_GROUP);
    const int pos = p.pos[t], seq = p.seq[t]; // both loads in flight together
    const int chunk_len = DEC_CHUNK_BLOCKS * p.block_size;
    const int c0 = chunk * chunk_len;
    // A chunk past the token writes nothing (the combine reads live chunks
    // only), but it still counts.
    if (c0 <= pos) dec_partials<D>(p, smem, t, chunk, kvh, h0, nh, pos, seq, c0, chunk_len);

    // Count the block (as cooperative groups' grid barrier does): the barrier
    // orders every thread's partial writes before thread 0's fence, the fence
    // (cumulative) before its atomic. The block that brings the count to
    // n_chunks fences after it, so its reads of the other blocks' partials
    // come after their writes, and reads them from L2 (dec_combine).
    __syncthreads();
    if (threadIdx.x == 0) {
        int *count = p.counters + (size_t)t * p.n_heads + blockIdx.x;
        __threadfence();
        const bool last = atomicAdd(count, 1) == p.n_chunks - 1;
        if (last) {
            *count = 0; // every block has counted: ready for the next launch or graph replay, no memset
            __threadfence();
        }
        s_last = last;
    }
    __syncthreads(); // s_last, and thread 0's fence, for the whole block
    if (!s_last) return;
    dec_combine<D>(p, smem, t, h0, nh, min(p.n_chunks, pos / chunk_len + 1));
}

// ---- prefill ----------------------------------------------------------------

// 4 warps a block; each warp owns 16 * PF_MT = 32 consecutive query rows (128
// a block), so that every K and V fragment loaded from shared memory feeds
// two mma's instead of one: with 16 rows a warp, ldmatrix's shared-memory
// traffic, not the tensor cores, set the pace. The Q tile stays in shared
// memory (the accumulators of 32 rows leave no room for Q in registers), and
// the K/V tiles are PF_COLS = 32 positions. The other forms measured
// (docs/perf.md, "Prefill attention"): 16 rows a warp with Q in registers,
// tiles of 64 positions (no faster, all 255 registers), and wgmma on Hopper
// (slower); all removed.
#define PF_WARPS 4
#define PF_THREADS (PF_WARPS * 32)
#define PF_MT 2    // m-tiles of 16 query rows per warp
#define PF_COLS 32 // positions per K/V tile
#define PF_ROWS (16 * PF_MT * PF_WARPS)

template <int D> static constexpr size_t pf_smem_bytes(void) {
    // K and V, two buffers each, Q's rows, the row offsets of the two K/V buffers.
    return (4 * (size_t)PF_COLS + PF_ROWS) * (D + 8) * sizeof(__half) + 2 * (size_t)PF_COLS * sizeof(long long);
}

template <int D>
static __device__ __forceinline__ void pf_issue_tile(__half *sK, __half *sV, const long long *row_off,
                                                     const pf_params &p) {
    constexpr int LD = D + 8, NCOL = D / 8;
#pragma unroll
    for (int it = 0; it < PF_COLS * NCOL / PF_THREADS; it++) {
        const int i = threadIdx.x + it * PF_THREADS, r = i / NCOL, c = i % NCOL;
        const long long off = row_off[r];
        const bool ok = off >= 0;
        const size_t src = ok ? (size_t)off + c * 8 : 0;
        cp_async_16(sK + r * LD + c * 8, p.k + src, ok);
        cp_async_16(sV + r * LD + c * 8, p.v + src, ok);
    }
}

template <int D> __global__ void __launch_bounds__(PF_THREADS, 2) attn_prefill_kernel(const pf_params p) {
    constexpr int MT = PF_MT, COLS = PF_COLS;
    constexpr int WROWS = 16 * MT, ROWS = PF_ROWS; // query rows per warp, per block
    constexpr int LD = D + 8;  // halves per staged row: the 16-byte pad puts ldmatrix's 8 rows on distinct banks
    constexpr int TILE = COLS * LD;
    constexpr int NCOL = D / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    __half *sK = reinterpret_cast<__half *>(smem); // [2][COLS][LD]
    __half *sV = sK + 2 * TILE;                    // [2][COLS][LD]
    __half *sQ = sV + 2 * TILE;                    // [ROWS][LD]
    long long *row_off = reinterpret_cast<long long *>(sQ + ROWS * LD); // [2][COLS]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int grp = lane >> 2, tig = lane & 3; // mma fragment coordinates: row group, thread in group
    // Blocks start in grid order, x fastest: every head's longest (last) query
    // tile first, then the next longest, so the short ones fill the tail.
    const int h = blockIdx.x, kvh = h / p.group;
    const int qt = gridDim.y - 1 - blockIdx.y;
    const int q0 = qt * ROWS;
    const int pos0 = p.pos[0];
    const int32_t *table = p.block_tables + (size_t)p.seq[0] * p.max_blocks;
    const int last_pos = pos0 + p.n_tokens - 1;
    const int kv_end = pos0 + min(q0 + ROWS, p.n_tokens); // positions the tile's last query sees
    const int n_tiles = (kv_end + COLS - 1) / COLS;

    pf_tile_offsets<COLS>(row_off, p, table, kvh, D, 0, kv_end);
    __syncthreads();
    pf_issue_tile<D>(sK, sV, row_off, p);
    cp_async_commit();

    // Q tile -> f16 (scale and log2(e) folded in) while tile 0 is in flight.
#pragma unroll
    for (int it = 0; it < ROWS * NCOL / PF_THREADS; it++) {
        const int i = tid + it * PF_THREADS, r = i / NCOL, c = i % NCOL, tok = q0 + r;
        *reinterpret_cast<uint4 *>(sQ + r * LD + c * 8) = pf_q_chunk<D>(p, tok, h, c);
    }
    if (n_tiles > 1) pf_tile_offsets<COLS>(row_off + COLS, p, table, kvh, D, 1, kv_end);
    __syncthreads();
    // A fragments of 16 rows (the warp's m-tile mt): matrices (rows 0-7 |
    // 8-15) x (cols 0-7 | 8-15) of k-step ks.
    auto load_q = [&](uint32_t a[4], int mt, int ks) {
        ldmatrix_x4(a, sQ + (warp * WROWS + mt * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 +
                           (lane >> 4) * 8);
    };

    float o[MT][D / 8][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int i = 0; i < D / 8; i++) o[mt][i][0] = o[mt][i][1] = o[mt][i][2] = o[mt][i][3] = 0.0f;
    float m_row[MT][2], l_row[MT][2]; // rows grp, grp + 8 of each m-tile
#pragma unroll
    for (int mt = 0; mt < MT; mt++) m_row[mt][0] = m_row[mt][1] = -INFINITY, l_row[mt][0] = l_row[mt][1] = 0.0f;
    const int warp_first = pos0 + q0 + warp * WROWS;            // position of the warp's first row
    const int warp_last = min(warp_first + WROWS - 1, last_pos); // of its last real row
    const bool warp_active = warp_first <= last_pos;             // not all padding

    for (int it = 0; it < n_tiles; it++) {
        const int buf = it & 1;
        if (it + 1 < n_tiles) { // buffer buf ^ 1 was freed by the barrier that ended the last iteration
            pf_issue_tile<D>(sK + (buf ^ 1) * TILE, sV + (buf ^ 1) * TILE, row_off + (buf ^ 1) * COLS, p);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile `it` is visible to every warp
        const int kv0 = it * COLS;
        if (warp_active && kv0 <= warp_last) { // else every score of the warp's rows is masked
            const __half *tK = sK + buf * TILE, *tV = sV + buf * TILE;
            float s[MT][COLS / 8][4];
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int i = 0; i < COLS / 8; i++) s[mt][i][0] = s[mt][i][1] = s[mt][i][2] = s[mt][i][3] = 0.0f;
            // S = Q K^T. B fragments: K rows are positions (n), columns dims (k):
            // matrices (positions 0-7 | 8-15 of the pair) x (dims 0-7 | 8-15).
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) load_q(a[mt], mt, ks);
#pragma unroll
                for (int np = 0; np < COLS / 16; np++) {
                    uint32_t b[4];
                    ldmatrix_x4(b, tK + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_16816(s[mt][2 * np], a[mt], b[0], b[1]);
                        mma_16816(s[mt][2 * np + 1], a[mt], b[2], b[3]);
                    }
                }
            }
            if (kv0 + COLS - 1 > warp_first) { // the tile crosses the diagonal: causal mask
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int nt = 0; nt < COLS / 8; nt++)
#pragma unroll
                        for (int e = 0; e < 4; e++)
                            if (kv0 + nt * 8 + tig * 2 + (e & 1) > warp_first + mt * 16 + grp + (e >> 1) * 8)
                                s[mt][nt][e] = -INFINITY;
            }
            // Online softmax; the 4 threads of a quad share a row. l_row keeps
            // this thread's share of the row sum (the quad adds them at the end).
            float alpha[MT][2];
            bool rescale = false;
#pragma unroll
            for (int mt = 0; mt < MT; mt++)
#pragma unroll
                for (int r = 0; r < 2; r++) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int nt = 0; nt < COLS / 8; nt++)
                        mx = fmaxf(mx, fmaxf(s[mt][nt][2 * r], s[mt][nt][2 * r + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    const float m_new = fmaxf(m_row[mt][r], mx);
                    const float m_use = m_new == -INFINITY ? 0.0f : m_new; // a row with nothing visible yet stays 0
                    alpha[mt][r] = fast_exp2(m_row[mt][r] - m_use);
                    rescale |= alpha[mt][r] != 1.0f;
                    m_row[mt][r] = m_new;
                    float sum = 0.0f;
#pragma unroll
                    for (int nt = 0; nt < COLS / 8; nt++) {
                        s[mt][nt][2 * r] = fast_exp2(s[mt][nt][2 * r] - m_use);
                        s[mt][nt][2 * r + 1] = fast_exp2(s[mt][nt][2 * r + 1] - m_use);
                        sum += s[mt][nt][2 * r] + s[mt][nt][2 * r + 1];
                    }
                    l_row[mt][r] = l_row[mt][r] * alpha[mt][r] + sum;
                }
            if (__any_sync(0xffffffffu, rescale)) // once the row maxima settle, most tiles skip it
#pragma unroll
                for (int mt = 0; mt < MT; mt++)
#pragma unroll
                    for (int r = 0; r < 2; r++)
#pragma unroll
                        for (int dt = 0; dt < D / 8; dt++)
                            o[mt][dt][2 * r] *= alpha[mt][r], o[mt][dt][2 * r + 1] *= alpha[mt][r];
            // O += P V. The accumulators of position tiles 2kk, 2kk+1 are the A
            // fragment of k-step kk; B fragments come transposed from V rows:
            // matrices (positions 0-7 | 8-15) x (dims 0-7 | 8-15 of the pair).
#pragma unroll
            for (int kk = 0; kk < COLS / 16; kk++) {
                uint32_t a[MT][4];
#pragma unroll
                for (int mt = 0; mt < MT; mt++) {
                    a[mt][0] = pack_half2(s[mt][2 * kk][0], s[mt][2 * kk][1]);
                    a[mt][1] = pack_half2(s[mt][2 * kk][2], s[mt][2 * kk][3]);
                    a[mt][2] = pack_half2(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
                    a[mt][3] = pack_half2(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
                }
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, tV + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
#pragma unroll
                    for (int mt = 0; mt < MT; mt++) {
                        mma_16816(o[mt][2 * dp], a[mt], b[0], b[1]);
                        mma_16816(o[mt][2 * dp + 1], a[mt], b[2], b[3]);
                    }
                }
            }
        }
        if (it + 2 < n_tiles) pf_tile_offsets<COLS>(row_off + buf * COLS, p, table, kvh, D, it + 2, kv_end);
        __syncthreads(); // buffer buf is free for tile it + 2; its offsets are visible
    }

#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int r = 0; r < 2; r++) {
            float l = l_row[mt][r];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const int tok = q0 + warp * WROWS + mt * 16 + grp + r * 8;
            if (tok < p.n_tokens) {
                const float inv = 1.0f / l;
                float *dst = p.out + ((size_t)tok * p.n_heads + h) * D + tig * 2;
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
                    *reinterpret_cast<float2 *>(dst + dt * 8) =
                        make_float2(o[mt][dt][2 * r] * inv, o[mt][dt][2 * r + 1] * inv);
            }
        }
}

// ---- launchers --------------------------------------------------------------

bool kiln_cuda_attention_supports(int head_dim) { return head_dim == 64 || head_dim == 128; }

static bool attention_args_ok(const kiln_cuda_attention_args *a) {
    return a && kiln_cuda_attention_supports(a->kv.head_dim) && a->kv.k && a->kv.v && a->kv.block_tables &&
           a->kv.block_size > 0 && a->kv.max_blocks_per_seq > 0 && a->kv.n_kv_heads > 0 && a->n_heads > 0 &&
           a->n_heads % a->kv.n_kv_heads == 0 && a->n_tokens >= 0 && a->pos && a->seq && a->q && a->out;
}

static int decode_chunks(int max_blocks_per_seq) {
    return (max_blocks_per_seq + DEC_CHUNK_BLOCKS - 1) / DEC_CHUNK_BLOCKS;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

// A token's region of the workspace (see dec_params): it depends on n_heads,
// head_dim and n_chunks, never on n_tokens.
typedef struct dec_layout {
    size_t token, ml, o; // bytes
} dec_layout;

static dec_layout decode_layout(int n_heads, int head_dim, int n_chunks) {
    const size_t parts = (size_t)n_heads * n_chunks;
    dec_layout l;
    l.ml = 0;
    l.o = l.ml + align16(parts * sizeof(float2));
    l.token = align16(l.o + parts * head_dim * sizeof(float));
    return l;
}

size_t kiln_cuda_attention_decode_workspace(int n_tokens, int n_heads, int head_dim, int max_blocks_per_seq) {
    if (n_tokens <= 0 || n_heads <= 0 || head_dim <= 0 || max_blocks_per_seq <= 0) return 0;
    return (size_t)n_tokens * decode_layout(n_heads, head_dim, decode_chunks(max_blocks_per_seq)).token;
}

size_t kiln_cuda_attention_decode_counters(int n_tokens, int n_heads) {
    return n_tokens > 0 && n_heads > 0 ? (size_t)n_tokens * (size_t)n_heads * sizeof(int) : 0;
}

cudaError_t kiln_cuda_attention_decode_counters_clear(cudaStream_t stream, int *counters, size_t bytes) {
    if (bytes == 0) return cudaSuccess;
    if (!counters) return cudaErrorInvalidValue;
    return cudaMemsetAsync(counters, 0, bytes, stream);
}

template <int D> static cudaError_t launch_decode(cudaStream_t stream, const kiln_cuda_attention_args *a, void *ws) {
    const int group = a->n_heads / a->kv.n_kv_heads;
    dec_params p;
    p.k = static_cast<const __half *>(a->kv.k);
    p.v = static_cast<const __half *>(a->kv.v);
    p.block_tables = a->kv.block_tables;
    p.max_blocks = a->kv.max_blocks_per_seq;
    p.block_size = a->kv.block_size;
    p.n_kv = a->kv.n_kv_heads;
    p.pos = a->pos;
    p.seq = a->seq;
    p.q = a->q;
    p.out = a->out;
    p.n_heads = a->n_heads;
    p.group = group;
    p.n_hgroups = (group + DEC_MAX_GROUP - 1) / DEC_MAX_GROUP;
    p.n_chunks = decode_chunks(p.max_blocks);
    p.qscale = a->scale * ATTN_LOG2E;
    const dec_layout l = decode_layout(a->n_heads, D, p.n_chunks);
    p.counters = a->counters;
    p.ws = static_cast<unsigned char *>(ws);
    p.ws_token = l.token;
    p.ws_ml = l.ml;
    p.ws_o = l.o;
    if (a->n_tokens > 65535 || p.n_chunks > 65535) return cudaErrorInvalidValue;

    constexpr size_t smem = dec_smem_bytes<D>();
    cudaError_t e = cudaFuncSetAttribute(attn_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const dim3 grid(a->kv.n_kv_heads * p.n_hgroups, a->n_tokens, p.n_chunks); // chunks slowest: live ones start first
    attn_decode_kernel<D><<<grid, dim3(DEC_THREADS), smem, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t kiln_cuda_attention_decode(cudaStream_t stream, const kiln_cuda_attention_args *a, void *workspace) {
    if (!attention_args_ok(a) || !workspace || !a->counters) return cudaErrorInvalidValue;
    if (((uintptr_t)workspace | (uintptr_t)a->q | (uintptr_t)a->out) & 15) return cudaErrorInvalidValue; // float4s
    if (a->n_tokens == 0) return cudaSuccess;
    return a->kv.head_dim == 64 ? launch_decode<64>(stream, a, workspace) : launch_decode<128>(stream, a, workspace);
}

template <int D> static cudaError_t launch_prefill(cudaStream_t stream, const kiln_cuda_attention_args *a) {
    pf_params p;
    p.k = static_cast<const __half *>(a->kv.k);
    p.v = static_cast<const __half *>(a->kv.v);
    p.block_tables = a->kv.block_tables;
    p.max_blocks = a->kv.max_blocks_per_seq;
    p.block_size = a->kv.block_size;
    p.n_kv = a->kv.n_kv_heads;
    p.pos = a->pos;
    p.seq = a->seq;
    p.q = a->q;
    p.out = a->out;
    p.n_tokens = a->n_tokens;
    p.n_heads = a->n_heads;
    p.group = a->n_heads / a->kv.n_kv_heads;
    p.qscale = a->scale * ATTN_LOG2E;

    constexpr size_t smem = pf_smem_bytes<D>();
    cudaError_t e =
        cudaFuncSetAttribute(attn_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const int q_tiles = (a->n_tokens + PF_ROWS - 1) / PF_ROWS;
    if (q_tiles > 65535) return cudaErrorInvalidValue;
    const dim3 grid(a->n_heads, q_tiles);
    attn_prefill_kernel<D><<<grid, PF_THREADS, smem, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t kiln_cuda_attention_prefill(cudaStream_t stream, const kiln_cuda_attention_args *a) {
    if (!attention_args_ok(a)) return cudaErrorInvalidValue;
    if (a->n_tokens == 0) return cudaSuccess;
    return a->kv.head_dim == 64 ? launch_prefill<64>(stream, a) : launch_prefill<128>(stream, a);
}
