// GPU sampler (cuda_sample.cu) against a float64 host reference of the CPU
// sampler's rule that takes the uniform number u as an argument. The
// reference is itself checked against the real CPU sampler
// (kiln_sampler_sample) by replaying the CPU sampler's generator, so that a
// GPU answer equal to the reference's is the CPU sampler's answer too.
//
// Every case compares ids for many u (u near 0 and near 1 included). The GPU
// sums masses in another order and in 64-bit fixed point, so an answer may
// differ only where u lies within 1e-6 of a boundary between two tokens'
// cumulative probabilities, or where a top-p cut falls (within 1e-8) exactly
// on a cumulative boundary, as with all-equal logits and top-p 0.5: those are
// counted apart; any other difference fails.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cuda/cuda_kernels.h"
#include "cuda/cuda_test_util.h"
#include "runtime/sampler.h"

// u within this of a cumulative boundary may go either way: the GPU receives u
// as a float (2^-24 relative) and its sums differ from the CPU's by < 1e-9.
#define NEAR_BOUNDARY 1e-6
// A top-p cut this close to a cumulative boundary may go either way.
#define TOP_P_TIE 1e-8

enum { MAX_U = 24, PRINT_LIMIT = 10 };

// ---- Reference ----------------------------------------------------------------

typedef struct ref_cand {
    int32_t id;
    float logit; // scaled
} ref_cand;

// Candidates of one (logits, temperature) in the CPU's order, with their
// unnormalised probabilities and running sums (added one by one, as the CPU).
typedef struct ref_sorted {
    int n;
    float max;
    ref_cand *cand;
    double *mass, *running;
} ref_sorted;

static int32_t ref_argmax(const float *logits, int vocab) {
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i; // ties keep the lower id
    return best;
}

static int by_scaled_logit(const void *pa, const void *pb) {
    const ref_cand *a = pa, *b = pb;
    if (a->logit != b->logit) return a->logit > b->logit ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static void ref_prepare(const float *logits, int vocab, float temperature, ref_sorted *r) {
    const float inv_t = 1.0f / temperature;
    const float max = logits[ref_argmax(logits, vocab)] * inv_t;
    const float lowest = max - 40.0f; // tokens further below cannot be drawn
    r->cand = malloc(sizeof *r->cand * (size_t)vocab);
    r->mass = malloc(sizeof *r->mass * (size_t)vocab);
    r->running = malloc(sizeof *r->running * (size_t)vocab);
    assert_non_null(r->cand);
    assert_non_null(r->mass);
    assert_non_null(r->running);
    r->n = 0;
    r->max = max;
    for (int i = 0; i < vocab; i++) {
        const float l = logits[i] * inv_t;
        if (l >= lowest) r->cand[r->n++] = (ref_cand){i, l};
    }
    qsort(r->cand, (size_t)r->n, sizeof *r->cand, by_scaled_logit);
    double sum = 0.0;
    for (int i = 0; i < r->n; i++) {
        const float d = r->cand[i].logit - max; // float difference, then double exp
        r->mass[i] = exp((double)d);
        sum += r->mass[i];
        r->running[i] = sum;
    }
}

static void ref_release(ref_sorted *r) {
    free(r->cand);
    free(r->mass);
    free(r->running);
}

// How many candidates survive top-k, top-p and min-p. alt[]: other counts a
// top-p cut lying on a boundary (within TOP_P_TIE) could give.
static int ref_kept(const ref_sorted *r, int top_k, float top_p, float min_p, int alt[2], int *n_alt) {
    int n = r->n;
    *n_alt = 0;
    if (top_k > 0 && top_k < n) n = top_k;
    if (top_p < 1.0f) {
        double total = 0.0;
        for (int i = 0; i < n; i++) total += r->mass[i];
        double share = 0.0;
        for (int i = 0; i < n; i++) {
            const double before = share;
            share += r->mass[i] / total;
            if (share >= top_p) {
                if (fabs(share - top_p) < TOP_P_TIE && i + 2 <= n) alt[(*n_alt)++] = i + 2;
                if (fabs(before - top_p) < TOP_P_TIE && i > 0) alt[(*n_alt)++] = i;
                n = i + 1;
                break;
            }
        }
    }
    if (min_p > 0.0f) {
        const double cut = log((double)min_p);
        int pass = 1; // the best one always passes
        while (pass < r->n && (double)(r->cand[pass].logit - r->max) >= cut) pass++;
        if (pass < n) n = pass;
        for (int a = 0; a < *n_alt; a++)
            if (pass < alt[a]) alt[a] = pass;
    }
    return n;
}

// The draw among the first n with uniform u. *margin: distance of u from the
// nearest boundary of the chosen token's interval, as a probability.
static int32_t ref_draw(const ref_sorted *r, int n, double u, double *margin) {
    const double total = r->running[n - 1], target = u * total;
    int lo = 0, hi = n; // first i with target < running[i]
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (target < r->running[mid]) hi = mid;
        else lo = mid + 1;
    }
    if (lo == n) { // u * total reached the end: the last kept one
        *margin = fabs(total - target) / total;
        return r->cand[n - 1].id;
    }
    const double start = lo > 0 ? r->running[lo - 1] : 0.0;
    *margin = fmin(target - start, r->running[lo] - target) / total;
    return r->cand[lo].id;
}

