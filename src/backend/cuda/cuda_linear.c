// The backend's `linear`: decode-sized batches (up to 8 tokens) go through
// kiln's matrix-vector kernel, which streams each weight once; larger ones
// through cuBLASLt on tensor cores after a 16-bit copy of the input.
#include <stdlib.h>

#include "backend/cuda/cuda_impl.h"

// The matrix-vector kernel reads the float activations through L1 once per
// row: fine while they stay there, L1-bound once several tokens of a large k
// do not. Measured on the H200 (2026-11-26, Llama 3 8B geometry): batched
// decode of 8 ran 776 tok/s through the kernel with 8 tokens against 1407
// through cuBLASLt. So several tokens take the kernel only while their inputs
// total c->matvec_x_limit (16 KB by default: small models); one token always
// does.
static bool matvec_fits(const cuda_impl *c, const kiln_linear_args *a, kiln_cuda_type type) {
    if (a->n > KILN_MATVEC_MAX_TOKENS || type == KILN_CUDA_F32 || a->w[0]->ne[0] % 8 != 0) return false;
    if (a->n > 1 && (size_t)a->n * (size_t)a->w[0]->ne[0] * sizeof(float) > c->matvec_x_limit) return false;
    for (int i = 1; i < a->count; i++)
        if (a->w[i]->dtype != a->w[0]->dtype) return false;
    return !(a->glu && (a->bias[0] || a->bias[1]));
}

// Whether the matrix-vector kernel can rotate and store a->rope itself:
// whole-head rotation into an F16 cache.
static bool rope_fusable(const kiln_linear_args *a) {
    const kiln_linear_rope *r = a->rope;
    return r && a->count == 3 && r->params->rot_dim == r->kv->head_dim && r->kv->dtype == KILN_F16 &&
           a->w[0]->ne[1] == (int64_t)r->n_heads * r->kv->head_dim;
}

// Decode's RMSNorm, prepared by the product before: when the step's plan
// (cuda_plan.c) found a residual product followed by a product that reads its
// output through RMSNorm, the first (a->next_norm) also writes y * norm and
// per-block sums of squares (kiln_cuda_matvec_args.next_norm), and the second
// (a->prepared_input) takes them (ss) and starts on its weights at once
// instead of staging and reducing its input first. `prev` is what the
// operation before prepared, when this is its reader.
static bool prepared_for(const cuda_prepared_norm *prev, const kiln_linear_args *a) {
    return a->norm && prev->y && prev->y == a->x && prev->norm == a->norm && prev->n == a->n &&
           prev->k == (int)a->w[0]->ne[0];
}

static bool take_prepared(cuda_impl *c, const cuda_prepared_norm *prev, const kiln_linear_args *a,
                          kiln_cuda_matvec_args *mv) {
    if (!prepared_for(prev, a)) return false;
    mv->x = c->prep_x.ptr;
    mv->ss = c->prep_ss.ptr;
    mv->norm = NULL;
    return true;
}

static bool give_prepared(cuda_impl *c, const kiln_linear_args *a, kiln_cuda_matvec_args *mv) {
    if (!a->next_norm || !a->accumulate || a->count != 1 || a->glu || a->rope ||
        a->n > KILN_MATVEC_NORM_MAX_TOKENS)
        return false;
    const size_t rows = (size_t)a->w[0]->ne[1];
    // Sized on the first (uncaptured) decode step; a capture cannot grow them.
    if (!cuda_scratch_reserve(c, &c->prep_x, sizeof(float) * (size_t)a->n * rows) ||
        !cuda_scratch_reserve(c, &c->prep_ss, sizeof(float) * (size_t)a->n * KILN_MATVEC_SS_PARTS))
        return false;
    mv->next_norm = a->next_norm;
    mv->next_x = c->prep_x.ptr;
    mv->next_ss = c->prep_ss.ptr;
    return true;
}

