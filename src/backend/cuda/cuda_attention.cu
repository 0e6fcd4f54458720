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
// unnormalised output); a combine kernel merges the chunks. Chunks past a
// token's position write an empty partial, so the grid depends only on the
// batch shape and a captured graph stays valid as sequences grow.
//
// Prefill (FlashAttention-2): one block per (64 query rows, query head),
// 4 warps of 16 rows; K/V tiles of 64 positions double-buffered through
// cp.async; S = Q K^T and O += P V with mma.sync m16n8k16; online softmax;
// the K/V loop stops at the last position the block's last query sees.
#include <cuda_fp16.h>
#include <math.h>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/cuda_pdl.cuh"

#define ATTN_LOG2E 1.4426950408889634f

// ---- sm_80 PTX helpers ------------------------------------------------------

static __device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16-byte global -> shared copy; valid == false writes 16 zero bytes and
// reads nothing (src must still be a global address).
static __device__ __forceinline__ void cp_async_16(void *dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(valid ? 16 : 0)
                 : "memory");
}

static __device__ __forceinline__ void cp_async_commit(void) {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most `pending` of this thread's committed groups are in flight.
template <int pending> static __device__ __forceinline__ void cp_async_wait(void) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending) : "memory");
}

static __device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}

static __device__ __forceinline__ void ldmatrix_x4_trans(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory");
}

// c += a (16x16, row) * b (16x8, col); f16 inputs, f32 accumulators.
static __device__ __forceinline__ void mma_16816(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi); // lo in the low 16 bits: the lower column of a fragment
    return *reinterpret_cast<uint32_t *>(&h);
}

// Element offset of (position p, kv head kvh) in a layer's K or V array.
static __device__ __forceinline__ long long kv_row_offset(const int32_t *table, int p, int block_size, int n_kv,
                                                          int kvh, int head_dim) {
    const long long block = table[p / block_size];
    return ((block * block_size + p % block_size) * n_kv + kvh) * head_dim;
}

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
    int n_heads, group, n_hgroups, n_chunks;
    float qscale;    // scale * log2(e): scores come out in log2 units
    float *part_o;   // [n_tokens][n_heads][n_chunks][D]
    float2 *part_ml; // [n_tokens][n_heads][n_chunks] (max in log2 units, sum)
} dec_params;

template <int D> static constexpr size_t dec_smem_bytes(void) {
    return 2 * (size_t)DEC_TILE * (D + 8) * sizeof(__half)      // K, V tiles (rows padded by 16 bytes)
           + (size_t)DEC_MAX_GROUP * (D + 8) * sizeof(__half)   // queries, scaled, f16
           + (size_t)DEC_WARPS * DEC_MAX_GROUP * sizeof(float2); // each warp's (max, sum) per head
}

