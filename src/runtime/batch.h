// Several sequences decoded together, one token each per step (the core of
// batched serving; `kiln bench` measures it). Each sequence is prefilled on
// its own, then every step feeds one token per sequence through one forward
// pass, replayed from a captured graph on backends that have graphs.
#ifndef KILN_RUNTIME_BATCH_H
#define KILN_RUNTIME_BATCH_H

#include "runtime/session.h"

typedef struct kiln_batch {
    kiln_model *model;
    kiln_kv_cache *kv;
    kiln_activations act;
    int n_seqs, n_ctx;
    int *length;         // [n_seqs] tokens in each sequence so far
    float *logits_dev;   // [n_seqs][vocab] backend memory: each sequence's last logits
    int32_t *pos, *seq, *rows; // [max(n_seqs, chunk)] host scratch
    void *graph;
    int decode_steps;
} kiln_batch;

kiln_status kiln_batch_create(kiln_model *model, int n_seqs, int n_ctx, kiln_batch **out);
void kiln_batch_free(kiln_batch *b);
// Appends n tokens to sequence `seq` (in chunks); its logits land in row seq.
kiln_status kiln_batch_prefill(kiln_batch *b, int seq, const int32_t *ids, int n);
// Appends ids[s] to every sequence s in one forward pass.
kiln_status kiln_batch_decode(kiln_batch *b, const int32_t *ids);

#endif
