// Sampler: each filter against its definition, distributions against the
// softmax they should follow, and seed reproducibility.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "runtime/sampler.h"

static kiln_sampling_params plain(float temperature) {
    return (kiln_sampling_params){.temperature = temperature, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                                  .repetition_penalty = 1.0f, .penalty_last_n = 64, .seed = 42};
}

static kiln_sampler *make(int vocab, kiln_sampling_params p) {
    kiln_sampler *s = NULL;
    assert_int_equal(kiln_sampler_create(vocab, &p, &s), KILN_OK);
    return s;
}

// One draw; the sampler must succeed.
static int32_t draw(kiln_sampler *s, const float *logits, const int32_t *history, int n_history) {
    int32_t id = -2;
    kiln_status st = kiln_sampler_sample(s, logits, history, n_history, &id);
    if (st != KILN_OK) fail_msg("sample failed: %s", kiln_last_error());
    return id;
}

static void test_greedy_is_argmax(void **state) {
    (void)state;
    float logits[6] = {0.1f, 3.0f, -2.0f, 2.9f, 3.0f, 0.0f};
    kiln_sampler *s = make(6, plain(0.0f));
    // Ties go to the lower id, as an argmax does.
    assert_int_equal(draw(s, logits, NULL, 0), 1);
    kiln_sampler_free(s);
}

// Counts of 40000 draws must match the softmax within 5 standard deviations.
static void check_distribution(kiln_sampling_params p, const float *logits, int vocab, const double *expected) {
    enum { DRAWS = 40000 };
    kiln_sampler *s = make(vocab, p);
    int counts[16] = {0};
    for (int i = 0; i < DRAWS; i++) counts[draw(s, logits, NULL, 0)]++;
    for (int i = 0; i < vocab; i++) {
        double mean = expected[i] * DRAWS, sd = sqrt(DRAWS * expected[i] * (1 - expected[i]));
        if (expected[i] == 0.0) {
            assert_int_equal(counts[i], 0);
        } else if (fabs(counts[i] - mean) > 5 * sd + 1) {
            fail_msg("token %d drawn %d times, expected %.1f +- %.1f", i, counts[i], mean, sd);
        }
    }
    kiln_sampler_free(s);
}

static void softmax(const float *logits, int n, float t, double *out) {
    double total = 0;
    for (int i = 0; i < n; i++) total += exp(logits[i] / t);
    for (int i = 0; i < n; i++) out[i] = exp(logits[i] / t) / total;
}

static void test_temperature_follows_softmax(void **state) {
    (void)state;
    float logits[5] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    double expected[5];
    softmax(logits, 5, 0.7f, expected);
    check_distribution(plain(0.7f), logits, 5, expected);
}