// ---- The CPU sampler's generator, replayed (xoshiro256** seeded by splitmix64)

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static double xoshiro_uniform(uint64_t *s) {
    const uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return (double)(result >> 11) * 0x1.0p-53;
}

// ---- GPU runs -------------------------------------------------------------------

typedef struct gpu {
    cudaStream_t stream;
    float *logits;
    void *workspace;
    int32_t *out;
    int vocab;
    bool portable; // kiln_cuda_sample_params.portable of every draw
} gpu;

static gpu gpu_open(int vocab, bool portable) {
    gpu g = {.vocab = vocab, .portable = portable};
    CUDA_CHECK(cudaStreamCreate(&g.stream));
    const size_t ws = kiln_cuda_sample_workspace(vocab);
    assert_true(ws > 0);
    CUDA_CHECK(cudaMalloc((void **)&g.logits, sizeof(float) * (size_t)vocab));
    CUDA_CHECK(cudaMalloc(&g.workspace, ws));
    CUDA_CHECK(cudaMalloc((void **)&g.out, sizeof(int32_t) * 20000));
    CUDA_CHECK(cudaMemset(g.workspace, 0xff, ws)); // NaN and all-ones: nothing is assumed zeroed
    return g;
}

static void gpu_close(gpu *g) {
    CUDA_CHECK(cudaFree(g->logits));
    CUDA_CHECK(cudaFree(g->workspace));
    CUDA_CHECK(cudaFree(g->out));
    CUDA_CHECK(cudaStreamDestroy(g->stream));
}

static void gpu_set_logits(gpu *g, const float *logits) {
    CUDA_CHECK(cudaMemcpy(g->logits, logits, sizeof(float) * (size_t)g->vocab, cudaMemcpyHostToDevice));
}

// One sampler call per u, each into its own output slot (poisoned first).
static void gpu_sample(gpu *g, kiln_cuda_sample_params p, const float *u, int n_u, int32_t *ids) {
    assert_true(n_u <= 20000);
    CUDA_CHECK(cudaMemsetAsync(g->out, 0xff, sizeof(int32_t) * (size_t)n_u, g->stream));
    p.portable = g->portable;
    for (int k = 0; k < n_u; k++) {
        p.u = u[k];
        CUDA_CHECK(kiln_cuda_sample(g->stream, g->logits, g->vocab, &p, g->workspace, g->out + k));
    }
    CUDA_CHECK(cudaMemcpyAsync(ids, g->out, sizeof(int32_t) * (size_t)n_u, cudaMemcpyDeviceToHost, g->stream));
    CUDA_CHECK(cudaStreamSynchronize(g->stream));
}

// ---- Inputs ---------------------------------------------------------------------

typedef enum shape { TYPICAL, FLAT, DOMINANT, TIES, NEAR_TIES, WIDE, N_SHAPES } shape;
static const char *const SHAPE_NAMES[N_SHAPES] = {"typical", "flat", "dominant", "ties", "near-ties", "wide"};

static float gauss(uint64_t *rng) { // sum of four uniforms: mean 0, sd ~1.15
    return kiln_test_rand_f(rng) + kiln_test_rand_f(rng) + kiln_test_rand_f(rng) + kiln_test_rand_f(rng);
}

