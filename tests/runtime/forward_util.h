// Logits at every position of a prompt, through the engine (sessions only
// return the last row). Include after <cmocka.h>.
#ifndef KILN_TEST_FORWARD_UTIL_H
#define KILN_TEST_FORWARD_UTIL_H

#include <stdbool.h>
#include <stdlib.h>

#include "kiln.h"

// Returns [n][vocab] floats (malloc'd) for the n tokens in ids, run in steps
// of `chunk` tokens (later steps attend to the earlier ones in the cache),
// on whatever backend the model is bound to, with these kernel options.
static inline float *kiln_test_all_logits_with(kiln_model *model, const int32_t *ids, int n, int chunk,
                                               kiln_kernel_options kernels) {
    const int vocab = kiln_model_vocab_size(model);
    kiln_engine *e;
    const kiln_engine_options o = {.max_seq_len = n, .max_step_tokens = chunk, .max_logit_rows = chunk,
                                   .kernels = kernels};
    assert_int_equal(kiln_engine_create(model, &o, &e), KILN_OK);
    float *logits = malloc(sizeof(float) * (size_t)n * vocab);
    int32_t *pos = malloc(sizeof(int32_t) * chunk), *seq = calloc((size_t)chunk, sizeof(int32_t));
    bool *all = malloc(sizeof(bool) * chunk);
    assert_true(logits && pos && seq && all);
    for (int i = 0; i < chunk; i++) all[i] = true;
    for (int done = 0; done < n; done += chunk) {
        int c = n - done < chunk ? n - done : chunk;
        for (int i = 0; i < c; i++) pos[i] = done + i;
        const kiln_batch b = {.n_tokens = c, .tokens = ids + done, .pos = pos, .seq = seq, .logits = all};
        assert_int_equal(kiln_engine_step(e, &b), KILN_OK);
        for (int i = 0; i < c; i++) {
            const float *row;
            assert_int_equal(kiln_engine_logits(e, i, &row), KILN_OK);
            memcpy(logits + (size_t)(done + i) * vocab, row, sizeof(float) * (size_t)vocab);
        }
    }
    free(pos);
    free(seq);
    free(all);
    kiln_engine_free(e);
    return logits;
}

// The same with the default kernel options.
static inline float *kiln_test_all_logits_chunked(kiln_model *model, const int32_t *ids, int n, int chunk) {
    return kiln_test_all_logits_with(model, ids, n, chunk, (kiln_kernel_options){0});
}

// The same in one step.
static inline float *kiln_test_all_logits(kiln_model *model, const int32_t *ids, int n) {
    return kiln_test_all_logits_chunked(model, ids, n, n);
}

#endif
