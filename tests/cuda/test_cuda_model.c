// SmolLM2-135M on the GPU against the CPU backend (float activations, the
// path that matches transformers to 1e-4): teacher-forced over a text of more
// than 1,000 tokens (top-1 agreement and KL divergence of the next-token
// distributions), greedy generation on the prompts of the CPU reference
// fixtures, tiny models of every architecture, and GPU memory over 1,000
// short generations in one process. The teacher-forced and greedy tests run
// the GPU twice: as it runs on this card, and on the portable path
// (kiln_kernel_options.portable: none of the Hopper-only paths, what Ampere
// and Ada run), so that a Hopper machine tests both.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cuda_test_util.h"
#include "runtime/generate.h"
#include "runtime/forward_util.h"
#include "runtime/session.h"
#include "test_util.h"

static const char *model_path;

static kiln_model *load(kiln_device device, const char *path) {
    kiln_model_params mp = {.device = device, .precise = true};
    kiln_model *m = NULL;
    kiln_status st = kiln_model_load(path, &mp, &m);
    if (st != KILN_OK) fprintf(stderr, "load %s: %s\n", path, kiln_last_error());
    assert_int_equal(st, KILN_OK);
    return m;
}

static void softmax(const float *l, int n, double *p) {
    double max = l[0], sum = 0;
    for (int i = 1; i < n; i++) max = l[i] > max ? l[i] : max;
    for (int i = 0; i < n; i++) sum += p[i] = exp((double)l[i] - max);
    for (int i = 0; i < n; i++) p[i] /= sum;
}

static int argmax(const float *l, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (l[i] > l[best]) best = i;
    return best;
}

// A text of well over 1,000 tokens: this repository's own documents.
static char *long_text(void) {
    static const char *files[] = {"README.md", "docs/architecture.md"};
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/../../%s", KILN_FIXTURES, files[i]);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        len += fread(text + len, 1, cap - 1 - len, f);
        fclose(f);
    }
    text[len] = 0;
    return text;
}

static const kiln_kernel_options CARD_PATH = {0}, PORTABLE_PATH = {.portable = true};

// GPU logits lg against the CPU's lc, [n][vocab] each: top-1 agreement and
// the KL divergence of the next-token distributions.
static void check_against_cpu(const char *what, const float *lg, const float *lc, int n, int vocab) {
    double *pg = malloc(sizeof(double) * vocab), *pc = malloc(sizeof(double) * vocab), kl_sum = 0, kl_max = 0;
    assert_true(pg && pc);
    int agree = 0;
    for (int t = 0; t < n; t++) {
        const float *g = lg + (size_t)t * vocab, *c = lc + (size_t)t * vocab;
        agree += argmax(g, vocab) == argmax(c, vocab);
        softmax(g, vocab, pg);
        softmax(c, vocab, pc);
        double kl = 0;
        for (int i = 0; i < vocab; i++)
            if (pc[i] > 0) kl += pc[i] * (log(pc[i]) - log(pg[i] > 1e-300 ? pg[i] : 1e-300));
        kl_sum += kl;
        kl_max = kl > kl_max ? kl : kl_max;
    }
    printf("teacher-forced over %d tokens, %s: top-1 agreement %d/%d (%.2f%%), mean KL %.3g, max KL %.3g\n", n,
           what, agree, n, 100.0 * agree / n, kl_sum / n, kl_max);
    if (!(agree >= 0.99 * n) || !(kl_sum / n < 1e-3))
        fail_msg("%s: top-1 agreement %d/%d (at least 99%% wanted), mean KL %.3g (below 1e-3 wanted)", what, agree, n,
                 kl_sum / n);
    free(pg);
    free(pc);
}