static void fill_logits(shape s, float *l, int vocab, uint64_t *rng) {
    for (int i = 0; i < vocab; i++) {
        switch (s) {
        case TYPICAL: l[i] = 2.5f * gauss(rng); break;     // a language model's bulk
        case FLAT: l[i] = 1.25f; break;                    // every token a candidate, all tied
        case DOMINANT: l[i] = gauss(rng); break;           // plus one far ahead, below
        case TIES: l[i] = roundf(2.0f * gauss(rng)) * 0.5f; break; // few values, thousands of ties each
        case NEAR_TIES: // three values 0.001 apart: one bin of mixed values, too many to sort
            l[i] = 0.001f * (float)(kiln_test_rand_u64(rng) % 3);
            break;
        case WIDE: l[i] = 60.0f * kiln_test_rand_f(rng); break; // most below the 40-nat floor
        default: break;
        }
    }
    if (s == TYPICAL) // a few likely tokens on top, as after a real prompt
        for (int k = 0; k < 24 && k < vocab; k++)
            l[kiln_test_rand_u64(rng) % (uint64_t)vocab] = 8.0f + 8.0f * (kiln_test_rand_f(rng) + 1.0f) / 2.0f;
    if (s == DOMINANT) l[kiln_test_rand_u64(rng) % (uint64_t)vocab] = 30.0f;
}

// u values: the ends, then uniform.
static int make_us(float *u, uint64_t *rng) {
    int n = 0;
    u[n++] = 0.0f;
    u[n++] = 1e-7f;
    u[n++] = 0x1.0p-24f;
    u[n++] = 0.5f;
    u[n++] = 1.0f - 1e-6f;
    u[n++] = nextafterf(1.0f, 0.0f); // largest float below 1
    while (n < 16) u[n++] = (float)((double)(kiln_test_rand_u64(rng) >> 11) * 0x1.0p-53);
    return n;
}

typedef struct tally {
    long same, near_boundary, top_p_tie, wrong;
} tally;

// Judges one answer against the reference.
static void judge(tally *t, const ref_sorted *r, int n, const int alt[2], int n_alt, double u, int32_t got,
                  const char *what) {
    double margin;
    const int32_t want = ref_draw(r, n, u, &margin);
    if (got == want) {
        t->same++;
        return;
    }
    for (int a = 0; a < n_alt; a++) {
        double m;
        if (ref_draw(r, alt[a], u, &m) == got) {
            t->top_p_tie++;
            return;
        }
    }
    if (margin < NEAR_BOUNDARY) {
        t->near_boundary++;
        return;
    }
    if (t->wrong++ < PRINT_LIMIT)
        fprintf(stderr, "%s: u=%.9g: got %d, want %d (kept %d of %d, margin %.3g)\n", what, u, got, want, n, r->n,
                margin);
}

// ---- Tests ------------------------------------------------------------------------

static void test_invalid_arguments(void **state) {
    (void)state;
    assert_int_equal(kiln_cuda_sample_workspace(0), 0);
    kiln_cuda_sample_params p = {1.0f, 0, 1.0f, 0.0f, 0.5f, false};
    assert_int_equal(kiln_cuda_sample(0, NULL, 0, &p, NULL, NULL), cudaErrorInvalidValue);
}

