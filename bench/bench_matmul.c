// Throughput of kiln_cpu_matmul on the default model's shapes.
//
// Build (standalone, from the repo root):
//   gcc -std=c17 -O2 -fopenmp -D_GNU_SOURCE -Isrc -Iinclude bench/bench_matmul.c
//       src/backend/cpu/matmul*.c src/backend/cpu/quantize_act.c src/backend/cpu/simd_dispatch.c
//       src/backend/cpu/get_rows.c src/core/dtype.c src/core/quant.c -lm -o bench_matmul
//   (one line)
// or with CMake: add_subdirectory(bench) in the top CMakeLists.txt, target bench_matmul.
// Usage: bench_matmul [simd path: scalar|avx2|avx512]
//
// GFLOP/s counts 2 * k * rows * n_tokens; GB/s is weight bytes / time. For
// decode (n = 1) the weights cycle through copies totalling > 64 MiB so they
// come from DRAM, as in a real forward pass, not from cache.
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu_matmul.h"
#include "core/dtype.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint32_t rng = 12345;
static uint32_t rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

// Random weights: random code bytes, then every f16 field made a small finite
// number (the float-type rows are built from floats directly).
static void fill_weights(kiln_dtype t, uint8_t *dst, int64_t k, int64_t rows) {
    const kiln_dtype_traits *tr = kiln_dtype_info(t);
    uint64_t row_bytes;
    kiln_dtype_row_bytes(t, (uint64_t)k, &row_bytes);
    for (uint64_t i = 0; i < row_bytes * (uint64_t)rows; i++) dst[i] = (uint8_t)rnd();
    const uint16_t small = kiln_f32_to_f16(0.01f);
    for (uint64_t b = 0; b < row_bytes * (uint64_t)rows / tr->block_bytes; b++) {
        uint8_t *blk = dst + b * tr->block_bytes;
        if (t == KILN_Q4_0 || t == KILN_Q5_0 || t == KILN_Q8_0) memcpy(blk, &small, 2);
        if (t == KILN_Q4_1 || t == KILN_Q5_1 || t == KILN_Q4_K || t == KILN_Q5_K) {
            memcpy(blk, &small, 2);
            memcpy(blk + 2, &small, 2);
        }
        if (t == KILN_Q6_K) memcpy(blk + 208, &small, 2);
        if (t == KILN_F16 || t == KILN_BF16) memcpy(blk, &small, 2);
    }
}

// Read bandwidth of the machine: sum of a 256 MiB array.
static double read_bandwidth(int threads) {
    const size_t n = (size_t)256 << 20 >> 3;
    uint64_t *a = malloc(n * 8);
    for (size_t i = 0; i < n; i++) a[i] = i;
    double best = 0;
    for (int rep = 0; rep < 3; rep++) {
        uint64_t s = 0;
        const double t0 = now();
#pragma omp parallel for num_threads(threads) reduction(+ : s)
        for (size_t i = 0; i < n; i++) s += a[i];
        const double dt = now() - t0;
        if (s == 42) printf(" ");
        if (n * 8 / dt > best) best = (double)(n * 8) / dt;
    }
    free(a);
    return best / 1e9;
}

static void bench(const char *label, kiln_dtype t, int64_t k, int64_t rows, int n, int threads) {
    uint64_t row_bytes;
    kiln_dtype_row_bytes(t, (uint64_t)k, &row_bytes);
    const size_t bytes = row_bytes * (size_t)rows;
    int copies = n == 1 ? (int)(((size_t)64 << 20) / bytes + 1) : 1;
    uint8_t *data = aligned_alloc(64, (bytes * (size_t)copies + 63) & ~(size_t)63);
    fill_weights(t, data, k, rows * copies);
    float *x = malloc((size_t)n * (size_t)k * sizeof(float)), *y = malloc((size_t)n * (size_t)rows * sizeof(float));
    for (int64_t i = 0; i < (int64_t)n * k; i++) x[i] = (float)(rnd() % 2000) / 1000.0f - 1.0f;
    kiln_tensor w = {.name = "w", .dtype = t, .n_dims = 2, .ne = {k, rows, 1, 1}, .data = data, .nbytes = bytes};
    kiln_cpu_matmul(&w, x, n, y, rows, threads); // warm up
    int iters = 0;
    const double t0 = now();
    double dt;
    do {
        w.data = data + (size_t)(iters % copies) * bytes;
        kiln_cpu_matmul(&w, x, n, y, rows, threads);
        iters++;
        dt = now() - t0;
    } while (dt < 0.25 || iters < 3);
    const double per = dt / iters;
    printf("%-14s %-5s %5lld x %-6lld n=%-4d thr=%d  %9.3f ms  %8.1f GFLOP/s  %7.2f GB/s\n", label,
           kiln_dtype_name(t), (long long)k, (long long)rows, n, threads, per * 1e3,
           2.0 * (double)k * (double)rows * n / per / 1e9, (double)bytes / per / 1e9);
    free(data);
    free(x);
    free(y);
}

int main(int argc, char **argv) {
    if (argc > 1 && !kiln_cpu_force_simd(argv[1])) {
        fprintf(stderr, "unknown or unsupported SIMD path: %s\n", argv[1]);
        return 1;
    }
    printf("simd path: %s\n", kiln_cpu_simd_name());
    printf("read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (2 threads)\n", read_bandwidth(1), read_bandwidth(2));
    static const struct {
        const char *label;
        kiln_dtype t;
        int64_t k, rows;
    } shapes[] = {
        {"attn_q/o", KILN_Q4_1, 576, 576},  {"attn_k/v", KILN_Q4_1, 576, 192},   {"ffn_gate/up", KILN_Q4_1, 576, 1536},
        {"ffn_down", KILN_Q4_1, 1536, 576}, {"output", KILN_Q8_0, 576, 49152},
    };
    static const int ns[] = {1, 128, 512};
    const char *only = getenv("BENCH_TYPES"); // e.g. "all": also the other types on 576x1536
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ni = 0; ni < 3; ni++)
            for (int th = 1; th <= 2; th++) bench(shapes[s].label, shapes[s].t, shapes[s].k, shapes[s].rows, ns[ni], th);
    if (only && strcmp(only, "all") == 0) {
        static const kiln_dtype others[] = {KILN_Q4_0, KILN_Q5_0, KILN_Q5_1, KILN_Q8_0, KILN_Q4_K,
                                            KILN_Q5_K, KILN_Q6_K, KILN_F32,  KILN_F16,  KILN_BF16};
        for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
            for (int ni = 0; ni < 3; ni += 1) bench("other", others[i], 1536, 576, ns[ni], 1);
    }
    return 0;
}
