// The forward pass against transformers (tools/make_reference_fixtures.py):
// logits at every position and 64 greedy tokens, for the GGUF and for Hugging
// Face folders holding the same weights in F32 and BF16 (scripts/make-hf-folders.sh).
// Each model absent here is skipped, visibly.
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "runtime/session.h"
#include "forward_util.h"
#include "test_util.h"

typedef struct ref_prompt {
    uint32_t n_tokens;
    int32_t *ids;
    float *probe;    // [n_tokens][n_probe]
    int32_t *top_ids; // [n_tokens][topk]
    float *top;      // [n_tokens][topk]
    float *last;     // [vocab]
    int32_t *gen;    // [n_gen]
} ref_prompt;

typedef struct reference {
    uint32_t n_prompts, vocab, n_probe, topk, n_gen;
    int32_t *probe_ids;
    ref_prompt prompts[8];
    unsigned char *blob;
} reference;

static bool take(unsigned char **p, const unsigned char *end, size_t n, void **out) {
    if ((size_t)(end - *p) < n) return false;
    *out = *p;
    *p += n;
    return true;
}

static bool load_reference(const char *name, reference *r) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/reference/%s", KILN_FIXTURES, name);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    r->blob = malloc((size_t)size);
    if (fread(r->blob, 1, (size_t)size, f) != (size_t)size) return false;
    fclose(f);
    unsigned char *p = r->blob, *end = r->blob + size;
    void *v;
    if (!take(&p, end, 8, &v) || memcmp(v, "KLNREF1", 8) != 0) return false;
    if (!take(&p, end, 20, &v)) return false;
    memcpy(&r->n_prompts, v, 20);
    if (r->n_prompts > 8) return false;
    if (!take(&p, end, 4 * r->n_probe, (void **)&r->probe_ids)) return false;
    for (uint32_t i = 0; i < r->n_prompts; i++) {
        ref_prompt *q = &r->prompts[i];
        if (!take(&p, end, 4, &v)) return false;
        memcpy(&q->n_tokens, v, 4);
        size_t n = q->n_tokens;
        if (!take(&p, end, 4 * n, (void **)&q->ids)) return false;
        // per position: probe logits, top ids, top logits (interleaved per position)
        q->probe = malloc(4 * n * r->n_probe);
        q->top_ids = malloc(4 * n * r->topk);
        q->top = malloc(4 * n * r->topk);
        for (size_t t = 0; t < n; t++) {
            if (!take(&p, end, 4 * r->n_probe, &v)) return false;
            memcpy(q->probe + t * r->n_probe, v, 4 * r->n_probe);
            if (!take(&p, end, 4 * r->topk, &v)) return false;
            memcpy(q->top_ids + t * r->topk, v, 4 * r->topk);
            if (!take(&p, end, 4 * r->topk, &v)) return false;
            memcpy(q->top + t * r->topk, v, 4 * r->topk);
        }
        if (!take(&p, end, 4 * (size_t)r->vocab, (void **)&q->last)) return false;
        if (!take(&p, end, 4 * (size_t)r->n_gen, (void **)&q->gen)) return false;
    }
    return p == end;
}

static void free_reference(reference *r) {
    for (uint32_t i = 0; i < r->n_prompts; i++) {
        free(r->prompts[i].probe);
        free(r->prompts[i].top_ids);
        free(r->prompts[i].top);
    }
    free(r->blob);
}

typedef struct tolerance {
    const char *why;
    double max_abs;      // on every compared logit, after centring when `centred`
    bool centred;        // compare logits up to a constant shift per position
    double top1_margin;  // argmax must equal the reference's wherever its top-2 gap exceeds this
    double greedy_margin; // greedy ids must match up to the first step whose gap is below this
} tolerance;

