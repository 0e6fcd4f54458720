// The engine (kiln_engine_step): one step over several sequences at
// different positions gives each sequence the logits it gets alone (a
// session, the reference), shared prefixes are stored once and copied only
// when written, and bad batches are refused with a message.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln.h"
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

#define NEED_MODEL()                                                                                               \
    do {                                                                                                           \
        if (!model) {                                                                                              \
            printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");                               \
            skip();                                                                                                \
        }                                                                                                          \
    } while (0)

static void fill(int32_t *ids, int n, uint32_t seed) {
    for (int i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        ids[i] = 200 + (int32_t)(seed % 40000u);
    }
}

// Logits after ids[0..n) run alone in a session, then after each of `more`.
static float *run_alone(const int32_t *ids, int n, const int32_t *more, int n_more) {
    const int vocab = kiln_model_vocab_size(model);
    float *out = malloc(sizeof(float) * (size_t)vocab * (size_t)(1 + n_more));
    kiln_session *s;
    const float *l;
    assert_int_equal(kiln_session_create(model, 128, &s), KILN_OK);
    assert_int_equal(kiln_session_eval(s, ids, (size_t)n, &l), KILN_OK);
    memcpy(out, l, sizeof(float) * (size_t)vocab);
    for (int i = 0; i < n_more; i++) {
        assert_int_equal(kiln_session_eval(s, &more[i], 1, &l), KILN_OK);
        memcpy(out + (size_t)(i + 1) * vocab, l, sizeof(float) * (size_t)vocab);
    }
    kiln_session_free(s);
    return out;
}

// The quantized kernels round each token's activations on their own, so
// batching changes nothing but the order of float sums: 1e-3 on logits of
// magnitude ~20.
static void expect_close(const float *a, const float *b, const char *what) {
    const int n = kiln_model_vocab_size(model);
    double worst = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i]));
    printf("  %s: max |diff| %.3g\n", what, worst);
    assert_true(worst < 1e-3);
}

static void expect_row(kiln_engine *e, int row, const float *want, const char *what) {
    const float *l;
    assert_int_equal(kiln_engine_logits(e, row, &l), KILN_OK);
    expect_close(l, want, what);
}

// One step of `n` tokens of sequence s from position p; logits of the last.
static void step_seq(kiln_engine *e, int s, int p, const int32_t *ids, int n) {
    int32_t pos[64], seq[64];
    assert_true(n <= 64);
    for (int i = 0; i < n; i++) pos[i] = p + i, seq[i] = s;
    const kiln_batch b = {.n_tokens = n, .tokens = ids, .pos = pos, .seq = seq};
    assert_int_equal(kiln_engine_step(e, &b), KILN_OK);
}

static void test_two_sequences_in_one_step(void **state) {
    (void)state;
    NEED_MODEL();
    const int na = 21, nb = 7;
    int32_t a[21], b[7], next[2] = {901, 17};
    fill(a, na, 1);
    fill(b, nb, 2);
    float *alone_a = run_alone(a, na, &next[0], 1), *alone_b = run_alone(b, nb, &next[1], 1);
    const int vocab = kiln_model_vocab_size(model);
    kiln_engine *e;
    const kiln_engine_options o = {.max_seqs = 2, .max_seq_len = 64};
    assert_int_equal(kiln_engine_create(model, &o, &e), KILN_OK);
    // Sequence 1 takes its blocks first so the two sequences' blocks interleave.
    step_seq(e, 1, 0, b, 1);
    int32_t tokens[28], pos[28], seq[28];
    bool want[28] = {false};
    for (int i = 0; i < na; i++) tokens[i] = a[i], pos[i] = i, seq[i] = 0;
    for (int i = 0; i < nb; i++) tokens[na + i] = b[i], pos[na + i] = i, seq[na + i] = 1; // rewrites position 0
    want[na - 1] = want[na + nb - 1] = true;
    kiln_batch batch = {.n_tokens = na + nb, .tokens = tokens, .pos = pos, .seq = seq, .logits = want};
    assert_int_equal(kiln_engine_step(e, &batch), KILN_OK);
    expect_row(e, 0, alone_a, "sequence 0 prompt, batched with sequence 1");
    expect_row(e, 1, alone_b, "sequence 1 prompt, batched with sequence 0");
    assert_int_equal(kiln_engine_seq_length(e, 0), na);
    assert_int_equal(kiln_engine_seq_length(e, 1), nb);

    // One decode step for both, at positions 21 and 7, twice (the second is
    // replayed from a graph where the backend has graphs).
    for (int round = 0; round < 2; round++) {
        int32_t dpos[2] = {na, nb}, dseq[2] = {0, 1};
        bool both[2] = {true, true};
        batch = (kiln_batch){.n_tokens = 2, .tokens = next, .pos = dpos, .seq = dseq, .logits = both};
        assert_int_equal(kiln_engine_step(e, &batch), KILN_OK);
        expect_row(e, 0, alone_a + vocab, "sequence 0 decode step, batched");
        expect_row(e, 1, alone_b + vocab, "sequence 1 decode step, batched");
    }
    kiln_engine_free(e);
    free(alone_a);
    free(alone_b);
}

