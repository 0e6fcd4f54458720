// A generation session: one sequence in an engine of its own, with the
// tokens it holds and its sampler (include/kiln.h).
#ifndef KILN_RUNTIME_SESSION_H
#define KILN_RUNTIME_SESSION_H

#include "runtime/engine.h"
#include "runtime/sampler.h"

struct kiln_session {
    kiln_model *model;
    kiln_engine *engine; // one sequence, id 0
    int n_ctx;
    int32_t *history;    // [n_ctx] tokens evaluated so far
    int n_history;
    bool have_logits;    // the engine's last step holds this session's last logits
    bool *no_logits;     // [max_step_tokens] all false: prompt chunks before the last
    int32_t *pos, *seq;  // [max_step_tokens] a step's positions, and sequence 0 throughout
    kiln_sampler *sampler;
    kiln_sampling_params sampler_params;
};

#endif
