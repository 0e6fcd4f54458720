// The CPU backend: host memory, OpenMP threads, SIMD kernels.
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/cpu_ops.h"

static void cpu_destroy(kiln_backend *be) { free(be); }

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

static void cpu_matmul(kiln_backend *be, const kiln_tensor *w, const float *x, int n, float *y, int64_t ldy) {
    kiln_cpu_matmul_ex(w, x, n, y, ldy, be->n_threads, be->precise);
}

static void cpu_matmul_multi(kiln_backend *be, const kiln_tensor *const *ws, float *const *ys, int count,
                             const float *x, int n) {
    kiln_cpu_matmul_multi(ws, ys, count, x, n, be->n_threads, be->precise);
}

static void cpu_copy(kiln_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    memcpy(dst, src, n);
}

static const kiln_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .get_rows = cpu_get_rows,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .add_bias = kiln_cpu_add_bias,
    .rmsnorm = kiln_cpu_rmsnorm,
    .add = kiln_cpu_add,
    .rope = kiln_cpu_rope,
    .kv_store = kiln_cpu_kv_store,
    .attention = kiln_cpu_attention,
    .swiglu = kiln_cpu_swiglu,
    .copy = cpu_copy,
    .to_host = cpu_copy,
    .from_host = cpu_copy,
};

kiln_status kiln_backend_cpu_create(int n_threads, bool precise, kiln_backend **out) {
    kiln_backend *be = calloc(1, sizeof *be);
    if (!be) return kiln_fail(KILN_ERR_NOMEM, "cpu backend: out of memory");
    be->ops = &cpu_ops;
    be->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
    be->precise = precise;
    *out = be;
    return KILN_OK;
}