// Teacher-forced: every position's next-token distribution, GPU (on this
// card's path and on the portable one) against CPU.
static void test_teacher_forced(void **state) {
    (void)state;
    kiln_model *gpu = load(KILN_DEVICE_CUDA, model_path), *cpu = load(KILN_DEVICE_CPU, model_path);
    char *text = long_text();
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(kiln_tokenize(cpu, text, strlen(text), true, false, &ids, &n_ids), KILN_OK);
    const int n = n_ids > 1200 ? 1200 : (int)n_ids, vocab = kiln_model_vocab_size(cpu);
    assert_true(n >= 1000);
    // GPU in prompt chunks of 300 (the tensor-core attention with earlier
    // chunks in the cache); CPU in one pass.
    float *lc = kiln_test_all_logits_chunked(cpu, ids, n, n);
    float *lg = kiln_test_all_logits_with(gpu, ids, n, 300, CARD_PATH);
    check_against_cpu("GPU", lg, lc, n, vocab);
    free(lg);
    lg = kiln_test_all_logits_with(gpu, ids, n, 300, PORTABLE_PATH);
    check_against_cpu("GPU portable", lg, lc, n, vocab);
    free(lg);
    free(lc);
    free(ids);
    free(text);
    kiln_model_free(gpu);
    kiln_model_free(cpu);
}

static const char *const prompts[] = {
    "Hello",
    "In 2024 the capital of",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer briefly.<|im_end|>\n<|im_start|>assistant\n",
    "The history of computing is full of surprising turns. In 1837, Charles Babbage described the "
    "Analytical Engine, a mechanical general-purpose computer that was never completed. About a century "
    "later, Alan Turing's 1936 paper defined what it means for a function to be computable, and during "
    "the Second World War machines such as Colossus and ENIAC showed that electronic computation was "
    "practical. Today a phone runs at more than 3,000,000,000 cycles per second. A tiny Python function:\n\ndef "
    "add(a, b):\n    return a + b\n\nIt",
};

// 64 greedy tokens through the public API (GPU: graphs and device sampling).
// A session's engine takes the default kernel options; with `kernels` not
// NULL a small engine created after it sets these instead (the last engine
// created sets the options of the model's backend) until the session ends.
static int greedy(kiln_model *m, const char *prompt, const kiln_kernel_options *kernels, int32_t *out, int n_out) {
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(kiln_tokenize(m, prompt, strlen(prompt), false, true, &ids, &n_ids), KILN_OK);
    kiln_session *s;
    assert_int_equal(kiln_session_create(m, 512, &s), KILN_OK);
    kiln_engine *options = NULL;
    if (kernels) {
        const kiln_engine_options o = {.max_seq_len = 16, .max_step_tokens = 16, .kernels = *kernels};
        assert_int_equal(kiln_engine_create(m, &o, &options), KILN_OK);
    }
    kiln_sampling_params sp = kiln_sampling_default();
    sp.temperature = 0;
    assert_int_equal(kiln_session_eval(s, ids, n_ids, NULL), KILN_OK);
    int n = 0;
    for (; n < n_out; n++) {
        assert_int_equal(kiln_session_sample(s, &sp, &out[n]), KILN_OK);
        assert_int_equal(kiln_session_eval(s, &out[n], 1, NULL), KILN_OK);
    }
    kiln_session_free(s);
    kiln_engine_free(options);
    free(ids);
    return n;
}

static void test_greedy_prompts(void **state) {
    (void)state;
    kiln_model *gpu = load(KILN_DEVICE_CUDA, model_path), *cpu = load(KILN_DEVICE_CPU, model_path);
    for (size_t p = 0; p < sizeof prompts / sizeof prompts[0]; p++) {
        int32_t g[64], gp[64], c[64];
        greedy(gpu, prompts[p], NULL, g, 64);
        greedy(gpu, prompts[p], &PORTABLE_PATH, gp, 64);
        greedy(cpu, prompts[p], NULL, c, 64);
        int same = 0, same_portable = 0;
        while (same < 64 && g[same] == c[same]) same++;
        while (same_portable < 64 && gp[same_portable] == c[same_portable]) same_portable++;
        printf("prompt %zu: greedy tokens equal to the CPU's for %d of 64 (portable path: %d)\n", p, same,
               same_portable);
        assert_int_equal(same, 64);
        assert_int_equal(same_portable, 64);
    }
    kiln_model_free(gpu);
    kiln_model_free(cpu);
}

