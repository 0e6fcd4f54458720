// The paged KV cache: a pool of fixed-size blocks per layer, handed out to
// sequences through per-sequence block tables. Many sequences share one pool,
// so batched decode and in-flight batching need no redesign.
#ifndef KILN_RUNTIME_KV_CACHE_H
#define KILN_RUNTIME_KV_CACHE_H

#include "backend/backend.h"
#include "model/model.h"

#define KILN_KV_BLOCK_SIZE 16

typedef struct kiln_kv_cache {
    kiln_backend *be;
    kiln_kv_view view;        // block_tables points at backend memory (`tables_dev`)
    kiln_kv_layer *layers;    // [n_layers]
    int n_layers;
    int n_blocks;
    int max_seqs;
    int32_t *tables;          // [max_seqs][max_blocks_per_seq] host
    int32_t *tables_dev;      // the same in backend memory, updated as blocks are handed out
    int *seq_blocks;          // blocks held by each sequence
    int32_t *free_blocks;     // stack of free block ids
    int n_free;
} kiln_kv_cache;

// Room for n_ctx tokens in total (rounded up to whole blocks), shared by up to
// max_seqs sequences, each at most max_seq_len (<= n_ctx) long.
kiln_status kiln_kv_cache_create(kiln_backend *be, const kiln_hparams *hp, int n_ctx, int max_seqs, int max_seq_len,
                                 kiln_dtype dtype, kiln_kv_cache **out);
void kiln_kv_cache_free(kiln_kv_cache *c);
uint64_t kiln_kv_cache_bytes(const kiln_hparams *hp, int n_ctx, kiln_dtype dtype);

// Makes positions [0, n_positions) of seq addressable; KILN_ERR_CONTEXT_FULL
// when the pool or the sequence's table is exhausted.
kiln_status kiln_kv_cache_reserve(kiln_kv_cache *c, int seq, int n_positions);
// Returns the sequence's blocks to the pool.
void kiln_kv_cache_release(kiln_kv_cache *c, int seq);

#endif