template <int D> __global__ void __launch_bounds__(DEC_THREADS) attn_decode_kernel(const dec_params p) {
    constexpr int LD = D + 8;     // halves per staged row: the pad puts ldmatrix's 8 rows on distinct banks
    constexpr int NCOL = D / 8;   // 16-byte pieces per row
    constexpr int RED_LD = D + 8; // floats per row of the merge buffer (conflict-free float2 stores)
    static_assert(DEC_WARPS * DEC_MAX_GROUP * RED_LD * sizeof(float) <= 2 * DEC_TILE * LD * sizeof(__half),
                  "merge buffer must fit in the K and V tiles");
    extern __shared__ __align__(16) unsigned char smem[];
    __half *sK = reinterpret_cast<__half *>(smem);
    __half *sV = sK + DEC_TILE * LD;
    __half *sQ = sV + DEC_TILE * LD;
    float2 *s_ml = reinterpret_cast<float2 *>(sQ + DEC_MAX_GROUP * LD); // [DEC_WARPS][DEC_MAX_GROUP]
    pdl_allow_next();
    pdl_wait(); // q, positions, block tables and the new K/V come from the kernels before

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int grp = lane >> 2, tig = lane & 3; // mma fragment coordinates: row group, thread in group
    const int kvh = blockIdx.x / p.n_hgroups, hg = blockIdx.x % p.n_hgroups;
    const int t = blockIdx.y, chunk = blockIdx.z;
    const int h0 = kvh * p.group + hg * DEC_MAX_GROUP;
    const int nh = min(DEC_MAX_GROUP, p.group - hg * DEC_MAX_GROUP);
    const size_t part0 = ((size_t)t * p.n_heads + h0) * p.n_chunks + chunk; // head h0 + g: + g * n_chunks

    const int pos = p.pos[t], seq = p.seq[t]; // both loads in flight together
    const int chunk_len = DEC_CHUNK_BLOCKS * p.block_size;
    const int c0 = chunk * chunk_len;
    if (c0 > pos) { // past the token: an empty partial, so the grid never depends on positions
        if (tid < nh) p.part_ml[part0 + (size_t)tid * p.n_chunks] = make_float2(-INFINITY, 0.0f);
        return;
    }
    const int n_valid = min(chunk_len, pos + 1 - c0);
    const int32_t *table = p.block_tables + (size_t)seq * p.max_blocks;
    const int w0 = warp * 32; // the warp's first row of a tile
    __half *wK = sK + w0 * LD, *wV = sV + w0 * LD;

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
            for (int i = tid; i < DEC_MAX_GROUP * NCOL; i += DEC_THREADS) {
                const int r = i / NCOL, c = i % NCOL;
                uint4 packed = make_uint4(0, 0, 0, 0);
                if (r < nh) {
                    const float4 *src = reinterpret_cast<const float4 *>(p.q + ((size_t)t * p.n_heads + h0 + r) * D + c * 8);
                    const float4 a = src[0], b = src[1];
                    const float s = p.qscale;
                    packed = make_uint4(pack_half2(a.x * s, a.y * s), pack_half2(a.z * s, a.w * s),
                                        pack_half2(b.x * s, b.y * s), pack_half2(b.z * s, b.w * s));
                }
                *reinterpret_cast<uint4 *>(sQ + r * LD + c * 8) = packed;
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
    for (int i = tid; i < nh * D; i += DEC_THREADS) {
        const int g = i / D, d = i % D;
        float mx = -INFINITY;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, s_ml[w * DEC_MAX_GROUP + g].x);
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) sum += exp2f(s_ml[w * DEC_MAX_GROUP + g].x - mx) * red[(w * DEC_MAX_GROUP + g) * RED_LD + d];
        p.part_o[(part0 + (size_t)g * p.n_chunks) * D + d] = sum;
    }
    if (tid < nh) {
        float mx = -INFINITY, total = 0.0f;
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) mx = fmaxf(mx, s_ml[w * DEC_MAX_GROUP + tid].x);
#pragma unroll
        for (int w = 0; w < DEC_WARPS; w++) total += exp2f(s_ml[w * DEC_MAX_GROUP + tid].x - mx) * s_ml[w * DEC_MAX_GROUP + tid].y;
        p.part_ml[part0 + (size_t)tid * p.n_chunks] = make_float2(mx, total);
    }
}

#define COMBINE_THREADS 256 // 8 warps: up to 32 chunks need one round of loads (4 in flight per warp)
#define COMBINE_WARPS (COMBINE_THREADS / 32)

// One block per (token, head). Warp w merges chunks w, w + 8, ... in one pass
// (running max and sum, so each chunk's (max, sum) and output are loaded
// together, several chunks in flight), then the warps meet in shared memory. Chunks past the token's position are never read.
template <int D>
__global__ void __launch_bounds__(COMBINE_THREADS)
    attn_decode_combine_kernel(const float *__restrict__ part_o, const float2 *__restrict__ part_ml,
                               const int32_t *__restrict__ pos, float *__restrict__ out, int n_heads, int n_chunks,
                               int chunk_len) {
    __shared__ float s_acc[COMBINE_WARPS][D];
    __shared__ float2 s_ml[COMBINE_WARPS];
    pdl_allow_next();
    pdl_wait();
    const int row = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int n_active = min(n_chunks, pos[row / n_heads] / chunk_len + 1);
    const float2 *ml = part_ml + (size_t)row * n_chunks;
    const float *po = part_o + (size_t)row * n_chunks * D;

    float m = -INFINITY, l = 0.0f, acc[D / 32];
#pragma unroll
    for (int i = 0; i < D / 32; i++) acc[i] = 0.0f;
#pragma unroll 4
    for (int c = warp; c < n_active; c += COMBINE_WARPS) {
        const float2 e = ml[c]; // a live chunk: finite max
        float v[D / 32];
#pragma unroll
        for (int i = 0; i < D / 32; i++) v[i] = po[(size_t)c * D + lane + 32 * i];
        const float m_new = fmaxf(m, e.x), a = exp2f(m - m_new), b = exp2f(e.x - m_new);
        l = l * a + e.y * b;
#pragma unroll
        for (int i = 0; i < D / 32; i++) acc[i] = acc[i] * a + v[i] * b;
        m = m_new;
    }
#pragma unroll
    for (int i = 0; i < D / 32; i++) s_acc[warp][lane + 32 * i] = acc[i];
    if (lane == 0) s_ml[warp] = make_float2(m, l); // a warp without chunks: (-inf, 0), weight 0 below
    __syncthreads();
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < COMBINE_WARPS; w++) mx = fmaxf(mx, s_ml[w].x); // finite: warp 0 has chunk 0
    float total = 0.0f, wt[COMBINE_WARPS];
