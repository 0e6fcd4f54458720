// Device helpers of the attention kernels (cuda_attention.cu: decode and
// prefill) and the prefill kernel's parameters.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "backend/cuda/cuda_kernels.h"

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

// 2^x in one instruction (MUFU.EX2; denormal results flush to 0, -inf gives 0):
// the softmax's arguments are <= 0.
static __device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
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

// ---- prefill ----------------------------------------------------------------

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

// Dimensions 8c .. 8c + 7 of query token tok, head h, times p.qscale, as 8
// halves: a 16-byte row chunk of the staged Q tile (zero past n_tokens).
template <int D> static __device__ __forceinline__ uint4 pf_q_chunk(const pf_params &p, int tok, int h, int c) {
    if (tok >= p.n_tokens) return make_uint4(0, 0, 0, 0);
    const float4 *src = reinterpret_cast<const float4 *>(p.q + ((size_t)tok * p.n_heads + h) * D + c * 8);
    const float4 a = src[0], b = src[1];
    const float s = p.qscale;
    return make_uint4(pack_half2(a.x * s, a.y * s), pack_half2(a.z * s, a.w * s), pack_half2(b.x * s, b.y * s),
                      pack_half2(b.z * s, b.w * s));
}

// Row offsets of tile `tile` (-1 past kv_end: that row is zero-filled).
template <int COLS>
static __device__ __forceinline__ void pf_tile_offsets(long long *row_off, const pf_params &p, const int32_t *table,
                                                       int kvh, int head_dim, int tile, int kv_end) {
    const int tid = threadIdx.x;
    if (tid < COLS) {
        const int pos = tile * COLS + tid;
        row_off[tid] = pos < kv_end ? kv_row_offset(table, pos, p.block_size, p.n_kv, kvh, head_dim) : -1;
    }
}
