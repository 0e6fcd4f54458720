#include "runtime/batch.h"

#include <stdlib.h>
#include <string.h>

kiln_status kiln_batch_create(kiln_model *model, int n_seqs, int n_ctx, kiln_batch **out) {
    *out = NULL;
    const kiln_hparams *hp = &model->llm->hp;
    if (n_seqs <= 0 || n_seqs > 4096 || n_ctx <= 0 || n_ctx > (1 << 22))
        return kiln_fail(KILN_ERR_INVALID_ARG, "batch: %d sequences of %d tokens are out of range", n_seqs, n_ctx);
    kiln_batch *b = calloc(1, sizeof *b);
    if (!b) return kiln_fail(KILN_ERR_NOMEM, "batch: out of memory");
    b->model = model;
    b->n_seqs = n_seqs;
    b->n_ctx = n_ctx;
    kiln_backend *be = model->be;
    int chunk = kiln_prefill_chunk(be);
    int max_tokens = n_seqs > chunk ? n_seqs : chunk;
    // One pool shared by all sequences, each up to n_ctx long.
    kiln_status st = kiln_kv_cache_create(be, hp, n_ctx * n_seqs, n_seqs, n_ctx, be->kv_dtype, &b->kv);
    if (st == KILN_OK) st = kiln_activations_create(be, hp, max_tokens, &b->act);
    if (st == KILN_OK) {
        b->logits_dev = be->ops->alloc(be, sizeof(float) * (size_t)hp->vocab * (size_t)n_seqs);
        b->length = calloc((size_t)n_seqs, sizeof *b->length);
        b->pos = malloc(sizeof(int32_t) * (size_t)max_tokens);
        b->seq = malloc(sizeof(int32_t) * (size_t)max_tokens);
        b->rows = malloc(sizeof(int32_t) * (size_t)max_tokens);
        if (!b->logits_dev || !b->length || !b->pos || !b->seq || !b->rows)
            st = kiln_fail(KILN_ERR_NOMEM, "batch: out of memory");
    }
    if (st != KILN_OK) {
        kiln_batch_free(b);
        return st;
    }
    *out = b;
    return KILN_OK;
}

void kiln_batch_free(kiln_batch *b) {
    if (!b) return;
    kiln_backend *be = b->model->be;
    if (b->graph) be->ops->graph_free(be, b->graph);
    kiln_kv_cache_free(b->kv);
    kiln_activations_free(be, &b->act);
    if (b->logits_dev) be->ops->free(be, b->logits_dev);
    free(b->length);
    free(b->pos);
    free(b->seq);
    free(b->rows);
    free(b);
}

kiln_status kiln_batch_prefill(kiln_batch *b, int seq, const int32_t *ids, int n) {
    if (seq < 0 || seq >= b->n_seqs || n <= 0 || n > b->n_ctx - b->length[seq])
        return kiln_fail(KILN_ERR_INVALID_ARG, "batch: cannot add %d tokens to sequence %d", n, seq);
    kiln_status st = kiln_kv_cache_reserve(b->kv, seq, b->length[seq] + n);
    kiln_backend *be = b->model->be;
    const int vocab = b->model->llm->hp.vocab;
    for (int done = 0; st == KILN_OK && done < n;) {
        int chunk = n - done < b->act.max_tokens ? n - done : b->act.max_tokens;
        for (int i = 0; i < chunk; i++) b->pos[i] = b->length[seq] + i, b->seq[i] = seq;
        b->rows[0] = chunk - 1;
        kiln_forward_args args = {.n_tokens = chunk, .tokens = ids + done, .pos = b->pos, .seq = b->seq,
                                  .kv = &b->kv->view, .kv_layers = b->kv->layers,
                                  .n_logits = done + chunk == n ? 1 : 0, .logit_rows = b->rows,
                                  .logits = b->logits_dev + (size_t)seq * vocab};
        st = kiln_llama_forward(b->model->llm, &b->model->weights.w, be, &b->act, &args);
        b->length[seq] += chunk;
        done += chunk;
    }
    return st == KILN_OK ? be->ops->sync(be) : st;
}

kiln_status kiln_batch_decode(kiln_batch *b, const int32_t *ids) {
    kiln_backend *be = b->model->be;
    kiln_status st = KILN_OK;
    for (int s = 0; s < b->n_seqs && st == KILN_OK; s++) {
        if (b->length[s] >= b->n_ctx) return kiln_fail(KILN_ERR_CONTEXT_FULL, "batch: sequence %d is full", s);
        st = kiln_kv_cache_reserve(b->kv, s, b->length[s] + 1);
        b->pos[s] = b->length[s];
        b->seq[s] = s;
        b->rows[s] = s;
    }
    if (st != KILN_OK) return st;
    kiln_forward_args args = {.n_tokens = b->n_seqs, .tokens = ids, .pos = b->pos, .seq = b->seq,
                              .kv = &b->kv->view, .kv_layers = b->kv->layers, .n_logits = b->n_seqs,
                              .logit_rows = b->rows, .logits = b->logits_dev};
    // The first step runs as it is (workspaces reach their size); later ones
    // replay its capture with new inputs copied in front.
    if (be->ops->graph_begin && b->decode_steps++ > 0)
        st = kiln_llama_forward_replay(b->model->llm, &b->model->weights.w, be, &b->act, &args, &b->graph);
    else
        st = kiln_llama_forward(b->model->llm, &b->model->weights.w, be, &b->act, &args);
    if (st != KILN_OK) return st;
    for (int s = 0; s < b->n_seqs; s++) b->length[s]++;
    return KILN_OK;
}
