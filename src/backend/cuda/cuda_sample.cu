// Token sampling on the GPU, choosing exactly what the CPU sampler
// (src/runtime/sampler.c) chooses for the same logits and uniform number.
//
// The CPU sorts every candidate (scaled logit within 40 nats of the best) by
// (scaled logit desc, id asc) and then walks prefixes of that order: the top-k
// cut, the top-p cut, the min-p cut and the draw each need one position and
// the probability mass before it. Sorting ~128k items per token would be too
// slow, so two kernels do this:
//   1. argmax_kernel: per-chunk argmax of the logits (and clears counters);
//   2. sample_kernel, one block per chunk of 1024 logits: each candidate falls
//      in one of SAMPLE_BINS bins of width 40/SAMPLE_BINS nats below the best,
//      a monotone function of the scaled logit, so the bins cut the sorted
//      order into contiguous pieces. Per bin: count and probability mass (exp
//      in double, summed as 64-bit fixed point, so every sum is exact,
//      associative and deterministic). Each block counting-sorts its chunk's
//      candidates by bin into its own slice of the workspace and records
//      where each bin starts in it. The last block to finish then finds, from
//      the global counts and masses, the bin holding each cut, gathers only
//      that bin's items (or those of the few bins holding the whole top-k)
//      into shared memory, sorts them, and reads the answer there. A bin too
//      big to sort is handled exactly too: all equal logits (flat) by their
//      ids' order, mixed ones by a radix select over its items.
#include <limits.h>
#include <math.h>

#include "backend/cuda/cuda_kernels.h"

typedef unsigned long long u64;

enum {
    CHUNK = 1024,         // logits per block
    ARGMAX_THREADS = 256, // argmax_kernel: four logits a thread
    BLOCK_THREADS = 1024, // sample_kernel: one logit a thread
    MAX_CHUNKS = 1024,    // the finish handles one chunk per thread: vocab <= 1M
    SAMPLE_BINS = 2048,   // bins over the 40 nats below the best
    SORT_CAP = 4096,      // items the finish sorts in shared memory
    RADIX_BITS = 11,
    RADIX = 1 << RADIX_BITS,
    PASS_UNROLL = 8,  // loads in flight per thread in a pass over a big bin
    RADIX_UNROLL = 4, // the same with masses (fewer: registers)
};
static_assert(CHUNK == BLOCK_THREADS && CHUNK == 4 * ARGMAX_THREADS, "one chunk per block in both kernels");
static_assert(SAMPLE_BINS == 2 * BLOCK_THREADS && RADIX == 2 * BLOCK_THREADS, "two bins (digits) per thread");
static_assert(SORT_CAP == 4 * BLOCK_THREADS, "four sorted items per thread");
static_assert(MAX_CHUNKS <= BLOCK_THREADS, "one chunk per thread in the finish");
static_assert(CHUNK <= 65535, "bin offsets inside a chunk are 16-bit");

#define FULL_MASK 0xffffffffu
#define CANDIDATE_RANGE 40.0f // nats below the best, as on the CPU
#define BINS_PER_NAT ((float)SAMPLE_BINS / CANDIDATE_RANGE)

typedef struct argmax_partial {
    float value;
    int index;
} argmax_partial;

typedef struct sample_state {
    unsigned n_min_p; // candidates that pass the min-p cut
    unsigned done;    // blocks of sample_kernel done: the last one finishes
} sample_state;

// Byte offsets of the workspace's arrays.
typedef struct sample_layout {
    size_t partials;   // argmax_partial [n_chunks]
    size_t state;      // sample_state
    size_t bin_count;  // unsigned [SAMPLE_BINS]
    size_t bin_mass;   // u64 [SAMPLE_BINS], fixed point
    size_t offsets;    // unsigned short [n_chunks][SAMPLE_BINS + 1]: bin b of chunk j starts at items[j * CHUNK + .]
    size_t items;      // ulonglong2 [n_chunks * CHUNK]: (key, mass) of each chunk's candidates, grouped by bin
    size_t total;
} sample_layout;

static size_t align_up(size_t x) { return (x + 255) & ~(size_t)255; }

static sample_layout layout_for(int vocab) {
    sample_layout l;
    const size_t n_chunks = ((size_t)vocab + CHUNK - 1) / CHUNK;
    size_t at = 0;
    l.partials = at, at = align_up(at + n_chunks * sizeof(argmax_partial));
    l.state = at, at = align_up(at + sizeof(sample_state));
    l.bin_count = at, at = align_up(at + SAMPLE_BINS * sizeof(unsigned));
    l.bin_mass = at, at = align_up(at + SAMPLE_BINS * sizeof(u64));
    l.offsets = at, at = align_up(at + n_chunks * (SAMPLE_BINS + 1) * sizeof(unsigned short));
    l.items = at, at = align_up(at + n_chunks * CHUNK * sizeof(ulonglong2));
    l.total = at;
    return l;
}

template <typename T> static T *at_offset(void *base, size_t offset) {
    return reinterpret_cast<T *>(static_cast<unsigned char *>(base) + offset);
}

// ---- The arithmetic the CPU does, rounding for rounding ------------------
// Explicit _rn intrinsics: nvcc must not fuse these into FMAs, which would
// round differently from the CPU.

static __device__ __forceinline__ float scaled_logit(float x, float inv_t) { return __fmul_rn(x, inv_t); }

