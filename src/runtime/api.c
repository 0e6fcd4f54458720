// The public C API (include/kiln.h) over the runtime.
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/session.h"

static kiln_status pick_backend(const kiln_model_params *p, kiln_backend **be) {
    kiln_device device = p ? p->device : KILN_DEVICE_AUTO;
    if (device == KILN_DEVICE_AUTO) {
        const char *env = getenv("KILN_DEVICE");
        if (env && strcmp(env, "cpu") == 0)
            device = KILN_DEVICE_CPU;
        else if (env && strcmp(env, "cuda") == 0)
            device = KILN_DEVICE_CUDA;
        else if (env && *env)
            return kiln_fail(KILN_ERR_INVALID_ARG, "KILN_DEVICE=%s: expected cpu or cuda", env);
        else
            device = kiln_cuda_device_count() > 0 ? KILN_DEVICE_CUDA : KILN_DEVICE_CPU;
    }
    if (device == KILN_DEVICE_CUDA) return kiln_backend_cuda_create(p ? p->gpu : 0, be);
    return kiln_backend_cpu_create(p ? p->n_threads : 0, p ? p->precise : false, be);
}

static int default_context(const kiln_hparams *hp) { return hp->ctx_train < 4096 ? hp->ctx_train : 4096; }

static uint64_t session_workspace_bytes(const kiln_backend *be, const kiln_hparams *hp, int n_ctx) {
    int chunk = n_ctx < kiln_prefill_chunk(be) ? n_ctx : kiln_prefill_chunk(be);
    // Logits, and where the backend samples, decode-ahead's second buffer.
    const uint64_t logit_buffers = be->ops->sample_start ? 2 : 1;
    return kiln_activations_bytes(hp, chunk) + logit_buffers * sizeof(float) * (uint64_t)hp->vocab;
}

// On a device with its own memory: refuse before allocating anything when
// the weights still to load plus a session of n_ctx tokens will not fit.
static kiln_status check_fits(const kiln_model *m, uint64_t weight_bytes, int n_ctx) {
    kiln_backend_memory mem;
    m->be->ops->memory(m->be, &mem);
    if (!mem.total) return KILN_OK;
    const kiln_hparams *hp = &m->llm->hp;
    uint64_t kv = kiln_kv_cache_bytes(hp, n_ctx, m->be->kv_dtype), work = session_workspace_bytes(m->be, hp, n_ctx);
    uint64_t need = weight_bytes + kv + work;
    if (need <= mem.free) return KILN_OK;
    const double gib = 1u << 30;
    return kiln_fail(KILN_ERR_NOMEM,
                     "%s does not fit on the GPU: weights %.2f GiB + KV cache %.2f GiB (context %d) + work space "
                     "%.2f GiB = %.2f GiB, but only %.2f GiB of %.2f GiB are free; use a smaller context (-c), a "
                     "smaller or quantized model, free the GPU, or run with --device cpu",
                     m->llm->path, weight_bytes / gib, kv / gib, n_ctx, work / gib, need / gib, mem.free / gib,
                     mem.total / gib);
}

kiln_status kiln_model_load_vocab(const char *path, kiln_model **out); // api_info.c

