// The CPU backend: host memory, OpenMP threads, SIMD kernels.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/cpu_ops.h"
#include "core/host_memory.h"


// Grows *buf to at least n floats; the forward pass cannot report a failure
// here, and sizes are bounded by the activations, so running out aborts.
static float *grow(float **buf, size_t *have, size_t n) {
    if (n > *have) {
        float *grown = realloc(*buf, sizeof(float) * n);
        if (!grown) abort();
        *buf = grown;
        *have = n;
    }
    return *buf;
}

static void cpu_destroy(kiln_backend *be) {
    cpu_impl *impl = be->impl;
    if (impl) {
        free(impl->scratch);
        free(impl->normed);
    }
    free(impl);
    free(be);
}

static void *cpu_alloc(kiln_backend *be, size_t bytes) {
    (void)be;
    // 64-byte alignment: whole cache lines and aligned AVX-512 loads.
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) return NULL;
    void *p = aligned_alloc(64, rounded ? rounded : 64);
    if (p) memset(p, 0, rounded);
    return p;
}

static void cpu_free(kiln_backend *be, void *ptr) {
    (void)be;
    free(ptr);
}

static void cpu_get_rows(kiln_backend *be, const kiln_tensor *table, const int32_t *ids, int n, float *out) {
    (void)be;
    kiln_cpu_get_rows(table, ids, n, out);
}

static void cpu_rope_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer,
                              const kiln_batch_layout *batch, float *q, int n_heads, float *k, const float *v,
                              const kiln_rope_params *rope);

// Fused forms run as their parts: the matrix products dominate on the CPU.
static void cpu_linear(kiln_backend *be, const kiln_linear_args *a) {
    cpu_impl *impl = be->impl;
    float *ys[KILN_LINEAR_MAX];
    for (int i = 0; i < a->count; i++) ys[i] = a->y[i];
    const int64_t rows0 = a->w[0]->ne[1], k = a->w[0]->ne[0];
    if (a->accumulate) ys[0] = grow(&impl->scratch, &impl->scratch_floats, (size_t)a->n * (size_t)rows0);
    const float *x = a->x;
    if (a->norm) {
        float *normed = grow(&impl->normed, &impl->normed_floats, (size_t)a->n * (size_t)k);
        kiln_cpu_rmsnorm(be, a->x, a->norm, normed, a->n, (int)k, a->norm_eps);
        x = normed;
    }
    if (a->count == 1)
        kiln_cpu_matmul_ex(a->w[0], x, a->n, ys[0], rows0, kiln_cpu_threads(be), kiln_cpu_of(be)->precise);
    else
        kiln_cpu_matmul_multi(a->w, ys, a->count, x, a->n, kiln_cpu_threads(be), kiln_cpu_of(be)->precise);
    for (int i = 0; i < a->count; i++)
        if (a->bias[i]) kiln_cpu_add_bias(be, ys[i], a->bias[i], a->n, (int)a->w[i]->ne[1]);
    if (a->accumulate) kiln_cpu_add(be, a->y[0], ys[0], (size_t)a->n * (size_t)rows0);
    if (a->glu) kiln_cpu_swiglu(be, a->y[0], a->y[1], a->y[0], (size_t)a->n * (size_t)rows0);
    if (a->rope)
        cpu_rope_kv_store(be, a->rope->kv, a->rope->layer, a->rope->batch, a->y[0], a->rope->n_heads, a->y[1], a->y[2],
                          a->rope->params);
}

static void cpu_mlp(kiln_backend *be, const kiln_mlp_args *a) {
    cpu_linear(be, &(kiln_linear_args){.count = 2, .w = {a->w_gate, a->w_up}, .y = {a->gate, a->up}, .x = a->h,
                                       .n = a->n, .glu = true, .norm = a->norm, .norm_eps = a->norm_eps});
    cpu_linear(be, &(kiln_linear_args){.count = 1, .w = {a->w_down}, .y = {a->x}, .x = a->gate, .n = a->n,
                                       .accumulate = true});
}

static void cpu_rope_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer,
                              const kiln_batch_layout *batch, float *q, int n_heads, float *k, const float *v,
                              const kiln_rope_params *rope) {
    kiln_cpu_rope(be, q, batch->n_tokens, n_heads, kv->head_dim, batch->pos, rope);
    kiln_cpu_rope(be, k, batch->n_tokens, kv->n_kv_heads, kv->head_dim, batch->pos, rope);
    kiln_cpu_kv_store(be, kv, layer, batch, k, v);
}

static bool cpu_supports(kiln_backend *be, kiln_dtype type) {
    (void)be;
    return kiln_cpu_matmul_supports(type);
}

static bool cpu_supports_head_dim(kiln_backend *be, int head_dim) {
    (void)be;
    return head_dim > 0;
}

// The CPU reads weights where they are (the memory-mapped file).
static uint64_t cpu_weight_bytes(kiln_backend *be, const kiln_tensor *src) {
    (void)be, (void)src;
    return 0;
}

static kiln_status cpu_weight_load(kiln_backend *be, const kiln_tensor *src, void *dst, kiln_tensor *out) {
    (void)be, (void)dst;
    *out = *src;
    return KILN_OK;
}

static kiln_status cpu_done(kiln_backend *be) {
    (void)be;
    return KILN_OK;
}

// Host memory: what the machine (or its cgroup) still has, so that an engine
// too large for it is refused before its KV cache is touched.
static void cpu_memory(kiln_backend *be, kiln_backend_memory *out) {
    (void)be;
    *out = (kiln_backend_memory){0};
    kiln_host_memory(&out->free, &out->total);
}

static void cpu_copy(kiln_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    memcpy(dst, src, n);
}

static const char *cpu_describe(kiln_backend *be) {
    cpu_impl *impl = kiln_cpu_of(be);
    snprintf(impl->description, sizeof impl->description, "%d threads, %s kernels", impl->n_threads,
             kiln_cpu_simd_name());
    return impl->description;
}

static const kiln_device_ops cpu_device = {
    .name = "cpu",
    .describe = cpu_describe,
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .supports = cpu_supports,
    .supports_head_dim = cpu_supports_head_dim,
    .weight_bytes = cpu_weight_bytes,
    .weight_load = cpu_weight_load,
    .weights_done = cpu_done,
    .memory = cpu_memory,
};

static const kiln_stream_ops cpu_stream = {
    .to_host = cpu_copy,
    .from_host = cpu_copy,
    .sync = cpu_done,
    .check = cpu_done,
};

static const kiln_backend_ops cpu_ops = {
    .get_rows = cpu_get_rows,
    .linear = cpu_linear,
    .mlp = cpu_mlp,
    .rope_kv_store = cpu_rope_kv_store,
    .attention = kiln_cpu_attention,
    .copy = cpu_copy,
};

kiln_status kiln_backend_cpu_create(int n_threads, bool precise, kiln_backend **out) {
    kiln_backend *be = calloc(1, sizeof *be);
    cpu_impl *impl = calloc(1, sizeof *impl);
    if (!be || !impl) {
        free(be);
        free(impl);
        return kiln_fail(KILN_ERR_NOMEM, "cpu backend: out of memory");
    }
    be->impl = impl;
    be->device = &cpu_device;
    be->stream = &cpu_stream;
    be->ops = &cpu_ops;
    be->kv_dtype = KILN_F32;
    be->step_tokens = 512;
    impl->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    impl->precise = precise;
    *out = be;
    return KILN_OK;
}