#pragma unroll
    for (int w = 0; w < COMBINE_WARPS; w++) wt[w] = exp2f(s_ml[w].x - mx), total += wt[w] * s_ml[w].y;
    const float inv = 1.0f / total;
    for (int d = threadIdx.x; d < D; d += COMBINE_THREADS) {
        float sum = 0.0f;
#pragma unroll
        for (int w = 0; w < COMBINE_WARPS; w++) sum += wt[w] * s_acc[w][d];
        out[(size_t)row * D + d] = sum * inv;
    }
}

// ---- prefill ----------------------------------------------------------------

#define PF_ROWS 64 // query rows per block: 4 warps x 16
#define PF_COLS 64 // key positions per tile
#define PF_THREADS 128

typedef struct pf_params {
    const __half *k, *v;
    const int32_t *block_tables;
    int max_blocks, block_size, n_kv;
    const int32_t *pos, *seq;
    const float *q;
    float *out;
    int n_tokens, n_heads, group;
    float qscale; // scale * log2(e)
} pf_params;

template <int D> static constexpr size_t pf_smem_bytes(void) {
    return 4 * (size_t)PF_COLS * (D + 8) * sizeof(__half) // K and V, two buffers each (Q staged in K's second)
           + 2 * (size_t)PF_COLS * sizeof(long long);    // row offsets of the two buffers
}