// Monotone non-increasing in l: equal logits share a bin, and a larger logit
// never lands in a later bin.
static __device__ __forceinline__ int bin_of(float l, float max_scaled) {
    const float t = __fmul_rn(__fsub_rn(max_scaled, l), BINS_PER_NAT);
    return t < (float)SAMPLE_BINS ? (int)t : SAMPLE_BINS - 1; // NaN goes to the last bin too
}

// exp(l - max) in double, as the CPU computes it, times 2^F rounded to an
// integer: F is chosen so that vocab such masses cannot overflow 64 bits.
static __device__ __forceinline__ u64 fixed_mass(float l, float max_scaled, double scale) {
    const double e = exp((double)__fsub_rn(l, max_scaled));
    return __double2ull_rn(__dmul_rn(e, scale));
}

// Unsigned bits that order like the float; -0 is +0 (the CPU compares them equal).
static __device__ __forceinline__ unsigned ordered_bits(float l) {
    unsigned u = __float_as_uint(l);
    if (u == 0x80000000u) u = 0;
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Ascending key order = the CPU's order: logit descending, then id ascending.
// The high part, ~ordered_bits, is the key's "value".
static __device__ __forceinline__ u64 sort_key(unsigned ord, int id, int id_bits) {
    return ((u64)~ord << id_bits) | (u64)(unsigned)id;
}

// Waits for the previous kernel's results when launched as a programmatic
// dependent launch (sm_90); a no-op otherwise.
static __device__ __forceinline__ void wait_for_previous_kernel(void) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// ---- Reductions ------------------------------------------------------------

static __device__ __forceinline__ bool better(float v, int i, float best_v, int best_i) {
    return v > best_v || (v == best_v && i < best_i);
}

static __device__ __forceinline__ void warp_argmax(float *v, int *i) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_down_sync(FULL_MASK, *v, o);
        const int oi = __shfl_down_sync(FULL_MASK, *i, o);
        if (better(ov, oi, *v, *i)) *v = ov, *i = oi;
    }
}

// Argmax of the chunks' partial results, known to every thread of the block.
static __device__ void reduce_partials(const argmax_partial *partials, int n, float *value, int *index) {
    __shared__ float s_v[32];
    __shared__ int s_i[32];
    float v = -INFINITY;
    int i = INT_MAX;
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        const argmax_partial p = partials[j];
        if (better(p.value, p.index, v, i)) v = p.value, i = p.index;
    }
    warp_argmax(&v, &i);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    if (lane == 0) s_v[warp] = v, s_i[warp] = i;
    __syncthreads();
    if (warp == 0) {
        v = lane < n_warps ? s_v[lane] : -INFINITY;
        i = lane < n_warps ? s_i[lane] : INT_MAX;
        warp_argmax(&v, &i);
        if (lane == 0) s_v[0] = v, s_i[0] = i;
    }
    __syncthreads();
    *value = s_v[0];
    *index = s_i[0];
    __syncthreads(); // s_v, s_i reusable
}

// Exclusive prefix sum over the block (blockDim a multiple of 32); *total is
// the block's sum. warp_tmp: 32 shared elements.
template <typename T> static __device__ T block_exclusive_scan(T v, T *warp_tmp, T *total) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, n_warps = blockDim.x / 32;
    T x = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const T y = __shfl_up_sync(FULL_MASK, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) warp_tmp[warp] = x;
    __syncthreads();
    if (warp == 0) {
        T s = lane < n_warps ? warp_tmp[lane] : (T)0;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const T y = __shfl_up_sync(FULL_MASK, s, o);
            if (lane >= o) s += y;
        }
        if (lane < n_warps) warp_tmp[lane] = s;
    }
    __syncthreads();
    const T before = warp > 0 ? warp_tmp[warp - 1] : (T)0;
    *total = warp_tmp[n_warps - 1];
    __syncthreads(); // warp_tmp reusable
    return before + x - v;
}

// 64-bit add to shared memory as two native 32-bit atomics (a 64-bit one is
// a compare-and-swap loop, slow under contention): each add that wraps the low
// word carries into the high one, so the sum is exact in any order.
static __device__ __forceinline__ void shared_add_u64(u64 *p, u64 v) {
    unsigned *w = reinterpret_cast<unsigned *>(p); // little-endian: w[0] low
    const unsigned lo = (unsigned)v, old = atomicAdd(&w[0], lo);
    const unsigned hi = (unsigned)(v >> 32) + ((unsigned)(old + lo) < old ? 1u : 0u);
    if (hi) atomicAdd(&w[1], hi);
}

// Adds (1, mass) for every lane with `tag` != ~0 to count[slot], mass[slot]:
// lanes with equal tags (same slot and same logit, hence same mass) are
// added once by their lowest lane, so flat logits cost one atomic per warp.
// Returns the lane's rank among the slot's items. Warp-uniform call.
static __device__ __forceinline__ unsigned add_grouped(unsigned *count, u64 *mass, u64 tag, int slot, u64 m) {
    const unsigned peers = __match_any_sync(FULL_MASK, tag);
    const int lane = threadIdx.x % 32, leader = __ffs(peers) - 1;
    unsigned first = 0;
    if (tag != ~0ull && lane == leader) {
        const unsigned n = __popc(peers);
        first = atomicAdd(&count[slot], n);
        if (mass) shared_add_u64(&mass[slot], (u64)n * m);
    }
    first = __shfl_sync(FULL_MASK, first, leader);
    return first + __popc(peers & ((1u << lane) - 1));
}