static void test_greedy(void **state) {
    const bool portable = *(const bool *)*state;
    const int vocabs[] = {128256, 49152, 1000, 1};
    uint64_t rng = 0x5eed0001;
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++) {
        const int vocab = vocabs[v];
        gpu g = gpu_open(vocab, portable);
        float *l = malloc(sizeof *l * (size_t)vocab);
        assert_non_null(l);
        for (int trial = 0; trial < 6; trial++) {
            for (int i = 0; i < vocab; i++) l[i] = trial == 0 ? -3.0f : gauss(&rng);
            if (trial >= 2) // the maximum several times: the lowest id wins
                for (int k = 0; k < trial; k++) l[kiln_test_rand_u64(&rng) % (uint64_t)vocab] = 9.0f;
            if (trial == 5 && vocab > 8) { // -0 and +0 compare equal
                for (int i = 0; i < vocab; i++) l[i] = -1.0f - (float)(i % 7);
                l[vocab - 3] = 0.0f;
                l[vocab / 2] = -0.0f;
            }
            gpu_set_logits(&g, l);
            const float u[2] = {0.3f, 0.9f};
            int32_t ids[2];
            kiln_cuda_sample_params p = {0.0f, 40, 0.95f, 0.05f, 0.0f, false};
            gpu_sample(&g, p, u, 1, ids);
            p.temperature = -1.0f; // <= 0 is greedy too
            gpu_sample(&g, p, u + 1, 1, ids + 1);
            const int32_t want = ref_argmax(l, vocab);
            assert_int_equal(ids[0], want);
            assert_int_equal(ids[1], want);
            // The CPU sampler agrees.
            kiln_sampling_params cp = kiln_sampling_default();
            cp.temperature = 0.0f;
            kiln_sampler *s = NULL;
            assert_int_equal(kiln_sampler_create(vocab, &cp, &s), KILN_OK);
            int32_t cpu_id = -1;
            assert_int_equal(kiln_sampler_sample(s, l, NULL, 0, &cpu_id), KILN_OK);
            assert_int_equal(cpu_id, want);
            kiln_sampler_free(s);
        }
        free(l);
        gpu_close(&g);
    }
}

// The reference against the real CPU sampler, replaying its draws, and the GPU
// against both with the CPU's u (rounded to float, as the GPU takes it).
static void check_against_cpu(gpu *g, const float *logits, const ref_sorted *r, float temperature, int top_k,
                              float top_p, float min_p, uint64_t seed, tally *ref_vs_cpu, tally *gpu_vs_cpu,
                              const char *what) {
    enum { DRAWS = 3 };
    kiln_sampling_params cp = kiln_sampling_default();
    cp.temperature = temperature, cp.top_k = top_k, cp.top_p = top_p, cp.min_p = min_p;
    cp.repetition_penalty = 1.0f, cp.penalty_last_n = 0, cp.seed = seed;
    kiln_sampler *s = NULL, *twin = NULL;
    assert_int_equal(kiln_sampler_create(g->vocab, &cp, &s), KILN_OK);
    assert_int_equal(kiln_sampler_create(g->vocab, &cp, &twin), KILN_OK);
    uint64_t st[4], x = seed;
    for (int i = 0; i < 4; i++) st[i] = splitmix64(&x);
    double u[DRAWS];
    float uf[DRAWS];
    int32_t cpu[DRAWS], ids[DRAWS];
    for (int k = 0; k < DRAWS; k++) {
        u[k] = xoshiro_uniform(st);
        assert_true(u[k] == kiln_sampler_next_uniform(twin)); // the replay is the sampler's stream
        uf[k] = (float)u[k];
        assert_int_equal(kiln_sampler_sample(s, logits, NULL, 0, &cpu[k]), KILN_OK);
    }
    kiln_sampler_free(s);
    kiln_sampler_free(twin);
    kiln_cuda_sample_params p = {temperature, top_k, top_p, min_p, 0.0f, false};
    gpu_sample(g, p, uf, DRAWS, ids);
    int alt[2], n_alt;
    const int n = ref_kept(r, top_k, top_p, min_p, alt, &n_alt);
    for (int k = 0; k < DRAWS; k++) {
        judge(ref_vs_cpu, r, n, alt, n_alt, u[k], cpu[k], what);
        judge(gpu_vs_cpu, r, n, alt, n_alt, u[k], ids[k], what);
    }
}