// Two continuations of one prompt: the second sequence shares the prompt's
// blocks (37 tokens: two whole blocks and part of a third), each writes on
// past it, and both get what they would alone. The shared part is stored
// once; the partly filled block is copied when the second writes into it.
static void test_shared_prefix(void **state) {
    (void)state;
    NEED_MODEL();
    const int n = 37;
    int32_t prompt[37], x[3] = {5001, 77, 1234}, y[3] = {312, 9999, 42};
    fill(prompt, n, 3);
    float *alone_x = run_alone(prompt, n, x, 3), *alone_y = run_alone(prompt, n, y, 3);
    const int vocab = kiln_model_vocab_size(model);
    kiln_engine *e;
    const kiln_engine_options o = {.max_seqs = 2, .max_seq_len = 64, .kv_pool_tokens = 128};
    assert_int_equal(kiln_engine_create(model, &o, &e), KILN_OK);
    assert_int_equal(kiln_engine_free_slots(e), 128);
    step_seq(e, 0, 0, prompt, n);
    expect_row(e, 0, alone_x, "the prompt");
    assert_int_equal(kiln_engine_free_slots(e), 128 - 48); // 3 blocks of 16
    assert_int_equal(kiln_engine_seq_share(e, 0, 1, n), KILN_OK);
    assert_int_equal(kiln_engine_seq_length(e, 1), n);
    assert_int_equal(kiln_engine_free_slots(e), 128 - 48); // nothing copied yet
    for (int i = 0; i < 3; i++) {
        step_seq(e, 1, n + i, &y[i], 1); // the first write copies the shared third block
        expect_row(e, 0, alone_y + (size_t)(i + 1) * vocab, "the second continuation");
        if (i == 0) assert_int_equal(kiln_engine_free_slots(e), 128 - 64);
        step_seq(e, 0, n + i, &x[i], 1); // sequence 0 still sees its own third block
        expect_row(e, 0, alone_x + (size_t)(i + 1) * vocab, "the first continuation, after the second wrote");
    }
    // Emptying both gives every block back.
    assert_int_equal(kiln_engine_seq_truncate(e, 0, 0), KILN_OK);
    assert_int_equal(kiln_engine_free_slots(e), 128 - 48); // sequence 1 still holds the two shared and its own
    assert_int_equal(kiln_engine_seq_truncate(e, 1, 0), KILN_OK);
    assert_int_equal(kiln_engine_free_slots(e), 128);
    kiln_engine_free(e);
    free(alone_x);
    free(alone_y);
}

