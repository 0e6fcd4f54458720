// A model's weights in a backend's memory and form (see bind.c).
#ifndef KILN_MODEL_BIND_H
#define KILN_MODEL_BIND_H

#include "model/model.h"

typedef void (*kiln_progress_fn)(double fraction, void *user);

typedef struct kiln_bound_weights {
    kiln_weights w;  // views the forward pass reads
    void *mem;       // the one backend allocation behind them (NULL on the CPU)
    uint64_t bytes;
} kiln_bound_weights;

// Backend memory all weights will take; fails on a weight type the backend
// cannot multiply.
kiln_status kiln_weights_backend_bytes(const kiln_llm *m, kiln_backend *be, uint64_t *bytes);
kiln_status kiln_weights_bind(const kiln_llm *m, kiln_backend *be, kiln_progress_fn progress, void *user,
                              kiln_bound_weights *out);
void kiln_weights_unbind(kiln_backend *be, kiln_bound_weights *bw);

#endif