static void run_vocab(int vocab, bool portable, uint64_t seed) {
    static const float temperatures[] = {0.7f, 1.0f, 1.5f};
    static const int top_ks[] = {0, 1, 40, 5000};
    static const float top_ps[] = {1.0f, 0.95f, 0.5f};
    static const float min_ps[] = {0.0f, 0.05f, 0.3f};
    uint64_t rng = seed;
    gpu g = gpu_open(vocab, portable);
    float *l = malloc(sizeof *l * (size_t)vocab);
    assert_non_null(l);
    tally total = {0}, ref_vs_cpu = {0}, gpu_vs_cpu = {0};
    for (int s = 0; s < N_SHAPES; s++) {
        fill_logits((shape)s, l, vocab, &rng);
        gpu_set_logits(&g, l);
        tally shape_tally = {0};
        for (size_t ti = 0; ti < sizeof temperatures / sizeof temperatures[0]; ti++) {
            ref_sorted r;
            ref_prepare(l, vocab, temperatures[ti], &r);
            int combo = 0;
            for (size_t ki = 0; ki < sizeof top_ks / sizeof top_ks[0]; ki++)
                for (size_t pi = 0; pi < sizeof top_ps / sizeof top_ps[0]; pi++)
                    for (size_t mi = 0; mi < sizeof min_ps / sizeof min_ps[0]; mi++, combo++) {
                        const kiln_cuda_sample_params p = {temperatures[ti], top_ks[ki], top_ps[pi], min_ps[mi], 0,
                                                           false};
                        char what[160];
                        snprintf(what, sizeof what, "vocab %d%s %s t=%.1f top_k=%d top_p=%.2f min_p=%.2f", vocab,
                                 portable ? " portable" : "", SHAPE_NAMES[s], (double)p.temperature, p.top_k,
                                 (double)p.top_p, (double)p.min_p);
                        float u[MAX_U];
                        int32_t ids[MAX_U];
                        const int n_u = make_us(u, &rng);
                        gpu_sample(&g, p, u, n_u, ids);
                        int alt[2], n_alt;
                        const int n = ref_kept(&r, p.top_k, p.top_p, p.min_p, alt, &n_alt);
                        for (int k = 0; k < n_u; k++)
                            judge(&shape_tally, &r, n, alt, n_alt, (double)u[k], ids[k], what);
                        // The CPU sampler is slow on big vocabularies: a few parameter sets each.
                        if (combo % 9 == (int)(ti * 4 + (size_t)s) % 9)
                            check_against_cpu(&g, l, &r, p.temperature, p.top_k, p.top_p, p.min_p,
                                              kiln_test_rand_u64(&rng), &ref_vs_cpu, &gpu_vs_cpu, what);
                    }
            ref_release(&r);
        }
        printf("vocab %6d%s %-9s: %ld same, %ld within %.0e of a boundary, %ld top-p ties, %ld wrong\n", vocab,
               portable ? " portable" : "", SHAPE_NAMES[s], shape_tally.same, shape_tally.near_boundary,
               NEAR_BOUNDARY, shape_tally.top_p_tie, shape_tally.wrong);
        total.same += shape_tally.same, total.near_boundary += shape_tally.near_boundary;
        total.top_p_tie += shape_tally.top_p_tie, total.wrong += shape_tally.wrong;
    }
    printf("vocab %6d%s reference vs CPU sampler: %ld same, %ld near, %ld ties, %ld wrong; GPU vs CPU sampler: %ld "
           "same, %ld near, %ld ties, %ld wrong\n",
           vocab, portable ? " portable" : "", ref_vs_cpu.same, ref_vs_cpu.near_boundary, ref_vs_cpu.top_p_tie,
           ref_vs_cpu.wrong, gpu_vs_cpu.same, gpu_vs_cpu.near_boundary, gpu_vs_cpu.top_p_tie, gpu_vs_cpu.wrong);
    assert_int_equal(ref_vs_cpu.wrong, 0);
    assert_int_equal(gpu_vs_cpu.wrong, 0);
    assert_int_equal(total.wrong, 0);
    // u this close to a boundary is rare: almost every answer must be the
    // reference's exactly (top-p ties are not rare: flat logits make them).
    assert_true(total.near_boundary <= total.same / 100);
    free(l);
    gpu_close(&g);
}

static void test_vocab_128256(void **state) { run_vocab(128256, *(const bool *)*state, 0x5eed0128); }

static void test_vocab_49152(void **state) { run_vocab(49152, *(const bool *)*state, 0x5eed0049); }

static void test_vocab_1000(void **state) { run_vocab(1000, *(const bool *)*state, 0x5eed1000); }

