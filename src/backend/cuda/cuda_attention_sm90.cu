// Prefill attention on Hopper's warpgroup tensor-core instructions (wgmma,
// sm_90a): the same FlashAttention-2 algorithm as the portable kernel in
// cuda_attention.cu (causal, grouped-query, online softmax in float32 with
// log2(e) folded into the scale, K/V tiles through cp.async from the paged
// cache, three in flight), but each warpgroup of 4 warps multiplies 64 query
// rows at once with operands read by the tensor cores straight from shared
// memory. With mma.sync every warp loads each K and V fragment through
// ldmatrix itself; here the warpgroup's one instruction reads it once.
//
// Not the default: correct (test_cuda_attention checks it on every sm_90
// run), but slower than the mma.sync kernel on the H100 (2026-11-26, ncu at
// 2048 tokens: 223 us a layer with 2 warpgroups, 194 with 3, against 149; the
// unpipelined version took 211 and 187, issuing in 18% of cycles). Suspects,
// unmeasured: the unswizzled layout (each row's 256 bytes arrive as four
// 64-byte requests; the 128-byte swizzle is what cuBLAS's kernels use) and
// one block a multiprocessor with both warpgroups meeting at every tile.
//
//   S (64 x 64 positions)  = Q (64 x D, shared) K^T (shared)      wgmma SS
//   O (64 x D)            += P (64 x 64, registers) V (shared)    wgmma RS
//
// The accumulator and register-operand layouts of wgmma are, warp by warp,
// those of mma.sync m16n8k16 (rows 16 w + lane / 4 and + 8, columns
// 2 (lane % 4) + {0, 1} of every 8), so the softmax and the P packing are the
// portable kernel's. Built for sm_90a only; elsewhere the kernel is empty and
// kiln_cuda_prefill_sm90_available() is false.
#include "backend/cuda/cuda_attention.cuh"

// WGS warpgroups a block (64 query rows each): 2 or 3; one block a
// multiprocessor (the K/V stages and Q take 130-146 KB of shared memory).
#define PW_COLS 64 // key positions a tile

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KILN_SM90_WGMMA 1
#endif

// ---- shared-memory layout ---------------------------------------------------
//
// Every operand tile (Q, K, V: rows of D halves) is stored in wgmma's canonical
// layout without swizzling: "core matrices" of 8 rows x 16 bytes, each 128
// contiguous bytes, row-group major. Row r, 16-byte chunk c at
//   ((r / 8) * (D / 8) + c) * 128 + (r % 8) * 16.
// As a K-major operand (Q as A, K as B of S = Q K^T: rows are M or N, chunks
// run along k): core matrices 128 bytes apart along k (the descriptor's
// leading offset), D * 16 bytes apart along M/N (its stride offset). As the
// MN-major B of O += P V (V's rows are positions = k, chunks run along N): the
// same bytes read with the offsets' roles swapped: 128 bytes between core
// matrices along N (stride), D * 16 along k (leading).
template <int D> static __device__ __forceinline__ uint32_t pw_offset(int r, int c) {
    return (uint32_t)(((r >> 3) * (D / 8) + c) * 128 + (r & 7) * 16);
}

#ifdef KILN_SM90_WGMMA

// Shared-memory matrix descriptor: start address, leading and stride byte
// offsets (each >> 4, 14 bits), no swizzle, base offset 0.
static __device__ __forceinline__ uint64_t pw_desc(uint32_t saddr, uint32_t leading, uint32_t stride) {
    return (uint64_t)((saddr & 0x3FFFF) >> 4) | (uint64_t)((leading >> 4) & 0x3FFF) << 16 |
           (uint64_t)((stride >> 4) & 0x3FFF) << 32;
}

static __device__ __forceinline__ void wgmma_fence(void) { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
static __device__ __forceinline__ void wgmma_commit(void) {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most `pending` of the warpgroup's committed wgmma groups run.
template <int pending> static __device__ __forceinline__ void wgmma_wait(void) {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(pending) : "memory");
}
// Writes through the generic proxy (st.shared, cp.async) before reads by
// wgmma, which goes through the async proxy.
static __device__ __forceinline__ void fence_proxy_async(void) {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps the compiler from moving reads or writes of an accumulator across
// the wgmma that is still writing it (after wgmma_wait, before a wgmma).
template <int N> static __device__ __forceinline__ void fence_regs(float (&r)[N]) {
#pragma unroll
    for (int i = 0; i < N; i++) asm volatile("" : "+f"(r[i])::"memory");
}

// d (m64n64, f32) = A (64x16, shared memory, K-major) * B (16x64, shared memory,
// K-major) + (accumulate ? d : 0).
static __device__ __forceinline__ void wgmma_m64n64k16_ss(float d[32], uint64_t a_desc, uint64_t b_desc, int accumulate) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "l"(a_desc), "l"(b_desc), "r"(accumulate));
}