// Row offsets of tile `tile` (-1 past kv_end: that row is zero-filled).
static __device__ __forceinline__ void pf_tile_offsets(long long *row_off, const pf_params &p, const int32_t *table,
                                                       int kvh, int head_dim, int tile, int kv_end) {
    const int tid = threadIdx.x;
    if (tid < PF_COLS) {
        const int pos = tile * PF_COLS + tid;
        row_off[tid] = pos < kv_end ? kv_row_offset(table, pos, p.block_size, p.n_kv, kvh, head_dim) : -1;
    }
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

template <int D> __global__ void __launch_bounds__(PF_THREADS) attn_prefill_kernel(const pf_params p) {
    constexpr int LD = D + 8;  // halves per staged row: the 16-byte pad puts ldmatrix's 8 rows on distinct banks
    constexpr int TILE = PF_COLS * LD;
    constexpr int NCOL = D / 8;
    extern __shared__ __align__(16) unsigned char smem[];
    __half *sK = reinterpret_cast<__half *>(smem); // [2][PF_COLS][LD]
    __half *sV = sK + 2 * TILE;                    // [2][PF_COLS][LD]
    long long *row_off = reinterpret_cast<long long *>(sV + 2 * TILE); // [2][PF_COLS]

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int grp = lane >> 2, tig = lane & 3; // mma fragment coordinates: row group, thread in group
    const int qt = gridDim.x - 1 - blockIdx.x; // the longest (last) query tiles start first
    const int h = blockIdx.y, kvh = h / p.group;
    const int q0 = qt * PF_ROWS;
    const int pos0 = p.pos[0];
    const int32_t *table = p.block_tables + (size_t)p.seq[0] * p.max_blocks;
    const int last_pos = pos0 + p.n_tokens - 1;
    const int kv_end = pos0 + min(q0 + PF_ROWS, p.n_tokens); // positions the tile's last query sees
    const int n_tiles = (kv_end + PF_COLS - 1) / PF_COLS;

    pf_tile_offsets(row_off, p, table, kvh, D, 0, kv_end);
    __syncthreads();
    pf_issue_tile<D>(sK, sV, row_off, p);
    cp_async_commit();

    // Q tile -> f16 (scale and log2(e) folded in), staged in K's second buffer
    // while tile 0 is in flight.
    __half *sQ = sK + TILE;
#pragma unroll
    for (int it = 0; it < PF_ROWS * NCOL / PF_THREADS; it++) {
        const int i = tid + it * PF_THREADS, r = i / NCOL, c = i % NCOL, tok = q0 + r;
        uint4 packed = make_uint4(0, 0, 0, 0);
        if (tok < p.n_tokens) {
            const float4 *src = reinterpret_cast<const float4 *>(p.q + ((size_t)tok * p.n_heads + h) * D + c * 8);
            const float4 a = src[0], b = src[1];
            const float s = p.qscale;
            packed = make_uint4(pack_half2(a.x * s, a.y * s), pack_half2(a.z * s, a.w * s),
                                pack_half2(b.x * s, b.y * s), pack_half2(b.z * s, b.w * s));
        }
        *reinterpret_cast<uint4 *>(sQ + r * LD + c * 8) = packed;
    }
    if (n_tiles > 1) pf_tile_offsets(row_off + PF_COLS, p, table, kvh, D, 1, kv_end);
    __syncthreads();
    // A fragments of the warp's 16 rows: matrices (rows 0-7 | 8-15) x (cols 0-7 | 8-15).
    uint32_t qf[D / 16][4];
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
        ldmatrix_x4(qf[ks], sQ + (warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + ks * 16 + (lane >> 4) * 8);
    __syncthreads(); // every warp has its Q before tile 1 overwrites the staging buffer

    float o[D / 8][4];
#pragma unroll
    for (int i = 0; i < D / 8; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f}; // rows grp, grp + 8
    const int warp_first = pos0 + q0 + warp * 16;            // position of the warp's first row
    const int warp_last = min(warp_first + 15, last_pos);    // of its last real row
    const bool warp_active = warp_first <= last_pos;         // not all padding
    const int row_pos = warp_first + grp;                    // this thread's rows: row_pos, row_pos + 8

    for (int it = 0; it < n_tiles; it++) {
        const int buf = it & 1;
        if (it + 1 < n_tiles) { // buffer buf ^ 1 was freed by the barrier that ended the last iteration
            pf_issue_tile<D>(sK + (buf ^ 1) * TILE, sV + (buf ^ 1) * TILE, row_off + (buf ^ 1) * PF_COLS, p);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads(); // tile `it` is visible to every warp
        const int kv0 = it * PF_COLS;
        if (warp_active && kv0 <= warp_last) { // else every score of the warp's rows is masked
            const __half *tK = sK + buf * TILE, *tV = sV + buf * TILE;
            float s[PF_COLS / 8][4];
#pragma unroll
            for (int i = 0; i < PF_COLS / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
            // S = Q K^T. B fragments: K rows are positions (n), columns dims (k):
            // matrices (positions 0-7 | 8-15 of the pair) x (dims 0-7 | 8-15).
#pragma unroll
            for (int ks = 0; ks < D / 16; ks++) {
#pragma unroll
                for (int np = 0; np < PF_COLS / 16; np++) {
                    uint32_t b[4];
                    ldmatrix_x4(b, tK + (np * 16 + (lane >> 4) * 8 + (lane & 7)) * LD + ks * 16 + ((lane >> 3) & 1) * 8);
                    mma_16816(s[2 * np], qf[ks], b[0], b[1]);
                    mma_16816(s[2 * np + 1], qf[ks], b[2], b[3]);
                }
            }
            if (kv0 + PF_COLS - 1 > warp_first) { // the tile crosses the diagonal: causal mask
#pragma unroll
                for (int nt = 0; nt < PF_COLS / 8; nt++)
#pragma unroll
                    for (int e = 0; e < 4; e++)
                        if (kv0 + nt * 8 + tig * 2 + (e & 1) > row_pos + (e >> 1) * 8) s[nt][e] = -INFINITY;
            }
            // Online softmax; the 4 threads of a quad share a row. l_row keeps
            // this thread's share of the row sum (the quad adds them at the end).
#pragma unroll
            for (int r = 0; r < 2; r++) {
                float mx = -INFINITY;
#pragma unroll
                for (int nt = 0; nt < PF_COLS / 8; nt++) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_row[r], mx);
                const float m_use = m_new == -INFINITY ? 0.0f : m_new; // a row with nothing visible yet stays 0
                const float alpha = exp2f(m_row[r] - m_use);
                m_row[r] = m_new;
                float sum = 0.0f;
#pragma unroll
                for (int nt = 0; nt < PF_COLS / 8; nt++) {
                    s[nt][2 * r] = exp2f(s[nt][2 * r] - m_use);
                    s[nt][2 * r + 1] = exp2f(s[nt][2 * r + 1] - m_use);
                    sum += s[nt][2 * r] + s[nt][2 * r + 1];
                }
                l_row[r] = l_row[r] * alpha + sum;
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++) o[dt][2 * r] *= alpha, o[dt][2 * r + 1] *= alpha;
            }
            // O += P V. The accumulators of position tiles 2kk, 2kk+1 are the A
            // fragment of k-step kk; B fragments come transposed from V rows:
            // matrices (positions 0-7 | 8-15) x (dims 0-7 | 8-15 of the pair).
#pragma unroll
            for (int kk = 0; kk < PF_COLS / 16; kk++) {
                const uint32_t a[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                       pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                       pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
                for (int dp = 0; dp < D / 16; dp++) {
                    uint32_t b[4];
                    ldmatrix_x4_trans(b, tV + (kk * 16 + ((lane >> 3) & 1) * 8 + (lane & 7)) * LD + dp * 16 + (lane >> 4) * 8);
                    mma_16816(o[2 * dp], a, b[0], b[1]);
                    mma_16816(o[2 * dp + 1], a, b[2], b[3]);
                }
            }
        }
        if (it + 2 < n_tiles) pf_tile_offsets(row_off + buf * PF_COLS, p, table, kvh, D, it + 2, kv_end);
        __syncthreads(); // buffer buf is free for tile it + 2; its offsets are visible
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_row[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int tok = q0 + warp * 16 + grp + r * 8;
        if (tok < p.n_tokens) {
            const float inv = 1.0f / l;
            float *dst = p.out + ((size_t)tok * p.n_heads + h) * D + tig * 2;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++)
                *reinterpret_cast<float2 *>(dst + dt * 8) = make_float2(o[dt][2 * r] * inv, o[dt][2 * r + 1] * inv);
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

size_t kiln_cuda_attention_decode_workspace(int n_tokens, int n_heads, int head_dim, int max_blocks_per_seq) {
    if (n_tokens <= 0 || n_heads <= 0 || head_dim <= 0 || max_blocks_per_seq <= 0) return 0;
    const size_t partials = (size_t)n_tokens * n_heads * decode_chunks(max_blocks_per_seq);
    return partials * ((size_t)head_dim * sizeof(float) + sizeof(float2));
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
    p.n_heads = a->n_heads;
    p.group = group;
    p.n_hgroups = (group + DEC_MAX_GROUP - 1) / DEC_MAX_GROUP;
    p.n_chunks = decode_chunks(p.max_blocks);
    p.qscale = a->scale * ATTN_LOG2E;
    p.part_o = static_cast<float *>(ws);
    p.part_ml = reinterpret_cast<float2 *>(p.part_o + (size_t)a->n_tokens * a->n_heads * p.n_chunks * D);
    if (a->n_tokens > 65535 || p.n_chunks > 65535) return cudaErrorInvalidValue;

    constexpr size_t smem = dec_smem_bytes<D>();
    cudaError_t e = cudaFuncSetAttribute(attn_decode_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const dim3 grid(a->kv.n_kv_heads * p.n_hgroups, a->n_tokens, p.n_chunks); // chunks slowest: live ones start first
    e = launch_maybe_pdl(a->pdl, attn_decode_kernel<D>, grid, dim3(DEC_THREADS), smem, stream, p);
    if (e != cudaSuccess) return e;
    e = launch_maybe_pdl(a->pdl, attn_decode_combine_kernel<D>, dim3(a->n_tokens * a->n_heads), dim3(COMBINE_THREADS),
                         0, stream, (const float *)p.part_o, (const float2 *)p.part_ml, a->pos, a->out, a->n_heads,
                         p.n_chunks, DEC_CHUNK_BLOCKS * p.block_size);
    if (e != cudaSuccess) return e;
    return cudaGetLastError();
}

cudaError_t kiln_cuda_attention_decode(cudaStream_t stream, const kiln_cuda_attention_args *a, void *workspace) {
    if (!attention_args_ok(a) || !workspace) return cudaErrorInvalidValue;
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
    if (a->n_heads > 65535) return cudaErrorInvalidValue;

    constexpr size_t smem = pf_smem_bytes<D>();
    cudaError_t e = cudaFuncSetAttribute(attn_prefill_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    const dim3 grid((a->n_tokens + PF_ROWS - 1) / PF_ROWS, a->n_heads);
    attn_prefill_kernel<D><<<grid, PF_THREADS, smem, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t kiln_cuda_attention_prefill(cudaStream_t stream, const kiln_cuda_attention_args *a) {
    if (!attention_args_ok(a)) return cudaErrorInvalidValue;
    if (a->n_tokens == 0) return cudaSuccess;
    return a->kv.head_dim == 64 ? launch_prefill<64>(stream, a) : launch_prefill<128>(stream, a);
}