// Decode-ahead (api.c): kiln_session_sample queues the step for the token it
// draws before returning it. Every detour from "sample, then eval that token"
// must give what a session without the step ahead gives, bit for bit:
// evaluating the drawn token (with its logits asked for), sampling twice
// (the logits the step ahead overwrote come back), evaluating another token
// (the step ahead's cache entry is overwritten).
static void test_decode_ahead_detours(void **state) {
    (void)state;
    kiln_model *m = load(KILN_DEVICE_CUDA, model_path);
    const int vocab = kiln_model_vocab_size(m);
    int32_t *ids;
    size_t n_ids;
    assert_int_equal(kiln_tokenize(m, prompts[1], strlen(prompts[1]), false, true, &ids, &n_ids), KILN_OK);
    kiln_sampling_params sp = kiln_sampling_default();
    sp.temperature = 0;
    kiln_session *a, *b;
    assert_int_equal(kiln_session_create(m, 256, &a), KILN_OK);
    assert_int_equal(kiln_session_create(m, 256, &b), KILN_OK);
    float *la = malloc(sizeof(float) * (size_t)vocab), *lb = malloc(sizeof(float) * (size_t)vocab);
    assert_true(la && lb);
    const float *l;
    assert_int_equal(kiln_session_eval(a, ids, n_ids, NULL), KILN_OK);
    assert_int_equal(kiln_session_eval(b, ids, n_ids, &l), KILN_OK);
    const int32_t first = (int32_t)argmax(l, vocab);
    // Sampling twice: the same token both times.
    int32_t id, again;
    assert_int_equal(kiln_session_sample(a, &sp, &id), KILN_OK);
    assert_int_equal(kiln_session_sample(a, &sp, &again), KILN_OK);
    assert_int_equal(id, first);
    assert_int_equal(again, first);
    // The drawn token, its logits asked for: the step ahead's.
    assert_int_equal(kiln_session_eval(a, &id, 1, &l), KILN_OK);
    memcpy(la, l, sizeof(float) * (size_t)vocab);
    assert_int_equal(kiln_session_eval(b, &first, 1, &l), KILN_OK);
    memcpy(lb, l, sizeof(float) * (size_t)vocab);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)vocab);
    // Another token than the one drawn.
    assert_int_equal(kiln_session_sample(a, &sp, &id), KILN_OK);
    const int32_t other = (id + 1) % vocab;
    assert_int_equal(kiln_session_eval(a, &other, 1, &l), KILN_OK);
    memcpy(la, l, sizeof(float) * (size_t)vocab);
    assert_int_equal(kiln_session_eval(b, &other, 1, &l), KILN_OK);
    memcpy(lb, l, sizeof(float) * (size_t)vocab);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)vocab);
    // And on: both sessions draw the same tokens.
    for (int i = 0; i < 8; i++) {
        int32_t ia, ib;
        assert_int_equal(kiln_session_sample(a, &sp, &ia), KILN_OK);
        assert_int_equal(kiln_session_sample(b, &sp, &ib), KILN_OK);
        assert_int_equal(ia, ib);
        assert_int_equal(kiln_session_eval(a, &ia, 1, NULL), KILN_OK);
        assert_int_equal(kiln_session_eval(b, &ib, 1, NULL), KILN_OK);
    }
    free(la), free(lb), free(ids);
    kiln_session_free(a);
    kiln_session_free(b);
    kiln_model_free(m);
}