// d (m64n64, f32) += A (64x16 f16 in registers: each warp's 16 rows in the
// mma.sync A-fragment layout) * B (16x64, shared memory, MN-major).
static __device__ __forceinline__ void wgmma_m64n64k16_rs_mn(float d[32], const uint32_t a[4], uint64_t b_desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
}

// d (m64n128, f32) += A (64x16 f16 in registers: each warp's 16 rows in the
// mma.sync A-fragment layout) * B (16x128, shared memory, MN-major).
static __device__ __forceinline__ void wgmma_m64n128k16_rs_mn(float d[64], const uint32_t a[4], uint64_t b_desc) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
                   "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
                   "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
                   "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
                   "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
                   "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
                   "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
                   "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b_desc), "r"(1));
}

template <int D>
static __device__ __forceinline__ void wgmma_pv(float (&o)[D / 2], const uint32_t a[4], uint64_t b_desc) {
    if constexpr (D == 128)
        wgmma_m64n128k16_rs_mn(o, a, b_desc);
    else
        wgmma_m64n64k16_rs_mn(o, a, b_desc);
}

// One K/V tile: COLS rows of D halves each into the canonical layout. Eight
// consecutive threads take one chunk of 8 consecutive rows: their 16-byte
// stores fill 128 contiguous bytes (no bank conflicts).
template <int D, int THREADS>
static __device__ __forceinline__ void pw_issue_tile(unsigned char *sK, unsigned char *sV, const long long *row_off,
                                                     const pf_params &p) {
    constexpr int NCOL = D / 8;
#pragma unroll
    for (int it = 0; it < (PW_COLS * NCOL + THREADS - 1) / THREADS; it++) {
        const int i = threadIdx.x + it * THREADS;
        if (PW_COLS * NCOL % THREADS != 0 && i >= PW_COLS * NCOL) break;
        const int r = (i & 7) + ((i >> 3) / NCOL) * 8, c = (i >> 3) % NCOL;
        const long long off = row_off[r];
        const bool ok = off >= 0;
        const size_t src = ok ? (size_t)off + c * 8 : 0;
        cp_async_16(sK + pw_offset<D>(r, c), p.k + src, ok);
        cp_async_16(sV + pw_offset<D>(r, c), p.v + src, ok);
    }
}

