// The public C API (include/kiln.h) over the runtime.
#include <stdlib.h>
#include <string.h>

#include "runtime/session.h"

kiln_status kiln_model_load(const char *path, const kiln_model_params *params, kiln_model **out) {
    *out = NULL;
    if (!path) return kiln_fail(KILN_ERR_INVALID_ARG, "no model path given");
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kiln_llm_load(path, &m->llm);
    if (st == KILN_OK)
        st = kiln_backend_cpu_create(params ? params->n_threads : 0, params ? params->precise : false, &m->be);
    if (st != KILN_OK) {
        kiln_model_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    kiln_backend_destroy(m->be);
    kiln_llm_free(m->llm);
    free(m);
}

int kiln_model_vocab_size(const kiln_model *m) { return m->llm->hp.vocab; }
int kiln_model_context_length(const kiln_model *m) { return m->llm->hp.ctx_train; }

kiln_status kiln_tokenize(const kiln_model *m, const char *text, size_t len, bool add_bos, bool parse_special,
                          int32_t **ids, size_t *n_ids) {
    return kiln_tokenizer_encode(m->llm->tok, text, len, add_bos, parse_special, ids, n_ids);
}

kiln_status kiln_token_bytes(const kiln_model *m, int32_t id, const char **bytes, size_t *len) {
    if (!kiln_tokenizer_token_bytes(m->llm->tok, id, bytes, len))
        return kiln_fail(KILN_ERR_INVALID_ARG, "token id %d out of range", id);
    return KILN_OK;
}

bool kiln_token_is_end_of_generation(const kiln_model *m, int32_t id) { return kiln_tokenizer_is_eog(m->llm->tok, id); }

kiln_status kiln_session_create(kiln_model *model, int n_ctx, kiln_session **out) {
    *out = NULL;
    const kiln_hparams *hp = &model->llm->hp;
    if (n_ctx <= 0) n_ctx = hp->ctx_train < 4096 ? hp->ctx_train : 4096;
    // Within the window, sliding-window attention is full attention; beyond
    // it kiln would attend too far, so longer contexts are refused.
    if (hp->sliding_window > 0 && n_ctx > hp->sliding_window)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "context %d exceeds the model's sliding attention window of %d tokens, which kiln does not "
                         "implement yet; use a context of at most %d (-c %d)",
                         n_ctx, hp->sliding_window, hp->sliding_window, hp->sliding_window);
    if (n_ctx > (1 << 22)) return kiln_fail(KILN_ERR_INVALID_ARG, "context %d is too large", n_ctx);
    kiln_session *s = calloc(1, sizeof *s);
    if (!s) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    s->model = model;
    s->n_ctx = n_ctx;
    kiln_backend *be = model->be;
    int chunk = n_ctx < KILN_PREFILL_CHUNK ? n_ctx : KILN_PREFILL_CHUNK;
    kiln_status st = kiln_kv_cache_create(be, hp, n_ctx, 1, KILN_F32, &s->kv);
    if (st == KILN_OK) st = kiln_activations_create(be, hp, chunk, &s->act);
    if (st == KILN_OK) {
        s->logits_dev = be->ops->alloc(be, sizeof(float) * (size_t)hp->vocab);
        s->logits = malloc(sizeof(float) * (size_t)hp->vocab);
        s->history = malloc(sizeof(int32_t) * (size_t)n_ctx);
        if (!s->logits_dev || !s->logits || !s->history) st = kiln_fail(KILN_ERR_NOMEM, "session: out of memory");
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
    kiln_backend *be = s->model->be;
    kiln_kv_cache_free(s->kv);
    kiln_activations_free(be, &s->act);
    if (s->logits_dev) be->ops->free(be, s->logits_dev);
    free(s->logits);
    free(s->history);
    kiln_sampler_free(s->sampler);
    free(s);
}

int kiln_session_position(const kiln_session *s) { return s->n_history; }

kiln_status kiln_session_eval(kiln_session *s, const int32_t *ids, size_t n, const float **logits) {
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "eval: no tokens");
    if (n > (size_t)(s->n_ctx - s->n_history))
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: %d tokens so far plus %zu new exceed the context of %d",
                         s->n_history, n, s->n_ctx);
    kiln_status st = kiln_kv_cache_reserve(s->kv, 0, s->n_history + (int)n);
    if (st != KILN_OK) return st;
    int32_t pos[KILN_PREFILL_CHUNK], seq[KILN_PREFILL_CHUNK] = {0};
    for (size_t done = 0; done < n;) {
        int chunk = (int)(n - done < (size_t)s->act.max_tokens ? n - done : (size_t)s->act.max_tokens);
        for (int i = 0; i < chunk; i++) pos[i] = s->n_history + i;
        bool last = done + (size_t)chunk == n;
        int32_t logit_row = chunk - 1;
        kiln_forward_args args = {.n_tokens = chunk, .tokens = ids + done, .pos = pos, .seq = seq,
                                  .kv = &s->kv->view, .kv_layers = s->kv->layers, .n_logits = last ? 1 : 0,
                                  .logit_rows = &logit_row, .logits = s->logits_dev};
        if ((st = kiln_llama_forward(s->model->llm, s->model->be, &s->act, &args)) != KILN_OK) return st;
        memcpy(s->history + s->n_history, ids + done, sizeof(int32_t) * (size_t)chunk);
        s->n_history += chunk;
        done += (size_t)chunk;
    }
    kiln_backend *be = s->model->be;
    be->ops->to_host(be, s->logits, s->logits_dev, sizeof(float) * (size_t)s->model->llm->hp.vocab);
    s->have_logits = true;
    if (logits) *logits = s->logits;
    return KILN_OK;
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
    *id = kiln_sampler_sample(s->sampler, s->logits, s->history, s->n_history);
    return KILN_OK;
}

void kiln_session_reset(kiln_session *s) {
    kiln_kv_cache_release(s->kv, 0);
    s->n_history = 0;
    s->have_logits = false;
}

kiln_status kiln_session_truncate(kiln_session *s, int n) {
    if (n < 0 || n > s->n_history)
        return kiln_fail(KILN_ERR_INVALID_ARG, "truncate: position %d outside [0, %d]", n, s->n_history);
    // The cache keeps its blocks; positions >= n are simply overwritten later.
    s->n_history = n;
    s->have_logits = false;
    return KILN_OK;
}
