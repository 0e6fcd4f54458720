#include "runtime/sampler.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct candidate {
    int32_t id;
    float logit;
} candidate;

struct kiln_sampler {
    int vocab;
    kiln_sampling_params p;
    uint64_t rng[4];   // xoshiro256**
    candidate *cands;  // [vocab]
    float *penalized;  // [vocab]
    int32_t *counts;   // [vocab] occurrences in the penalty window
};

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t next_u64(uint64_t *s) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static double next_uniform(uint64_t *s) { return (double)(next_u64(s) >> 11) * 0x1.0p-53; }

double kiln_sampler_next_uniform(kiln_sampler *s) { return next_uniform(s->rng); }

kiln_sampling_params kiln_sampling_default(void) {
    return (kiln_sampling_params){.temperature = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                                  .repetition_penalty = 1.0f, .penalty_last_n = 64, .seed = 0};
}

kiln_status kiln_sampling_params_check(const kiln_sampling_params *p) {
    if (!(p->temperature >= 0.0f && p->temperature < 1e4f))
        return kiln_fail(KILN_ERR_INVALID_ARG, "temperature must be >= 0 (0 is greedy), got %g", (double)p->temperature);
    if (p->top_k < 0) return kiln_fail(KILN_ERR_INVALID_ARG, "top-k must be >= 0 (0 is off), got %d", p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kiln_fail(KILN_ERR_INVALID_ARG, "top-p must be in (0, 1] (1 is off), got %g", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return kiln_fail(KILN_ERR_INVALID_ARG, "min-p must be in [0, 1] (0 is off), got %g", (double)p->min_p);
    if (!(p->repetition_penalty > 0.0f && p->repetition_penalty < 1e4f))
        return kiln_fail(KILN_ERR_INVALID_ARG, "repetition penalty must be > 0 (1 is off), got %g",
                         (double)p->repetition_penalty);
    if (!isfinite(p->frequency_penalty) || !isfinite(p->presence_penalty))
        return kiln_fail(KILN_ERR_INVALID_ARG, "frequency and presence penalties must be finite numbers");
    if (p->penalty_last_n < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG, "penalty window must be >= 0, got %d", p->penalty_last_n);
    return KILN_OK;
}

kiln_status kiln_sampler_create(int vocab, const kiln_sampling_params *params, kiln_sampler **out) {
    *out = NULL;
    kiln_status st = kiln_sampling_params_check(params);
    if (st != KILN_OK) return st;
    kiln_sampler *s = calloc(1, sizeof *s);
    if (!s) return kiln_fail(KILN_ERR_NOMEM, "sampler: out of memory");
    s->vocab = vocab;
    s->p = *params;
    s->cands = malloc(sizeof *s->cands * (size_t)vocab);
    s->penalized = malloc(sizeof *s->penalized * (size_t)vocab);
    s->counts = calloc((size_t)vocab, sizeof *s->counts);
    if (!s->cands || !s->penalized || !s->counts) {
        kiln_sampler_free(s);
        return kiln_fail(KILN_ERR_NOMEM, "sampler: out of memory");
    }
    uint64_t seed = params->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed);
    *out = s;
    return KILN_OK;
}

void kiln_sampler_free(kiln_sampler *s) {
    if (!s) return;
    free(s->cands);
    free(s->penalized);
    free(s->counts);
    free(s);
}

static bool penalties_active(const kiln_sampling_params *p) {
    return p->penalty_last_n > 0 &&
           (p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f);
}

// Repetition (CTRL-style: divide positive logits, multiply negative ones),
// frequency (per occurrence) and presence (once) penalties over the window.
static const float *apply_penalties(kiln_sampler *s, const float *logits, const int32_t *history, int n_history) {
    const kiln_sampling_params *p = &s->p;
    if (!penalties_active(p) || n_history == 0) return logits;
    memcpy(s->penalized, logits, sizeof(float) * (size_t)s->vocab);
    int start = n_history > p->penalty_last_n ? n_history - p->penalty_last_n : 0;
    for (int i = start; i < n_history; i++)
        if (history[i] >= 0 && history[i] < s->vocab) s->counts[history[i]]++;
    for (int i = start; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab || s->counts[id] == 0) continue;
        float *l = &s->penalized[id];
        *l = *l > 0.0f ? *l / p->repetition_penalty : *l * p->repetition_penalty;
        *l -= (float)s->counts[id] * p->frequency_penalty + p->presence_penalty;
        s->counts[id] = 0; // each distinct token once
    }
    return s->penalized;
}

static int by_logit_desc(const void *a, const void *b) {
    const candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return x->id - y->id; // ties: lower id first, as an argmax would
}

static kiln_status non_finite(const char *what) {
    return kiln_fail(KILN_ERR_FORMAT,
                     "the model produced non-finite logits (NaN or infinity; %s): its weights are likely corrupt", what);
}

kiln_status kiln_sampler_sample(kiln_sampler *s, const float *logits, const int32_t *history, int n_history,
                                int32_t *id) {
    const kiln_sampling_params *p = &s->p;
    *id = -1;
    logits = apply_penalties(s, logits, history, n_history);
    // The argmax, and the check that every logit is a number: a NaN compares
    // false with everything, so it would otherwise slip through every filter.
    int32_t best = -1;
    for (int i = 0; i < s->vocab; i++) {
        const float l = logits[i];
        if (isnan(l) || l == INFINITY) {
            char what[64];
            snprintf(what, sizeof what, "the logit of token %d is %s", i, isnan(l) ? "NaN" : "+infinity");
            return non_finite(what);
        }
        if (l != -INFINITY && (best < 0 || l > logits[best])) best = i;
    }
    if (best < 0) return non_finite("every logit is -infinity");
    // Temperature so small that the best logit scaled by it overflows: that
    // is greedy in all but name.
    const float inv_t = p->temperature > 0.0f ? 1.0f / p->temperature : 0.0f;
    if (p->temperature <= 0.0f || !isfinite(logits[best] * inv_t)) {
        *id = best;
        return KILN_OK;
    }

    // Tokens more than 40 nats below the best have probability < 4e-18 of it:
    // dropping them before the sort changes no choice. The best is always
    // kept, so at least one candidate survives every filter below.
    const float floor = logits[best] * inv_t - 40.0f;
    int n = 0;
    for (int i = 0; i < s->vocab; i++) {
        float l = logits[i] * inv_t;
        if (l >= floor) s->cands[n++] = (candidate){i, l};
    }
    qsort(s->cands, (size_t)n, sizeof *s->cands, by_logit_desc);
    if (p->top_k > 0 && p->top_k < n) n = p->top_k;

    // Softmax over the survivors, then top-p (smallest prefix with mass >=
    // top_p) and min-p (probability >= min_p * the best one's).
    double total = 0.0;
    const float max = s->cands[0].logit;
    for (int i = 0; i < n; i++) total += exp((double)(s->cands[i].logit - max));
    if (p->top_p < 1.0f) {
        double cum = 0.0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)(s->cands[i].logit - max)) / total;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        const double cut = log((double)p->min_p);
        int keep = 1;
        while (keep < n && (double)(s->cands[keep].logit - max) >= cut) keep++;
        n = keep;
    }
    total = 0.0;
    for (int i = 0; i < n; i++) total += exp((double)(s->cands[i].logit - max));
    double u = next_uniform(s->rng) * total, cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += exp((double)(s->cands[i].logit - max));
        if (u < cum) {
            *id = s->cands[i].id;
            return KILN_OK;
        }
    }
    *id = s->cands[n - 1].id;
    return KILN_OK;
}
