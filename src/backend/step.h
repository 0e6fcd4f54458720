// A step's operations recorded, planned by the backend, then run: the model
// issues a step's operations through the backend kiln_step_begin returns;
// kiln_step_end hands the whole list to the backend's `plan` (which may set
// hand-offs between neighbours: decode's prepared RMSNorm on CUDA), then runs
// it. So what one operation leaves for the next is decided from the step as
// issued, and adding an operation between two cannot silently break it.
// Backends without a plan run each operation as it is issued.
#ifndef KILN_BACKEND_STEP_H
#define KILN_BACKEND_STEP_H

#include "backend/backend.h"

typedef struct kiln_step_recorder {
    kiln_backend *real;    // the backend the step runs on
    kiln_backend proxy;    // what the model calls during the step
    kiln_op *ops;
    int n_ops, cap;
    bool failed;           // out of memory while recording
} kiln_step_recorder;

// The backend the model is to call for this step: r's proxy (recording) when
// the real backend has a plan, else the real backend itself.
kiln_backend *kiln_step_begin(kiln_step_recorder *r, kiln_backend *be);
// Plans and runs what was recorded (nothing to do without a plan).
kiln_status kiln_step_end(kiln_step_recorder *r);
void kiln_step_recorder_free(kiln_step_recorder *r);

#endif
