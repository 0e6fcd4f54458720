// kiln_engine_step: a batch checked, its KV blocks prepared, its inputs
// uploaded, then the forward pass run directly or replayed from the graph
// captured for its shape. The only caller of kiln_llama_forward.
#include <stdlib.h>
#include <string.h>

#include "runtime/engine.h"

// Checks what the caller gave: sizes, ids, sequences, and that each
// sequence's tokens are contiguous at consecutive positions starting no
// later than its length. Counts the logit rows.
static kiln_status check_batch(kiln_engine *e, const kiln_batch *b, int *n_logits) {
    const int n = b->n_tokens, vocab = e->model->llm->hp.vocab;
    if (n <= 0 || n > e->opt.max_step_tokens)
        return kiln_fail(KILN_ERR_INVALID_ARG, "step: %d tokens (1 to %d a step)", n, e->opt.max_step_tokens);
    if (!b->tokens || !b->pos || !b->seq) return kiln_fail(KILN_ERR_INVALID_ARG, "step: tokens, pos and seq are required");
    if (++e->stamp == 0) { // wrapped: no sequence may look met in this batch
        memset(e->seq_stamp, 0, sizeof *e->seq_stamp * (size_t)e->opt.max_seqs);
        e->stamp = 1;
    }
    int rows = 0;
    for (int t = 0; t < n; t++) {
        if (b->tokens[t] < 0 || b->tokens[t] >= vocab)
            return kiln_fail(KILN_ERR_INVALID_ARG, "step: token id %d out of range [0, %d)", b->tokens[t], vocab);
        const int s = b->seq[t];
        if (s < 0 || s >= e->opt.max_seqs)
            return kiln_fail(KILN_ERR_INVALID_ARG, "step: sequence %d outside [0, %d)", s, e->opt.max_seqs);
        const bool continues = t > 0 && b->seq[t - 1] == s;
        if (continues && b->pos[t] != b->pos[t - 1] + 1)
            return kiln_fail(KILN_ERR_INVALID_ARG, "step: token %d of sequence %d is at position %d, not %d", t, s,
                             b->pos[t], b->pos[t - 1] + 1);
        if (!continues) {
            if (e->seq_stamp[s] == e->stamp) // met before in this batch, then left
                return kiln_fail(KILN_ERR_INVALID_ARG, "step: the tokens of sequence %d are not contiguous", s);
            e->seq_stamp[s] = e->stamp;
            if (b->pos[t] < 0 || b->pos[t] > e->seq_len[s])
                return kiln_fail(KILN_ERR_INVALID_ARG, "step: sequence %d holds %d tokens; position %d leaves a gap",
                                 s, e->seq_len[s], b->pos[t]);
        }
        if (b->pos[t] >= e->opt.max_seq_len)
            return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: position %d of sequence %d, the context is %d",
                             b->pos[t], s, e->opt.max_seq_len);
        rows += b->logits ? b->logits[t] : t == n - 1;
    }
    if (rows > e->opt.max_logit_rows)
        return kiln_fail(KILN_ERR_INVALID_ARG, "step: logits of %d tokens asked for, at most %d a step", rows,
                         e->opt.max_logit_rows);
    *n_logits = rows;
    return KILN_OK;
}

static kiln_step_graph *graph_for(kiln_engine *e, int n_tokens, int buf) {
    for (int i = 0; i < e->n_graphs; i++)
        if (e->graphs[i].n_tokens == n_tokens && e->graphs[i].buf == buf) return &e->graphs[i];
    kiln_step_graph *grown = realloc(e->graphs, sizeof *grown * (size_t)(e->n_graphs + 1));
    if (!grown) return NULL;
    e->graphs = grown;
    e->graphs[e->n_graphs] = (kiln_step_graph){.n_tokens = n_tokens, .buf = buf};
    return &e->graphs[e->n_graphs++];
}

// The forward pass issued into the backend's plan for the step, then run.
static kiln_status run_forward(kiln_engine *e, const kiln_forward_step *step) {
    const kiln_model *m = e->model;
    kiln_backend *be = kiln_step_begin(&e->recorder, e->be);
    kiln_status st = kiln_llama_forward(m->llm, &m->weights.w, be, &e->act, step);
    kiln_status ran = kiln_step_end(&e->recorder);
    return st != KILN_OK ? st : ran;
}

// The forward pass, replayed from a graph when the shape allows: single
// tokens of distinct sequences, each wanting logits (decode, batched
// decode). Such a graph stays valid while the inputs' values change: every
// kernel reads positions and block tables from device memory, and the
// attention grid follows the table row length, fixed for the engine.
static kiln_status forward(kiln_engine *e, const kiln_forward_step *step, bool distinct_seqs, int buf) {
    kiln_backend *be = e->be;
    const bool decode_shape = distinct_seqs && step->n_logits == step->n_tokens && be->stream->graph_begin;
    kiln_step_graph *g = decode_shape ? graph_for(e, step->n_tokens, buf) : NULL;
    // The first run of a shape goes uncaptured: workspaces reach their size
    // and timed kernel choices are made outside any capture.
    if (!g || g->runs++ == 0) return run_forward(e, step);
    if (!g->graph) {
        kiln_status st = be->stream->graph_begin(be);
        if (st != KILN_OK) return st;
        kiln_status fwd = run_forward(e, step);
        st = be->stream->graph_end(be, &g->graph);
        if (fwd != KILN_OK) return fwd;
        if (st != KILN_OK) return st;
    }
    return be->stream->graph_launch(be, g->graph);
}

