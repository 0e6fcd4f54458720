// The paged KV pool: each layer's K and V live in blocks of 16 token slots,
// handed out to sequences through per-sequence block tables by an allocator
// with reference counts, so that sequences can share a prefix's blocks
// (kiln_kv_pool_share). A block is written only while one sequence holds it:
// kiln_kv_pool_prepare copies a shared block before its holder writes into
// it (copy on write).
#ifndef KILN_RUNTIME_KV_POOL_H
#define KILN_RUNTIME_KV_POOL_H

#include "backend/backend.h"
#include "model/model.h"

#define KILN_KV_BLOCK_SIZE 16

typedef struct kiln_kv_pool {
    kiln_backend *be;
    kiln_kv_view view;        // block_tables points at backend memory (`tables_dev`)
    kiln_kv_layer *layers;    // [n_layers]
    int n_layers;
    int n_blocks;
    int max_seqs;
    size_t block_bytes;       // one block of one layer's K (or V)
    int32_t *tables;          // [max_seqs][max_blocks_per_seq] host
    int32_t *tables_dev;      // the same in backend memory, updated as blocks change
    int *seq_blocks;          // blocks held by each sequence
    uint32_t *refs;           // [n_blocks] sequences holding each block (0: free)
    int32_t *free_blocks;     // stack of free block ids
    int n_free;
} kiln_kv_pool;

// Room for n_tokens slots in total (rounded up to whole blocks), shared by up
// to max_seqs sequences, each at most max_seq_len (<= n_tokens) long.
kiln_status kiln_kv_pool_create(kiln_backend *be, const kiln_hparams *hp, int n_tokens, int max_seqs, int max_seq_len,
                                kiln_dtype dtype, kiln_kv_pool **out);
void kiln_kv_pool_free(kiln_kv_pool *p);
uint64_t kiln_kv_pool_bytes(const kiln_hparams *hp, int n_tokens, kiln_dtype dtype);

// Makes positions [0, end) of seq addressable and positions [begin, end)
// writable by seq alone (shared blocks in that range are copied first).
// KILN_ERR_CONTEXT_FULL when the pool or the sequence's table is exhausted;
// nothing the sequence held before is lost then.
kiln_status kiln_kv_pool_prepare(kiln_kv_pool *p, int seq, int begin, int end);
// Keeps only positions [0, n) of seq: the blocks past them go back.
void kiln_kv_pool_truncate(kiln_kv_pool *p, int seq, int n);
// dst (emptied first) shares the blocks holding positions [0, n) of src.
kiln_status kiln_kv_pool_share(kiln_kv_pool *p, int src, int dst, int n);
// Blocks no sequence holds.
static inline int kiln_kv_pool_free_blocks(const kiln_kv_pool *p) { return p->n_free; }

#endif
