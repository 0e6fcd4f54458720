// The objects behind the public API: a model bound to a backend, and a
// generation session (one sequence in its own KV cache).
#ifndef KILN_RUNTIME_SESSION_H
#define KILN_RUNTIME_SESSION_H

#include "model/forward.h"
#include "runtime/kv_cache.h"
#include "runtime/sampler.h"

// Tokens per forward step when a prompt is processed in chunks.
#define KILN_PREFILL_CHUNK 512

struct kiln_model {
    kiln_llm *llm;
    kiln_backend *be;
};

struct kiln_session {
    kiln_model *model;
    kiln_kv_cache *kv;
    kiln_activations act;
    int n_ctx;
    float *logits_dev;   // [vocab] backend memory
    float *logits;       // [vocab] host copy of the last logits
    bool have_logits;
    int32_t *history;    // [n_ctx] tokens evaluated so far
    int n_history;
    kiln_sampler *sampler;
    kiln_sampling_params sampler_params;
};

#endif