// One step into logits buffer `buf`. tokens NULL: the one token's id is on
// the device already (put into the activations by the sampler). `ahead`:
// the step is queued for a token not yet confirmed, so the sequences'
// lengths and the last step's logits stay as they are.
static kiln_status run_step(kiln_engine *e, const kiln_batch *b, const int32_t *tokens, int n_logits, int buf,
                            bool ahead) {
    kiln_backend *be = e->be;
    const int n = b->n_tokens;
    kiln_status st;
    // Blocks first: positions from the sequence's first token on are written,
    // so shared blocks there are copied. Blocks past a rewritten sequence's
    // new end go back only once the step is queued: a refused step must
    // leave every sequence as it was.
    bool distinct = true;
    for (int t = 0; t < n; t++) {
        if (t > 0 && b->seq[t] == b->seq[t - 1]) {
            distinct = false;
            continue;
        }
        int end = t;
        while (end + 1 < n && b->seq[end + 1] == b->seq[t]) end++;
        if ((st = kiln_kv_pool_prepare(e->kv, b->seq[t], b->pos[t], b->pos[end] + 1)) != KILN_OK) return st;
    }
    if (tokens) be->stream->from_host(be, e->act.ids, tokens, sizeof(int32_t) * (size_t)n);
    be->stream->from_host(be, e->act.pos, b->pos, sizeof(int32_t) * (size_t)n);
    be->stream->from_host(be, e->act.seq, b->seq, sizeof(int32_t) * (size_t)n);
    int k = 0;
    for (int t = 0; t < n; t++)
        if (b->logits ? b->logits[t] : t == n - 1) e->rows[k++] = t;
    bool one_seq = true;
    for (int t = 1; t < n && one_seq; t++) one_seq = b->seq[t] == b->seq[0];
    const kiln_forward_step step = {.n_tokens = n, .one_seq = one_seq, .kv = &e->kv->view,
                                    .kv_layers = e->kv->layers, .n_logits = n_logits, .logit_rows = e->rows,
                                    .logits = e->logits_dev[buf]};
    if ((st = forward(e, &step, distinct, buf)) != KILN_OK) return st;
    if (!ahead) {
        for (int t = 0; t < n; t++) {
            const int s = b->seq[t];
            if ((t + 1 == n || b->seq[t + 1] != s) && b->pos[t] + 1 < e->seq_len[s])
                kiln_kv_pool_truncate(e->kv, s, b->pos[t] + 1); // a rewrite that ends earlier than before
            e->seq_len[s] = b->pos[t] + 1;
        }
        e->n_rows = n_logits;
        e->host_row = -1;
    }
    return KILN_OK;
}

kiln_status kiln_engine_step(kiln_engine *e, const kiln_batch *b) {
    int n_logits = 0;
    kiln_status st = check_batch(e, b, &n_logits);
    if (st != KILN_OK) return st;
    // The step queued ahead for exactly this token: its logits are computed.
    const bool take = e->ahead.queued && b->n_tokens == 1 && n_logits == 1 && b->seq[0] == e->ahead.seq &&
                      b->pos[0] == e->ahead.pos && b->tokens[0] == e->ahead.id;
    e->ahead.queued = false;
    if (take) {
        e->cur ^= 1;
        e->seq_len[b->seq[0]] = b->pos[0] + 1;
        e->n_rows = 1;
        e->host_row = -1;
        return e->be->stream->check(e->be);
    }
    if ((st = run_step(e, b, b->tokens, n_logits, e->cur, false)) != KILN_OK) return st;
    // No waiting: on a GPU the step runs on while the host prepares the next.
    return e->be->stream->check(e->be);
}

bool kiln_engine_samples_on_device(const kiln_engine *e) { return e->be->ops->sample != NULL; }

kiln_status kiln_engine_sample_device(kiln_engine *e, int row, const kiln_backend_sample_args *a, int32_t *id) {
    if (row < 0 || row >= e->n_rows)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: logits row %d outside the last step's %d", row, e->n_rows);
    const int vocab = e->model->llm->hp.vocab;
    return e->be->ops->sample(e->be, e->logits_dev[e->cur] + (size_t)row * vocab, vocab, a, id);
}

kiln_status kiln_engine_sample_ahead(kiln_engine *e, int row, const kiln_backend_sample_args *a, int seq,
                                     int32_t *id) {
    kiln_backend *be = e->be;
    const bool can = be->ops->sample_start && be->ops->sample_finish && be->stream->graph_begin && e->logits_dev[1] &&
                     seq >= 0 && seq < e->opt.max_seqs && e->seq_len[seq] < e->opt.max_seq_len;
    if (!can) return kiln_engine_sample_device(e, row, a, id);
    if (row < 0 || row >= e->n_rows)
        return kiln_fail(KILN_ERR_INVALID_ARG, "engine: logits row %d outside the last step's %d", row, e->n_rows);
    const int vocab = e->model->llm->hp.vocab;
    e->ahead.queued = false;
    kiln_status st = be->ops->sample_start(be, e->logits_dev[e->cur] + (size_t)row * vocab, vocab, a, e->act.ids);
    if (st != KILN_OK) return st;
    const int32_t pos = e->seq_len[seq], s = seq;
    const kiln_batch one = {.n_tokens = 1, .pos = &pos, .seq = &s};
    // A full pool only means no step ahead: the draw itself stands.
    const bool queued = run_step(e, &one, NULL, 1, e->cur ^ 1, true) == KILN_OK;
    if ((st = be->ops->sample_finish(be, id)) != KILN_OK) return st;
    if (queued) {
        e->ahead.queued = true;
        e->ahead.seq = seq;
        e->ahead.pos = pos;
        e->ahead.id = *id;
    }
    return KILN_OK;
}