// The scores of one tile (s, a warpgroup's 64 rows x PW_COLS positions from
// kv0) -> P (the A fragments of O += P V) and each row's rescale factor for
// O; m_row and l_row move on. Returns whether any factor of this thread's rows
// differs from 1. The 4 threads of a quad share a row; l_row keeps this
// thread's share of the row sum (the quad adds them at the end).
static __device__ __forceinline__ bool pw_softmax(float (&s)[PW_COLS / 2], int kv0, int warp_first, int row_pos,
                                                  int tig, float (&m_row)[2], float (&l_row)[2], float (&alpha)[2],
                                                  uint32_t (&pa)[PW_COLS / 16][4]) {
    if (kv0 + PW_COLS - 1 > warp_first) { // the tile crosses this warp's diagonal: causal mask
#pragma unroll
        for (int nt = 0; nt < PW_COLS / 8; nt++)
#pragma unroll
            for (int e = 0; e < 4; e++)
                if (kv0 + nt * 8 + tig * 2 + (e & 1) > row_pos + (e >> 1) * 8) s[4 * nt + e] = -INFINITY;
    }
    bool rescale = false;
#pragma unroll
    for (int r = 0; r < 2; r++) {
        float mx = -INFINITY;
#pragma unroll
        for (int nt = 0; nt < PW_COLS / 8; nt++) mx = fmaxf(mx, fmaxf(s[4 * nt + 2 * r], s[4 * nt + 2 * r + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_row[r], mx);
        const float m_use = m_new == -INFINITY ? 0.0f : m_new; // a row with nothing visible yet stays 0
        alpha[r] = fast_exp2(m_row[r] - m_use);
        rescale |= alpha[r] != 1.0f;
        m_row[r] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int nt = 0; nt < PW_COLS / 8; nt++) {
            s[4 * nt + 2 * r] = fast_exp2(s[4 * nt + 2 * r] - m_use);
            s[4 * nt + 2 * r + 1] = fast_exp2(s[4 * nt + 2 * r + 1] - m_use);
            sum += s[4 * nt + 2 * r] + s[4 * nt + 2 * r + 1];
        }
        l_row[r] = l_row[r] * alpha[r] + sum;
    }
    // P's A fragments of k-step kk: S's accumulators of position tiles 2 kk, 2 kk + 1.
#pragma unroll
    for (int kk = 0; kk < PW_COLS / 16; kk++) {
        pa[kk][0] = pack_half2(s[8 * kk + 0], s[8 * kk + 1]);
        pa[kk][1] = pack_half2(s[8 * kk + 2], s[8 * kk + 3]);
        pa[kk][2] = pack_half2(s[8 * kk + 4], s[8 * kk + 5]);
        pa[kk][3] = pack_half2(s[8 * kk + 6], s[8 * kk + 7]);
    }
    return rescale;
}

// S = Q K^T of one tile into s (k-steps of 16 dims: two core matrices along k).
template <int D>
static __device__ __forceinline__ void pw_issue_scores(float (&s)[PW_COLS / 2], uint32_t q_addr, uint32_t k_addr) {
    constexpr uint32_t ROW_GROUP = D * 16;
#pragma unroll
    for (int i = 0; i < PW_COLS / 2; i++) s[i] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ks++)
        wgmma_m64n64k16_ss(s, pw_desc(q_addr + ks * 256, 128, ROW_GROUP), pw_desc(k_addr + ks * 256, 128, ROW_GROUP),
                           ks > 0);
    wgmma_commit();
}

// O += P V of one tile (k-steps of 16 positions: two core matrices along k).
template <int D>
static __device__ __forceinline__ void pw_issue_pv(float (&o)[D / 2], const uint32_t (&pa)[PW_COLS / 16][4],
                                                   uint32_t v_addr) {
    constexpr uint32_t ROW_GROUP = D * 16;
#pragma unroll
    for (int kk = 0; kk < PW_COLS / 16; kk++) wgmma_pv<D>(o, pa[kk], pw_desc(v_addr + kk * 2 * ROW_GROUP, ROW_GROUP, 128));
    wgmma_commit();
}

#endif // KILN_SM90_WGMMA

// K/V tiles in flight or resident: tile it + 1's scores are computed while
// tile it's P V runs, and tile it + STAGES is loaded as soon as tile it is done.
#define PW_STAGES 3

template <int D, int WGS> static constexpr size_t pw_smem_bytes(void) {
    // K and V, PW_STAGES buffers each; Q; the row offsets of the K/V buffers.
    return (2 * PW_STAGES * (size_t)PW_COLS + 64 * WGS) * D * sizeof(__half) +
           PW_STAGES * (size_t)PW_COLS * sizeof(long long);
}

