// Run-time choice of the SIMD path: the best the CPU supports, unless a test
// forces a lower one.
#include <stddef.h>
#include <string.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/simd_kernels.h"

static int forced_level = -1; // -1: automatic

kiln_simd_level kiln_simd_level_detect(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                      __builtin_cpu_supports("f16c");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
    if (avx512) return KILN_SIMD_AVX512;
    if (avx2) return KILN_SIMD_AVX2;
#endif
    return KILN_SIMD_SCALAR;
}

kiln_simd_level kiln_simd_level_now(void) {
    int forced = __atomic_load_n(&forced_level, __ATOMIC_RELAXED);
    return forced >= 0 ? (kiln_simd_level)forced : kiln_simd_level_detect();
}

static const char *level_names[] = {"scalar", "avx2", "avx512-vnni"};

const char *kiln_cpu_simd_name(void) { return level_names[kiln_simd_level_now()]; }

bool kiln_cpu_force_simd(const char *name) {
    int level;
    if (name == NULL) {
        level = -1;
    } else if (strcmp(name, "scalar") == 0) {
        level = KILN_SIMD_SCALAR;
    } else if (strcmp(name, "avx2") == 0) {
        level = KILN_SIMD_AVX2;
    } else if (strcmp(name, "avx512") == 0 || strcmp(name, "avx512-vnni") == 0) {
        level = KILN_SIMD_AVX512;
    } else {
        return false;
    }
    if (level > (int)kiln_simd_level_detect()) return false; // this CPU cannot run it
    __atomic_store_n(&forced_level, level, __ATOMIC_RELAXED);
    return true;
}
