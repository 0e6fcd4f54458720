// The matrix-vector kernel's device code, shared by the kernel of one
// product (cuda_matvec.cu) and the chain kernel that runs several in one
// launch (cuda_matvec_chain.cu). See cuda_matvec.cu for the scheme.
#ifndef KILN_BACKEND_CUDA_MATVEC_CUH
#define KILN_BACKEND_CUDA_MATVEC_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_ops.h"

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

static __device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// 8 consecutive inputs of token t at chunk c: from global memory through L1,
// or from the block's staged copy in shared memory (STAGED). XLDG: through
// the read-only path, for inputs no block of this kernel writes; the chain
// kernel writes its own inputs and reads them with plain loads, which its
// barrier makes coherent.
template <bool STAGED, bool XLDG>
static __device__ __forceinline__ void load_x8(const float *x, int k, int t, int c, float4 &a, float4 &b) {
    const float4 *xp = reinterpret_cast<const float4 *>(x + (size_t)t * k) + 2 * c;
    if (STAGED || !XLDG) {
        a = xp[0];
        b = xp[1];
    } else {
        a = __ldg(xp);
        b = __ldg(xp + 1);
    }
}

template <bool XLDG> static __device__ __forceinline__ float4 load_x4(const float4 *p) {
    if (XLDG) return __ldg(p);
    return *p;
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

// acc[r][t] += row_r . x[t] over this lane's chunks (8 elements each) of R
// rows that share the input (R = 2: SwiGLU's gate and up): each input chunk
// is read once for all R rows.
// With use_pre, the first round of loads is already in pre (first_loads).
// One round of loads: LOADS chunks (32 apart) of each of the R rows.
template <int R, int LOADS>
static __device__ __forceinline__ void load_round(const uint4 *const rows[R], int c, uint4 (&w)[R][LOADS]) {
#pragma unroll
    for (int u = 0; u < LOADS; u++)
#pragma unroll
        for (int r = 0; r < R; r++) w[r][u] = load_stream(rows[r] + c + 32 * u);
}

template <int R, int LOADS>
static __device__ __forceinline__ void copy_round(const uint4 (&from)[R][LOADS], uint4 (&to)[R][LOADS]) {
#pragma unroll
    for (int u = 0; u < LOADS; u++)
#pragma unroll
        for (int r = 0; r < R; r++) to[r][u] = from[r][u];
}

// acc += the round's weights (chunks c, c + 32, ...) . x.
template <int NT, int R, bool BF16, bool STAGED, bool XLDG, int LOADS>
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
            load_x8<STAGED, XLDG>(x, k, t, c + 32 * u, xa, xb);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][t] = dot8(wf[r], xa, xb, acc[r][t]);
        }
    }
}

// With use_pre, the first round of loads is already in pre (first_loads).
// PIPE: the next round's loads are issued before this round's arithmetic, so
// a lane never waits with nothing in flight (two rounds of registers).
template <int NT, int R, bool BF16, bool STAGED, bool XLDG, int LOADS, bool PIPE = false>
static __device__ __forceinline__ void rows_dot(const uint4 *const rows[R], const float *x, int k, int lane,
                                                float acc[R][NT], const uint4 (&pre)[R][LOADS], bool use_pre) {
    const int chunks = k / 8;
    int c = lane;
    if (PIPE) {
        if (c + 32 * (LOADS - 1) < chunks) {
            uint4 cur[R][LOADS];
            if (use_pre)
                copy_round<R, LOADS>(pre, cur);
            else
                load_round<R, LOADS>(rows, c, cur);
            for (;;) {
                const int next = c + 32 * LOADS;
                const bool more = next + 32 * (LOADS - 1) < chunks;
                uint4 nxt[R][LOADS];
                if (more) load_round<R, LOADS>(rows, next, nxt);
                round_dot<NT, R, BF16, STAGED, XLDG, LOADS>(cur, x, k, c, acc);
                c = next;
                if (!more) break;
                copy_round<R, LOADS>(nxt, cur);
            }
        }
    } else {
        for (; c + 32 * (LOADS - 1) < chunks; c += 32 * LOADS) {
            uint4 w[R][LOADS];
            if (use_pre) {
                copy_round<R, LOADS>(pre, w);
                use_pre = false;
            } else {
                load_round<R, LOADS>(rows, c, w);
            }
            round_dot<NT, R, BF16, STAGED, XLDG, LOADS>(w, x, k, c, acc);
        }
    }
    for (; c < chunks; c += 32) {
        float wf[R][8];
#pragma unroll
        for (int r = 0; r < R; r++) unpack8<BF16>(load_stream(rows[r] + c), wf[r]);
#pragma unroll
        for (int t = 0; t < NT; t++) {
            float4 xa, xb;
            load_x8<STAGED, XLDG>(x, k, t, c, xa, xb);
#pragma unroll
            for (int r = 0; r < R; r++) acc[r][t] = dot8(wf[r], xa, xb, acc[r][t]);
        }
    }
}

