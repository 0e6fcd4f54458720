#include "runtime/kv_pool.h"

#include <stdlib.h>

static int blocks_for(int n_positions) { return (n_positions + KILN_KV_BLOCK_SIZE - 1) / KILN_KV_BLOCK_SIZE; }

uint64_t kiln_kv_pool_bytes(const kiln_hparams *hp, int n_tokens, kiln_dtype dtype) {
    uint64_t slots = (uint64_t)blocks_for(n_tokens) * KILN_KV_BLOCK_SIZE;
    uint64_t elem = dtype == KILN_F16 ? 2 : 4;
    return 2 * (uint64_t)hp->n_layers * slots * (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim * elem;
}

kiln_status kiln_kv_pool_create(kiln_backend *be, const kiln_hparams *hp, int n_tokens, int max_seqs, int max_seq_len,
                                kiln_dtype dtype, kiln_kv_pool **out) {
    *out = NULL;
    if (n_tokens <= 0 || max_seqs <= 0 || n_tokens > (1 << 24) || max_seqs > (1 << 16) || max_seq_len <= 0 ||
        max_seq_len > n_tokens)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "kv pool: %d slots, %d sequences of at most %d tokens are out of range", n_tokens, max_seqs,
                         max_seq_len);
    if (dtype != KILN_F32 && dtype != KILN_F16)
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv pool: type %s not supported (F32 or F16)", kiln_dtype_name(dtype));
    kiln_kv_pool *p = calloc(1, sizeof *p);
    if (!p) return kiln_fail(KILN_ERR_NOMEM, "kv pool: out of memory");
    p->be = be;
    p->n_layers = hp->n_layers;
    p->n_blocks = blocks_for(n_tokens);
    p->max_seqs = max_seqs;
    // A table row holds one sequence's longest context, not the whole pool:
    // decode attention launches work in proportion to it.
    p->view = (kiln_kv_view){.dtype = dtype, .block_size = KILN_KV_BLOCK_SIZE, .n_kv_heads = hp->n_kv_heads,
                             .head_dim = hp->head_dim, .max_blocks_per_seq = blocks_for(max_seq_len)};
    p->block_bytes = (size_t)KILN_KV_BLOCK_SIZE * (size_t)hp->n_kv_heads * (size_t)hp->head_dim *
                     (dtype == KILN_F16 ? 2 : 4);
    p->layers = calloc((size_t)p->n_layers, sizeof *p->layers);
    const size_t table_entries = (size_t)max_seqs * (size_t)p->view.max_blocks_per_seq;
    p->tables = calloc(table_entries, sizeof *p->tables);
    p->seq_blocks = calloc((size_t)max_seqs, sizeof *p->seq_blocks);
    p->refs = calloc((size_t)p->n_blocks, sizeof *p->refs);
    p->free_blocks = malloc(sizeof *p->free_blocks * (size_t)p->n_blocks);
    p->tables_dev = be->device->alloc(be, sizeof *p->tables * table_entries);
    if (!p->layers || !p->tables || !p->seq_blocks || !p->refs || !p->free_blocks || !p->tables_dev) {
        kiln_kv_pool_free(p);
        return kiln_fail(KILN_ERR_NOMEM, "kv pool: out of memory");
    }
    const size_t layer_bytes = p->block_bytes * (size_t)p->n_blocks;
    for (int l = 0; l < p->n_layers; l++) {
        p->layers[l].k = be->device->alloc(be, layer_bytes);
        p->layers[l].v = be->device->alloc(be, layer_bytes);
        if (!p->layers[l].k || !p->layers[l].v) {
            kiln_kv_pool_free(p);
            return kiln_fail(KILN_ERR_NOMEM, "kv pool: cannot allocate %zu bytes for layer %d", 2 * layer_bytes, l);
        }
    }
    // Hand out low block ids first: a lone sequence then reads memory in order.
    for (int b = 0; b < p->n_blocks; b++) p->free_blocks[b] = p->n_blocks - 1 - b;
    p->n_free = p->n_blocks;
    p->view.block_tables = p->tables_dev;
    *out = p;
    return KILN_OK;
}

void kiln_kv_pool_free(kiln_kv_pool *p) {
    if (!p) return;
    if (p->layers)
        for (int l = 0; l < p->n_layers; l++) {
            if (p->layers[l].k) p->be->device->free(p->be, p->layers[l].k);
            if (p->layers[l].v) p->be->device->free(p->be, p->layers[l].v);
        }
    if (p->tables_dev) p->be->device->free(p->be, p->tables_dev);
    free(p->layers);
    free(p->tables);
    free(p->seq_blocks);
    free(p->refs);
    free(p->free_blocks);
    free(p);
}

