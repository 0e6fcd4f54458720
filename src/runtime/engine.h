// The engine (kiln_engine in kiln.h): the only caller of the forward pass.
// It owns the activations, the logits buffers, the captured graphs per batch
// shape and the paged KV pool; sessions, the bench and (next) the server's
// scheduler are its clients.
#ifndef KILN_RUNTIME_ENGINE_H
#define KILN_RUNTIME_ENGINE_H

#include "backend/step.h"
#include "model/bind.h"
#include "model/forward.h"
#include "runtime/kv_pool.h"

struct kiln_model {
    kiln_llm *llm;
    kiln_backend *be;
    kiln_bound_weights weights;
};

// A step shape replayed from a captured graph: n_tokens single tokens of
// distinct sequences, every one asking for logits, into logits buffer `buf`.
typedef struct kiln_step_graph {
    int n_tokens, buf;
    int runs;    // the first run is uncaptured (workspaces and timed choices settle)
    void *graph;
} kiln_step_graph;

struct kiln_engine {
    kiln_model *model;
    kiln_backend *be;
    kiln_engine_options opt; // every default filled in
    kiln_kv_pool *kv;
    kiln_activations act;
    // Two logits buffers [max_logit_rows][vocab]: logits[cur] holds the last
    // step's rows; the other takes a step queued ahead (decode-ahead).
    float *logits_dev[2];
    int cur;
    int n_rows;           // logit rows the last step produced
    float *logits_host;   // [vocab] host copy of row host_row
    int host_row;         // -1: none
    int *seq_len;         // [max_seqs]
    unsigned *seq_stamp;  // [max_seqs] the step that last met each sequence (check_batch)
    unsigned stamp;
    int32_t *pos, *seq, *rows; // [max_step_tokens] host scratch
    kiln_step_graph *graphs;
    int n_graphs;
    kiln_step_recorder recorder; // a step's operations, for the backend's plan
    // The step of a token drawn on the device, queued before the host read
    // the token (kiln_engine_sample_ahead): its logits go to logits[!cur];
    // a kiln_engine_step of exactly that token takes them.
    struct {
        bool queued;
        int seq, pos;
        int32_t id;
    } ahead;
};

// Fills every default of *o for this model (o may hold zeros).
void kiln_engine_resolve_options(const kiln_model *model, kiln_engine_options *o);

// Sampling next to the logits, on backends that can (kiln_backend_ops.sample):
// only the token id crosses to the host.
bool kiln_engine_samples_on_device(const kiln_engine *e);
kiln_status kiln_engine_sample_device(kiln_engine *e, int row, const kiln_backend_sample_args *a, int32_t *id);
// The same, and the step of the drawn token for sequence seq (at its length)
// queued before the host reads the id, so the device goes from one step to
// the next without waiting; a later kiln_engine_step of that very token
// takes its logits, any other step leaves it unused (results never change).
kiln_status kiln_engine_sample_ahead(kiln_engine *e, int row, const kiln_backend_sample_args *a, int seq,
                                     int32_t *id);

#endif
