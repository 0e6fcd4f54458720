// One forward step over several sequences at different positions (the
// design in-flight batching relies on) gives each sequence the logits it gets
// when run alone.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/session.h"
#include "test_util.h"

static kiln_model *model;

static int setup(void **state) {
    (void)state;
    const char *path = kiln_test_model_path();
    if (!path) return 0;
    kiln_model_params mp = {0};
    return kiln_model_load(path, &mp, &model) == KILN_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kiln_model_free(model);
    return 0;
}

static void fill(int32_t *ids, int n, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 200 + (int32_t)(seed % 40000u);
    }
}

// Logits of the last token of `ids` followed by one more token, run alone.
static void run_alone(const int32_t *ids, int n, int32_t next, float *prefill_logits, float *decode_logits) {
    kiln_session *s;
    const float *l;
    int vocab = kiln_model_vocab_size(model);
    assert_int_equal(kiln_session_create(model, 64, &s), KILN_OK);
    assert_int_equal(kiln_session_eval(s, ids, (size_t)n, &l), KILN_OK);
    memcpy(prefill_logits, l, sizeof(float) * vocab);
    assert_int_equal(kiln_session_eval(s, &next, 1, &l), KILN_OK);
    memcpy(decode_logits, l, sizeof(float) * vocab);
    kiln_session_free(s);
}

// The quantized kernels round each token's activations on their own, so
// batching changes nothing but the order of float sums: 1e-3 on logits of
// magnitude ~20.
static void expect_close(const float *a, const float *b, int n, const char *what) {
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    printf("  %s: max |diff| %.3g\n", what, worst);
    assert_true(worst < 1e-3);
}

static void test_two_sequences_in_one_batch(void **state) {
    (void)state;
    if (!model) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    const kiln_llm *m = model->llm;
    const int vocab = m->hp.vocab, na = 21, nb = 7;
    int32_t a[21], b[7], next[2] = {901, 17};
    fill(a, na, 1);
    fill(b, nb, 2);
    float *alone = malloc(sizeof(float) * vocab * 4), *batched = malloc(sizeof(float) * vocab * 2);
    run_alone(a, na, next[0], alone, alone + vocab);
    run_alone(b, nb, next[1], alone + 2 * vocab, alone + 3 * vocab);

    kiln_kv_cache *kv;
    kiln_activations act;
    assert_int_equal(kiln_kv_cache_create(model->be, &m->hp, 128, 2, 128, KILN_F32, &kv), KILN_OK);
    assert_int_equal(kiln_activations_create(model->be, &m->hp, na + nb, &act), KILN_OK);
    // Sequence 1 takes its block first so the two sequences' blocks interleave.
    assert_int_equal(kiln_kv_cache_reserve(kv, 1, nb + 1), KILN_OK);
    assert_int_equal(kiln_kv_cache_reserve(kv, 0, na + 1), KILN_OK);
    int32_t tokens[28], pos[28], seq[28], rows[2] = {na - 1, na + nb - 1};
    for (int i = 0; i < na; i++) tokens[i] = a[i], pos[i] = i, seq[i] = 0;
    for (int i = 0; i < nb; i++) tokens[na + i] = b[i], pos[na + i] = i, seq[na + i] = 1;
    kiln_forward_args args = {.n_tokens = na + nb, .tokens = tokens, .pos = pos, .seq = seq, .kv = &kv->view,
                              .kv_layers = kv->layers, .n_logits = 2, .logit_rows = rows, .logits = batched};
    assert_int_equal(kiln_llama_forward(m, &model->weights.w, model->be, &act, &args), KILN_OK);
    expect_close(batched, alone, vocab, "sequence 0 prompt, batched with sequence 1");
    expect_close(batched + vocab, alone + 2 * vocab, vocab, "sequence 1 prompt, batched with sequence 0");

    // One decode step for both, at positions 21 and 7.
    int32_t dpos[2] = {na, nb}, dseq[2] = {0, 1}, drows[2] = {0, 1};
    args = (kiln_forward_args){.n_tokens = 2, .tokens = next, .pos = dpos, .seq = dseq, .kv = &kv->view,
                               .kv_layers = kv->layers, .n_logits = 2, .logit_rows = drows, .logits = batched};
    assert_int_equal(kiln_llama_forward(m, &model->weights.w, model->be, &act, &args), KILN_OK);
    expect_close(batched, alone + vocab, vocab, "sequence 0 decode step, batched");
    expect_close(batched + vocab, alone + 3 * vocab, vocab, "sequence 1 decode step, batched");

    kiln_activations_free(model->be, &act);
    kiln_kv_cache_free(kv);
    free(alone);
    free(batched);
}

static void test_bad_batches_rejected(void **state) {
    (void)state;
    if (!model) skip();
    const kiln_llm *m = model->llm;
    kiln_kv_cache *kv;
    kiln_activations act;
    float logits[1];
    assert_int_equal(kiln_kv_cache_create(model->be, &m->hp, 16, 1, 16, KILN_F32, &kv), KILN_OK);
    assert_int_equal(kiln_activations_create(model->be, &m->hp, 2, &act), KILN_OK);
    int32_t tokens[3] = {1, m->hp.vocab, 2}, pos[3] = {0, 1, 2}, seq[3] = {0};
    kiln_forward_args args = {.n_tokens = 2, .tokens = tokens, .pos = pos, .seq = seq, .kv = &kv->view,
                              .kv_layers = kv->layers, .logits = logits};
    assert_int_equal(kiln_llama_forward(m, &model->weights.w, model->be, &act, &args), KILN_ERR_INVALID_ARG); // id == vocab
    assert_non_null(strstr(kiln_last_error(), "out of range"));
    args.n_tokens = 3; // more than the activations hold
    assert_int_equal(kiln_llama_forward(m, &model->weights.w, model->be, &act, &args), KILN_ERR_INVALID_ARG);
    kiln_activations_free(model->be, &act);
    kiln_kv_cache_free(kv);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_sequences_in_one_batch),
        cmocka_unit_test(test_bad_batches_rejected),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
