// The Llama family's forward pass (Llama 2/3, Mistral, Qwen 2, SmolLM2,
// TinyLlama), written once for every backend. n = tokens in the batch.
#include <math.h>
#include <string.h>

#include "model/forward.h"

static size_t act_floats(const kiln_hparams *hp, int n) {
    size_t q = (size_t)hp->n_heads * hp->head_dim, kv = (size_t)hp->n_kv_heads * hp->head_dim;
    return (size_t)n * (2 * (size_t)hp->dim + 2 * q + 2 * kv + 2 * (size_t)hp->ffn_dim);
}

uint64_t kiln_activations_bytes(const kiln_hparams *hp, int max_tokens) {
    return act_floats(hp, max_tokens) * sizeof(float) + 3 * sizeof(int32_t) * (uint64_t)max_tokens;
}

kiln_status kiln_activations_create(kiln_backend *be, const kiln_hparams *hp, int max_tokens, kiln_activations *a) {
    memset(a, 0, sizeof *a);
    a->max_tokens = max_tokens;
    const size_t n = (size_t)max_tokens, q = (size_t)hp->n_heads * hp->head_dim,
                 kv = (size_t)hp->n_kv_heads * hp->head_dim;
    struct { void **dst; size_t bytes; } bufs[] = {
        {(void **)&a->x, n * hp->dim * 4},
        {(void **)&a->q, n * q * 4},          {(void **)&a->k, n * kv * 4},
        {(void **)&a->v, n * kv * 4},         {(void **)&a->att, n * q * 4},
        {(void **)&a->gate, n * hp->ffn_dim * 4}, {(void **)&a->up, n * hp->ffn_dim * 4},
        {(void **)&a->rows, n * hp->dim * 4}, {(void **)&a->ids, n * 4},
        {(void **)&a->pos, n * 4},            {(void **)&a->seq, n * 4},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (!(*bufs[i].dst = be->device->alloc(be, bufs[i].bytes))) {
            kiln_activations_free(be, a);
            return kiln_fail(KILN_ERR_NOMEM, "activations: cannot allocate %zu bytes", bufs[i].bytes);
        }
    }
    return KILN_OK;
}

void kiln_activations_free(kiln_backend *be, kiln_activations *a) {
    void *bufs[] = {a->x, a->q, a->k, a->v, a->att, a->gate, a->up, a->rows, a->ids, a->pos, a->seq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->device->free(be, bufs[i]);
    memset(a, 0, sizeof *a);
}

static const float *bias_of(const kiln_tensor *bias) { return bias->data; } // NULL when absent (only Qwen 2 has them)

kiln_status kiln_llama_forward(const kiln_llm *m, const kiln_weights *wts, kiln_backend *be, kiln_activations *a,
                               const kiln_forward_step *args) {
    const kiln_hparams *hp = &m->hp;
    const kiln_backend_ops *op = be->ops;
    const int n = args->n_tokens, dim = hp->dim;
    const kiln_batch_layout batch = {.n_tokens = n, .pos = a->pos, .seq = a->seq, .one_seq = args->one_seq};
    const float scale = 1.0f / sqrtf((float)hp->head_dim);

    // Logits only for the rows asked for (usually the last of each sequence);
    // every row in order (batched decode) needs no gathering.
    bool all_rows = args->n_logits == n;
    for (int i = 0; all_rows && i < n; i++) all_rows = args->logit_rows[i] == i;

    op->get_rows(be, &wts->tok_embd, a->ids, n, a->x);                                   // x [n][dim]
    for (int l = 0; l < hp->n_layers; l++) {
        const kiln_layer_weights *w = &wts->layers[l];
        // Attention block.
        const kiln_linear_rope rope = {.kv = args->kv, .layer = args->kv_layers[l], .batch = &batch,
                                       .params = &hp->rope, .n_heads = hp->n_heads};
        op->linear(be, &(kiln_linear_args){.count = 3, .w = {&w->wq, &w->wk, &w->wv},
                                           .bias = {bias_of(&w->bq), bias_of(&w->bk), bias_of(&w->bv)},
                                           .y = {a->q, a->k, a->v}, .x = a->x, .n = n, .norm = w->attn_norm.data,
                                           .norm_eps = hp->norm_eps, .rope = &rope});
        // q [n][n_heads][hd], k, v [n][n_kv_heads][hd] from RMSNorm(x); q, k rotated; cache <- k, v
        op->attention(be, args->kv, args->kv_layers[l], &batch, a->q, hp->n_heads, scale, a->att); // att [n][n_heads * hd]
        op->linear(be, &(kiln_linear_args){.count = 1, .w = {&w->wo}, .y = {a->x}, .x = a->att, .n = n,
                                           .accumulate = true}); // x += Wo att
        // Feed-forward block (SwiGLU).
        op->mlp(be, &(kiln_mlp_args){.w_gate = &w->w_gate, .w_up = &w->w_up, .w_down = &w->w_down, .h = a->x,
                                     .x = a->x, .gate = a->gate, .up = a->up, .n = n, .norm = w->ffn_norm.data,
                                     .norm_eps = hp->norm_eps});
        // x += Wd (silu(Wg h) * (Wu h)), h = RMSNorm(x), via [n][ffn]
    }
    for (int i = 0; !all_rows && i < args->n_logits; i++)
        op->copy(be, a->rows + (size_t)i * dim, a->x + (size_t)args->logit_rows[i] * dim, sizeof(float) * (size_t)dim);
    if (args->n_logits > 0) {
        op->linear(be, &(kiln_linear_args){.count = 1, .w = {&wts->output}, .y = {args->logits},
                                           .x = all_rows ? a->x : a->rows,
                                           .n = args->n_logits, .norm = wts->out_norm.data,
                                           .norm_eps = hp->norm_eps}); // logits [n_logits][vocab] from RMSNorm(rows)
    }
    return KILN_OK;
}