static void linear_matvec(cuda_impl *c, const cuda_prepared_norm *prev, const kiln_linear_args *a,
                          kiln_cuda_type type) {
    kiln_cuda_matvec_args mv = {.count = a->count, .type = type, .k = (int)a->w[0]->ne[0], .x = a->x,
                                .n_tokens = a->n, .accumulate = a->accumulate, .glu = a->glu,
                                .norm = a->norm, .norm_eps = a->norm_eps};
    if (a->rope) { // rope_fusable(a) holds
        const kiln_linear_rope *r = a->rope;
        const double *inv_freq = cuda_rope_inv_freq(c, r->params);
        if (!inv_freq) {
            cuda_note(c, cudaErrorMemoryAllocation, "rope frequency table (at most 4 RoPE settings per backend)");
            return;
        }
        mv.has_rope = true;
        mv.rope = (kiln_cuda_matvec_rope){.inv_freq = inv_freq, .interleaved = r->params->interleaved != 0,
                                          .head_dim = r->kv->head_dim, .n_kv_heads = r->kv->n_kv_heads,
                                          .pos = r->batch->pos, .seq = r->batch->seq,
                                          .block_tables = r->kv->block_tables,
                                          .max_blocks_per_seq = r->kv->max_blocks_per_seq,
                                          .block_size = r->kv->block_size, .k_cache = r->layer.k,
                                          .v_cache = r->layer.v};
    }
    for (int i = 0; i < a->count; i++) {
        mv.w[i] = a->w[i]->data;
        mv.bias[i] = a->bias[i];
        mv.y[i] = a->y[i];
        mv.rows[i] = (int)a->w[i]->ne[1];
    }
    take_prepared(c, prev, a, &mv);
    const bool gives = give_prepared(c, a, &mv);
    mv.pipe = cuda_matvec_pipe_for(c, &mv);
    const cudaError_t e = kiln_cuda_matvec(c->stream, &mv);
    cuda_note(c, e, "matvec");
    if (gives && e == cudaSuccess)
        c->prepared = (cuda_prepared_norm){.y = a->y[0], .norm = a->next_norm, .n = a->n, .k = (int)a->w[0]->ne[1]};
}

// d[n][m] += x w^T (+ bias), in cuBLASLt's epilogue (beta = 1).
static cudaError_t gemm_residual(cuda_impl *c, kiln_cuda_type type, const void *w, const void *x, float *d,
                                 const float *bias, int m, int n, int k) {
    return cuda_gemm_ex(c, type, w, x, d, false, bias, m, n, k, true);
}

static void linear_gemm(cuda_impl *c, const kiln_linear_args *a) {
    const int k = (int)a->w[0]->ne[0];
    const size_t in_elems = (size_t)a->n * (size_t)k;
    if (!cuda_scratch_reserve(c, &c->gemm_input, 2 * in_elems)) {
        cuda_note(c, cudaErrorMemoryAllocation, "gemm input");
        return;
    }
    kiln_cuda_type converted = KILN_CUDA_F32; // type of the input copy now in gemm_input
    for (int i = 0; i < a->count; i++) {
        const kiln_cuda_type type = kiln_cuda_type_of(a->w[i]->dtype);
        if (type == KILN_CUDA_F32) { // only vectors stay F32; no matrix should get here
            cuda_note(c, cudaErrorInvalidValue, "gemm on an F32 matrix");
            return;
        }
        if (type != converted) {
            if (a->norm) // RMSNorm straight into the 16-bit input
                cuda_note(c,
                          kiln_cuda_rmsnorm16(c->stream, a->x, a->norm, c->gemm_input.ptr, type, a->n, k, a->norm_eps),
                          "rmsnorm");
            else
                cuda_note(c, kiln_cuda_convert(c->stream, a->x, c->gemm_input.ptr, type, in_elems), "convert");
            converted = type;
        }
        const int m = (int)a->w[i]->ne[1];
        cuda_note(c,
                  a->accumulate
                      ? gemm_residual(c, type, a->w[i]->data, c->gemm_input.ptr, a->y[i], a->bias[i], m, a->n, k)
                      : cuda_gemm(c, type, a->w[i]->data, c->gemm_input.ptr, a->y[i], a->bias[i], m, a->n, k, false),
                  "cublasLt matmul");
    }
    if (a->glu)
        cuda_note(c, kiln_cuda_swiglu(c->stream, a->y[0], a->y[1], a->y[0], (size_t)a->n * (size_t)a->w[0]->ne[1]),
                  "swiglu");
}

// RMSNorm(x) * norm into a scratch buffer, for the paths that take a plain input.
static const float *normalised(cuda_impl *c, const float *x, const float *norm, float eps, int n, int k) {
    if (!cuda_scratch_reserve(c, &c->norm_buf, sizeof(float) * (size_t)n * (size_t)k)) {
        cuda_note(c, cudaErrorMemoryAllocation, "rmsnorm buffer");
        return NULL;
    }
    cuda_note(c, kiln_cuda_rmsnorm(c->stream, x, norm, c->norm_buf.ptr, n, k, eps), "rmsnorm");
    return c->norm_buf.ptr;
}

