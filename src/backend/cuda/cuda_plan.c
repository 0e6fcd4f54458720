// The CUDA backend's plan for a step: decode's RMSNorm prepared by the
// residual product before it. A residual product (O, or the feed-forward
// block's down projection) immediately followed by a product that reads its
// output through RMSNorm (the next block's input) is told that norm, and the
// reader is told it may take what was prepared; any other operation between
// them, or a reader of another buffer, leaves both as they were.
#include "backend/cuda/cuda_impl.h"

// The residual stream an operation adds into, or NULL.
static const float *residual_output(const kiln_op *op) {
    if (op->kind == KILN_OP_LINEAR && op->linear.accumulate && op->linear.count == 1) return op->linear.y[0];
    if (op->kind == KILN_OP_MLP) return op->mlp.x;
    return NULL;
}

// Marks op as the reader of y through its RMSNorm; returns the norm, or NULL
// when op does not read y that way.
static const float *read_through_norm(kiln_op *op, const float *y) {
    if (op->kind == KILN_OP_LINEAR && op->linear.x == y && op->linear.norm) {
        op->linear.prepared_input = true;
        return op->linear.norm;
    }
    if (op->kind == KILN_OP_MLP && op->mlp.h == y && op->mlp.norm) {
        op->mlp.prepared_input = true;
        return op->mlp.norm;
    }
    return NULL;
}

void cuda_plan(kiln_backend *be, kiln_op *ops, int n) {
    (void)be;
    for (int i = 0; i + 1 < n; i++) {
        const float *y = residual_output(&ops[i]);
        const float *norm = y ? read_through_norm(&ops[i + 1], y) : NULL;
        if (!norm) continue;
        if (ops[i].kind == KILN_OP_LINEAR)
            ops[i].linear.next_norm = norm;
        else
            ops[i].mlp.next_norm = norm;
    }
}