// The block's input for NORM: xs[t] = x[t] * norm (the inverse RMS is applied
// to the sums at the end), and inv[t] = 1 / sqrt(mean(x[t]^2) + eps). Every
// thread must arrive: it synchronises.
template <int NT, bool XLDG>
static __device__ __forceinline__ void stage_normed(const float *x, const float *norm, int k, float eps, float *xs,
                                                    float inv[NT]) {
    __shared__ float partial[WARPS_PER_BLOCK][NT];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const float4 *g4 = reinterpret_cast<const float4 *>(norm);
#pragma unroll
    for (int t = 0; t < NT; t++) {
        const float4 *x4 = reinterpret_cast<const float4 *>(x + (size_t)t * k);
        float4 *xs4 = reinterpret_cast<float4 *>(xs + (size_t)t * k);
        float ss = 0.0f;
        for (int c = threadIdx.x; c < k / 4; c += blockDim.x) {
            const float4 v = load_x4<XLDG>(x4 + c), g = __ldg(g4 + c);
            ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            xs4[c] = make_float4(v.x * g.x, v.y * g.y, v.z * g.z, v.w * g.w);
        }
        ss = warp_sum(ss);
        if (lane == 0) partial[warp][t] = ss;
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

// The first lines of this lane's part of a row, towards L2 before the wait
// for the previous kernel or the staging of the input (the weights depend on
// neither).
static __device__ __forceinline__ void prefetch_row(const uint4 *row, int k, int lane) {
    const int chunks = k / 8;
#pragma unroll
    for (int u = 0; u < LOADS_IN_FLIGHT; u++)
        if (lane + 32 * u < chunks) asm volatile("prefetch.global.L2 [%0];" ::"l"(row + lane + 32 * u));
}

// Or the first round of rows_dot's loads itself, into registers: they are in
// flight while the previous kernel drains or the input is staged. False
// (nothing loaded) when the row is too short for a full round.
template <int R, int LOADS>
static __device__ __forceinline__ bool first_loads(const uint4 *const rows[R], int k, int lane,
                                                   uint4 (&pre)[R][LOADS]) {
    if (lane + 32 * (LOADS - 1) >= k / 8) return false;
#pragma unroll
    for (int u = 0; u < LOADS; u++)
#pragma unroll
        for (int r = 0; r < R; r++) pre[r][u] = load_stream(rows[r] + lane + 32 * u);
    return true;
}

// What a warp's output unit is: one row (PLAIN), a row of gate and the same
// row of up (GLU), or a rotation pair of rows of q, k or v (ROPE).
enum { MV_PLAIN, MV_GLU, MV_ROPE };

// Blocks per SM the register budget must allow: decode's 1 or 2 tokens keep
// many warps in flight; the widest form (8 tokens, two rows) is held to 128
// registers, two blocks rather than one.
// DEEP (one token, one row per unit): twice the loads in flight per lane, for
// the small products whose time is mostly the first round trips to memory.
// PIPE (one token): 1 (the default) splits the registers of the unpipelined
// rounds in two (4 loads a row, or 2 for two-row units); 4 is the same at
// three blocks an SM; 2 doubles the registers (three blocks); 3 is the
// unpipelined rounds at three blocks an SM (fewer spills). 0: unpipelined.
template <int NT, int MODE, bool DEEP, int PIPE = 0> constexpr int matvec_min_blocks(void) {
    return PIPE >= 2 ? 3
           : PIPE == 1 ? 4
           : DEEP      ? 4
           : NT == 1   ? (MODE != MV_PLAIN ? 4 : 5)
           : NT == 2   ? 4
                       : (MODE != MV_PLAIN && NT == 8 ? 2 : 0); // 0: the compiler's choice
}

// Loads in flight per row and round.
template <int MODE, bool DEEP, int PIPE> constexpr int matvec_loads(void) {
    return PIPE == 0 || PIPE == 3 ? (DEEP ? 2 * LOADS_IN_FLIGHT : LOADS_IN_FLIGHT)
                                  : (MODE == MV_PLAIN ? LOADS_IN_FLIGHT : LOADS_IN_FLIGHT / 2) * (PIPE == 2 ? 2 : 1);
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

// The ROPE unit's outputs for token t: q and k rotated at the token's
// position (the angle in double, as on the CPU), k and v also stored as f16
// into the token's cache slot.
static __device__ __forceinline__ void rope_store(const kiln_cuda_matvec_args &a, int t, int i, int ra, int rb, int pair,
                                                  float va, float vb) {
    const kiln_cuda_matvec_rope &r = a.rope;
    const int pos = r.pos[t];
    if (i < 2) {
        double s, c;
        sincos((double)pos * r.inv_freq[pair], &s, &c);
        const float cf = (float)c, sf = (float)s, ya = va * cf - vb * sf, yb = va * sf + vb * cf;
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
// staged, inv the tokens' inverse RMS when NORM) and the epilogue. With
// have_pre, pre holds the first round of loads of unit u0.
template <int NT, bool BF16, int MODE, bool NORM, bool XLDG, int LOADS, bool PIPE = false>
static __device__ __forceinline__ void matvec_units(const kiln_cuda_matvec_args &a, int u0, int u1, const float *x,
                                                    const float (&inv)[NT], int lane,
                                                    const uint4 (&pre)[MODE == MV_PLAIN ? 1 : 2][LOADS],
                                                    bool have_pre) {
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
        rows_dot<NT, R, BF16, NORM, XLDG, LOADS, PIPE>(rows, x, a.k, lane, acc, pre, have_pre);
        have_pre = false;
#pragma unroll
        for (int t = 0; t < NT; t++)
#pragma unroll
            for (int q = 0; q < R; q++) {
                acc[q][t] = warp_sum(acc[q][t]);
                if (NORM) acc[q][t] *= inv[t];
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
                rope_store(a, t, i, ra, rb, pair, acc[0][t] + (bias ? bias[ra] : 0.0f),
                           acc[R - 1][t] + (bias ? bias[rb] : 0.0f));
            } else {
                const size_t out = (size_t)t * a.rows[i] + ra;
                const float v = acc[0][t] + (a.bias[i] ? a.bias[i][ra] : 0.0f);
                if (a.accumulate)
                    a.y[i][out] += v;
                else
                    a.y[i][out] = v;
            }
        }
    }
}

#endif
