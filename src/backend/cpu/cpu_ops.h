// The CPU backend's element-wise operations and attention; cpu_backend.c builds
// the operations table from them and the matrix products.
#ifndef KILN_BACKEND_CPU_OPS_H
#define KILN_BACKEND_CPU_OPS_H

#include "backend/backend.h"

typedef struct cpu_impl {
    int n_threads;
    bool precise;   // float activations in matrix products (no 8-bit rounding)
    float *scratch; // products awaiting a residual add
    size_t scratch_floats;
    float *normed;  // RMS-normalised inputs
    size_t normed_floats;
    char description[64];
} cpu_impl;

static inline cpu_impl *kiln_cpu_of(kiln_backend *be) { return (cpu_impl *)be->impl; }
static inline int kiln_cpu_threads(kiln_backend *be) { return kiln_cpu_of(be)->n_threads; }

void kiln_cpu_rmsnorm(kiln_backend *be, const float *x, const float *weight, float *y, int n, int dim, float eps);
void kiln_cpu_add(kiln_backend *be, float *y, const float *x, size_t n);
void kiln_cpu_add_bias(kiln_backend *be, float *y, const float *bias, int n, int dim);
void kiln_cpu_swiglu(kiln_backend *be, const float *gate, const float *up, float *out, size_t n);
void kiln_cpu_rope(kiln_backend *be, float *x, int n, int n_heads, int head_dim, const int32_t *pos,
                   const kiln_rope_params *rope);
void kiln_cpu_kv_store(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                       const float *k, const float *v);
void kiln_cpu_attention(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer, const kiln_batch_layout *batch,
                        const float *q, int n_heads, float scale, float *out);

#endif