kiln_status kiln_model_load(const char *path, const kiln_model_params *params, kiln_model **out) {
    *out = NULL;
    if (params && params->vocab_only) return kiln_model_load_vocab(path, out);
    if (!path) return kiln_fail(KILN_ERR_INVALID_ARG, "no model path given");
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kiln_llm_load(path, &m->llm);
    if (st == KILN_OK) st = pick_backend(params, &m->be);
    uint64_t weight_bytes = 0;
    if (st == KILN_OK) st = kiln_weights_backend_bytes(m->llm, m->be, &weight_bytes);
    if (st == KILN_OK) st = check_fits(m, weight_bytes, default_context(&m->llm->hp));
    if (st == KILN_OK)
        st = kiln_weights_bind(m->llm, m->be, params ? params->progress : NULL, params ? params->progress_user : NULL,
                               &m->weights);
    if (st != KILN_OK) {
        kiln_model_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    if (m->be) kiln_weights_unbind(m->be, &m->weights);
    kiln_backend_destroy(m->be);
    kiln_llm_free(m->llm);
    free(m);
}

const char *kiln_model_device(const kiln_model *m) { return m->be->ops->name; }

void kiln_model_memory(const kiln_model *m, int n_ctx, kiln_memory_info *out) {
    const kiln_hparams *hp = &m->llm->hp;
    if (n_ctx <= 0) n_ctx = default_context(hp);
    kiln_backend_memory mem;
    m->be->ops->memory(m->be, &mem);
    *out = (kiln_memory_info){.weights = m->weights.bytes,
                              .kv_cache = kiln_kv_cache_bytes(hp, n_ctx, m->be->kv_dtype),
                              .workspace = session_workspace_bytes(m->be, hp, n_ctx),
                              .device_free = mem.free,
                              .device_total = mem.total};
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
    if (n_ctx <= 0) n_ctx = default_context(hp);
    // Within the window, sliding-window attention is full attention; beyond
    // it kiln would attend too far, so longer contexts are refused.
    if (hp->sliding_window > 0 && n_ctx > hp->sliding_window)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "context %d exceeds the model's sliding attention window of %d tokens, which kiln does not "
                         "implement yet; use a context of at most %d (-c %d)",
                         n_ctx, hp->sliding_window, hp->sliding_window, hp->sliding_window);
    if (n_ctx > (1 << 22)) return kiln_fail(KILN_ERR_INVALID_ARG, "context %d is too large", n_ctx);
    kiln_status fits = check_fits(model, 0, n_ctx); // the weights are loaded already
    if (fits != KILN_OK) return fits;
    kiln_session *s = calloc(1, sizeof *s);
    if (!s) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    s->model = model;
    s->n_ctx = n_ctx;
    kiln_backend *be = model->be;
    int chunk = n_ctx < kiln_prefill_chunk(be) ? n_ctx : kiln_prefill_chunk(be);
    kiln_status st = kiln_kv_cache_create(be, hp, n_ctx, 1, n_ctx, be->kv_dtype, &s->kv);
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
    if (s->ahead) (void)be->ops->sync(be); // the step ahead still writes into what is freed below
    if (s->decode_graph) be->ops->graph_free(be, s->decode_graph);
    if (s->graph_ahead) be->ops->graph_free(be, s->graph_ahead);
    if (s->logits_ahead) be->ops->free(be, s->logits_ahead);
    kiln_kv_cache_free(s->kv);
    kiln_activations_free(be, &s->act);
    if (s->logits_dev) be->ops->free(be, s->logits_dev);
    free(s->logits);
    free(s->history);
    kiln_sampler_free(s->sampler);
    free(s);
}

int kiln_session_position(const kiln_session *s) { return s->n_history; }

// One forward step of `chunk` tokens at the session's position; tokens NULL:
// one token the sampler already put into the activations' ids on the device,
// its logits into logits_ahead (decode-ahead).
static kiln_status forward_chunk(kiln_session *s, const int32_t *tokens, int chunk, bool last) {
    kiln_backend *be = s->model->be;
    static_assert(KILN_PREFILL_CHUNK_MAX <= 4096, "pos and seq live on the stack");
    int32_t pos[KILN_PREFILL_CHUNK_MAX], seq[KILN_PREFILL_CHUNK_MAX] = {0};
    for (int i = 0; i < chunk; i++) pos[i] = s->n_history + i;
    int32_t logit_row = chunk - 1;
    kiln_forward_args args = {.n_tokens = chunk, .tokens = tokens, .ids_on_device = tokens == NULL, .pos = pos,
                              .seq = seq, .kv = &s->kv->view, .kv_layers = s->kv->layers, .n_logits = last ? 1 : 0,
                              .logit_rows = &logit_row, .logits = tokens ? s->logits_dev : s->logits_ahead};
    // Single-token steps replay a captured graph (one for each logits
    // buffer), from the second on (the first sizes the workspaces).
    bool graphed = chunk == 1 && last && be->ops->graph_begin && s->decode_steps++ > 0;
    return graphed ? kiln_llama_forward_replay(s->model->llm, &s->model->weights.w, be, &s->act, &args,
                                               tokens ? &s->decode_graph : &s->graph_ahead)
                   : kiln_llama_forward(s->model->llm, &s->model->weights.w, be, &s->act, &args);
}

// The logits the caller asked for, once the last step is queued.
static kiln_status eval_done(kiln_session *s, const float **logits) {
    kiln_backend *be = s->model->be;
    s->have_logits = true;
    s->logits_on_host = false;
    if (logits) {
        be->ops->to_host(be, s->logits, s->logits_dev, sizeof(float) * (size_t)s->model->llm->hp.vocab);
        s->logits_on_host = true;
        *logits = s->logits;
        return be->ops->sync(be);
    }
    // No waiting here: on a GPU the step runs on while the host goes on to
    // sampling, whose read of the token is the step's one synchronisation.
    return be->ops->check(be);
}

