// Sessions (include/kiln.h): a thin client of the engine. Prompts go in
// steps of the engine's step size; sampling happens next to the logits
// when the backend can, with the next step queued before the host reads
// the token (decode-ahead, runtime/engine_step.c).
#include <stdlib.h>
#include <string.h>

#include "runtime/session.h"

kiln_status kiln_session_create(kiln_model *model, int n_ctx, kiln_session **out) {
    *out = NULL;
    kiln_session *s = calloc(1, sizeof *s);
    if (!s) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    s->model = model;
    kiln_engine_options o = {.max_seqs = 1, .max_seq_len = n_ctx > 0 ? n_ctx : 0};
    kiln_status st = kiln_engine_create(model, &o, &s->engine);
    if (st == KILN_OK) {
        kiln_engine_get_options(s->engine, &o);
        s->n_ctx = o.max_seq_len;
        s->history = malloc(sizeof(int32_t) * (size_t)s->n_ctx);
        s->no_logits = calloc((size_t)o.max_step_tokens, sizeof(bool));
        s->pos = malloc(sizeof(int32_t) * (size_t)o.max_step_tokens);
        s->seq = calloc((size_t)o.max_step_tokens, sizeof(int32_t));
        if (!s->history || !s->no_logits || !s->pos || !s->seq) st = kiln_fail(KILN_ERR_NOMEM, "session: out of memory");
    }
    if (st != KILN_OK) {
        kiln_session_free(s);
        return st;
    }
    *out = s;
    return KILN_OK;
}

void kiln_session_free(kiln_session *s) {
    if (!s) return;
    kiln_engine_free(s->engine);
    free(s->history);
    free(s->no_logits);
    free(s->pos);
    free(s->seq);
    kiln_sampler_free(s->sampler);
    free(s);
}

int kiln_session_position(const kiln_session *s) { return s->n_history; }

int kiln_session_tokens(const kiln_session *s, const int32_t **tokens) {
    *tokens = s->history;
    return s->n_history;
}

kiln_status kiln_session_sync(kiln_session *s) { return kiln_engine_sync(s->engine); }

int kiln_session_context(const kiln_session *s) { return s->n_ctx; }

kiln_status kiln_session_eval(kiln_session *s, const int32_t *ids, size_t n, const float **logits) {
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "eval: no tokens");
    if (n > (size_t)(s->n_ctx - s->n_history))
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: %d tokens so far plus %zu new exceed the context of %d",
                         s->n_history, n, s->n_ctx);
    kiln_engine_options o;
    kiln_engine_get_options(s->engine, &o);
    s->have_logits = false;
    for (size_t done = 0; done < n;) {
        const int chunk = (int)(n - done < (size_t)o.max_step_tokens ? n - done : (size_t)o.max_step_tokens);
        for (int i = 0; i < chunk; i++) s->pos[i] = s->n_history + i;
        const kiln_batch b = {.n_tokens = chunk, .tokens = ids + done, .pos = s->pos, .seq = s->seq,
                              .logits = done + (size_t)chunk == n ? NULL : s->no_logits};
        kiln_status st = kiln_engine_step(s->engine, &b);
        if (st != KILN_OK) return st;
        memcpy(s->history + s->n_history, ids + done, sizeof(int32_t) * (size_t)chunk);
        s->n_history += chunk;
        done += (size_t)chunk;
    }
    s->have_logits = true;
    return logits ? kiln_engine_logits(s->engine, 0, logits) : KILN_OK;
}

// A draw that failed on what the model computed (non-finite logits) names
// the model's file: that is where the fault is.
static kiln_status named(const kiln_session *s, kiln_status st) {
    return st == KILN_ERR_FORMAT ? kiln_fail_context(st, "%s", s->model->llm->path) : st;
}

static bool penalties_active(const kiln_sampling_params *p) {
    return p->penalty_last_n > 0 &&
           (p->repetition_penalty != 1.0f || p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f);
}

kiln_status kiln_session_sample(kiln_session *s, const kiln_sampling_params *params, int32_t *id) {
    if (!s->have_logits) return kiln_fail(KILN_ERR_INVALID_ARG, "sample: evaluate some tokens first");
    if (!s->sampler || memcmp(&s->sampler_params, params, sizeof *params) != 0) {
        kiln_sampler_free(s->sampler);
        s->sampler = NULL;
        kiln_status st = kiln_sampler_create(s->model->llm->hp.vocab, params, &s->sampler);
        if (st != KILN_OK) return st;
        s->sampler_params = *params;
    }
    // Next to the logits when the backend can: only the id crosses over.
    if (kiln_engine_samples_on_device(s->engine) && !penalties_active(params)) {
        kiln_backend_sample_args a = {.temperature = params->temperature, .top_k = params->top_k,
                                      .top_p = params->top_p, .min_p = params->min_p,
                                      .u = (float)kiln_sampler_next_uniform(s->sampler)};
        if (a.u >= 1.0f) a.u = 0x1.fffffep-1f; // rounding to float must not reach 1
        return named(s, kiln_engine_sample_ahead(s->engine, 0, &a, 0, id));
    }
    const float *logits;
    kiln_status st = kiln_engine_logits(s->engine, 0, &logits);
    if (st != KILN_OK) return st;
    return named(s, kiln_sampler_sample(s->sampler, logits, s->history, s->n_history, id));
}

void kiln_session_reset(kiln_session *s) { (void)kiln_session_truncate(s, 0); }

kiln_status kiln_session_truncate(kiln_session *s, int n) {
    if (n < 0 || n > s->n_history)
        return kiln_fail(KILN_ERR_INVALID_ARG, "truncate: position %d outside [0, %d]", n, s->n_history);
    kiln_status st = kiln_engine_seq_truncate(s->engine, 0, n);
    if (st != KILN_OK) return st;
    s->n_history = n;
    s->have_logits = false;
    return KILN_OK;
}
