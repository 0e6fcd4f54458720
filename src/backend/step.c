#include "backend/step.h"

#include <stdlib.h>

static kiln_step_recorder *recorder_of(kiln_backend *proxy) { return proxy->impl; }

// A slot for the next operation; NULL (and the step failed) when none.
static kiln_op *next_op(kiln_backend *proxy, kiln_op_kind kind) {
    kiln_step_recorder *r = recorder_of(proxy);
    if (r->n_ops == r->cap) {
        const int cap = r->cap ? 2 * r->cap : 256;
        kiln_op *grown = realloc(r->ops, sizeof *grown * (size_t)cap);
        if (!grown) {
            r->failed = true;
            return NULL;
        }
        r->ops = grown;
        r->cap = cap;
    }
    kiln_op *op = &r->ops[r->n_ops++];
    op->kind = kind;
    return op;
}

static void record_get_rows(kiln_backend *be, const kiln_tensor *table, const int32_t *ids, int n, float *out) {
    kiln_op *op = next_op(be, KILN_OP_GET_ROWS);
    if (op) op->get_rows.table = table, op->get_rows.ids = ids, op->get_rows.n = n, op->get_rows.out = out;
}

static void record_linear(kiln_backend *be, const kiln_linear_args *a) {
    kiln_op *op = next_op(be, KILN_OP_LINEAR);
    if (!op) return;
    op->linear = *a;
    if (a->rope) { // the rope and batch structs live on the model's stack
        op->rope = *a->rope;
        op->batch = *a->rope->batch;
        op->rope.batch = NULL; // re-pointed at op->batch when run (the array may move meanwhile)
    }
}

static void record_mlp(kiln_backend *be, const kiln_mlp_args *a) {
    kiln_op *op = next_op(be, KILN_OP_MLP);
    if (op) op->mlp = *a;
}

static void record_attention(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer,
                             const kiln_batch_layout *batch, const float *q, int n_heads, float scale, float *out) {
    kiln_op *op = next_op(be, KILN_OP_ATTENTION);
    if (!op) return;
    op->attention.kv = kv, op->attention.layer = layer, op->attention.q = q, op->attention.n_heads = n_heads;
    op->attention.scale = scale, op->attention.out = out;
    op->batch = *batch;
}

static void record_copy(kiln_backend *be, void *dst, const void *src, size_t n) {
    kiln_op *op = next_op(be, KILN_OP_COPY);
    if (op) op->copy.dst = dst, op->copy.src = src, op->copy.n = n;
}

// Only what the forward pass calls; anything else during a step (sampling,
// the device or stream tables) is a bug that must show at once (a NULL
// call), not run out of order.
static const kiln_backend_ops recording_ops = {
    .get_rows = record_get_rows,
    .linear = record_linear,
    .mlp = record_mlp,
    .attention = record_attention,
    .copy = record_copy,
};

kiln_backend *kiln_step_begin(kiln_step_recorder *r, kiln_backend *be) {
    r->real = be;
    r->n_ops = 0;
    r->failed = false;
    if (!be->ops->plan) return be;
    // Only operations during a step: the device and stream stay out of reach.
    r->proxy = (kiln_backend){.ops = &recording_ops, .kv_dtype = be->kv_dtype, .step_tokens = be->step_tokens,
                              .impl = r};
    return &r->proxy;
}

static void run(kiln_backend *be, kiln_op *op) {
    const kiln_backend_ops *o = be->ops;
    switch (op->kind) {
    case KILN_OP_GET_ROWS: o->get_rows(be, op->get_rows.table, op->get_rows.ids, op->get_rows.n, op->get_rows.out); break;
    case KILN_OP_LINEAR:
        if (op->linear.rope) {
            op->rope.batch = &op->batch;
            op->linear.rope = &op->rope;
        }
        o->linear(be, &op->linear);
        break;
    case KILN_OP_MLP: o->mlp(be, &op->mlp); break;
    case KILN_OP_ATTENTION:
        o->attention(be, op->attention.kv, op->attention.layer, &op->batch, op->attention.q, op->attention.n_heads,
                     op->attention.scale, op->attention.out);
        break;
    case KILN_OP_COPY: o->copy(be, op->copy.dst, op->copy.src, op->copy.n); break;
    }
}

kiln_status kiln_step_end(kiln_step_recorder *r) {
    kiln_backend *be = r->real;
    if (!be->ops->plan) return KILN_OK;
    if (r->failed) return kiln_fail(KILN_ERR_NOMEM, "step: out of memory recording its operations");
    be->ops->plan(be, r->ops, r->n_ops);
    for (int i = 0; i < r->n_ops; i++) run(be, &r->ops[i]);
    r->n_ops = 0;
    return KILN_OK;
}

void kiln_step_recorder_free(kiln_step_recorder *r) {
    free(r->ops);
    r->ops = NULL;
    r->n_ops = r->cap = 0;
}