static int32_t *table_of(kiln_kv_pool *p, int seq) { return p->tables + (size_t)seq * p->view.max_blocks_per_seq; }

static void upload_entries(kiln_kv_pool *p, int seq, int first, int count) {
    if (count <= 0) return;
    p->be->stream->from_host(p->be, p->tables_dev + (size_t)seq * p->view.max_blocks_per_seq + first,
                          table_of(p, seq) + first, sizeof(int32_t) * (size_t)count);
}

static void unref(kiln_kv_pool *p, int32_t block) {
    if (--p->refs[block] == 0) p->free_blocks[p->n_free++] = block;
}

static int32_t take_block(kiln_kv_pool *p) {
    int32_t b = p->free_blocks[--p->n_free];
    p->refs[b] = 1;
    return b;
}

// Every layer's K and V of block src into block dst.
static void copy_block(kiln_kv_pool *p, int32_t dst, int32_t src) {
    const size_t bytes = p->block_bytes, d = bytes * (size_t)dst, s = bytes * (size_t)src;
    for (int l = 0; l < p->n_layers; l++) {
        p->be->ops->copy(p->be, (char *)p->layers[l].k + d, (const char *)p->layers[l].k + s, bytes);
        p->be->ops->copy(p->be, (char *)p->layers[l].v + d, (const char *)p->layers[l].v + s, bytes);
    }
}

kiln_status kiln_kv_pool_prepare(kiln_kv_pool *p, int seq, int begin, int end) {
    if (seq < 0 || seq >= p->max_seqs) return kiln_fail(KILN_ERR_INVALID_ARG, "kv pool: sequence %d out of range", seq);
    if (begin < 0 || begin >= end)
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv pool: positions [%d, %d) are not a range", begin, end);
    const int need = blocks_for(end), have = p->seq_blocks[seq];
    if (need > p->view.max_blocks_per_seq)
        return kiln_fail(KILN_ERR_CONTEXT_FULL, "context full: %d tokens do not fit a sequence of at most %d", end,
                         p->view.max_blocks_per_seq * KILN_KV_BLOCK_SIZE);
    // Shared blocks the write will touch, each to be copied into a new one.
    int32_t *table = table_of(p, seq);
    const int first_written = begin / KILN_KV_BLOCK_SIZE, last_held = have < need ? have : need;
    int shared = 0;
    for (int i = first_written; i < last_held; i++) shared += p->refs[table[i]] > 1;
    const int new_blocks = (need > have ? need - have : 0) + shared;
    if (new_blocks > p->n_free)
        return kiln_fail(KILN_ERR_CONTEXT_FULL,
                         "context full: the KV pool has %d free blocks of %d tokens, %d more are needed", p->n_free,
                         KILN_KV_BLOCK_SIZE, new_blocks);
    for (int i = first_written; i < last_held; i++) {
        if (p->refs[table[i]] <= 1) continue;
        const int32_t own = take_block(p);
        copy_block(p, own, table[i]);
        unref(p, table[i]);
        table[i] = own;
        upload_entries(p, seq, i, 1);
    }
    while (p->seq_blocks[seq] < need) table[p->seq_blocks[seq]++] = take_block(p);
    upload_entries(p, seq, have, need - have);
    return KILN_OK;
}

void kiln_kv_pool_truncate(kiln_kv_pool *p, int seq, int n) {
    if (seq < 0 || seq >= p->max_seqs) return;
    const int keep = n <= 0 ? 0 : blocks_for(n);
    int32_t *table = table_of(p, seq);
    while (p->seq_blocks[seq] > keep) unref(p, table[--p->seq_blocks[seq]]);
}

kiln_status kiln_kv_pool_share(kiln_kv_pool *p, int src, int dst, int n) {
    if (src < 0 || src >= p->max_seqs || dst < 0 || dst >= p->max_seqs || src == dst)
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv pool: cannot share sequence %d with %d", src, dst);
    const int blocks = n <= 0 ? 0 : blocks_for(n);
    if (blocks > p->seq_blocks[src])
        return kiln_fail(KILN_ERR_INVALID_ARG, "kv pool: sequence %d holds fewer than %d positions", src, n);
    kiln_kv_pool_truncate(p, dst, 0);
    const int32_t *from = table_of(p, src);
    int32_t *to = table_of(p, dst);
    for (int i = 0; i < blocks; i++) {
        to[i] = from[i];
        p->refs[from[i]]++;
    }
    p->seq_blocks[dst] = blocks;
    upload_entries(p, dst, 0, blocks);
    return KILN_OK;
}
