// The engine: options resolved once, memory planned and checked before
// anything is allocated, then every step through one function.
#include "runtime/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int default_context(const kiln_hparams *hp) { return hp->ctx_train < 4096 ? hp->ctx_train : 4096; }

void kiln_engine_resolve_options(const kiln_model *m, kiln_engine_options *o) {
    const kiln_backend *be = m->be;
    if (o->max_seqs <= 0) o->max_seqs = 1;
    if (o->max_seq_len <= 0) o->max_seq_len = default_context(&m->llm->hp);
    if (o->kv_pool_tokens <= 0) {
        const int64_t all = (int64_t)o->max_seqs * o->max_seq_len;
        o->kv_pool_tokens = all > (1 << 24) ? (1 << 24) : (int)all;
    }
    if (o->max_step_tokens <= 0) {
        o->max_step_tokens = be->step_tokens < o->kv_pool_tokens ? be->step_tokens : o->kv_pool_tokens;
        if (o->max_step_tokens < o->max_seqs) o->max_step_tokens = o->max_seqs; // one decode token per sequence
    }
    if (o->max_logit_rows <= 0) o->max_logit_rows = o->max_seqs;
    if (o->kv_type == KILN_KV_AUTO) o->kv_type = be->kv_dtype == KILN_F16 ? KILN_KV_F16 : KILN_KV_F32;
}

static kiln_dtype kv_dtype_of(kiln_kv_type t) { return t == KILN_KV_F16 ? KILN_F16 : KILN_F32; }

// Logits buffers: two where the backend samples (decode-ahead needs its own).
static int logit_buffers(const kiln_backend *be) { return be->ops->sample_start ? 2 : 1; }

static void memory_of(const kiln_model *m, const kiln_engine_options *o, uint64_t *kv, uint64_t *work) {
    const kiln_hparams *hp = &m->llm->hp;
    *kv = kiln_kv_pool_bytes(hp, o->kv_pool_tokens, kv_dtype_of(o->kv_type)) +
          sizeof(int32_t) * (uint64_t)o->max_seqs * (uint64_t)((o->max_seq_len + KILN_KV_BLOCK_SIZE - 1) / KILN_KV_BLOCK_SIZE);
    *work = kiln_activations_bytes(hp, o->max_step_tokens) +
            (uint64_t)logit_buffers(m->be) * sizeof(float) * (uint64_t)o->max_logit_rows * (uint64_t)hp->vocab;
}

void kiln_engine_memory(const kiln_model *m, const kiln_engine_options *options, uint64_t *kv_pool,
                        uint64_t *workspace) {
    *kv_pool = *workspace = 0;
    if (!m->be) return; // vocab_only
    kiln_engine_options o = options ? *options : (kiln_engine_options){0};
    kiln_engine_resolve_options(m, &o);
    memory_of(m, &o, kv_pool, workspace);
}

static kiln_status check_options(const kiln_model *m, const kiln_engine_options *o) {
    const kiln_hparams *hp = &m->llm->hp;
    if (o->max_seqs > (1 << 16))
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: %d sequences (at most 65536)", o->max_seqs);
    if (o->max_seq_len > (1 << 22))
        return kiln_fail(KILN_ERR_INVALID_ARG, "context %d is too large (at most 4194304)", o->max_seq_len);
    if (o->max_seq_len > o->kv_pool_tokens)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: a sequence of %d tokens cannot fit a KV pool of %d",
                         o->max_seq_len, o->kv_pool_tokens);
    if (o->max_step_tokens > (1 << 16) || o->max_logit_rows > o->max_step_tokens)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: %d tokens a step with %d logit rows are out of range",
                         o->max_step_tokens, o->max_logit_rows);
    if (o->kv_type != KILN_KV_F16 && o->kv_type != KILN_KV_F32)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: unknown KV type %d", (int)o->kv_type);
    if (kv_dtype_of(o->kv_type) != m->be->kv_dtype)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "engine: the %s backend's KV cache is %s", m->be->device->name,
                         kiln_dtype_name(m->be->kv_dtype));
    // Within the window, sliding-window attention is full attention; beyond
    // it kiln would attend too far, so longer sequences are refused.
    if (hp->sliding_window > 0 && o->max_seq_len > hp->sliding_window)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "context %d exceeds the model's sliding attention window of %d tokens, which kiln does not "
                         "implement yet; use a context of at most %d (-c %d)",
                         o->max_seq_len, hp->sliding_window, hp->sliding_window, hp->sliding_window);
    return KILN_OK;
}