// The reference's top-1 minus top-2 logit at each greedy step (the
// *_gen_margins.bin fixture): where it is tiny, either token is right.
static float *load_margins(const char *name, uint32_t n_prompts, uint32_t n_gen) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/reference/%s", KILN_FIXTURES, name);
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    char magic[8];
    uint32_t dims[2];
    float *m = malloc(sizeof(float) * n_prompts * n_gen);
    assert_int_equal(fread(magic, 1, 8, f), 8);
    assert_memory_equal(magic, "KLNGMG1", 8);
    assert_int_equal(fread(dims, 4, 2, f), 2);
    assert_true(dims[0] == n_prompts && dims[1] == n_gen);
    assert_int_equal(fread(m, sizeof(float), n_prompts * n_gen, f), n_prompts * n_gen);
    fclose(f);
    return m;
}

static void check_model(const char *model_path, const char *fixture, const tolerance *tol, bool precise) {
    reference r = {0};
    if (!load_reference(fixture, &r)) fail_msg("cannot read fixture %s", fixture);
    char margins_name[64];
    snprintf(margins_name, sizeof margins_name, "%.*s_gen_margins.bin", (int)(strlen(fixture) - 4), fixture);
    float *margins = load_margins(margins_name, r.n_prompts, r.n_gen);
    kiln_model_params mp = {.n_threads = 0, .precise = precise};
    kiln_model *model;
    if (kiln_model_load(model_path, &mp, &model) != KILN_OK) fail_msg("load %s: %s", model_path, kiln_last_error());
    assert_int_equal(kiln_model_vocab_size(model), (int)r.vocab);
    double worst = 0;
    int agree = 0, positions = 0, must_agree_failed = 0;
    bool greedy_failed = false;
    // The sanitizer build runs the first prompts only (KILN_REFERENCE_PROMPTS):
    // it checks memory safety of the same code paths, ten times slower.
    uint32_t n_prompts = r.n_prompts;
    const char *limit = getenv("KILN_REFERENCE_PROMPTS");
    if (limit && atoi(limit) > 0 && (uint32_t)atoi(limit) < n_prompts) n_prompts = (uint32_t)atoi(limit);
    for (uint32_t i = 0; i < n_prompts; i++) {
        const ref_prompt *q = &r.prompts[i];
        float *logits = kiln_test_all_logits(model, q->ids, (int)q->n_tokens);
        for (uint32_t t = 0; t < q->n_tokens; t++) {
            const float *row = logits + (size_t)t * r.vocab;
            const int32_t *top_ids = q->top_ids + t * r.topk;
            const float *top = q->top + t * r.topk, *probe = q->probe + t * r.n_probe;
            double shift = 0;
            if (tol->centred) { // mean difference over the compared logits
                for (uint32_t k = 0; k < r.n_probe; k++) shift += row[r.probe_ids[k]] - probe[k];
                for (uint32_t k = 0; k < r.topk; k++) shift += row[top_ids[k]] - top[k];
                shift /= r.n_probe + r.topk;
            }
            for (uint32_t k = 0; k < r.n_probe; k++) worst = fmax(worst, fabs(row[r.probe_ids[k]] - shift - probe[k]));
            for (uint32_t k = 0; k < r.topk; k++) worst = fmax(worst, fabs(row[top_ids[k]] - shift - top[k]));
            int32_t best = 0;
            for (uint32_t v = 1; v < r.vocab; v++)
                if (row[v] > row[best]) best = (int32_t)v;
            agree += best == top_ids[0];
            if (best != top_ids[0] && top[0] - top[1] > tol->top1_margin) {
                printf("  prompt %u position %u: argmax %d, reference %d with a gap of %.3f\n", i, t, best, top_ids[0],
                       top[0] - top[1]);
                must_agree_failed++;
            }
            positions++;
        }
        const float *last = logits + (size_t)(q->n_tokens - 1) * r.vocab;
        double shift = 0;
        if (tol->centred) {
            for (uint32_t v = 0; v < r.vocab; v++) shift += last[v] - q->last[v];
            shift /= r.vocab;
        }
        for (uint32_t v = 0; v < r.vocab; v++) worst = fmax(worst, fabs(last[v] - shift - q->last[v]));
        free(logits);

        // Greedy continuation, fed token by token through the session.
        kiln_session *s;
        assert_int_equal(kiln_session_create(model, (int)(q->n_tokens + r.n_gen), &s), KILN_OK);
        assert_int_equal(kiln_session_eval(s, q->ids, q->n_tokens, NULL), KILN_OK);
        kiln_sampling_params greedy = kiln_sampling_default();
        greedy.temperature = 0.0f;
        int matched = 0, must_match = 0;
        while (must_match < (int)r.n_gen && margins[i * r.n_gen + must_match] >= tol->greedy_margin) must_match++;
        for (uint32_t g = 0; g < r.n_gen; g++) {
            int32_t id;
            assert_int_equal(kiln_session_sample(s, &greedy, &id), KILN_OK);
            if (id != q->gen[g]) break;
            matched++;
            if (g + 1 < r.n_gen) assert_int_equal(kiln_session_eval(s, &id, 1, NULL), KILN_OK);
        }
        kiln_session_free(s);
        printf("  prompt %u (%u tokens): greedy %d/%u tokens match (%d required: reference gaps >= %g up to there)\n",
               i, q->n_tokens, matched, r.n_gen, must_match, tol->greedy_margin);
        greedy_failed |= matched < must_match;
    }
    printf("  %s%s vs %s: max |logit diff|%s %.3g (bound %.3g: %s), top-1 agreement %.4f over %d positions\n",
           model_path, precise ? " (precise)" : "", fixture, tol->centred ? " (centred)" : "", worst, tol->max_abs,
           tol->why, (double)agree / positions, positions);
    assert_true(worst <= tol->max_abs);
    assert_int_equal(must_agree_failed, 0);
    if (greedy_failed) fail_msg("%s: greedy output diverges from transformers before a near-tie", model_path);
    free(margins);
    kiln_model_free(model);
    free_reference(&r);
}

