// Shared pieces of the GPU tests: skip visibly (exit 77) where no GPU is
// present, check CUDA calls, draw random inputs.
#ifndef KILN_TEST_CUDA_UTIL_H
#define KILN_TEST_CUDA_UTIL_H

#include <fnmatch.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <cuda_runtime.h>

// Runs the tests named by KILN_TEST_ONLY (default all) less those named by
// KILN_TEST_EXCLUDE: comma-separated globs. compute-sanitizer's racecheck is
// slow enough that its runs pick their cases.
static inline bool kiln_test_listed(const char *list, const char *name) {
    char pattern[128];
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        if (n > 0 && n < sizeof pattern) {
            memcpy(pattern, p, n);
            pattern[n] = '\0';
            if (fnmatch(pattern, name, 0) == 0) return true;
        }
        p += n + (p[n] == ',');
    }
    return false;
}

static inline int kiln_test_run_selected(const char *group, const struct CMUnitTest *tests, size_t count) {
    const char *only = getenv("KILN_TEST_ONLY"), *exclude = getenv("KILN_TEST_EXCLUDE");
    struct CMUnitTest *chosen = malloc(sizeof *chosen * (count ? count : 1));
    if (!chosen) return 1;
    size_t n = 0;
    for (size_t i = 0; i < count; i++) {
        if (only && *only && !kiln_test_listed(only, tests[i].name)) continue;
        if (exclude && *exclude && kiln_test_listed(exclude, tests[i].name)) continue;
        chosen[n++] = tests[i];
    }
    if (n < count) printf("KILN_TEST_ONLY/KILN_TEST_EXCLUDE: %zu of %zu tests\n", n, count);
    const int rc = _cmocka_run_group_tests(group, chosen, n, NULL, NULL);
    free(chosen);
    return rc;
}

#define KILN_RUN_TESTS(tests) kiln_test_run_selected(#tests, tests, sizeof(tests) / sizeof((tests)[0]))

static inline void kiln_test_require_gpu(void) {
    // Unbuffered: a test killed under compute-sanitizer still shows how far it got.
    setvbuf(stdout, NULL, _IONBF, 0);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
        printf("SKIP: no CUDA device (%s): GPU tests run on the GPU machine (scripts/gpu-run.sh)\n",
               e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
        exit(77);
    }
}

#define CUDA_CHECK(call)                                                                                    \
    do {                                                                                                    \
        cudaError_t e_ = (call);                                                                            \
        if (e_ != cudaSuccess) {                                                                            \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));          \
            abort();                                                                                        \
        }                                                                                                   \
    } while (0)

// xorshift64*: reproducible inputs; every test draws fresh values per case.
static inline uint64_t kiln_test_rand_u64(uint64_t *s) {
    *s ^= *s >> 12, *s ^= *s << 25, *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}
// uniform in [-1, 1)
static inline float kiln_test_rand_f(uint64_t *s) {
    return (float)((double)(kiln_test_rand_u64(s) >> 11) * 0x1.0p-52 - 1.0);
}

#endif
