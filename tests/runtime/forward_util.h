// Logits at every position of a prompt, through the forward pass directly
// (the public API only returns the last row). Include after <cmocka.h>.
#ifndef KILN_TEST_FORWARD_UTIL_H
#define KILN_TEST_FORWARD_UTIL_H

#include <stdlib.h>

#include "runtime/session.h"

// Returns [n][vocab] floats (malloc'd) for the n tokens in ids, run as one batch.
static inline float *kiln_test_all_logits(kiln_model *model, const int32_t *ids, int n) {
    const kiln_llm *m = model->llm;
    const int vocab = m->hp.vocab;
    kiln_kv_cache *kv;
    kiln_activations act;
    assert_int_equal(kiln_kv_cache_create(model->be, &m->hp, n, 1, KILN_F32, &kv), KILN_OK);
    assert_int_equal(kiln_kv_cache_reserve(kv, 0, n), KILN_OK);
    assert_int_equal(kiln_activations_create(model->be, &m->hp, n, &act), KILN_OK);
    float *logits = malloc(sizeof(float) * (size_t)n * vocab);
    int32_t *pos = malloc(sizeof(int32_t) * n), *seq = calloc((size_t)n, sizeof(int32_t)),
            *rows = malloc(sizeof(int32_t) * n);
    assert_true(logits && pos && seq && rows);
    for (int i = 0; i < n; i++) pos[i] = rows[i] = i;
    kiln_forward_args args = {.n_tokens = n, .tokens = ids, .pos = pos, .seq = seq, .kv = &kv->view,
                              .kv_layers = kv->layers, .n_logits = n, .logit_rows = rows, .logits = logits};
    assert_int_equal(kiln_llama_forward(m, &model->weights.w, model->be, &act, &args), KILN_OK);
    free(pos);
    free(seq);
    free(rows);
    kiln_activations_free(model->be, &act);
    kiln_kv_cache_free(kv);
    return logits;
}

#endif
