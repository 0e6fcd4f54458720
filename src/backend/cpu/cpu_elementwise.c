// Element-wise and normalisation operations of the CPU backend (on CUDA:
// cuda_elementwise.cu).
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu_ops.h"
#include "core/dtype.h"

#define KILN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

KILN_CLONES static float sum_squares(const float *x, int n) {
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += x[i] * x[i];
    return s;
}

KILN_CLONES static void scale_mul(const float *x, const float *w, float scale, float *y, int n) {
#pragma omp simd
    for (int i = 0; i < n; i++) y[i] = x[i] * scale * w[i];
}

void kiln_cpu_rmsnorm(kiln_backend *be, const float *x, const float *weight, float *y, int n, int dim, float eps) {
#pragma omp parallel for num_threads(kiln_cpu_threads(be)) if (n > 1) schedule(static)
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * dim;
        float ms = sum_squares(xt, dim) / (float)dim;
        scale_mul(xt, weight, 1.0f / sqrtf(ms + eps), y + (size_t)t * dim, dim);
    }
}

KILN_CLONES static void add_vec(float *y, const float *x, size_t n) {
#pragma omp simd
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

void kiln_cpu_add(kiln_backend *be, float *y, const float *x, size_t n) {
    (void)be;
    add_vec(y, x, n);
}

void kiln_cpu_add_bias(kiln_backend *be, float *y, const float *bias, int n, int dim) {
    (void)be;
    for (int t = 0; t < n; t++) add_vec(y + (size_t)t * dim, bias, (size_t)dim);
}

KILN_CLONES static void swiglu_vec(const float *gate, const float *up, float *out, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kiln_cpu_swiglu(kiln_backend *be, const float *gate, const float *up, float *out, size_t n) {
    const size_t chunk = 4096;
    size_t n_chunks = (n + chunk - 1) / chunk;
#pragma omp parallel for num_threads(kiln_cpu_threads(be)) if (n_chunks > 1) schedule(static)
    for (size_t c = 0; c < n_chunks; c++) {
        size_t begin = c * chunk, len = n - begin < chunk ? n - begin : chunk;
        swiglu_vec(gate + begin, up + begin, out + begin, len);
    }
}

void kiln_cpu_rope(kiln_backend *be, float *x, int n, int n_heads, int head_dim, const int32_t *pos,
                   const kiln_rope_params *rope) {
    const int half = rope->rot_dim / 2;
#pragma omp parallel for num_threads(kiln_cpu_threads(be)) if (n > 1) schedule(static)
    for (int t = 0; t < n; t++) {
        float cos_sin[2 * 512]; // rot_dim <= 1024 is checked at model load
        for (int i = 0; i < half; i++) {
            // Same formula as the references: theta^(-2i/d) in double, then the
            // angle in double, so long contexts keep their precision.
            double freq = pow((double)rope->theta, -2.0 * i / rope->rot_dim);
            if (rope->freq_factors) freq /= rope->freq_factors[i];
            double angle = (double)pos[t] * freq;
            cos_sin[2 * i] = (float)cos(angle);
            cos_sin[2 * i + 1] = (float)sin(angle);
        }
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((size_t)t * n_heads + h) * head_dim;
            for (int i = 0; i < half; i++) {
                int a = rope->interleaved ? 2 * i : i;
                int b = rope->interleaved ? 2 * i + 1 : i + half;
                float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
                float x0 = v[a], x1 = v[b];
                v[a] = x0 * c - x1 * s;
                v[b] = x0 * s + x1 * c;
            }
        }
    }
}