// 20000 uniform draws over 50 tokens: the frequencies follow the reference's
// probabilities within 5 standard deviations, and filtered tokens never come.
static void check_frequencies(bool portable, float temperature, int top_k, float top_p, float min_p) {
    enum { VOCAB = 50, DRAWS = 20000 };
    uint64_t rng = 0x5eed0050 + (uint64_t)top_k;
    float l[VOCAB];
    for (int i = 0; i < VOCAB; i++) l[i] = 2.0f * kiln_test_rand_f(&rng);
    gpu g = gpu_open(VOCAB, portable);
    gpu_set_logits(&g, l);
    float *u = malloc(sizeof *u * DRAWS);
    int32_t *ids = malloc(sizeof *ids * DRAWS);
    assert_non_null(u);
    assert_non_null(ids);
    for (int k = 0; k < DRAWS; k++) u[k] = (float)((double)(kiln_test_rand_u64(&rng) >> 40) * 0x1.0p-24);
    const kiln_cuda_sample_params p = {temperature, top_k, top_p, min_p, 0, false};
    gpu_sample(&g, p, u, DRAWS, ids);
    ref_sorted r;
    ref_prepare(l, VOCAB, temperature, &r);
    int alt[2], n_alt;
    const int n = ref_kept(&r, top_k, top_p, min_p, alt, &n_alt);
    assert_int_equal(n_alt, 0);
    double expected[VOCAB] = {0};
    for (int i = 0; i < n; i++) expected[r.cand[i].id] = r.mass[i] / r.running[n - 1];
    int counts[VOCAB] = {0};
    for (int k = 0; k < DRAWS; k++) {
        assert_true(ids[k] >= 0 && ids[k] < VOCAB);
        counts[ids[k]]++;
    }
    for (int i = 0; i < VOCAB; i++) {
        const double mean = expected[i] * DRAWS, sd = sqrt(DRAWS * expected[i] * (1 - expected[i]));
        if (expected[i] == 0.0) assert_int_equal(counts[i], 0);
        else if (fabs(counts[i] - mean) > 5 * sd + 1)
            fail_msg("token %d drawn %d times, expected %.1f +- %.1f", i, counts[i], mean, sd);
    }
    ref_release(&r);
    free(u);
    free(ids);
    gpu_close(&g);
}

static void test_frequencies(void **state) {
    const bool portable = *(const bool *)*state;
    check_frequencies(portable, 1.0f, 0, 1.0f, 0.0f);
    check_frequencies(portable, 0.8f, 20, 0.9f, 0.05f);
}

// Captured in a CUDA graph (no allocation or synchronisation inside), the
// sampler follows new logits on every replay.
static void test_graph_replay(void **state) {
    enum { VOCAB = 32000, REPLAYS = 4 };
    uint64_t rng = 0x5eed0666;
    gpu g = gpu_open(VOCAB, *(const bool *)*state);
    float *l = malloc(sizeof *l * VOCAB);
    assert_non_null(l);
    const kiln_cuda_sample_params p = {0.8f, 40, 0.95f, 0.05f, 0.37f, g.portable};
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamBeginCapture(g.stream, cudaStreamCaptureModeThreadLocal));
    CUDA_CHECK(kiln_cuda_sample(g.stream, g.logits, VOCAB, &p, g.workspace, g.out));
    CUDA_CHECK(cudaStreamEndCapture(g.stream, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int rep = 0; rep < REPLAYS; rep++) {
        fill_logits(rep % 2 ? TYPICAL : TIES, l, VOCAB, &rng);
        gpu_set_logits(&g, l);
        CUDA_CHECK(cudaMemset(g.out, 0xff, sizeof(int32_t)));
        CUDA_CHECK(cudaGraphLaunch(exec, g.stream));
        int32_t got;
        CUDA_CHECK(cudaMemcpyAsync(&got, g.out, sizeof got, cudaMemcpyDeviceToHost, g.stream));
        CUDA_CHECK(cudaStreamSynchronize(g.stream));
        ref_sorted r;
        ref_prepare(l, VOCAB, p.temperature, &r);
        int alt[2], n_alt;
        const int n = ref_kept(&r, p.top_k, p.top_p, p.min_p, alt, &n_alt);
        tally t = {0};
        judge(&t, &r, n, alt, n_alt, (double)p.u, got, "graph replay");
        assert_int_equal(t.wrong, 0);
        ref_release(&r);
    }
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    free(l);
    gpu_close(&g);
}