// Each warpgroup overlaps its own tensor-core work with its softmax: with
// tile it's P in registers, it issues the scores of tile it + 1 and then
// P V of tile it, waits for the scores only, computes tile it + 1's softmax
// while P V runs, then waits for P V and rescales O.
template <int D, int WGS> __global__ void __launch_bounds__(WGS * 128, 1) attn_prefill_sm90_kernel(const pf_params p) {
#ifdef KILN_SM90_WGMMA
    constexpr int THREADS = WGS * 128, ROWS = WGS * 64;
    constexpr int NCOL = D / 8;
    constexpr int TILE_BYTES = PW_COLS * D * (int)sizeof(__half);
    constexpr uint32_t ROW_GROUP = D * 16; // bytes between 8-row groups
    extern __shared__ __align__(128) unsigned char smem[];
    unsigned char *sK = smem;                                             // [PW_STAGES][TILE_BYTES]
    unsigned char *sV = smem + PW_STAGES * TILE_BYTES;                    // [PW_STAGES][TILE_BYTES]
    unsigned char *sQ = smem + 2 * PW_STAGES * TILE_BYTES;                // ROWS rows
    long long *row_off = reinterpret_cast<long long *>(sQ + ROWS * D * 2); // [PW_STAGES][PW_COLS]

    const int tid = threadIdx.x, wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int grp = lane >> 2, tig = lane & 3; // fragment coordinates: row group, thread in group
    // Blocks start in grid order, x fastest: every head's longest (last)
    // query tile first, then the next longest, so the short ones fill the tail.
    const int h = blockIdx.x, kvh = h / p.group;
    const int qt = gridDim.y - 1 - blockIdx.y;
    const int q0 = qt * ROWS;
    const int pos0 = p.pos[0];
    const int32_t *table = p.block_tables + (size_t)p.seq[0] * p.max_blocks;
    const int last_pos = pos0 + p.n_tokens - 1;
    const int kv_end = pos0 + min(q0 + ROWS, p.n_tokens); // positions the tile's last query sees
    const int n_tiles = (kv_end + PW_COLS - 1) / PW_COLS;

    // Tiles 0 .. PW_STAGES - 1 in flight, one cp.async group each (groups are
    // committed even when empty: group j is always tile j).
#pragma unroll
    for (int st = 0; st < PW_STAGES; st++)
        if (st < n_tiles) pf_tile_offsets<PW_COLS>(row_off + st * PW_COLS, p, table, kvh, D, st, kv_end);
    __syncthreads();
#pragma unroll
    for (int st = 0; st < PW_STAGES; st++) {
        if (st < n_tiles) pw_issue_tile<D, THREADS>(sK + st * TILE_BYTES, sV + st * TILE_BYTES, row_off + st * PW_COLS, p);
        cp_async_commit();
    }

    // Q tile -> f16 (scale and log2(e) folded in) while the tiles are in flight.
#pragma unroll
    for (int it = 0; it < ROWS * NCOL / THREADS; it++) { // exact: ROWS = 64 WGS, THREADS = 128 WGS
        const int i = tid + it * THREADS;
        const int r = (i & 7) + ((i >> 3) / NCOL) * 8, c = (i >> 3) % NCOL, tok = q0 + r;
        *reinterpret_cast<uint4 *>(sQ + pw_offset<D>(r, c)) = pf_q_chunk<D>(p, tok, h, c);
    }
    cp_async_wait<PW_STAGES - 1>(); // tile 0
    fence_proxy_async();            // Q's stores and tile 0, for wgmma
    __syncthreads();

    float o[D / 2]; // O's 64 x D accumulators of the warpgroup: rows grp, grp + 8 of the warp's 16
#pragma unroll
    for (int i = 0; i < D / 2; i++) o[i] = 0.0f;
    float m_row[2] = {-INFINITY, -INFINITY}, l_row[2] = {0.0f, 0.0f}, alpha[2];
    const int wg_first = pos0 + q0 + wg * 64;         // position of the warpgroup's first row
    const int wg_last = min(wg_first + 63, last_pos); // of its last real row
    const bool wg_active = wg_first <= last_pos;      // not all padding
    const int warp_first = wg_first + warp * 16;
    const int row_pos = warp_first + grp; // this thread's rows: row_pos, row_pos + 8
    const uint32_t q_addr = smem_u32(sQ) + wg * 8 * ROW_GROUP;
    // Whether the warpgroup's rows see any position of tile t (uniform over
    // the warpgroup, as wgmma requires; true for a prefix of the tiles).
    auto needs = [&](int t) { return wg_active && t * PW_COLS <= wg_last; };

    uint32_t pa[PW_COLS / 16][4]; // P of the current tile
    float s[PW_COLS / 2];         // scores of the next tile: s[4 nt + e] = mma.sync's s[nt][e]
    if (needs(0)) {
        wgmma_fence();
        pw_issue_scores<D>(s, q_addr, smem_u32(sK));
        wgmma_wait<0>();
        fence_regs(s);
        pw_softmax(s, 0, warp_first, row_pos, tig, m_row, l_row, alpha, pa); // O is 0: nothing to rescale
    }
    for (int it = 0; it < n_tiles; it++) {
        const int buf = it % PW_STAGES, next_buf = (it + 1) % PW_STAGES;
        const bool cur = needs(it), next = it + 1 < n_tiles && needs(it + 1);
        if (it + 1 < n_tiles) {
            // Groups committed: PW_STAGES + it; tile it + 1 is group it + 1.
            cp_async_wait<PW_STAGES - 2>();
            fence_proxy_async();
            __syncthreads(); // tile it + 1 is visible to every warp, and to wgmma
        }
        if (cur || next) wgmma_fence(); // O was rescaled and P rewritten since the last wgmma
        if (next) pw_issue_scores<D>(s, q_addr, smem_u32(sK + next_buf * TILE_BYTES));
        if (cur) pw_issue_pv<D>(o, pa, smem_u32(sV + buf * TILE_BYTES));
        bool rescale = false;
        uint32_t pn[PW_COLS / 16][4];
        if (next) {
            if (cur)
                wgmma_wait<1>(); // the scores; P V may still run
            else
                wgmma_wait<0>();
            fence_regs(s);
            rescale = pw_softmax(s, (it + 1) * PW_COLS, warp_first, row_pos, tig, m_row, l_row, alpha, pn);
        }
        if (cur) {
            wgmma_wait<0>();
            fence_regs(o);
        }
        if (next) {
            if (__any_sync(0xffffffffu, rescale)) // once the row maxima settle, most tiles skip it
#pragma unroll
                for (int dt = 0; dt < D / 8; dt++)
#pragma unroll
                    for (int e = 0; e < 4; e++) o[4 * dt + e] *= alpha[e >> 1];
#pragma unroll
            for (int kk = 0; kk < PW_COLS / 16; kk++)
#pragma unroll
                for (int j = 0; j < 4; j++) pa[kk][j] = pn[kk][j];
        }
        // Tile it is done (its scores long ago, its P V now): its buffers take tile it + PW_STAGES.
        const bool refill = it + PW_STAGES < n_tiles;
        if (refill) pf_tile_offsets<PW_COLS>(row_off + buf * PW_COLS, p, table, kvh, D, it + PW_STAGES, kv_end);
        __syncthreads(); // every warpgroup is done with buffer buf; its offsets are visible
        if (refill) pw_issue_tile<D, THREADS>(sK + buf * TILE_BYTES, sV + buf * TILE_BYTES, row_off + buf * PW_COLS, p);
        cp_async_commit();
    }

#pragma unroll
    for (int r = 0; r < 2; r++) {
        float l = l_row[r];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const int tok = q0 + wg * 64 + warp * 16 + grp + r * 8;
        if (tok < p.n_tokens) {
            const float inv = 1.0f / l;
            float *dst = p.out + ((size_t)tok * p.n_heads + h) * D + tig * 2;
#pragma unroll
            for (int dt = 0; dt < D / 8; dt++)
                *reinterpret_cast<float2 *>(dst + dt * 8) = make_float2(o[4 * dt + 2 * r] * inv, o[4 * dt + 2 * r + 1] * inv);
        }
    }
#else
    (void)p;
    __trap(); // not built for this device: kiln_cuda_prefill_sm90_available() said so
#endif
}

