#include "runtime/kv_cache.h"

#include <stdlib.h>

static int blocks_for(int n_positions) { return (n_positions + KILN_KV_BLOCK_SIZE - 1) / KILN_KV_BLOCK_SIZE; }

uint64_t kiln_kv_cache_bytes(const kiln_hparams *hp, int n_ctx, kiln_dtype dtype) {
    uint64_t slots = (uint64_t)blocks_for(n_ctx) * KILN_KV_BLOCK_SIZE;
    uint64_t elem = dtype == KILN_F16 ? 2 : 4;
    return 2 * (uint64_t)hp->n_layers * slots * (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim * elem;
}

kiln_status kiln_kv_cache_create(kiln_backend *be, const kiln_hparams *hp, int n_ctx, int max_seqs, int max_seq_len,
                                 kiln_dtype dtype, kiln_kv_cache **out) {
    *out = NULL;
    if (n_ctx <= 0 || max_seqs <= 0 || n_ctx > (1 << 24) || max_seqs > (1 << 16) || max_seq_len <= 0 ||
        max_seq_len > n_ctx)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "kv cache: context %d, %d sequences of at most %d tokens are out of range", n_ctx, max_seqs,
                         max_seq_len);
    if (dtype != KILN_F32 && dtype != KILN_F16)
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv cache: type %s not supported (F32 or F16)", kiln_dtype_name(dtype));
    kiln_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return kiln_fail(KILN_ERR_NOMEM, "kv cache: out of memory");
    c->be = be;
    c->n_layers = hp->n_layers;
    c->n_blocks = blocks_for(n_ctx);
    c->max_seqs = max_seqs;
    // A table row holds one sequence's longest context, not the whole pool:
    // decode attention launches work in proportion to it.
    c->view = (kiln_kv_view){.dtype = dtype, .block_size = KILN_KV_BLOCK_SIZE, .n_kv_heads = hp->n_kv_heads,
                             .head_dim = hp->head_dim, .max_blocks_per_seq = blocks_for(max_seq_len)};
    c->layers = calloc((size_t)c->n_layers, sizeof *c->layers);
    const size_t table_entries = (size_t)max_seqs * (size_t)c->view.max_blocks_per_seq;
    c->tables = calloc(table_entries, sizeof *c->tables);
    c->seq_blocks = calloc((size_t)max_seqs, sizeof *c->seq_blocks);
    c->free_blocks = malloc(sizeof *c->free_blocks * (size_t)c->n_blocks);
    c->tables_dev = be->ops->alloc(be, sizeof *c->tables * table_entries);
    if (!c->layers || !c->tables || !c->seq_blocks || !c->free_blocks || !c->tables_dev) {
        kiln_kv_cache_free(c);
        return kiln_fail(KILN_ERR_NOMEM, "kv cache: out of memory");
    }
    size_t layer_bytes = kiln_kv_cache_bytes(hp, n_ctx, dtype) / 2 / (size_t)hp->n_layers;
    for (int l = 0; l < c->n_layers; l++) {
        c->layers[l].k = be->ops->alloc(be, layer_bytes);
        c->layers[l].v = be->ops->alloc(be, layer_bytes);
        if (!c->layers[l].k || !c->layers[l].v) {
            kiln_kv_cache_free(c);
            return kiln_fail(KILN_ERR_NOMEM, "kv cache: cannot allocate %zu bytes for layer %d", 2 * layer_bytes, l);
        }
    }
    // Hand out low block ids first: a lone sequence then reads memory in order.
    for (int b = 0; b < c->n_blocks; b++) c->free_blocks[b] = c->n_blocks - 1 - b;
    c->n_free = c->n_blocks;
    c->view.block_tables = c->tables_dev;
    *out = c;
    return KILN_OK;
}

void kiln_kv_cache_free(kiln_kv_cache *c) {
    if (!c) return;
    if (c->layers)
        for (int l = 0; l < c->n_layers; l++) {
            if (c->layers[l].k) c->be->ops->free(c->be, c->layers[l].k);
            if (c->layers[l].v) c->be->ops->free(c->be, c->layers[l].v);
        }
    if (c->tables_dev) c->be->ops->free(c->be, c->tables_dev);
    free(c->layers);
    free(c->tables);
    free(c->seq_blocks);
    free(c->free_blocks);
    free(c);
}

kiln_status kiln_kv_cache_reserve(kiln_kv_cache *c, int seq, int n_positions) {
    if (seq < 0 || seq >= c->max_seqs)
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv cache: sequence %d out of range", seq);
    int need = blocks_for(n_positions);
    if (need > c->view.max_blocks_per_seq)
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: %d tokens do not fit a context of %d", n_positions,
                         c->view.max_blocks_per_seq * KILN_KV_BLOCK_SIZE);
    if (need - c->seq_blocks[seq] > c->n_free)
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: the KV cache has no free blocks left");
    int32_t *table = c->tables + (size_t)seq * c->view.max_blocks_per_seq;
    int first_new = c->seq_blocks[seq];
    while (c->seq_blocks[seq] < need) table[c->seq_blocks[seq]++] = c->free_blocks[--c->n_free];
    if (need > first_new)
        c->be->ops->from_host(c->be, c->tables_dev + (size_t)seq * c->view.max_blocks_per_seq + first_new,
                              table + first_new, sizeof *table * (size_t)(need - first_new));
    return KILN_OK;
}

void kiln_kv_cache_release(kiln_kv_cache *c, int seq) {
    if (seq < 0 || seq >= c->max_seqs) return;
    int32_t *table = c->tables + (size_t)seq * c->view.max_blocks_per_seq;
    while (c->seq_blocks[seq] > 0) c->free_blocks[c->n_free++] = table[--c->seq_blocks[seq]];
}