static void test_top_k_keeps_k_best(void **state) {
    (void)state;
    float logits[5] = {1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
    kiln_sampling_params p = plain(1.0f);
    p.top_k = 2;
    double kept[2] = {exp(2.0), exp(1.5)}, expected[5] = {0};
    expected[1] = kept[0] / (kept[0] + kept[1]);
    expected[4] = kept[1] / (kept[0] + kept[1]);
    check_distribution(p, logits, 5, expected);
}

static void test_top_p_keeps_smallest_prefix(void **state) {
    (void)state;
    // Probabilities 0.5, 0.3, 0.2 (logits are their logs): top-p 0.7 keeps
    // the first two (0.5 < 0.7 <= 0.8).
    float logits[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    kiln_sampling_params p = plain(1.0f);
    p.top_p = 0.7f;
    double expected[3] = {0.5 / 0.8, 0.3 / 0.8, 0.0};
    check_distribution(p, logits, 3, expected);
}

static void test_min_p_drops_unlikely(void **state) {
    (void)state;
    float logits[4] = {logf(0.5f), logf(0.3f), logf(0.15f), logf(0.05f)};
    kiln_sampling_params p = plain(1.0f);
    p.min_p = 0.2f; // cut at 0.1: keeps 0.5, 0.3, 0.15
    double expected[4] = {0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0};
    check_distribution(p, logits, 4, expected);
}

static void test_same_seed_same_tokens(void **state) {
    (void)state;
    float logits[8] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f};
    kiln_sampler *a = make(8, plain(1.0f)), *b = make(8, plain(1.0f));
    kiln_sampling_params other = plain(1.0f);
    other.seed = 43;
    kiln_sampler *c = make(8, other);
    int differ = 0;
    for (int i = 0; i < 200; i++) {
        int32_t x = draw(a, logits, NULL, 0), y = draw(b, logits, NULL, 0);
        assert_int_equal(x, y);
        differ += x != draw(c, logits, NULL, 0);
    }
    assert_true(differ > 50); // another seed gives another sequence
    kiln_sampler_free(a);
    kiln_sampler_free(b);
    kiln_sampler_free(c);
}

static void test_penalties(void **state) {
    (void)state;
    // Token 0 leads by a little; having been seen twice, each penalty alone
    // must hand the greedy choice to token 1.
    float logits[3] = {2.0f, 1.9f, -5.0f};
    int32_t history[3] = {0, 2, 0};
    kiln_sampling_params p = plain(0.0f);
    p.repetition_penalty = 1.1f; // 2.0 / 1.1 = 1.82 < 1.9
    kiln_sampler *s = make(3, p);
    assert_int_equal(draw(s, logits, history, 3), 1);
    kiln_sampler_free(s);
    p = plain(0.0f);
    p.frequency_penalty = 0.06f; // 2.0 - 2 * 0.06 = 1.88 < 1.9
    s = make(3, p);
    assert_int_equal(draw(s, logits, history, 3), 1);
    kiln_sampler_free(s);
    p = plain(0.0f);
    p.presence_penalty = 0.11f; // 2.0 - 0.11 = 1.89 < 1.9
    s = make(3, p);
    assert_int_equal(draw(s, logits, history, 3), 1);
    // Outside the window the penalty no longer applies.
    kiln_sampler_free(s);
    p.penalty_last_n = 1;
    int32_t old[3] = {0, 2, 2};
    s = make(3, p);
    assert_int_equal(draw(s, logits, old, 3), 0);
    kiln_sampler_free(s);
}

static void test_bad_params_rejected(void **state) {
    (void)state;
    kiln_sampling_params bad[] = {plain(-1.0f), plain(1.0f), plain(1.0f), plain(1.0f)};
    bad[1].top_p = 0.0f;
    bad[2].min_p = 1.5f;
    bad[3].repetition_penalty = 0.0f;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        kiln_sampler *s = NULL;
        assert_int_equal(kiln_sampler_create(4, &bad[i], &s), KILN_ERR_INVALID_ARG);
        assert_null(s);
    }
}

// Every sampling rule the CLI can ask for: greedy, plain temperature, and
// temperature with each filter and the penalties.
static kiln_sampling_params all_rules[6];

static void make_rules(void) {
    for (int i = 0; i < 6; i++) all_rules[i] = plain(i == 0 ? 0.0f : 0.8f);
    all_rules[2].top_k = 2;
    all_rules[3].top_p = 0.5f;
    all_rules[4].min_p = 0.3f;
    all_rules[5].repetition_penalty = 1.3f;
    all_rules[5].frequency_penalty = 0.5f;
}

