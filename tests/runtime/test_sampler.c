// Sampler: each filter against its definition, distributions against the
// softmax they should follow, and seed reproducibility.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
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

static void test_greedy_is_argmax(void **state) {
    (void)state;
    float logits[6] = {0.1f, 3.0f, -2.0f, 2.9f, 3.0f, 0.0f};
    kiln_sampler *s = make(6, plain(0.0f));
    // Ties go to the lower id, as an argmax does.
    assert_int_equal(kiln_sampler_sample(s, logits, NULL, 0), 1);
    kiln_sampler_free(s);
}

// Counts of 40000 draws must match the softmax within 5 standard deviations.
static void check_distribution(kiln_sampling_params p, const float *logits, int vocab, const double *expected) {
    enum { DRAWS = 40000 };
    kiln_sampler *s = make(vocab, p);
    int counts[16] = {0};
    for (int i = 0; i < DRAWS; i++) counts[kiln_sampler_sample(s, logits, NULL, 0)]++;
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
        int32_t x = kiln_sampler_sample(a, logits, NULL, 0), y = kiln_sampler_sample(b, logits, NULL, 0);
        assert_int_equal(x, y);
        differ += x != kiln_sampler_sample(c, logits, NULL, 0);
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
    assert_int_equal(kiln_sampler_sample(s, logits, history, 3), 1);
    kiln_sampler_free(s);
    p = plain(0.0f);
    p.frequency_penalty = 0.06f; // 2.0 - 2 * 0.06 = 1.88 < 1.9
    s = make(3, p);
    assert_int_equal(kiln_sampler_sample(s, logits, history, 3), 1);
    kiln_sampler_free(s);
    p = plain(0.0f);
    p.presence_penalty = 0.11f; // 2.0 - 0.11 = 1.89 < 1.9
    s = make(3, p);
    assert_int_equal(kiln_sampler_sample(s, logits, history, 3), 1);
    // Outside the window the penalty no longer applies.
    kiln_sampler_free(s);
    p.penalty_last_n = 1;
    int32_t old[3] = {0, 2, 2};
    s = make(3, p);
    assert_int_equal(kiln_sampler_sample(s, logits, old, 3), 0);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_is_argmax),        cmocka_unit_test(test_temperature_follows_softmax),
        cmocka_unit_test(test_top_k_keeps_k_best),      cmocka_unit_test(test_top_p_keeps_smallest_prefix),
        cmocka_unit_test(test_min_p_drops_unlikely),    cmocka_unit_test(test_same_seed_same_tokens),
        cmocka_unit_test(test_penalties),               cmocka_unit_test(test_bad_params_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