// Whether this build carries the sm_90a kernel and the current device runs it
// (compute capability 9.0 exactly: sm_90a code runs on no other).
bool kiln_cuda_prefill_sm90_available(void) {
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, attn_prefill_sm90_kernel<128, 2>) != cudaSuccess) {
        (void)cudaGetLastError();
        return false;
    }
    int dev = 0, major = 0, minor = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) ||
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev))
        return false;
    return major == 9 && minor == 0 && attr.binaryVersion == 90;
}

template <int D, int WGS> static cudaError_t launch(cudaStream_t stream, const pf_params &p) {
    const int q_tiles = (p.n_tokens + 64 * WGS - 1) / (64 * WGS);
    if (q_tiles > 65535) return cudaErrorInvalidValue;
    constexpr size_t smem = pw_smem_bytes<D, WGS>();
    cudaError_t e = cudaFuncSetAttribute(attn_prefill_sm90_kernel<D, WGS>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         (int)smem);
    if (e != cudaSuccess) return e;
    attn_prefill_sm90_kernel<D, WGS><<<dim3(p.n_heads, q_tiles), WGS * 128, smem, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t kiln_cuda_prefill_sm90(cudaStream_t stream, const pf_params &p, int head_dim, int warpgroups) {
    if (warpgroups == 2) return head_dim == 128 ? launch<128, 2>(stream, p) : launch<64, 2>(stream, p);
    if (warpgroups == 3) return head_dim == 128 ? launch<128, 3>(stream, p) : launch<64, 3>(stream, p);
    return cudaErrorInvalidValue;
}