// NaN or +inf logits, or logits all -inf, are an error on both samplers (the
// device draw comes out as -1, the CPU's as KILN_ERR_FORMAT); -inf tokens
// among finite ones are tokens of probability 0, never drawn. The output is
// poisoned with a value that is neither -1 nor an id, so an unwritten output
// fails.
static void test_nonfinite_logits(void **state) {
    const bool portable = *(const bool *)*state;
    enum { V = 5000, POISON = 0x55555555 };
    static const struct {
        const char *what;
        int pos;      // the token given `value`; -1: every token
        float value;
        bool error;
    } cases[] = {
        {"one NaN", 4321, NAN, true},           {"one +inf", 17, INFINITY, true},
        {"a NaN in the last chunk", V - 1, NAN, true}, {"every logit -inf", -1, -INFINITY, true},
        {"every logit NaN", -1, NAN, true},     {"the best token -inf", 0, -INFINITY, false},
    };
    const kiln_cuda_sample_params greedy = {0.0f, 0, 1.0f, 0.0f, 0.0f, portable},
                                  sampled = {0.8f, 40, 0.95f, 0.05f, 0.37f, portable};
    gpu g = gpu_open(V, portable);
    float *l = malloc(sizeof(float) * V);
    assert_non_null(l);
    uint64_t rng = 0x5eed0bad;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        for (int i = 0; i < V; i++) l[i] = 2.5f * gauss(&rng);
        if (cases[c].pos < 0)
            for (int i = 0; i < V; i++) l[i] = cases[c].value;
        else {
            if (!cases[c].error) l[cases[c].pos] = 100.0f; // it would be drawn if taken as a number
            l[cases[c].pos] = cases[c].value;
        }
        gpu_set_logits(&g, l);
        for (int k = 0; k < 2; k++) {
            const kiln_cuda_sample_params p = k ? sampled : greedy;
            int32_t id = POISON;
            CUDA_CHECK(cudaMemcpy(g.out, &id, sizeof id, cudaMemcpyHostToDevice));
            CUDA_CHECK(kiln_cuda_sample(g.stream, g.logits, V, &p, g.workspace, g.out));
            CUDA_CHECK(cudaStreamSynchronize(g.stream));
            CUDA_CHECK(cudaMemcpy(&id, g.out, sizeof id, cudaMemcpyDeviceToHost));
            kiln_sampling_params cp = kiln_sampling_default();
            cp.temperature = p.temperature, cp.top_k = p.top_k, cp.top_p = p.top_p, cp.min_p = p.min_p;
            kiln_sampler *s = NULL;
            assert_int_equal(kiln_sampler_create(V, &cp, &s), KILN_OK);
            int32_t cpu_id = -2;
            const kiln_status cpu_st = kiln_sampler_sample(s, l, NULL, 0, &cpu_id);
            kiln_sampler_free(s);
            printf("  %s, %s: device %d, cpu %s %d\n", cases[c].what, k ? "sampled" : "greedy", id,
                   kiln_status_name(cpu_st), cpu_id);
            if (cases[c].error) {
                assert_int_equal(id, -1);
                assert_int_equal(cpu_st, KILN_ERR_FORMAT);
            } else {
                assert_int_equal(cpu_st, KILN_OK);
                assert_true(id >= 0 && id < V);
                assert_int_not_equal(id, cases[c].pos);
                if (!k) assert_int_equal(id, cpu_id);
            }
        }
    }
    free(l);
    gpu_close(&g);
}

// Every draw runs both launch paths the backend has: as on this card (on
// Hopper the second kernel is a programmatic dependent launch) and portable
// (kiln_kernel_options.portable: what Ampere and Ada run), so a Hopper
// machine tests both. The path is the test's state; "_portable" names the
// second run.
static const bool CARD_PATH = false, PORTABLE_PATH = true;
#define BOTH_PATHS(f)                                                                                          \
    {#f, f, NULL, NULL, (void *)&CARD_PATH}, {#f "_portable", f, NULL, NULL, (void *)&PORTABLE_PATH}

int main(void) {
    kiln_test_require_gpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid_arguments), BOTH_PATHS(test_greedy),      BOTH_PATHS(test_vocab_1000),
        BOTH_PATHS(test_vocab_49152),             BOTH_PATHS(test_vocab_128256), BOTH_PATHS(test_frequencies),
        BOTH_PATHS(test_graph_replay),            BOTH_PATHS(test_nonfinite_logits),
    };
    return KILN_RUN_TESTS(tests);
}