// ---- 1. Per-chunk argmax ---------------------------------------------------

__global__ void __launch_bounds__(ARGMAX_THREADS)
    argmax_kernel(const float *logits, int vocab, argmax_partial *partials, unsigned *bin_count, u64 *bin_mass,
                  sample_state *state) {
    // sample_kernel accumulates into these: clear them here, the launch before.
    for (int b = blockIdx.x * blockDim.x + threadIdx.x; b < SAMPLE_BINS; b += gridDim.x * blockDim.x)
        bin_count[b] = 0, bin_mass[b] = 0;
    if (blockIdx.x == 0 && threadIdx.x == 0) state->n_min_p = 0, state->done = 0;

    float v = -INFINITY;
    int idx = INT_MAX;
    bool nonfinite = false;
    const int base = blockIdx.x * CHUNK;
#pragma unroll
    for (int k = 0; k < CHUNK / ARGMAX_THREADS; k++) {
        const int i = base + k * ARGMAX_THREADS + threadIdx.x;
        if (i < vocab) {
            const float x = logits[i];
            nonfinite |= isnan(x) || x == INFINITY;
            // -inf is a token of probability 0, never the best (even against
            // the -inf start: all -inf leaves INT_MAX, an error).
            if (x != -INFINITY && better(x, i, v, idx)) v = x, idx = i;
        }
    }
    // A NaN or +inf logit anywhere makes the draw an error (as on the CPU;
    // so do logits all -inf, which leave the index at INT_MAX): the chunk
    // reports (+inf, -1), which wins every comparison, and the draw comes
    // out as -1.
    if (__syncthreads_or(nonfinite)) {
        if (threadIdx.x == 0) partials[blockIdx.x].value = INFINITY, partials[blockIdx.x].index = -1;
        return;
    }
    __shared__ float s_v[ARGMAX_THREADS / 32];
    __shared__ int s_i[ARGMAX_THREADS / 32];
    warp_argmax(&v, &idx);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) s_v[warp] = v, s_i[warp] = idx;
    __syncthreads();
    if (warp == 0) {
        v = lane < ARGMAX_THREADS / 32 ? s_v[lane] : -INFINITY;
        idx = lane < ARGMAX_THREADS / 32 ? s_i[lane] : INT_MAX;
        warp_argmax(&v, &idx);
        if (lane == 0) partials[blockIdx.x].value = v, partials[blockIdx.x].index = idx;
    }
}

__global__ void __launch_bounds__(ARGMAX_THREADS)
    greedy_kernel(const argmax_partial *partials, int n_chunks, int32_t *out) {
    wait_for_previous_kernel();
    float v;
    int i;
    reduce_partials(partials, n_chunks, &v, &i);
    if (threadIdx.x == 0) *out = i < 0 || i == INT_MAX ? -1 : i; // -1: non-finite logits
}

// ---- 2. Bins, then the finish ---------------------------------------------

typedef struct sample_args {
    const float *logits;
    int vocab, n_chunks, id_bits, top_k;
    float inv_t, top_p, u;
    double min_p_cut, mass_scale;
    const argmax_partial *partials;
    sample_state *state;
    unsigned *bin_count;
    u64 *bin_mass;
    unsigned short *offsets;
    ulonglong2 *items;
    int32_t *out;
} sample_args;

// Positions are indices into the sorted candidate order; P(r) is the mass of
// the first r candidates (fixed point). In the finish all threads run the same
// control flow on the same shared values: searches are done redundantly by
// every thread.

// "Rule holds at mass x": the top-p cut (x / total >= top_p) or the draw
// (x > u * total); both are monotone in x.
typedef struct cut_rule {
    bool is_draw;
    double total, top_p, target;
} cut_rule;

static __device__ __forceinline__ bool rule_holds(const cut_rule &r, u64 x) {
    return r.is_draw ? (double)x > r.target : (double)x / r.total >= r.top_p;
}

// The shared arrays of a chunk list: for each chunk j, where a range of bins
// starts in items (src), how many items it holds (len), and where they go in
// the concatenation of all chunks (dst, an exclusive prefix sum of len).
typedef struct segments {
    unsigned *src, *len, *dst;
} segments;

typedef struct finish_ctx {
    const sample_args *a; // the kernel's parameter (grid constant)
    unsigned *pos;    // shared [SAMPLE_BINS + 1]: bin b holds positions [pos[b], pos[b+1])
    u64 *mass_before; // shared [SAMPLE_BINS + 1]: P(pos[b])
    u64 *skey;        // shared [SORT_CAP]: the resolved window, sorted
    u64 *spref;       // shared [SORT_CAP]: mass of the window's items 0..i
    u64 *warp_tmp;    // shared [32]
    u64 id_mask;
    int win_b0, win_b1; // bins of the resolved window; win_b0 < 0: none
    unsigned win_start;
    int big_b;                 // big bin whose logit range is known; -1: none
    unsigned big_min, big_max; // its ordered_bits range
} finish_ctx;

typedef enum select_mode { RANK_KEY, RANK_MASS, BY_RULE } select_mode;

typedef struct select_result {
    u64 key;
    unsigned rank;   // within the bin
    u64 mass_before; // of the bin's items before it
} select_result;

