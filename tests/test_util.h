// Shared helpers for the cmocka test programs.
#ifndef KILN_TEST_UTIL_H
#define KILN_TEST_UTIL_H

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

// Exit code CTest reports as "skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt).
#define KILN_TEST_SKIP 77

// Path of the default model (SmolLM2-135M-Instruct.Q4_1.gguf): $KILN_MODEL,
// else $KILN_CACHE/..., else ~/.cache/kiln/...; NULL when the file is absent.
static inline const char *kiln_test_model_path(void) {
    static char path[PATH_MAX];
    const char *env = getenv("KILN_MODEL");
    if (env && *env) return access(env, R_OK) == 0 ? env : NULL;
    const char *cache = getenv("KILN_CACHE");
    if (cache && *cache) {
        snprintf(path, sizeof path, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    } else {
        const char *home = getenv("HOME");
        snprintf(path, sizeof path, "%s/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf", home ? home : "");
    }
    return access(path, R_OK) == 0 ? path : NULL;
}

// Skips the whole test program, visibly, when the model is missing.
#define KILN_REQUIRE_MODEL(var)                                                          \
    const char *var = kiln_test_model_path();                                            \
    if (!var) {                                                                          \
        fprintf(stderr, "SKIP: default model not found (run scripts/fetch-model.sh)\n"); \
        return KILN_TEST_SKIP;                                                           \
    }

#endif
