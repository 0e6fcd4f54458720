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

typedef struct kiln_forward_args {
    int n_tokens;          // <= activations.max_tokens
    // The caller already put tokens, positions and sequences into the
    // activations' ids, pos and seq (kiln_forward_upload_inputs), as a
    // captured decode step needs; tokens must still be given for validation.
    bool inputs_ready;
    // The tokens are already in the activations' ids (put there on the
    // device, e.g. by the sampler): tokens is not read, only positions and
    // sequences are copied.
    bool ids_on_device;
    const int32_t *tokens; // [n_tokens] host
    const int32_t *pos;    // [n_tokens] host
    const int32_t *seq;    // [n_tokens] host
    const kiln_kv_view *kv;
    const kiln_kv_layer *kv_layers; // [n_layers]
    int n_logits;               // rows of the batch whose logits are wanted
    const int32_t *logit_rows;  // [n_logits] host, indices into the batch
    float *logits;              // [n_logits][vocab] backend memory
} kiln_forward_args;

// Runs the batch through the model with weights `w` (bound to backend `be` by
// kiln_weights_bind); logits land in args->logits.
kiln_status kiln_llama_forward(const kiln_llm *m, const kiln_weights *w, kiln_backend *be, kiln_activations *a,
                               const kiln_forward_args *args);
// The same step through a graph (backends with graph_begin): copies the
// inputs in front, captures the step into *graph when that is NULL, replays
// it. The graph stays valid while a, the KV cache and args' shape (tokens,
// logit rows, logits buffer) stay the same: only the inputs' values change.
// Run one step uncaptured first, so that workspaces reach their final size.
kiln_status kiln_llama_forward_replay(const kiln_llm *m, const kiln_weights *w, kiln_backend *be, kiln_activations *a,
                                      const kiln_forward_args *args, void **graph);
// Checks the token ids and copies tokens, positions and sequences into a.
kiln_status kiln_forward_upload_inputs(const kiln_llm *m, kiln_backend *be, kiln_activations *a,
                                       const kiln_forward_args *args);

#endif