// A step that starts inside a sequence replaces what followed: the result
// is that of the new tokens alone.
static void test_rewrite_from_a_position(void **state) {
    (void)state;
    NEED_MODEL();
    int32_t a[30], b[30];
    fill(a, 30, 4);
    memcpy(b, a, sizeof a);
    fill(b + 18, 12, 5);
    float *alone_b = run_alone(b, 30, NULL, 0);
    kiln_engine *e;
    assert_int_equal(kiln_engine_create(model, &(kiln_engine_options){.max_seq_len = 64}, &e), KILN_OK);
    step_seq(e, 0, 0, a, 30);
    step_seq(e, 0, 18, b + 18, 12);
    assert_int_equal(kiln_engine_seq_length(e, 0), 30);
    expect_row(e, 0, alone_b, "positions 18.. rewritten");
    kiln_engine_free(e);
    free(alone_b);
}

static void expect_refused(kiln_engine *e, const kiln_batch *b, kiln_status want, const char *message) {
    assert_int_equal(kiln_engine_step(e, b), want);
    printf("  refused: %s\n", kiln_last_error());
    assert_non_null(strstr(kiln_last_error(), message));
}

static void test_bad_batches_refused(void **state) {
    (void)state;
    NEED_MODEL();
    kiln_engine *e;
    const kiln_engine_options o = {.max_seqs = 2, .max_seq_len = 32, .max_step_tokens = 8, .kv_pool_tokens = 48};
    assert_int_equal(kiln_engine_create(model, &o, &e), KILN_OK);
    const int vocab = kiln_model_vocab_size(model);
    int32_t tokens[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, pos[9] = {0, 1, 2, 3, 4, 5, 6, 7, 8}, seq[9] = {0};
    kiln_batch b = {.n_tokens = 2, .tokens = tokens, .pos = pos, .seq = seq};
    tokens[1] = vocab;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "out of range");
    tokens[1] = -1;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "out of range");
    tokens[1] = 2;
    b.n_tokens = 9;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "1 to 8 a step");
    b.n_tokens = 0;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "1 to 8 a step");
    b.n_tokens = 3;
    seq[1] = 2;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "sequence 2 outside");
    seq[1] = 1, seq[2] = 0, pos[1] = 0, pos[2] = 1;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "not contiguous");
    seq[1] = seq[2] = 0, pos[1] = 2, pos[2] = 3;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "not 1");
    pos[0] = 1, pos[1] = 2, pos[2] = 3;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "leaves a gap");
    pos[0] = 0, pos[1] = 1, pos[2] = 2;
    bool all[3] = {true, true, true};
    b.logits = all; // 3 logit rows, at most max_seqs (2)
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "at most 2");
    b.logits = NULL;
    b.tokens = NULL;
    expect_refused(e, &b, KILN_ERR_INVALID_ARG, "required");
    b.tokens = tokens;
    assert_int_equal(kiln_engine_step(e, &b), KILN_OK); // the same batch, corrected
    const float *l;
    assert_int_equal(kiln_engine_logits(e, 0, &l), KILN_OK);
    assert_int_equal(kiln_engine_logits(e, 1, &l), KILN_ERR_INVALID_ARG);
    // Sequence 0 to its end (32), then one more position.
    for (int p = 3; p < 32; p += 8) {
        for (int i = 0; i < 8; i++) pos[i] = p + i, seq[i] = 0;
        b.n_tokens = p + 8 <= 32 ? 8 : 32 - p;
        assert_int_equal(kiln_engine_step(e, &b), KILN_OK);
    }
    assert_int_equal(kiln_engine_seq_length(e, 0), 32);
    pos[0] = 32;
    b.n_tokens = 1;
    expect_refused(e, &b, KILN_ERR_CONTEXT_FULL, "context full");
    // The pool (48 slots) has one block left: sequence 1 fits 16 tokens, not 17,
    // and what sequence 0 holds is untouched by the refusal.
    for (int i = 0; i < 8; i++) seq[i] = 1, pos[i] = i;
    b.n_tokens = 8;
    assert_int_equal(kiln_engine_step(e, &b), KILN_OK);
    for (int i = 0; i < 8; i++) pos[i] = 8 + i;
    assert_int_equal(kiln_engine_step(e, &b), KILN_OK);
    pos[0] = 16;
    b.n_tokens = 1;
    expect_refused(e, &b, KILN_ERR_CONTEXT_FULL, "free blocks");
    assert_int_equal(kiln_engine_seq_length(e, 0), 32);
    assert_int_equal(kiln_engine_seq_length(e, 1), 16);
    // A refused step that would also have rewritten sequence 0 from position
    // 5 leaves it whole: its blocks are still held, its length still 32.
    assert_int_equal(kiln_engine_free_slots(e), 0);
    int32_t mixed_pos[2] = {5, 16}, mixed_seq[2] = {0, 1};
    const kiln_batch mixed = {.n_tokens = 2, .tokens = tokens, .pos = mixed_pos, .seq = mixed_seq};
    expect_refused(e, &mixed, KILN_ERR_CONTEXT_FULL, "free blocks");
    assert_int_equal(kiln_engine_free_slots(e), 0);
    assert_int_equal(kiln_engine_seq_length(e, 0), 32);
    // The same rewrite alone goes through and gives the blocks past it back.
    const kiln_batch rewrite = {.n_tokens = 1, .tokens = tokens, .pos = mixed_pos, .seq = mixed_seq};
    assert_int_equal(kiln_engine_step(e, &rewrite), KILN_OK);
    assert_int_equal(kiln_engine_seq_length(e, 0), 6);
    assert_int_equal(kiln_engine_free_slots(e), 16);
    assert_int_equal(kiln_engine_seq_share(e, 0, 0, 4), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_engine_seq_share(e, 0, 1, 33), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_engine_seq_truncate(e, 1, 17), KILN_ERR_INVALID_ARG);
    kiln_engine_free(e);
}