// The longest max_seq_len whose engine fits `free_bytes` (0: none).
static int longest_fitting(const kiln_model *m, const kiln_engine_options *given, uint64_t free_bytes) {
    int lo = 0, hi = given->max_seq_len;
    while (lo < hi) {
        const int mid = lo + (hi - lo + 1) / 2;
        kiln_engine_options o = *given;
        o.max_seq_len = mid;
        if ((int64_t)o.kv_pool_tokens == (int64_t)given->max_seqs * given->max_seq_len) o.kv_pool_tokens = 0; // scales with it
        o.max_step_tokens = o.max_step_tokens > mid && o.max_step_tokens > o.max_seqs ? 0 : o.max_step_tokens;
        kiln_engine_resolve_options(m, &o);
        uint64_t kv, work;
        memory_of(m, &o, &kv, &work);
        if (kv + work <= free_bytes) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

// Room left for everything else the process and the device need: a tenth
// of what is free, at most 1 GiB.
static uint64_t usable(uint64_t free_bytes) {
    const uint64_t reserve = free_bytes / 10 < (1ull << 30) ? free_bytes / 10 : (1ull << 30);
    return free_bytes - reserve;
}

// Refuses, before allocating anything, an engine the device (or the host,
// for the CPU) cannot hold, with the numbers and what would fit.
static kiln_status check_fits(const kiln_model *m, const kiln_engine_options *o) {
    kiln_backend_memory mem;
    m->be->device->memory(m->be, &mem);
    if (!mem.total) return KILN_OK;
    uint64_t kv, work;
    memory_of(m, o, &kv, &work);
    if (kv + work <= usable(mem.free)) return KILN_OK;
    const double gib = 1u << 30;
    const int fits = longest_fitting(m, o, usable(mem.free));
    char seqs[32] = "";
    if (o->max_seqs > 1) snprintf(seqs, sizeof seqs, " for %d sequences", o->max_seqs);
    const char *where = mem.weights || strcmp(m->be->device->name, "cpu") ? "device" : "machine";
    if (fits > 0)
        return kiln_fail(KILN_ERR_NOMEM,
                         "a context of %d tokens%s needs a KV cache of %.2f GiB and %.2f GiB of work space, but "
                         "the %s has %.2f GiB of %.2f GiB free; the largest context that fits is %d (-c %d)",
                         o->max_seq_len, seqs, kv / gib, work / gib, where, mem.free / gib, mem.total / gib,
                         fits, fits);
    return kiln_fail(KILN_ERR_NOMEM,
                     "a context of %d tokens needs a KV cache of %.2f GiB and %.2f GiB of work space, but the %s has "
                     "only %.2f GiB of %.2f GiB free: not even a short context fits; free some memory or use a "
                     "smaller model",
                     o->max_seq_len, kv / gib, work / gib, where, mem.free / gib, mem.total / gib);
}

kiln_status kiln_engine_create(kiln_model *m, const kiln_engine_options *options, kiln_engine **out) {
    *out = NULL;
    if (!m->be)
        return kiln_fail(KILN_ERR_INVALID_ARG, "%s was loaded with vocab_only (metadata and tokenizer): load it "
                         "without vocab_only to run it", m->llm->path);
    kiln_engine_options o = options ? *options : (kiln_engine_options){0};
    kiln_engine_resolve_options(m, &o);
    kiln_status st = check_options(m, &o);
    if (st == KILN_OK) st = check_fits(m, &o);
    if (st == KILN_OK && m->be->device->configure) st = m->be->device->configure(m->be, &o.kernels);
    if (st != KILN_OK) return st;
    kiln_engine *e = calloc(1, sizeof *e);
    if (!e) return kiln_fail(KILN_ERR_NOMEM, "engine: out of memory");
    e->model = m;
    e->be = m->be;
    e->opt = o;
    e->host_row = -1;
    kiln_backend *be = m->be;
    const kiln_hparams *hp = &m->llm->hp;
    const size_t logits_bytes = sizeof(float) * (size_t)o.max_logit_rows * (size_t)hp->vocab;
    st = kiln_kv_pool_create(be, hp, o.kv_pool_tokens, o.max_seqs, o.max_seq_len, kv_dtype_of(o.kv_type), &e->kv);
    if (st == KILN_OK) st = kiln_activations_create(be, hp, o.max_step_tokens, &e->act);
    if (st == KILN_OK) {
        for (int i = 0; i < logit_buffers(be); i++) e->logits_dev[i] = be->device->alloc(be, logits_bytes);
        e->logits_host = malloc(sizeof(float) * (size_t)hp->vocab);
        e->seq_len = calloc((size_t)o.max_seqs, sizeof *e->seq_len);
        e->seq_stamp = calloc((size_t)o.max_seqs, sizeof *e->seq_stamp);
        e->pos = malloc(sizeof(int32_t) * (size_t)o.max_step_tokens);
        e->seq = malloc(sizeof(int32_t) * (size_t)o.max_step_tokens);
        e->rows = malloc(sizeof(int32_t) * (size_t)o.max_step_tokens);
        if (!e->logits_dev[0] || (logit_buffers(be) > 1 && !e->logits_dev[1]) || !e->logits_host || !e->seq_len || !e->seq_stamp ||
            !e->pos || !e->seq || !e->rows)
            st = kiln_fail(KILN_ERR_NOMEM, "engine: out of memory for its logits and scratch");
    }
    if (st != KILN_OK) {
        kiln_engine_free(e);
        return st;
    }
    *out = e;
    return KILN_OK;
}

void kiln_engine_free(kiln_engine *e) {
    if (!e) return;
    kiln_backend *be = e->be;
    if (e->ahead.queued) (void)be->stream->sync(be); // the step ahead still writes into what is freed below
    for (int i = 0; i < e->n_graphs; i++)
        if (e->graphs[i].graph) be->stream->graph_free(be, e->graphs[i].graph);
    free(e->graphs);
    kiln_step_recorder_free(&e->recorder);
    kiln_kv_pool_free(e->kv);
    kiln_activations_free(be, &e->act);
    for (int i = 0; i < 2; i++)
        if (e->logits_dev[i]) be->device->free(be, e->logits_dev[i]);
    free(e->logits_host);
    free(e->seq_len);
    free(e->seq_stamp);
    free(e->pos);
    free(e->seq);
    free(e->rows);
    free(e);
}

void kiln_engine_get_options(const kiln_engine *e, kiln_engine_options *out) { *out = e->opt; }

int kiln_engine_seq_length(const kiln_engine *e, int seq) {
    return seq >= 0 && seq < e->opt.max_seqs ? e->seq_len[seq] : 0;
}

int kiln_engine_free_slots(const kiln_engine *e) { return kiln_kv_pool_free_blocks(e->kv) * KILN_KV_BLOCK_SIZE; }

kiln_status kiln_engine_seq_truncate(kiln_engine *e, int seq, int n) {
    if (seq < 0 || seq >= e->opt.max_seqs)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: sequence %d outside [0, %d)", seq, e->opt.max_seqs);
    if (n < 0 || n > e->seq_len[seq])
        return kiln_fail(KILN_ERR_INVALID_ARG, "truncate: position %d outside [0, %d]", n, e->seq_len[seq]);
    e->ahead.queued = false;
    kiln_kv_pool_truncate(e->kv, seq, n);
    e->seq_len[seq] = n;
    return KILN_OK;
}

kiln_status kiln_engine_seq_share(kiln_engine *e, int src, int dst, int n) {
    if (src < 0 || src >= e->opt.max_seqs || dst < 0 || dst >= e->opt.max_seqs || src == dst)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: cannot share sequence %d into %d (of %d)", src, dst,
                         e->opt.max_seqs);
    if (n < 0 || n > e->seq_len[src])
        return kiln_fail(KILN_ERR_INVALID_ARG, "share: sequence %d holds %d tokens, not %d", src, e->seq_len[src], n);
    e->ahead.queued = false;
    kiln_status st = kiln_kv_pool_share(e->kv, src, dst, n);
    if (st == KILN_OK) e->seq_len[dst] = n;
    return st;
}

kiln_status kiln_engine_sync(kiln_engine *e) { return e->be->stream->sync(e->be); }

kiln_status kiln_engine_logits(kiln_engine *e, int i, const float **logits) {
    *logits = NULL;
    if (i < 0 || i >= e->n_rows)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: logits row %d outside the last step's %d", i, e->n_rows);
    const int vocab = e->model->llm->hp.vocab;
    if (e->host_row != i) {
        e->be->stream->to_host(e->be, e->logits_host, e->logits_dev[e->cur] + (size_t)i * vocab,
                            sizeof(float) * (size_t)vocab);
        kiln_status st = e->be->stream->sync(e->be);
        if (st != KILN_OK) return st;
        e->host_row = i;
    }
    *logits = e->logits_host;
    return KILN_OK;
}