void cuda_linear(kiln_backend *be, const kiln_linear_args *a) {
    cuda_impl *c = cuda_of(be);
    const cuda_prepared_norm prev = a->prepared_input ? c->prepared : (cuda_prepared_norm){0};
    c->prepared = (cuda_prepared_norm){0};
    const kiln_cuda_type type = kiln_cuda_type_of(a->w[0]->dtype);
    const bool matvec = matvec_fits(c, a, type);
    const bool prepared = matvec && prepared_for(&prev, a);
    // RoPE and the cache write: in the matrix-vector kernel's epilogue
    // (decode), else as their own kernel after the products.
    if (a->rope && !(matvec && rope_fusable(a))) {
        kiln_linear_args products = *a;
        products.rope = NULL;
        cuda_linear(be, &products);
        const kiln_linear_rope *r = a->rope;
        cuda_rope_kv_store(be, r->kv, r->layer, r->batch, a->y[0], r->n_heads, a->y[1], a->y[2], r->params);
        return;
    }
    kiln_linear_args plain;
    // The GEMM path normalises straight into its 16-bit input; the
    // matrix-vector kernel normalises its own input for decode's 1 or 2
    // tokens; otherwise a separate RMSNorm first.
    if (a->norm && matvec && !prepared && a->n > KILN_MATVEC_NORM_MAX_TOKENS) {
        plain = *a;
        plain.norm = NULL;
        if (!(plain.x = normalised(c, a->x, a->norm, a->norm_eps, a->n, (int)a->w[0]->ne[0]))) return;
        a = &plain;
    }
    if (matvec)
        linear_matvec(c, &prev, a, type);
    else
        linear_gemm(c, a);
}

// The feed-forward block. Decode-sized batches: the SwiGLU matrix-vector
// kernel, then the down projection accumulating into x. Prompt chunks: gate
// and up come out of cuBLASLt already in the weights' 16-bit type, SwiGLU
// works in place on them, and that is the down projection's input: the
// [n][ffn] intermediates cross memory in 16 bits, once each, instead of as
// floats plus a conversion pass (+4% prefill, H200).
void cuda_mlp(kiln_backend *be, const kiln_mlp_args *a) {
    cuda_impl *c = cuda_of(be);
    const kiln_linear_args gate_up = {.count = 2, .w = {a->w_gate, a->w_up}, .y = {a->gate, a->up}, .x = a->h,
                                      .n = a->n, .glu = true, .norm = a->norm, .norm_eps = a->norm_eps,
                                      .prepared_input = a->prepared_input};
    const kiln_linear_args down = {.count = 1, .w = {a->w_down}, .y = {a->x}, .x = a->gate, .n = a->n,
                                   .accumulate = true, .next_norm = a->next_norm};
    const kiln_cuda_type type = kiln_cuda_type_of(a->w_gate->dtype);
    const bool same_types = a->w_up->dtype == a->w_gate->dtype && a->w_down->dtype == a->w_gate->dtype;
    if (matvec_fits(c, &gate_up, type) || !same_types || type == KILN_CUDA_F32) {
        cuda_linear(be, &gate_up);
        cuda_linear(be, &down);
        return;
    }
    c->prepared = (cuda_prepared_norm){0};
    const int dim = (int)a->w_gate->ne[0], ffn = (int)a->w_gate->ne[1];
    const size_t in_elems = (size_t)a->n * (size_t)dim, mid_elems = (size_t)a->n * (size_t)ffn;
    if (!cuda_scratch_reserve(c, &c->gemm_input, 2 * in_elems)) {
        cuda_note(c, cudaErrorMemoryAllocation, "gemm input");
        return;
    }
    // gate and up are float buffers of mid_elems: room for 16-bit values.
    if (a->norm)
        cuda_note(c, kiln_cuda_rmsnorm16(c->stream, a->h, a->norm, c->gemm_input.ptr, type, a->n, dim, a->norm_eps),
                  "rmsnorm");
    else
        cuda_note(c, kiln_cuda_convert(c->stream, a->h, c->gemm_input.ptr, type, in_elems), "convert");
    cuda_note(c, cuda_gemm_ex(c, type, a->w_gate->data, c->gemm_input.ptr, a->gate, true, NULL, ffn, a->n, dim, false),
              "cublasLt matmul (gate)");
    cuda_note(c, cuda_gemm_ex(c, type, a->w_up->data, c->gemm_input.ptr, a->up, true, NULL, ffn, a->n, dim, false),
              "cublasLt matmul (up)");
    cuda_note(c, kiln_cuda_swiglu16(c->stream, a->gate, a->up, type, mid_elems), "swiglu");
    cuda_note(c, gemm_residual(c, type, a->w_down->data, a->gate, a->x, NULL, dim, a->n, ffn),
              "cublasLt matmul (down)");
}