// Sorts keys[0..n) ascending (n a power of two), moving payload[] (when not
// NULL) along.
static __device__ void bitonic_sort(u64 *keys, u64 *payload, unsigned n) {
    for (unsigned k = 2; k <= n; k <<= 1)
        for (unsigned j = k >> 1; j > 0; j >>= 1) {
            for (unsigned i = threadIdx.x; i < n / 2; i += blockDim.x) {
                const unsigned lo = ((i & ~(j - 1)) << 1) | (i & (j - 1)), hi = lo + j;
                const u64 x = keys[lo], y = keys[hi];
                if ((x > y) == ((lo & k) == 0)) {
                    keys[lo] = y, keys[hi] = x;
                    if (payload) {
                        const u64 t = payload[lo];
                        payload[lo] = payload[hi], payload[hi] = t;
                    }
                }
            }
            __syncthreads();
        }
}

// Bin holding position p < N.
static __device__ int bin_at(const finish_ctx &c, unsigned p) {
    int lo = 0, hi = SAMPLE_BINS - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (c.pos[mid + 1] > p) hi = mid;
        else lo = mid + 1;
    }
    return lo;
}

static __device__ __forceinline__ unsigned bin_size(const finish_ctx &c, int b) { return c.pos[b + 1] - c.pos[b]; }
static __device__ __forceinline__ bool in_window(const finish_ctx &c, int b) {
    return c.win_b0 >= 0 && b >= c.win_b0 && b <= c.win_b1;
}

// Fills s (MAX_CHUNKS entries each) for bins b0..b1 of every chunk.
static __device__ void load_segments(finish_ctx &c, int b0, int b1, segments s) {
    const int j = threadIdx.x;
    unsigned lo = 0, hi = 0;
    if (j < c.a->n_chunks) {
        const unsigned short *row = c.a->offsets + (size_t)j * (SAMPLE_BINS + 1);
        lo = __ldcg(row + b0), hi = __ldcg(row + b1 + 1);
    }
    unsigned total;
    const unsigned before = block_exclusive_scan<unsigned>(hi - lo, reinterpret_cast<unsigned *>(c.warp_tmp), &total);
    s.src[j] = (unsigned)j * CHUNK + lo;
    s.len[j] = hi - lo;
    s.dst[j] = before;
    __syncthreads();
}