// Must fail with KILN_ERR_FORMAT and the non-finite message, under every rule,
// leaving *id at -1 (never an id a caller could take for a token).
static void expect_refused(const float *logits, int vocab, const char *detail) {
    const int32_t history[2] = {0, 1};
    for (int r = 0; r < 6; r++) {
        kiln_sampler *s = make(vocab, all_rules[r]);
        for (int k = 0; k < 3; k++) { // the state after a refusal is sound too
            int32_t id = 12345;
            kiln_status st = kiln_sampler_sample(s, logits, history, 2, &id);
            if (st != KILN_ERR_FORMAT) fail_msg("rule %d: status %d (id %d), expected a refusal", r, st, id);
            assert_int_equal(id, -1);
            const char *msg = kiln_last_error();
            if (!strstr(msg, "non-finite logits") || !strstr(msg, "weights are likely corrupt") ||
                !strstr(msg, detail))
                fail_msg("rule %d: message \"%s\" should say non-finite logits and \"%s\"", r, msg, detail);
        }
        kiln_sampler_free(s);
    }
}

static void test_all_nan_refused(void **state) {
    (void)state;
    enum { V = 1000 }; // more than the sort's 40-nat window could hold by luck
    static float logits[V];
    for (int i = 0; i < V; i++) logits[i] = NAN;
    expect_refused(logits, V, "token 0 is NaN");
    for (int i = 0; i < V; i++) logits[i] = -NAN; // the sign bit set, as some kernels produce
    expect_refused(logits, V, "token 0 is NaN");
}

static void test_some_nan_refused(void **state) {
    (void)state;
    float logits[8] = {1.0f, 2.0f, 3.0f, 0.5f, -1.0f, 2.5f, 0.0f, 1.5f};
    logits[6] = NAN; // not the best: the argmax alone would never see it
    expect_refused(logits, 8, "token 6 is NaN");
    logits[6] = 0.0f;
    logits[7] = NAN; // the last one
    expect_refused(logits, 8, "token 7 is NaN");
}

static void test_infinities(void **state) {
    (void)state;
    float logits[5] = {1.0f, INFINITY, 3.0f, 0.5f, -1.0f};
    expect_refused(logits, 5, "token 1 is +infinity");
    // -infinity is probability 0: never drawn, the others still are.
    float masked[5] = {-INFINITY, 1.0f, -INFINITY, 0.5f, -INFINITY};
    for (int r = 0; r < 6; r++) {
        kiln_sampler *s = make(5, all_rules[r]);
        const int32_t history[2] = {0, 1};
        for (int k = 0; k < 200; k++) {
            int32_t id = draw(s, masked, history, 2);
            assert_true(id == 1 || id == 3);
        }
        kiln_sampler_free(s);
    }
    // Nothing but -infinity leaves no candidate.
    float none[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    expect_refused(none, 5, "every logit is -infinity");
}

// Huge finite logits or a tiny temperature overflow the scaled logits; the
// draw must still be a real token (the best: the limit of T -> 0).
static void test_overflow_is_greedy(void **state) {
    (void)state;
    float logits[4] = {-3e38f, 1e38f, 3e38f, 0.0f};
    kiln_sampling_params p = plain(1e-3f);
    kiln_sampler *s = make(4, p);
    for (int k = 0; k < 10; k++) assert_int_equal(draw(s, logits, NULL, 0), 2);
    kiln_sampler_free(s);
    float small[3] = {0.0f, 1.0f, 0.5f};
    s = make(3, plain(1e-45f)); // 1 / temperature is infinite
    for (int k = 0; k < 10; k++) assert_int_equal(draw(s, small, NULL, 0), 1);
    kiln_sampler_free(s);
}

int main(void) {
    make_rules();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),        cmocka_unit_test(test_temperature_follows_softmax),
        cmocka_unit_test(test_top_k_keeps_k_best),      cmocka_unit_test(test_top_p_keeps_smallest_prefix),
        cmocka_unit_test(test_min_p_drops_unlikely),    cmocka_unit_test(test_same_seed_same_tokens),
        cmocka_unit_test(test_penalties),               cmocka_unit_test(test_bad_params_rejected),
        cmocka_unit_test(test_all_nan_refused),         cmocka_unit_test(test_some_nan_refused),
        cmocka_unit_test(test_infinities),              cmocka_unit_test(test_overflow_is_greedy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
