// The Llama family's forward pass (Llama 2/3, Mistral, Qwen 2, SmolLM2,
// TinyLlama), written once for every backend. n = tokens in the batch.
#include <math.h>
#include <string.h>

#include "model/forward.h"

static size_t act_floats(const kiln_hparams *hp, int n) {
    size_t q = (size_t)hp->n_heads * hp->head_dim, kv = (size_t)hp->n_kv_heads * hp->head_dim;
    return (size_t)n * (3 * (size_t)hp->dim + 2 * q + 2 * kv + 2 * (size_t)hp->ffn_dim);
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
        {(void **)&a->x, n * hp->dim * 4},    {(void **)&a->h, n * hp->dim * 4},
        {(void **)&a->q, n * q * 4},          {(void **)&a->k, n * kv * 4},
        {(void **)&a->v, n * kv * 4},         {(void **)&a->att, n * q * 4},
        {(void **)&a->gate, n * hp->ffn_dim * 4}, {(void **)&a->up, n * hp->ffn_dim * 4},
        {(void **)&a->rows, n * hp->dim * 4}, {(void **)&a->ids, n * 4},
        {(void **)&a->pos, n * 4},            {(void **)&a->seq, n * 4},
    };
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
        if (!(*bufs[i].dst = be->ops->alloc(be, bufs[i].bytes))) {
            kiln_activations_free(be, a);
            return kiln_fail(KILN_ERR_NOMEM, "activations: cannot allocate %zu bytes", bufs[i].bytes);
        }
    }
    return KILN_OK;
}

void kiln_activations_free(kiln_backend *be, kiln_activations *a) {
    void *bufs[] = {a->x, a->h, a->q, a->k, a->v, a->att, a->gate, a->up, a->rows, a->ids, a->pos, a->seq};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        if (bufs[i]) be->ops->free(be, bufs[i]);
    memset(a, 0, sizeof *a);
}

// Biases exist only in some architectures (Qwen 2); absent ones have no data.
static void add_bias(kiln_backend *be, const kiln_tensor *bias, float *y, int n) {
    if (bias->data) be->ops->add_bias(be, y, bias->data, n, (int)bias->ne[0]);
}

kiln_status kiln_llama_forward(const kiln_llm *m, kiln_backend *be, kiln_activations *a, const kiln_forward_args *args) {
    const kiln_hparams *hp = &m->hp;
    const kiln_backend_ops *op = be->ops;
    const int n = args->n_tokens, dim = hp->dim, hd = hp->head_dim;
    if (n <= 0 || n > a->max_tokens || args->n_logits < 0 || args->n_logits > n)
        return kiln_fail(KILN_ERR_INVALID_ARG, "forward: %d tokens, %d logit rows (at most %d tokens)", n,
                         args->n_logits, a->max_tokens);
    for (int t = 0; t < n; t++)
        if (args->tokens[t] < 0 || args->tokens[t] >= hp->vocab)
            return kiln_fail(KILN_ERR_INVALID_ARG, "forward: token id %d out of range [0, %d)", args->tokens[t],
                             hp->vocab);
    op->from_host(be, a->ids, args->tokens, sizeof(int32_t) * (size_t)n);
    op->from_host(be, a->pos, args->pos, sizeof(int32_t) * (size_t)n);
    op->from_host(be, a->seq, args->seq, sizeof(int32_t) * (size_t)n);
    const kiln_batch_layout batch = {.n_tokens = n, .pos = a->pos, .seq = a->seq};
    const float scale = 1.0f / sqrtf((float)hd);

    op->get_rows(be, &m->w.tok_embd, a->ids, n, a->x);                                  // x [n][dim]
    for (int l = 0; l < hp->n_layers; l++) {
        const kiln_layer_weights *w = &m->w.layers[l];
        // Attention block.
        op->rmsnorm(be, a->x, w->attn_norm.data, a->h, n, dim, hp->norm_eps);          // h [n][dim]
        const kiln_tensor *qkv_w[3] = {&w->wq, &w->wk, &w->wv};
        float *const qkv[3] = {a->q, a->k, a->v};
        op->matmul_multi(be, qkv_w, qkv, 3, a->h, n);                                  // q [n][n_heads][hd], k, v [n][n_kv_heads][hd]
        add_bias(be, &w->bq, a->q, n);
        add_bias(be, &w->bk, a->k, n);
        add_bias(be, &w->bv, a->v, n);
        op->rope(be, a->q, n, hp->n_heads, hd, a->pos, &hp->rope);
        op->rope(be, a->k, n, hp->n_kv_heads, hd, a->pos, &hp->rope);
        op->kv_store(be, args->kv, args->kv_layers[l], &batch, a->k, a->v);             // cache <- k, v
        op->attention(be, args->kv, args->kv_layers[l], &batch, a->q, hp->n_heads, scale, a->att); // att [n][q_dim]
        op->matmul(be, &w->wo, a->att, n, a->h, dim);                                   // h [n][dim]
        op->add(be, a->x, a->h, (size_t)n * dim);                                       // x += h
        // Feed-forward block (SwiGLU).
        op->rmsnorm(be, a->x, w->ffn_norm.data, a->h, n, dim, hp->norm_eps);           // h [n][dim]
        const kiln_tensor *gate_up_w[2] = {&w->w_gate, &w->w_up};
        float *const gate_up[2] = {a->gate, a->up};
        op->matmul_multi(be, gate_up_w, gate_up, 2, a->h, n);                          // gate, up [n][ffn]
        op->swiglu(be, a->gate, a->up, a->gate, (size_t)n * hp->ffn_dim);               // gate = silu(gate) * up
        op->matmul(be, &w->w_down, a->gate, n, a->h, dim);                              // h [n][dim]
        op->add(be, a->x, a->h, (size_t)n * dim);                                       // x += h
    }
    // Logits only for the rows asked for (usually the last of each sequence).
    for (int i = 0; i < args->n_logits; i++) {
        int r = args->logit_rows[i];
        if (r < 0 || r >= n) return kiln_fail(KILN_ERR_INVALID_ARG, "forward: logit row %d out of range", r);
        op->copy(be, a->rows + (size_t)i * dim, a->x + (size_t)r * dim, sizeof(float) * (size_t)dim);
    }
    if (args->n_logits > 0) {
        op->rmsnorm(be, a->rows, m->w.out_norm.data, a->rows, args->n_logits, dim, hp->norm_eps); // rows [n_logits][dim]
        op->matmul(be, &m->w.output, a->rows, args->n_logits, args->logits, hp->vocab);          // logits [n_logits][vocab]
    }
    return KILN_OK;
}