// Chunk whose items hold concatenated index i (i < total): the last one
// starting at or before i (never an empty one).
static __device__ __forceinline__ int segment_of(const segments &s, unsigned i) {
    int lo = 0, hi = MAX_CHUNKS - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (s.dst[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Index in items of concatenated item i, walking forward from chunk *j (the
// indices a thread visits only grow).
static __device__ __forceinline__ unsigned item_at(const segments &s, int *j, unsigned i) {
    while (*j + 1 < MAX_CHUNKS && s.dst[*j + 1] <= i) ++*j;
    return s.src[*j] + (i - s.dst[*j]);
}

// Loads bins b0..b1 (1..SORT_CAP items) into shared memory, sorts them, and
// computes their running masses.
static __device__ void resolve(finish_ctx &c, int b0, int b1) {
    const unsigned count = c.pos[b1 + 1] - c.pos[b0];
    unsigned n = 1;
    while (n < count) n <<= 1;
    __syncthreads(); // everyone is done reading the previous window
    // The segments live in the masses' place until the items are loaded.
    unsigned *area = reinterpret_cast<unsigned *>(c.spref);
    const segments s = {area, area + MAX_CHUNKS, area + 2 * MAX_CHUNKS};
    load_segments(c, b0, b1, s);
    u64 k[SORT_CAP / BLOCK_THREADS], m[SORT_CAP / BLOCK_THREADS];
#pragma unroll
    for (int q = 0; q < SORT_CAP / BLOCK_THREADS; q++) {
        const unsigned i = threadIdx.x + q * BLOCK_THREADS;
        k[q] = ~0ull, m[q] = 0; // padding sorts last (no key is all ones)
        if (i < count) {
            const int j = segment_of(s, i);
            const ulonglong2 item = __ldcg(c.a->items + s.src[j] + (i - s.dst[j]));
            k[q] = item.x, m[q] = item.y;
        }
    }
    __syncthreads(); // the segments are read
#pragma unroll
    for (int q = 0; q < SORT_CAP / BLOCK_THREADS; q++) {
        const unsigned i = threadIdx.x + q * BLOCK_THREADS;
        if (i < n) c.skey[i] = k[q], c.spref[i] = m[q];
    }
    __syncthreads();
    bitonic_sort(c.skey, c.spref, n);
    u64 sum = 0, total;
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const unsigned i = threadIdx.x * 4 + q;
        m[q] = i < count ? c.spref[i] : 0;
        sum += m[q];
    }
    u64 run = block_exclusive_scan<u64>(sum, c.warp_tmp, &total);
#pragma unroll
    for (int q = 0; q < 4; q++) {
        const unsigned i = threadIdx.x * 4 + q;
        run += m[q];
        if (i < count) c.spref[i] = run;
    }
    __syncthreads();
    c.win_b0 = b0, c.win_b1 = b1, c.win_start = c.pos[b0];
}

static __device__ void ensure_resolved(finish_ctx &c, int b) {
    if (!in_window(c, b)) resolve(c, b, b);
}

// P(p + 1) for a position inside the resolved window.
static __device__ __forceinline__ u64 window_mass_through(const finish_ctx &c, unsigned p) {
    return c.mass_before[c.win_b0] + c.spref[p - c.win_start];
}

// The range of logits (ordered bits) in big bin b: one pass over its items.
static __device__ void ensure_big_range(finish_ctx &c, int b) {
    if (c.big_b == b) return;
    __syncthreads();
    c.win_b0 = -1; // the segments overwrite the window
    unsigned *area = reinterpret_cast<unsigned *>(c.spref);
    const segments s = {area, area + MAX_CHUNKS, area + 2 * MAX_CHUNKS};
    load_segments(c, b, b, s);
    const unsigned count = bin_size(c, b);
    unsigned lo = 0xffffffffu, hi = 0;
    int j = segment_of(s, threadIdx.x < count ? threadIdx.x : 0);
    for (unsigned i0 = threadIdx.x; i0 < count; i0 += PASS_UNROLL * blockDim.x) {
        u64 k[PASS_UNROLL];
#pragma unroll
        for (int q = 0; q < PASS_UNROLL; q++) {
            const unsigned i = i0 + q * blockDim.x;
            k[q] = i < count ? __ldcg(&c.a->items[item_at(s, &j, i)].x) : 0;
        }
#pragma unroll
        for (int q = 0; q < PASS_UNROLL; q++)
            if (i0 + q * blockDim.x < count) {
                const unsigned ord = ~(unsigned)(k[q] >> c.a->id_bits);
                lo = min(lo, ord), hi = max(hi, ord);
            }
    }
    lo = __reduce_min_sync(FULL_MASK, lo);
    hi = __reduce_max_sync(FULL_MASK, hi);
    unsigned *tmp = reinterpret_cast<unsigned *>(c.warp_tmp);
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    if (lane == 0) tmp[warp] = lo, tmp[32 + warp] = hi;
    __syncthreads();
    lo = 0xffffffffu, hi = 0;
    for (int w = 0; w < (int)blockDim.x / 32; w++) lo = min(lo, tmp[w]), hi = max(hi, tmp[32 + w]);
    __syncthreads();
    c.big_b = b, c.big_min = lo, c.big_max = hi;
}

// All of big bin b's logits are equal: its order is its ids' order, and its
// chunks hold increasing ids. The key of its item of rank r: the chunk holding
// it is sorted alone.
static __device__ u64 flat_key_at(finish_ctx &c, int b, unsigned r) {
    __syncthreads();
    c.win_b0 = -1;
    unsigned *area = reinterpret_cast<unsigned *>(c.spref);
    const segments s = {area, area + MAX_CHUNKS, area + 2 * MAX_CHUNKS};
    load_segments(c, b, b, s);
    const int j = segment_of(s, r);
    const unsigned count = s.len[j], base = s.src[j];
    unsigned n = 1;
    while (n < count) n <<= 1;
    for (unsigned i = threadIdx.x; i < n; i += blockDim.x) c.skey[i] = i < count ? __ldcg(&c.a->items[base + i].x) : ~0ull;
    __syncthreads();
    bitonic_sort(c.skey, NULL, n);
    return c.skey[r - s.dst[j]];
}

// Big bin b (mixed logits): its item at rank `rank` (RANK_*), or the first
// at which the rule holds (BY_RULE), with the mass of the bin's items before
// it (RANK_MASS, BY_RULE). An MSD radix select on the keys, RADIX_BITS a pass,
// over the key bits that vary inside the bin.
static __device__ select_result radix_select(finish_ctx &c, int b, select_mode mode, unsigned rank,
                                             const cut_rule &rule) {
    ensure_big_range(c, b);
    const unsigned count = bin_size(c, b);
    const u64 base = c.mass_before[b];
    const int id_bits = c.a->id_bits;
    int top = c.big_min == c.big_max ? id_bits - 1 : id_bits + 31 - __clz(c.big_min ^ c.big_max);
    u64 prefix = ((u64)~c.big_max << id_bits) & ~((2ull << top) - 1); // the bits above top, common to all
    unsigned count_before = 0;
    u64 mass_before = 0;
    const bool with_mass = mode != RANK_KEY;
    // Shared: digit counts (8 KB) and the segments (12 KB) in skey, digit masses in spref.
    unsigned *hist_count = reinterpret_cast<unsigned *>(c.skey);
    unsigned *area = hist_count + RADIX;
    const segments s = {area, area + MAX_CHUNKS, area + 2 * MAX_CHUNKS};
    u64 *hist_mass = c.spref;
    __syncthreads();
    c.win_b0 = -1;
    load_segments(c, b, b, s);
    const int lane = threadIdx.x % 32;
    for (;;) {
        const int width = top + 1 < RADIX_BITS ? top + 1 : RADIX_BITS, shift = top + 1 - width;
        const unsigned digit_mask = (1u << width) - 1;
        for (int d = threadIdx.x; d < RADIX; d += blockDim.x) hist_count[d] = 0, hist_mass[d] = 0;
        __syncthreads();
        // Warp-uniform trip count: add_grouped needs the whole warp.
        int j = segment_of(s, threadIdx.x < count ? threadIdx.x : 0);
        for (unsigned i0 = threadIdx.x; i0 - lane < count; i0 += RADIX_UNROLL * blockDim.x) {
            u64 k[RADIX_UNROLL], m[RADIX_UNROLL];
#pragma unroll
            for (int q = 0; q < RADIX_UNROLL; q++) {
                const unsigned i = i0 + q * blockDim.x;
                k[q] = ~0ull, m[q] = 0;
                if (i < count) {
                    const ulonglong2 item = __ldcg(c.a->items + item_at(s, &j, i));
                    k[q] = item.x, m[q] = item.y;
                }
            }
#pragma unroll
            for (int q = 0; q < RADIX_UNROLL; q++) {
                const bool match = k[q] != ~0ull && ((k[q] ^ prefix) >> (top + 1)) == 0; // top <= 62
                const unsigned d = (unsigned)(k[q] >> shift) & digit_mask;
                // Same digit and same logit: same mass.
                const u64 tag = match ? ((k[q] >> id_bits) << 32 | d) : ~0ull;
                add_grouped(hist_count, with_mass ? hist_mass : NULL, tag, (int)d, m[q]);
            }
        }
        __syncthreads();
        { // inclusive prefix sums over the digits, two per thread
            const int d = threadIdx.x * 2;
            const unsigned c0 = hist_count[d], c1 = hist_count[d + 1];
            const u64 m0 = hist_mass[d], m1 = hist_mass[d + 1];
            unsigned ctot;
            u64 mtot;
            const unsigned cb =
                block_exclusive_scan<unsigned>(c0 + c1, reinterpret_cast<unsigned *>(c.warp_tmp), &ctot);
            const u64 mb = block_exclusive_scan<u64>(m0 + m1, c.warp_tmp, &mtot);
            hist_count[d] = cb + c0, hist_count[d + 1] = cb + c0 + c1;
            hist_mass[d] = mb + m0, hist_mass[d + 1] = mb + m0 + m1;
        }
        __syncthreads();
        int lo = 0, hi = (int)digit_mask; // first digit where the rank or the rule is reached
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            const bool reached = mode == BY_RULE ? rule_holds(rule, base + mass_before + hist_mass[mid])
                                                 : count_before + hist_count[mid] > rank;
            if (reached) hi = mid;
            else lo = mid + 1;
        }
        if (lo > 0) count_before += hist_count[lo - 1], mass_before += hist_mass[lo - 1];
        prefix |= (u64)lo << shift;
        __syncthreads(); // everyone has read the histograms
        if (shift == 0) break;
        top = shift - 1;
    }
    select_result r;
    r.key = prefix, r.rank = count_before, r.mass_before = mass_before;
    return r;
}

// P(r), 0 <= r <= N.
static __device__ u64 mass_of_first(finish_ctx &c, unsigned r) {
    const unsigned n = c.pos[SAMPLE_BINS];
    if (r == 0) return 0;
    if (r >= n) return c.mass_before[SAMPLE_BINS];
    const int b = bin_at(c, r);
    const unsigned j = r - c.pos[b];
    if (j == 0) return c.mass_before[b];
    const unsigned size = bin_size(c, b);
    if (in_window(c, b) || size <= SORT_CAP) {
        ensure_resolved(c, b);
        return window_mass_through(c, r - 1);
    }
    ensure_big_range(c, b);
    if (c.big_min == c.big_max) // all equal: every item has the same mass
        return c.mass_before[b] + (u64)j * ((c.mass_before[b + 1] - c.mass_before[b]) / size);
    const cut_rule none = {false, 0, 0, 0};
    return c.mass_before[b] + radix_select(c, b, RANK_MASS, j, none).mass_before;
}

// Key of the candidate at position p < N.
static __device__ u64 key_at(finish_ctx &c, unsigned p) {
    const int b = bin_at(c, p);
    if (in_window(c, b) || bin_size(c, b) <= SORT_CAP) {
        ensure_resolved(c, b);
        return c.skey[p - c.win_start];
    }
    ensure_big_range(c, b);
    if (c.big_min == c.big_max) return flat_key_at(c, b, p - c.pos[b]);
    const cut_rule none = {false, 0, 0, 0};
    return radix_select(c, b, RANK_KEY, p - c.pos[b], none).key;
}

// First position p with the rule holding at P(p + 1); the rule must hold at
// P(N). Its key too when want_key.
static __device__ unsigned first_where(finish_ctx &c, const cut_rule &rule, bool want_key, u64 *key) {
    int lo = 0, hi = SAMPLE_BINS - 1; // first bin whose end reaches it: never empty
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (rule_holds(rule, c.mass_before[mid + 1])) hi = mid;
        else lo = mid + 1;
    }
    const int b = lo;
    const unsigned size = bin_size(c, b);
    if (in_window(c, b) || size <= SORT_CAP) {
        ensure_resolved(c, b);
        unsigned plo = c.pos[b], phi = c.pos[b + 1] - 1;
        while (plo < phi) {
            const unsigned mid = (plo + phi) / 2;
            if (rule_holds(rule, window_mass_through(c, mid))) phi = mid;
            else plo = mid + 1;
        }
        *key = c.skey[plo - c.win_start];
        return plo;
    }
    ensure_big_range(c, b);
    if (c.big_min == c.big_max) { // all equal: the rank follows from the mass
        const u64 each = (c.mass_before[b + 1] - c.mass_before[b]) / size;
        unsigned jlo = 0, jhi = size - 1;
        while (jlo < jhi) {
            const unsigned mid = (jlo + jhi) / 2;
            if (rule_holds(rule, c.mass_before[b] + (u64)(mid + 1) * each)) jhi = mid;
            else jlo = mid + 1;
        }
        *key = want_key ? flat_key_at(c, b, jlo) : 0;
        return c.pos[b] + jlo;
    }
    const select_result s = radix_select(c, b, BY_RULE, 0, rule);
    *key = s.key;
    return c.pos[b] + s.rank;
}

static __device__ void finish(const sample_args &a, unsigned char *smem) {
    __shared__ u64 warp_tmp[32];
    finish_ctx c;
    c.a = &a;
    c.mass_before = reinterpret_cast<u64 *>(smem);
    c.skey = c.mass_before + (SAMPLE_BINS + 1);
    c.spref = c.skey + SORT_CAP;
    c.pos = reinterpret_cast<unsigned *>(c.spref + SORT_CAP);
    c.warp_tmp = warp_tmp;
    c.id_mask = (1ull << a.id_bits) - 1;
    c.win_b0 = -1, c.win_b1 = -1, c.win_start = 0;
    c.big_b = -1, c.big_min = 0, c.big_max = 0;

    { // bin starts and masses before each bin
        const int b = threadIdx.x * 2;
        const unsigned c0 = __ldcg(a.bin_count + b), c1 = __ldcg(a.bin_count + b + 1);
        const u64 m0 = __ldcg(a.bin_mass + b), m1 = __ldcg(a.bin_mass + b + 1);
        unsigned ctot;
        u64 mtot;
        const unsigned cb = block_exclusive_scan<unsigned>(c0 + c1, reinterpret_cast<unsigned *>(warp_tmp), &ctot);
        const u64 mb = block_exclusive_scan<u64>(m0 + m1, warp_tmp, &mtot);
        c.pos[b] = cb, c.pos[b + 1] = cb + c0;
        c.mass_before[b] = mb, c.mass_before[b + 1] = mb + m0;
        if (threadIdx.x == 0) c.pos[SAMPLE_BINS] = ctot, c.mass_before[SAMPLE_BINS] = mtot;
    }
    __syncthreads();
    const unsigned n_cand = c.pos[SAMPLE_BINS]; // >= 1: the best token is always a candidate

    // Top-k. When the bins up to the k-th candidate fit, sort them all once:
    // every later cut lies inside them.
    const unsigned n_k = a.top_k > 0 && (unsigned)a.top_k < n_cand ? (unsigned)a.top_k : n_cand;
    const int bin_k = bin_at(c, n_k - 1);
    if (c.pos[bin_k + 1] <= SORT_CAP) resolve(c, 0, bin_k);
    const u64 mass_k = mass_of_first(c, n_k);

    // Top-p: the smallest prefix whose share of mass_k reaches top_p.
    unsigned n = n_k;
    u64 key;
    if (a.top_p < 1.0f && mass_k > 0) {
        const cut_rule rule = {false, (double)mass_k, (double)a.top_p, 0};
        const unsigned p = first_where(c, rule, false, &key) + 1;
        if (p < n) n = p;
    }
    // Min-p: the candidates that pass form a prefix of the order.
    const unsigned passed = __ldcg(&a.state->n_min_p), n_min_p = passed > 0 ? passed : 1;
    if (n_min_p < n) n = n_min_p;

    // The draw: the first candidate whose running mass exceeds u * total.
    const u64 mass = mass_of_first(c, n);
    const double target = (double)a.u * (double)mass;
    if ((double)mass > target) {
        const cut_rule rule = {true, 0, 0, target};
        first_where(c, rule, true, &key);
    } else {
        key = key_at(c, n - 1); // u * total reached the end (u rounded to 1): the last kept, as the CPU
    }
    if (threadIdx.x == 0) *a.out = (int32_t)(key & c.id_mask);
}

static size_t sample_smem_bytes(void) { // the finish's layout; the bin phase uses less
    return (SAMPLE_BINS + 1) * sizeof(u64) + 2 * SORT_CAP * sizeof(u64) + (SAMPLE_BINS + 1) * sizeof(unsigned);
}

__global__ void __launch_bounds__(BLOCK_THREADS, 1) sample_kernel(const __grid_constant__ sample_args a) {
    extern __shared__ __align__(16) unsigned char smem[];
    u64 *s_mass = reinterpret_cast<u64 *>(smem);                  // [SAMPLE_BINS]
    unsigned *s_count = reinterpret_cast<unsigned *>(s_mass + SAMPLE_BINS); // [SAMPLE_BINS]
    unsigned *s_start = s_count + SAMPLE_BINS;                     // [SAMPLE_BINS + 1]
    __shared__ unsigned s_warp[32];
    __shared__ bool s_last;

    wait_for_previous_kernel();
    float best;
    int best_i;
    reduce_partials(a.partials, a.n_chunks, &best, &best_i);
    if (best_i < 0 || best_i == INT_MAX) { // non-finite logits (block-uniform: every thread read the same)
        if (blockIdx.x == 0 && threadIdx.x == 0) *a.out = -1;
        return;
    }
    const float max_scaled = scaled_logit(best, a.inv_t), floor = __fsub_rn(max_scaled, CANDIDATE_RANGE);
    const int t = threadIdx.x, i = blockIdx.x * CHUNK + t;
    s_mass[2 * t] = 0, s_mass[2 * t + 1] = 0, s_count[2 * t] = 0, s_count[2 * t + 1] = 0;
    __syncthreads();

    // This chunk's candidates: bin, mass, rank inside the bin.
    bool is_cand = false, passes_min_p = false;
    int bin = 0;
    u64 m = 0, key = 0, tag = ~0ull;
    if (i < a.vocab) {
        const float l = scaled_logit(a.logits[i], a.inv_t);
        if (l >= floor) {
            const unsigned ord = ordered_bits(l);
            is_cand = true;
            bin = bin_of(l, max_scaled);
            m = fixed_mass(l, max_scaled, a.mass_scale);
            key = sort_key(ord, i, a.id_bits);
            tag = (u64)ord << 32 | (unsigned)bin;
            passes_min_p = (double)__fsub_rn(l, max_scaled) >= a.min_p_cut;
        }
    }
    const unsigned rank = add_grouped(s_count, s_mass, tag, bin, m);
    __syncthreads();

    // Bin starts inside the chunk, published for the finish; global sums.
    const unsigned c0 = s_count[2 * t], c1 = s_count[2 * t + 1];
    unsigned chunk_total;
    const unsigned start = block_exclusive_scan<unsigned>(c0 + c1, s_warp, &chunk_total);
    s_start[2 * t] = start, s_start[2 * t + 1] = start + c0;
    unsigned short *row = a.offsets + (size_t)blockIdx.x * (SAMPLE_BINS + 1);
    row[2 * t] = (unsigned short)start, row[2 * t + 1] = (unsigned short)(start + c0);
    if (t == 0) row[SAMPLE_BINS] = (unsigned short)chunk_total;
    if (c0) atomicAdd(&a.bin_count[2 * t], c0), atomicAdd(&a.bin_mass[2 * t], s_mass[2 * t]);
    if (c1) atomicAdd(&a.bin_count[2 * t + 1], c1), atomicAdd(&a.bin_mass[2 * t + 1], s_mass[2 * t + 1]);
    __syncthreads();
    if (is_cand) a.items[(size_t)blockIdx.x * CHUNK + s_start[bin] + rank] = make_ulonglong2(key, m);
    const int n_passed = __syncthreads_count(passes_min_p);
    if (t == 0 && n_passed) atomicAdd(&a.state->n_min_p, (unsigned)n_passed);

    // The last block to get here finishes (the classic threadfence reduction).
    __threadfence();
    __syncthreads();
    if (t == 0) s_last = atomicAdd(&a.state->done, 1u) == (unsigned)gridDim.x - 1;
    __syncthreads();
    if (!s_last) return;
    __threadfence();
    finish(a, smem);
}

// ---- Launchers -------------------------------------------------------------

extern "C" size_t kiln_cuda_sample_workspace(int vocab) {
    return vocab > 0 && vocab <= MAX_CHUNKS * CHUNK ? layout_for(vocab).total : 0;
}

// Programmatic dependent launch (sm_90): the second kernel is scheduled while
// the first runs and waits for its results in wait_for_previous_kernel().
static cudaError_t launch_after(cudaStream_t stream, const void *kernel, dim3 grid, dim3 block, size_t smem,
                                void **args, bool portable) {
    int device, major;
    cudaError_t e = cudaGetDevice(&device);
    if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
    if (e != cudaSuccess) return e;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    if (major >= 9 && !portable) cfg.attrs = &attr, cfg.numAttrs = 1;
    return cudaLaunchKernelExC(&cfg, kernel, args);
}

extern "C" cudaError_t kiln_cuda_sample(cudaStream_t stream, const float *logits, int vocab,
                                        const kiln_cuda_sample_params *p, void *workspace, int32_t *out) {
    if (vocab <= 0 || vocab > MAX_CHUNKS * CHUNK || !logits || !p || !workspace || !out)
        return cudaErrorInvalidValue;
    const sample_layout l = layout_for(vocab);
    int n_chunks = (vocab + CHUNK - 1) / CHUNK;
    argmax_partial *partials = at_offset<argmax_partial>(workspace, l.partials);
    sample_state *state = at_offset<sample_state>(workspace, l.state);
    unsigned *bin_count = at_offset<unsigned>(workspace, l.bin_count);
    u64 *bin_mass = at_offset<u64>(workspace, l.bin_mass);

    argmax_kernel<<<n_chunks, ARGMAX_THREADS, 0, stream>>>(logits, vocab, partials, bin_count, bin_mass, state);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return e;
    if (p->temperature <= 0.0f) { // as the CPU: greedy
        void *args[] = {&partials, &n_chunks, &out};
        return launch_after(stream, (const void *)greedy_kernel, dim3(1), dim3(ARGMAX_THREADS), 0, args, p->portable);
    }
    sample_args a;
    a.logits = logits, a.vocab = vocab, a.n_chunks = n_chunks, a.top_k = p->top_k;
    // Host arithmetic, identical to the CPU's: 1/t in float, log(min_p) in double.
    a.inv_t = 1.0f / p->temperature, a.top_p = p->top_p, a.u = p->u;
    a.min_p_cut = p->min_p > 0.0f ? log((double)p->min_p) : -INFINITY;
    int id_bits = 1, vocab_bits = 0;
    while ((1 << id_bits) < vocab) id_bits++; // ids 0..vocab-1 fit
    while ((1 << vocab_bits) < vocab) vocab_bits++;
    a.id_bits = id_bits;
    a.mass_scale = ldexp(1.0, 63 - vocab_bits); // vocab masses <= 1 sum below 2^64
    a.partials = partials, a.state = state, a.bin_count = bin_count, a.bin_mass = bin_mass;
    a.offsets = at_offset<unsigned short>(workspace, l.offsets);
    a.items = at_offset<ulonglong2>(workspace, l.items);
    a.out = out;
    const size_t smem = sample_smem_bytes();
    e = cudaFuncSetAttribute(sample_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (e != cudaSuccess) return e;
    void *args[] = {&a};
    return launch_after(stream, (const void *)sample_kernel, dim3(n_chunks), dim3(BLOCK_THREADS), smem, args, p->portable);
}