static void test_options(void **state) {
    (void)state;
    NEED_MODEL();
    kiln_engine *e;
    assert_int_equal(kiln_engine_create(model, NULL, &e), KILN_OK);
    kiln_engine_options o;
    kiln_engine_get_options(e, &o);
    assert_int_equal(o.max_seqs, 1);
    assert_int_equal(o.max_seq_len, 4096); // min(8192 trained, 4096)
    assert_int_equal(o.kv_pool_tokens, 4096);
    assert_int_equal(o.max_step_tokens, 512); // the CPU's step
    assert_int_equal(o.max_logit_rows, 1);
    assert_int_equal(o.kv_type, KILN_KV_F32);
    kiln_engine_free(e);
    kiln_engine_options bad = {.kv_type = KILN_KV_F16};
    assert_int_equal(kiln_engine_create(model, &bad, &e), KILN_ERR_UNSUPPORTED);
    bad = (kiln_engine_options){.max_seq_len = 100, .kv_pool_tokens = 50};
    assert_int_equal(kiln_engine_create(model, &bad, &e), KILN_ERR_INVALID_ARG);
    // A context whose KV cache is larger than the machine (SmolLM2: 45 KiB a
    // token in F32, 180 GiB at 4M tokens): refused before anything is
    // allocated, with the numbers and the longest context that fits.
    bad = (kiln_engine_options){.max_seq_len = 4194304};
    assert_int_equal(kiln_engine_create(model, &bad, &e), KILN_ERR_NOMEM);
    printf("  refused: %s\n", kiln_last_error());
    assert_non_null(strstr(kiln_last_error(), "the largest context that fits is"));
    assert_non_null(strstr(kiln_last_error(), "(-c "));
    // Far beyond any machine: refused with the numbers before allocating.
    bad = (kiln_engine_options){.max_seqs = 65536, .max_seq_len = 8192};
    assert_int_equal(kiln_engine_create(model, &bad, &e), KILN_ERR_NOMEM);
    printf("  refused: %s\n", kiln_last_error());
    assert_non_null(strstr(kiln_last_error(), "GiB"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_sequences_in_one_step), cmocka_unit_test(test_shared_prefix),
        cmocka_unit_test(test_rewrite_from_a_position),   cmocka_unit_test(test_bad_batches_refused),
        cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
