// Logits at every position of a prompt, through the forward pass directly
// (the public API only returns the last row). Include after <cmocka.h>.
#ifndef KILN_TEST_FORWARD_UTIL_H
#define KILN_TEST_FORWARD_UTIL_H

#include <stdlib.h>

#include "runtime/session.h"

// Returns [n][vocab] floats (malloc'd) for the n tokens in ids, run through
// the forward pass in steps of `chunk` tokens (later steps attend to the
// earlier ones in the cache), on whatever backend the model is bound to.
static inline float *kiln_test_all_logits_chunked(kiln_model *model, const int32_t *ids, int n, int chunk) {
    const kiln_llm *m = model->llm;
    kiln_backend *be = model->be;
    const int vocab = m->hp.vocab;
    kiln_kv_cache *kv;
    kiln_activations act;
    assert_int_equal(kiln_kv_cache_create(be, &m->hp, n, 1, n, be->kv_dtype, &kv), KILN_OK);
    assert_int_equal(kiln_kv_cache_reserve(kv, 0, n), KILN_OK);
    assert_int_equal(kiln_activations_create(be, &m->hp, chunk, &act), KILN_OK);
    float *dev = be->ops->alloc(be, sizeof(float) * (size_t)chunk * vocab);
    float *logits = malloc(sizeof(float) * (size_t)n * vocab);
    int32_t *pos = malloc(sizeof(int32_t) * chunk), *seq = calloc((size_t)chunk, sizeof(int32_t)),
            *rows = malloc(sizeof(int32_t) * chunk);
    assert_true(dev && logits && pos && seq && rows);
    for (int done = 0; done < n; done += chunk) {
        int c = n - done < chunk ? n - done : chunk;
        for (int i = 0; i < c; i++) pos[i] = done + i, rows[i] = i;
        kiln_forward_args args = {.n_tokens = c, .tokens = ids + done, .pos = pos, .seq = seq, .kv = &kv->view,
                                  .kv_layers = kv->layers, .n_logits = c, .logit_rows = rows, .logits = dev};
        assert_int_equal(kiln_llama_forward(m, &model->weights.w, be, &act, &args), KILN_OK);
        be->ops->to_host(be, logits + (size_t)done * vocab, dev, sizeof(float) * (size_t)c * vocab);
        assert_int_equal(be->ops->sync(be), KILN_OK);
    }
    free(pos);
    free(seq);
    free(rows);
    be->ops->free(be, dev);
    kiln_activations_free(be, &act);
    kiln_kv_cache_free(kv);
    return logits;
}

// The same in one step.
static inline float *kiln_test_all_logits(kiln_model *model, const int32_t *ids, int n) {
    return kiln_test_all_logits_chunked(model, ids, n, n);
}

#endif
