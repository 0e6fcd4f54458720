// Binding a loaded model's weights to a backend: each weight is converted
// into the backend's form (on a GPU: one allocation for all of them) or, on
// the CPU, used where it lies in the mapped file.
#include <stdlib.h>
#include <string.h>

#include "model/arch.h"
#include "model/bind.h"

#define KILN_WEIGHT_ALIGN 256 // whole cache lines and 16-byte vector loads on every device

static uint64_t align_up(uint64_t x) { return (x + KILN_WEIGHT_ALIGN - 1) & ~(uint64_t)(KILN_WEIGHT_ALIGN - 1); }

static kiln_tensor *weight_slot(kiln_weights *w, const kiln_weight_desc *d, int layer) {
    char *base = d->per_layer ? (char *)&w->layers[layer] : (char *)w;
    return (kiln_tensor *)(base + d->offset);
}

// Calls fn for every weight the model has (absent biases and a tied output
// matrix are skipped); stops at the first failure.
typedef kiln_status (*weight_fn)(const kiln_llm *m, const kiln_weight_desc *d, const kiln_tensor *src,
                                 kiln_tensor *dst, void *ctx);

static kiln_status for_each_weight(const kiln_llm *m, kiln_weights *dst, weight_fn fn, void *ctx) {
    for (size_t i = 0; i < kiln_llama_n_weights; i++) {
        const kiln_weight_desc *d = &kiln_llama_weights[i];
        for (int l = 0; l < (d->per_layer ? m->hp.n_layers : 1); l++) {
            const kiln_tensor *src = weight_slot((kiln_weights *)&m->w, d, l);
            if (!src->data) continue;
            if (d->offset == offsetof(kiln_weights, output) && !d->per_layer && m->hp.tied_embeddings) continue;
            kiln_status st = fn(m, d, src, dst ? weight_slot(dst, d, l) : NULL, ctx);
            if (st != KILN_OK) return st;
        }
    }
    return KILN_OK;
}

typedef struct sizing {
    kiln_backend *be;
    uint64_t total;
} sizing;

static kiln_status add_size(const kiln_llm *m, const kiln_weight_desc *d, const kiln_tensor *src, kiln_tensor *dst,
                            void *ctx) {
    (void)dst;
    sizing *s = ctx;
    if (!d->is_vector && !s->be->device->supports(s->be, src->dtype))
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tensor %s has type %s, which the %s backend cannot multiply",
                         m->path, src->name, kiln_dtype_name(src->dtype), s->be->device->name);
    s->total += align_up(s->be->device->weight_bytes(s->be, src));
    return KILN_OK;
}

kiln_status kiln_weights_backend_bytes(const kiln_llm *m, kiln_backend *be, uint64_t *bytes) {
    sizing s = {.be = be};
    kiln_status st = for_each_weight(m, NULL, add_size, &s);
    *bytes = s.total;
    return st;
}

typedef struct loading {
    kiln_backend *be;
    char *mem;
    uint64_t offset, done, total;
    kiln_progress_fn progress;
    void *user;
} loading;

static kiln_status load_one(const kiln_llm *m, const kiln_weight_desc *d, const kiln_tensor *src, kiln_tensor *dst,
                            void *ctx) {
    (void)d;
    loading *ld = ctx;
    uint64_t bytes = ld->be->device->weight_bytes(ld->be, src);
    kiln_status st = ld->be->device->weight_load(ld->be, src, bytes ? ld->mem + ld->offset : NULL, dst);
    if (st != KILN_OK) return kiln_fail_context(st, "%s: tensor %s", m->path, src->name);
    ld->offset += align_up(bytes);
    ld->done += src->nbytes;
    if (ld->progress) ld->progress((double)ld->done / (double)(ld->total ? ld->total : 1), ld->user);
    return KILN_OK;
}

static kiln_status add_source_bytes(const kiln_llm *m, const kiln_weight_desc *d, const kiln_tensor *src,
                                    kiln_tensor *dst, void *ctx) {
    (void)m, (void)d, (void)dst;
    *(uint64_t *)ctx += src->nbytes;
    return KILN_OK;
}

kiln_status kiln_weights_bind(const kiln_llm *m, kiln_backend *be, kiln_progress_fn progress, void *user,
                              kiln_bound_weights *out) {
    memset(out, 0, sizeof *out);
    if (!be->device->supports_head_dim(be, m->hp.head_dim))
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: the %s backend's attention does not support a head size of %d "
                         "(it supports 64 and 128); run with --device cpu",
                         m->path, be->device->name, m->hp.head_dim);
    kiln_status st = kiln_weights_backend_bytes(m, be, &out->bytes);
    if (st != KILN_OK) return st;
    out->w.layers = calloc((size_t)m->hp.n_layers, sizeof *out->w.layers);
    if (!out->w.layers) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", m->path);
    if (out->bytes && !(out->mem = be->device->alloc(be, out->bytes))) {
        kiln_weights_unbind(be, out);
        return kiln_fail(KILN_ERR_NOMEM, "%s: cannot allocate %.2f GiB for the weights on the %s device", m->path,
                         (double)out->bytes / (1u << 30), be->device->name);
    }
    loading ld = {.be = be, .mem = out->mem, .progress = progress, .user = user};
    for_each_weight(m, NULL, add_source_bytes, &ld.total);
    if ((st = for_each_weight(m, &out->w, load_one, &ld)) == KILN_OK) st = be->device->weights_done(be);
    if (st != KILN_OK) {
        kiln_weights_unbind(be, out);
        return st;
    }
    if (m->hp.tied_embeddings) out->w.output = out->w.tok_embd;
    return KILN_OK;
}

void kiln_weights_unbind(kiln_backend *be, kiln_bound_weights *bw) {
    if (bw->mem) be->device->free(be, bw->mem);
    free(bw->w.layers);
    memset(bw, 0, sizeof *bw);
}