static bool hf_folder(const char *name, char *out, size_t cap) {
    const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
    if (cache && *cache)
        snprintf(out, cap, "%s/%s", cache, name);
    else
        snprintf(out, cap, "%s/.cache/kiln/%s", home ? home : "", name);
    struct stat sb;
    if (stat(out, &sb) == 0 && S_ISDIR(sb.st_mode)) return true;
    printf("SKIP: %s not found (make fixtures creates it)\n", out);
    return false;
}

// F32 weights computed in F32 on both sides: only summation order differs.
// Over 30 layers that moves logits (magnitude ~20) by ~1e-4; 5e-3 flags any
// real error (a wrong RoPE pair or norm moves them by whole units).
// Argmax and all 64 greedy tokens must match (a gap of 0 still counts).
static const tolerance exact_weights = {"same f32 weights, summation order only", 5e-3, false, 0.0, 0.0};

static void test_hf_f32(void **state) {
    (void)state;
    char path[PATH_MAX];
    if (!hf_folder("smollm2-hf-f32", path, sizeof path)) skip();
    check_model(path, "smollm2_f32.bin", &exact_weights, false);
}

static void test_hf_f32_sharded(void **state) {
    (void)state;
    char path[PATH_MAX];
    if (!hf_folder("smollm2-hf-f32-sharded", path, sizeof path)) skip();
    check_model(path, "smollm2_f32.bin", &exact_weights, false);
}

static void test_hf_bf16(void **state) {
    (void)state;
    char path[PATH_MAX];
    if (!hf_folder("smollm2-hf-bf16", path, sizeof path)) skip();
    check_model(path, "smollm2_bf16.bin", &exact_weights, false);
}

// The GGUF's Q4_1 weights are the reference's weights exactly (transformers
// dequantizes the same blocks), but kiln's fast kernels round the activations
// to 8 bits (Q8_1 blocks) before each product, as llama.cpp does. Measured on
// these prompts, llama.cpp lands at a centred max |diff| of 0.85 from the same
// reference (docs/reference.md); kiln must stay within 1.5, under twice that.
// Such rounding can flip near-ties, so the argmax must agree only where the
// reference's top-2 gap exceeds 0.5, and greedy output must match up to the
// first step whose gap is below 0.3 (a ~7% change of the two probabilities'
// ratio; llama.cpp flips at gaps of 0.26 and 0.09 on these prompts).
static const tolerance q8_activations = {"8-bit activation rounding, about twice llama.cpp's error", 1.5, true, 0.5,
                                         0.3};

