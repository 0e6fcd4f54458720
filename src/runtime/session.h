// The objects behind the public API: a model bound to a backend, and a
// generation session (one sequence in its own KV cache).
#ifndef KILN_RUNTIME_SESSION_H
#define KILN_RUNTIME_SESSION_H

#include "model/bind.h"
#include "model/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"

// Tokens per forward step when a prompt is processed in chunks: larger on a
// GPU, where the matrix products need many rows to reach the tensor cores' rate.
#define KILN_PREFILL_CHUNK_CPU 512
#define KILN_PREFILL_CHUNK_MAX 2048
static inline int kiln_prefill_chunk(const kiln_backend *be) {
    return be->kv_dtype == KILN_F32 ? KILN_PREFILL_CHUNK_CPU : KILN_PREFILL_CHUNK_MAX;
}

struct kiln_model {
    kiln_llm *llm;
    kiln_backend *be;
    kiln_bound_weights weights;
};

struct kiln_session {
    kiln_model *model;
    kiln_kv_cache *kv;
    kiln_activations act;
    int n_ctx;
    float *logits_dev;   // [vocab] backend memory
    float *logits;       // [vocab] host copy of the last logits
    bool have_logits;
    bool logits_on_host; // `logits` holds the last logits
    // The single-token decode step, captured once and replayed (backends
    // with graphs); the first such step runs uncaptured to size workspaces.
    void *decode_graph;
    int decode_steps;
    int32_t *history;    // [n_ctx] tokens evaluated so far
    int n_history;
    kiln_sampler *sampler;
    kiln_sampling_params sampler_params;
    // Decode-ahead (kiln_session_sample): the step for token ahead_id at
    // position n_history is queued, writing logits_ahead through its own
    // graph, so that logits_dev keeps the last token's logits; evaluating
    // ahead_id swaps the two pairs.
    bool ahead;
    int32_t ahead_id;
    float *logits_ahead;
    void *graph_ahead;
};

#endif
