// Quantized matrix products on the CPU: weights stay in their stored type.
// Activations are quantized on the fly (Q8_0 / Q8_1 / Q8_K, as the weight type
// needs) and dot products run in integer SIMD; the kernel is chosen at run time
// from the CPU's features (AVX-512 / AVX-VNNI / AVX2+FMA / scalar).
#ifndef KILN_BACKEND_CPU_MATMUL_H
#define KILN_BACKEND_CPU_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

// True when w's dtype is supported by kiln_cpu_matmul.
bool kiln_cpu_matmul_supports(kiln_dtype dtype);

// y[t][o] = sum_i W[o][i] * x[t][i] for t < n_tokens, o < w->ne[1], i < w->ne[0].
// x: [n_tokens][w->ne[0]] floats, y: [n_tokens][w->ne[1]] floats (rows of y are
// ldy floats apart, ldy >= w->ne[1]). Runs on the calling OpenMP team if called
// inside a parallel region, otherwise opens one with n_threads threads.
void kiln_cpu_matmul(const kiln_tensor *w, const float *x, int n_tokens, float *y, int64_t ldy, int n_threads);

// As kiln_cpu_matmul; with float_activations, quantized weights are
// dequantized a panel of rows at a time and multiplied with float activations
// (no 8-bit rounding of x): slower, but equal to a float reference up to
// summation order. "Precise mode".
void kiln_cpu_matmul_ex(const kiln_tensor *w, const float *x, int n_tokens, float *y, int64_t ldy, int n_threads,
                        bool float_activations);

// Several products of the same x (Q, K and V; gate and up) in one pass:
// ys[i] = W_i x, rows of ys[i] are ws[i]->ne[1] apart. With the same type and
// width the activations are quantized once and one thread team does all;
// otherwise the products run one after another.
#define KILN_MATMUL_MAX_FUSED 4
void kiln_cpu_matmul_multi(const kiln_tensor *const *ws, float *const *ys, int count, const float *x, int n_tokens,
                           int n_threads, bool float_activations);

// Rows ids[t] of an embedding table w (ne[0] = dim, ne[1] = vocab) as floats:
// out[t][dim]. ids are assumed checked by the caller (0 <= id < ne[1]).
void kiln_cpu_get_rows(const kiln_tensor *w, const int32_t *ids, int n, float *out);

// Name of the SIMD path in use ("avx512-vnni", "avx2", "scalar"), for `kiln bench`.
const char *kiln_cpu_simd_name(void);
// Forces a path ("scalar", "avx2", "avx512"); for tests. NULL restores auto.
bool kiln_cpu_force_simd(const char *name);

#endif