static void test_gguf(void **state) {
    (void)state;
    const char *path = kiln_test_model_path();
    if (!path) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    check_model(path, "smollm2_f32.bin", &q8_activations, false);
}

// Precise mode multiplies the same Q4_1 weights with float activations: the
// reference's arithmetic up to summation order, so the exact-weights bound
// and token-for-token greedy output apply.
static void test_gguf_precise(void **state) {
    (void)state;
    const char *path = kiln_test_model_path();
    if (!path) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    check_model(path, "smollm2_f32.bin", &exact_weights, true);
}

// kiln's fast path against llama.cpp (tools/llamacpp_reference.py): both
// round activations to 8 bits, in different ways; the figures printed here are
// the ones docs/reference.md records.
static void test_llamacpp_agreement(void **state) {
    (void)state;
    const char *path = kiln_test_model_path();
    if (!path) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    char fixture[PATH_MAX];
    snprintf(fixture, sizeof fixture, "%s/reference/smollm2_llamacpp_last.bin", KILN_FIXTURES);
    FILE *f = fopen(fixture, "rb");
    assert_non_null(f);
    char magic[8];
    uint32_t head[2];
    assert_int_equal(fread(magic, 1, 8, f), 8);
    assert_memory_equal(magic, "KLNLCP1", 8);
    assert_int_equal(fread(head, 4, 2, f), 2);
    kiln_model_params mp = {0};
    kiln_model *model;
    assert_int_equal(kiln_model_load(path, &mp, &model), KILN_OK);
    assert_int_equal(kiln_model_vocab_size(model), (int)head[1]);
    float *ref = malloc(sizeof(float) * head[1]);
    for (uint32_t i = 0; i < head[0]; i++) {
        uint32_t n;
        assert_int_equal(fread(&n, 4, 1, f), 1);
        int32_t *ids = malloc(sizeof(int32_t) * n);
        assert_int_equal(fread(ids, 4, n, f), n);
        assert_int_equal(fread(ref, 4, head[1], f), head[1]);
        kiln_session *s;
        const float *logits;
        assert_int_equal(kiln_session_create(model, (int)n, &s), KILN_OK);
        assert_int_equal(kiln_session_eval(s, ids, n, &logits), KILN_OK);
        double shift = 0, raw = 0, centred = 0;
        int32_t best = 0, ref_best = 0;
        for (uint32_t v = 0; v < head[1]; v++) {
            shift += logits[v] - ref[v];
            raw = fmax(raw, fabs(logits[v] - ref[v]));
            if (logits[v] > logits[best]) best = (int32_t)v;
            if (ref[v] > ref[ref_best]) ref_best = (int32_t)v;
        }
        shift /= head[1];
        for (uint32_t v = 0; v < head[1]; v++) centred = fmax(centred, fabs(logits[v] - shift - ref[v]));
        printf("  llama.cpp prompt %u (%u tokens): max |diff| %.3f, centred %.3f, argmax %s\n", i, n, raw, centred,
               best == ref_best ? "equal" : "differs");
        assert_int_equal(best, ref_best);
        assert_true(centred <= 1.5);
        kiln_session_free(s);
        free(ids);
    }
    free(ref);
    fclose(f);
    kiln_model_free(model);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf),
        cmocka_unit_test(test_gguf_precise),
        cmocka_unit_test(test_llamacpp_agreement),
        cmocka_unit_test(test_hf_f32),
        cmocka_unit_test(test_hf_f32_sharded),
        cmocka_unit_test(test_hf_bf16),
    };
    // KILN_TEST_FILTER=test_hf_f32 runs one model only.
    if (getenv("KILN_TEST_FILTER")) cmocka_set_test_filter(getenv("KILN_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
