// The forward pass of the Llama family over a batch of tokens that may belong
// to several sequences at different positions (see kiln_batch_layout).
#ifndef KILN_MODEL_FORWARD_H
#define KILN_MODEL_FORWARD_H

#include "model/model.h"

// Activation buffers in backend memory for up to max_tokens tokens per step.
typedef struct kiln_activations {
    int max_tokens;
    float *x;      // [max_tokens][dim]         residual stream
    float *q;      // [max_tokens][n_heads * head_dim]
    float *k;      // [max_tokens][n_kv_heads * head_dim]
    float *v;      // [max_tokens][n_kv_heads * head_dim]
    float *att;    // [max_tokens][n_heads * head_dim]
    float *gate;   // [max_tokens][ffn_dim]
    float *up;     // [max_tokens][ffn_dim]
    float *rows;   // [max_tokens][dim]         final hidden rows that need logits
    int32_t *ids;  // [max_tokens]              backend copies of the inputs
    int32_t *pos;  // [max_tokens]
    int32_t *seq;  // [max_tokens]
} kiln_activations;

kiln_status kiln_activations_create(kiln_backend *be, const kiln_hparams *hp, int max_tokens, kiln_activations *a);
void kiln_activations_free(kiln_backend *be, kiln_activations *a);
uint64_t kiln_activations_bytes(const kiln_hparams *hp, int max_tokens);

// One step's batch as the forward pass sees it: the inputs are in the
// activations already (ids, pos, seq; the engine puts them there), tokens of
// one sequence contiguous at consecutive positions (kiln_batch_layout).
typedef struct kiln_forward_step {
    int n_tokens;               // <= activations.max_tokens
    bool one_seq;               // every token of one sequence (a prompt chunk)
    const kiln_kv_view *kv;
    const kiln_kv_layer *kv_layers; // [n_layers]
    int n_logits;               // rows of the batch whose logits are wanted
    const int32_t *logit_rows;  // [n_logits] host, increasing indices into the batch
    float *logits;              // [n_logits][vocab] backend memory
} kiln_forward_step;

// Queues the batch through the model with weights `w` (bound to backend `be`
// by kiln_weights_bind); logits land in step->logits. Only the engine calls it
// (runtime/engine_step.c), which checks the batch first.
kiln_status kiln_llama_forward(const kiln_llm *m, const kiln_weights *w, kiln_backend *be, kiln_activations *a,
                               const kiln_forward_step *step);

#endif