// Every architecture, with heads of 64 (tests/fixtures/tiny64, made by
// tools/make_tiny_models.py --gpu-variants): Q8_0 GGUF files (interleaved
// RoPE, converted to F16 at load) and BF16 folders (halves, llama3 frequency
// scaling, Qwen 2 biases), GPU against CPU at every position of a prompt run
// in two chunks (tensor-core attention over earlier chunks) and then token
// by token (the captured decode step).
static void test_tiny_models(void **state) {
    (void)state;
    static const char *names[] = {"llama.gguf", "llama3.gguf", "mistral.gguf", "qwen2.gguf", "llama3", "qwen2"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tiny64/%s", KILN_FIXTURES, names[i]);
        kiln_model *gpu = load(KILN_DEVICE_CUDA, path), *cpu = load(KILN_DEVICE_CPU, path);
        enum { N = 70 };
        int32_t ids[N];
        const int vocab = kiln_model_vocab_size(cpu);
        for (int t = 0; t < N; t++) ids[t] = (t * 7919 + 13) % vocab;
        float *lg = kiln_test_all_logits_chunked(gpu, ids, N, 48), *lc = kiln_test_all_logits_chunked(cpu, ids, N, N);
        double num = 0, den = 0;
        int agree = 0;
        for (int t = 0; t < N; t++) agree += argmax(lg + (size_t)t * vocab, vocab) == argmax(lc + (size_t)t * vocab, vocab);
        for (size_t j = 0; j < (size_t)N * vocab; j++) {
            num += ((double)lg[j] - lc[j]) * ((double)lg[j] - lc[j]);
            den += (double)lc[j] * lc[j];
        }
        // The GPU holds weights (GGUF: exact Q8_0 values in F16; folders: the
        // same BF16) and K/V in 16 bits and rounds GEMM inputs to them: a
        // relative L2 difference of a few 2^-8 at most.
        printf("tiny64 %s: GPU vs CPU relative L2 %.3g, argmax equal at %d/%d positions\n", names[i],
               sqrt(num / den), agree, N);
        assert_true(sqrt(num / den) < 2e-2);
        // The graph-replayed decode path: token by token after a 5-token prompt.
        int32_t g[16], c[16];
        kiln_session *sg, *sc;
        assert_int_equal(kiln_session_create(gpu, 64, &sg), KILN_OK);
        assert_int_equal(kiln_session_create(cpu, 64, &sc), KILN_OK);
        const float *lcpu, *lgpu;
        assert_int_equal(kiln_session_eval(sg, ids, 5, &lgpu), KILN_OK);
        assert_int_equal(kiln_session_eval(sc, ids, 5, &lcpu), KILN_OK);
        for (int k = 0; k < 16; k++) {
            g[k] = ids[5 + k];
            c[k] = ids[5 + k];
            assert_int_equal(kiln_session_eval(sg, &g[k], 1, &lgpu), KILN_OK);
            assert_int_equal(kiln_session_eval(sc, &c[k], 1, &lcpu), KILN_OK);
            double n2 = 0, d2 = 0;
            for (int j = 0; j < vocab; j++) n2 += ((double)lgpu[j] - lcpu[j]) * ((double)lgpu[j] - lcpu[j]), d2 += (double)lcpu[j] * lcpu[j];
            if (!(sqrt(n2 / d2) < 2e-2)) fail_msg("%s: decode step %d: relative L2 %.3g", names[i], k, sqrt(n2 / d2));
        }
        kiln_session_free(sg);
        kiln_session_free(sc);
        free(lg);
        free(lc);
        kiln_model_free(gpu);
        kiln_model_free(cpu);
    }
}

// 1,000 short generations in one process: device memory ends where it began.
static void test_memory_steady(void **state) {
    (void)state;
    kiln_model *gpu = load(KILN_DEVICE_CUDA, model_path);
    const int32_t prompt[4] = {1, 504, 3458, 282};
    kiln_sampling_params sp = kiln_sampling_default();
    sp.seed = 7;
    size_t free_before = 0, free_after = 0, total;
    // KILN_TEST_GENERATIONS shortens the loop under compute-sanitizer.
    const char *env = getenv("KILN_TEST_GENERATIONS");
    const int generations = env && atoi(env) > 0 ? atoi(env) : 1000;
    for (int i = 0; i < generations + 1; i++) {
        if (i == 1) CUDA_CHECK(cudaMemGetInfo(&free_before, &total)); // after the first: handles, tables
        kiln_session *s;
        assert_int_equal(kiln_session_create(gpu, 64, &s), KILN_OK);
        assert_int_equal(kiln_session_eval(s, prompt, 4, NULL), KILN_OK);
        for (int k = 0; k < 4; k++) {
            int32_t id;
            assert_int_equal(kiln_session_sample(s, &sp, &id), KILN_OK);
            assert_int_equal(kiln_session_eval(s, &id, 1, NULL), KILN_OK);
        }
        kiln_session_free(s);
    }
    CUDA_CHECK(cudaMemGetInfo(&free_after, &total));
    printf("device memory free: %zu bytes before, %zu after %d generations\n", free_before, free_after,
           generations);
    assert_true(free_after == free_before);
    kiln_model_free(gpu);
}

int main(void) {
    kiln_test_require_gpu();
    KILN_REQUIRE_MODEL(path);
    model_path = path;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_teacher_forced),
        cmocka_unit_test(test_greedy_prompts),
        cmocka_unit_test(test_decode_ahead_detours),
        cmocka_unit_test(test_tiny_models),
        cmocka_unit_test(test_memory_steady),
    };
    return KILN_RUN_TESTS(tests);
}