kiln_status kiln_session_eval(kiln_session *s, const int32_t *ids, size_t n, const float **logits) {
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "eval: no tokens");
    if (n > (size_t)(s->n_ctx - s->n_history))
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: %d tokens so far plus %zu new exceed the context of %d",
                         s->n_history, n, s->n_ctx);
    // Decode-ahead (kiln_session_sample): the step for this very token is
    // queued already.
    const bool ahead = s->ahead && n == 1 && ids[0] == s->ahead_id;
    s->ahead = false;
    if (ahead) {
        s->history[s->n_history++] = ids[0];
        float *l = s->logits_dev;
        void *g = s->decode_graph;
        s->logits_dev = s->logits_ahead, s->decode_graph = s->graph_ahead;
        s->logits_ahead = l, s->graph_ahead = g;
        return eval_done(s, logits);
    }
    kiln_status st = kiln_kv_cache_reserve(s->kv, 0, s->n_history + (int)n);
    if (st != KILN_OK) return st;
    s->have_logits = s->logits_on_host = false;
    for (size_t done = 0; done < n;) {
        int chunk = (int)(n - done < (size_t)s->act.max_tokens ? n - done : (size_t)s->act.max_tokens);
        if ((st = forward_chunk(s, ids + done, chunk, done + (size_t)chunk == n)) != KILN_OK) return st;
        memcpy(s->history + s->n_history, ids + done, sizeof(int32_t) * (size_t)chunk);
        s->n_history += chunk;
        done += (size_t)chunk;
    }
    return eval_done(s, logits);
}

// Decode-ahead: with the token drawn on the device, the step that evaluates
// it is queued before the host even reads it, so the GPU goes from one step
// to the next without waiting for the host (KILN_DECODE_AHEAD=0 turns it
// off). The caller's next kiln_session_eval of that token finds the step
// queued; any other call leaves it unused (its logits go to their own buffer,
// its cache entry is the next step's to overwrite), so results never change.
static bool decode_ahead_on(void) {
    static int on = -1;
    if (on < 0) {
        const char *env = getenv("KILN_DECODE_AHEAD");
        on = !(env && strcmp(env, "0") == 0);
    }
    return on;
}

static kiln_status sample_ahead(kiln_session *s, const kiln_backend_sample_args *a, int32_t *id) {
    kiln_backend *be = s->model->be;
    const int vocab = s->model->llm->hp.vocab;
    if (!s->logits_ahead && !(s->logits_ahead = be->ops->alloc(be, sizeof(float) * (size_t)vocab)))
        return be->ops->sample(be, s->logits_dev, vocab, a, id); // no room: without the step ahead
    kiln_status st = be->ops->sample_start(be, s->logits_dev, vocab, a, s->act.ids);
    if (st != KILN_OK) return st;
    if ((st = forward_chunk(s, NULL, 1, true)) != KILN_OK) return st;
    if ((st = be->ops->sample_finish(be, id)) != KILN_OK) return st;
    s->ahead = true;
    s->ahead_id = *id;
    return KILN_OK;
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
    kiln_backend *be = s->model->be;
    const int vocab = s->model->llm->hp.vocab;
    // Next to the logits when the backend can: only the id crosses over.
    if (be->ops->sample && !penalties_active(params)) {
        kiln_backend_sample_args a = {.temperature = params->temperature, .top_k = params->top_k,
                                      .top_p = params->top_p, .min_p = params->min_p,
                                      .u = (float)kiln_sampler_next_uniform(s->sampler)};
        if (a.u >= 1.0f) a.u = 0x1.fffffep-1f; // rounding to float must not reach 1
        s->ahead = false;
        if (decode_ahead_on() && be->ops->sample_start && be->ops->sample_finish && be->ops->graph_begin &&
            s->n_history < s->n_ctx && kiln_kv_cache_reserve(s->kv, 0, s->n_history + 1) == KILN_OK)
            return sample_ahead(s, &a, id);
        return be->ops->sample(be, s->logits_dev, vocab, &a, id);
    }
    if (!s->logits_on_host) {
        be->ops->to_host(be, s->logits, s->logits_dev, sizeof(float) * (size_t)vocab);
        kiln_status st = be->ops->sync(be);
        if (st != KILN_OK) return st;
        s->logits_on_host = true;
    }
    *id = kiln_sampler_sample(s->sampler, s->logits, s->history, s->n_history);
    return KILN_OK;
}

void kiln_session_reset(kiln_session *s) {
    kiln_kv_cache_release(s->kv, 0);
    s->n_history = 0;
    s->have_logits = s->logits_on_host = s->ahead = false;
}

kiln_status kiln_session_truncate(kiln_session *s, int n) {
    if (n < 0 || n > s->n_history)
        return kiln_fail(KILN_ERR_INVALID_ARG, "truncate: position %d outside [0, %d]", n, s->n_history);
    // The cache keeps its blocks; positions >= n are simply overwritten later.
    s->n_history = n;
    s->have_logits = s->logits_on_host = s->ahead = false;
    return KILN_OK;
}

int kiln_session_tokens(const kiln_session *s, const int32_t **tokens) {
    *tokens = s->history;
    return s->n_history;
}

kiln_status kiln_session_sync(kiln_session *s) { return s->model->be->ops->sync(s->model->be); }

int kiln_session_context(const kiln_session *s) { return s->n_ctx; }
