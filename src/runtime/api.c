// The public C API (include/kiln.h) over the runtime.
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/engine.h"

static kiln_status pick_backend(const kiln_model_params *p, kiln_backend **be) {
    kiln_device device = p ? p->device : KILN_DEVICE_AUTO;
    if (device == KILN_DEVICE_AUTO) {
        const char *env = getenv("KILN_DEVICE");
        if (env && strcmp(env, "cpu") == 0)
            device = KILN_DEVICE_CPU;
        else if (env && strcmp(env, "cuda") == 0)
            device = KILN_DEVICE_CUDA;
        else if (env && *env)
            return kiln_fail(KILN_ERR_INVALID_ARG, "KILN_DEVICE=%s: expected cpu or cuda", env);
        else
            device = kiln_cuda_device_count() > 0 ? KILN_DEVICE_CUDA : KILN_DEVICE_CPU;
    }
    if (device == KILN_DEVICE_CUDA) return kiln_backend_cuda_create(p ? p->gpu : 0, be);
    return kiln_backend_cpu_create(p ? p->n_threads : 0, p ? p->precise : false, be);
}

// On a device with its own memory: refuse before allocating anything when
// the weights still to load plus an engine of the default options (one
// sequence of the default context) will not fit.
static kiln_status check_fits(const kiln_model *m, uint64_t weight_bytes) {
    kiln_backend_memory mem;
    m->be->device->memory(m->be, &mem);
    if (!mem.total || !weight_bytes) return KILN_OK;
    kiln_engine_options o = {0};
    kiln_engine_resolve_options(m, &o);
    uint64_t kv, work;
    kiln_engine_memory(m, &o, &kv, &work);
    const uint64_t need = weight_bytes + kv + work;
    if (need <= mem.free) return KILN_OK;
    const double gib = 1u << 30;
    return kiln_fail(KILN_ERR_NOMEM,
                     "%s does not fit on the GPU: weights %.2f GiB + KV cache %.2f GiB (context %d) + work space "
                     "%.2f GiB = %.2f GiB, but only %.2f GiB of %.2f GiB are free; use a smaller context (-c), a "
                     "smaller or quantized model, free the GPU, or run with --device cpu",
                     m->llm->path, weight_bytes / gib, kv / gib, o.max_seq_len, work / gib, need / gib,
                     mem.free / gib, mem.total / gib);
}

kiln_status kiln_model_load_vocab(const char *path, kiln_model **out); // api_info.c

kiln_status kiln_model_load(const char *path, const kiln_model_params *params, kiln_model **out) {
    *out = NULL;
    if (params && params->vocab_only) return kiln_model_load_vocab(path, out);
    if (!path) return kiln_fail(KILN_ERR_INVALID_ARG, "no model path given");
    kiln_model *m = calloc(1, sizeof *m);
    if (!m) return kiln_fail(KILN_ERR_NOMEM, "out of memory");
    kiln_status st = kiln_llm_load(path, &m->llm);
    if (st == KILN_OK) st = pick_backend(params, &m->be);
    uint64_t weight_bytes = 0;
    if (st == KILN_OK) st = kiln_weights_backend_bytes(m->llm, m->be, &weight_bytes);
    if (st == KILN_OK) st = check_fits(m, weight_bytes);
    if (st == KILN_OK)
        st = kiln_weights_bind(m->llm, m->be, params ? params->progress : NULL, params ? params->progress_user : NULL,
                               &m->weights);
    if (st != KILN_OK) {
        kiln_model_free(m);
        return st;
    }
    *out = m;
    return KILN_OK;
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    if (m->be) kiln_weights_unbind(m->be, &m->weights);
    kiln_backend_destroy(m->be);
    kiln_llm_free(m->llm);
    free(m);
}

// A vocab_only model has no backend: it answers "none".
const char *kiln_model_device(const kiln_model *m) { return m->be ? m->be->device->name : "none"; }
const char *kiln_model_device_info(const kiln_model *m) { return m->be ? m->be->device->describe(m->be) : "none"; }

void kiln_model_memory(const kiln_model *m, int n_ctx, kiln_memory_info *out) {
    if (!m->be) { // vocab_only: nothing would run
        *out = (kiln_memory_info){0};
        return;
    }
    kiln_backend_memory mem;
    m->be->device->memory(m->be, &mem);
    const kiln_engine_options o = {.max_seqs = 1, .max_seq_len = n_ctx > 0 ? n_ctx : 0};
    *out = (kiln_memory_info){.weights = m->weights.bytes, .device_free = mem.free, .device_total = mem.total};
    kiln_engine_memory(m, &o, &out->kv_cache, &out->workspace);
}

int kiln_model_vocab_size(const kiln_model *m) { return m->llm->hp.vocab; }
int kiln_model_context_length(const kiln_model *m) { return m->llm->hp.ctx_train; }

kiln_status kiln_tokenize(const kiln_model *m, const char *text, size_t len, bool add_bos, bool parse_special,
                          int32_t **ids, size_t *n_ids) {
    return kiln_tokenizer_encode(m->llm->tok, text, len, add_bos, parse_special, ids, n_ids);
}

kiln_status kiln_token_bytes(const kiln_model *m, int32_t id, const char **bytes, size_t *len) {
    if (!kiln_tokenizer_token_bytes(m->llm->tok, id, bytes, len))
        return kiln_fail(KILN_ERR_INVALID_ARG, "token id %d out of range", id);
    return KILN_OK;
}

bool kiln_token_is_end_of_generation(const kiln_model *m, int32_t id) { return kiln_tokenizer_is_eog(m->llm->tok, id); }
