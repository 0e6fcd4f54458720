// Loading a model: pick the format from the path, read hyperparameters, bind
// every weight the architecture table names, check its type and shape.
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model/arch.h"
#include "model/hparams.h"

typedef const kiln_tensor *(*find_fn)(const kiln_llm *m, const char *name);

static const kiln_tensor *find_gguf(const kiln_llm *m, const char *name) {
    const kiln_gguf_tensor_info *info = kiln_gguf_find_tensor(m->gguf, name);
    return info ? &info->t : NULL;
}

static const kiln_tensor *find_hf(const kiln_llm *m, const char *name) {
    return kiln_safetensors_find(m->st, name);
}

static kiln_status keep_owned(kiln_llm *m, float *p) {
    float **grown = realloc(m->owned, sizeof *grown * (size_t)(m->n_owned + 1));
    if (!grown) {
        free(p);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", m->path);
    }
    m->owned = grown;
    m->owned[m->n_owned++] = p;
    return KILN_OK;
}

// Norms and biases are used as plain float vectors by every backend.
static kiln_status vector_to_f32(kiln_llm *m, kiln_tensor *t) {
    if (t->dtype == KILN_F32) return KILN_OK;
    float *f = malloc(sizeof(float) * (size_t)t->ne[0]);
    if (!f) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", m->path);
    kiln_dequantize_row(t->dtype, t->data, f, t->ne[0]);
    t->dtype = KILN_F32;
    t->data = f;
    t->nbytes = sizeof(float) * (uint64_t)t->ne[0];
    return keep_owned(m, f);
}

static kiln_status bind_weight(kiln_llm *m, const kiln_weight_desc *d, int layer, find_fn find) {
    char name[256];
    const char *fmt = m->format == KILN_FORMAT_GGUF ? d->gguf_name : d->hf_name;
    if (d->per_layer)
        snprintf(name, sizeof name, fmt, layer);
    else
        snprintf(name, sizeof name, "%s", fmt);
    bool wanted = d->presence == KILN_W_REQUIRED || (d->presence == KILN_W_QKV_BIAS && m->hp.qkv_bias) ||
                  (d->presence == KILN_W_UNTIED && !m->hp.tied_embeddings);
    const kiln_tensor *src = find(m, name);
    if (!wanted) return KILN_OK;
    if (!src) {
        if (d->presence == KILN_W_UNTIED)
            return kiln_fail(KILN_ERR_FORMAT, "%s: missing tensor %s (and embeddings are not tied)", m->path, name);
        return kiln_fail(KILN_ERR_FORMAT, "%s: missing tensor %s", m->path, name);
    }
    int64_t ne0 = kiln_dim_value(&m->hp, d->ne0), ne1 = kiln_dim_value(&m->hp, d->ne1);
    bool shape_ok = src->ne[0] == ne0 && src->ne[1] == ne1 && src->ne[2] == 1 && src->ne[3] == 1;
    if (!shape_ok)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %s has shape [%lld, %lld, %lld, %lld], expected [%lld, %lld]",
                         m->path, name, (long long)src->ne[0], (long long)src->ne[1], (long long)src->ne[2],
                         (long long)src->ne[3], (long long)ne0, (long long)ne1);
    kiln_tensor *dst = (kiln_tensor *)((d->per_layer ? (char *)&m->w.layers[layer] : (char *)&m->w) + d->offset);
    *dst = *src;
    if (d->is_vector) return vector_to_f32(m, dst);
    return KILN_OK; // whether the backend can multiply this type is checked when the weights are bound
}

static const char *name_gguf(const kiln_llm *m, uint64_t i) { return m->gguf->tensors[i].name; }
static const char *name_hf(const kiln_llm *m, uint64_t i) { return m->st->tensors[i].name; }

// One more than the largest N of the tensors named PREFIX N "." ... (0 when
// none is), so that a layer count that disagrees with the file is caught
// before a shorter model runs and the rest is silently ignored.
static int64_t layers_present(const kiln_llm *m, uint64_t n, const char *(*name_at)(const kiln_llm *, uint64_t),
                              const char *prefix) {
    const size_t plen = strlen(prefix);
    int64_t count = 0;
    for (uint64_t i = 0; i < n; i++) {
        const char *name = name_at(m, i);
        if (strncmp(name, prefix, plen) != 0) continue;
        const char *p = name + plen;
        int64_t layer = 0;
        if (*p < '0' || *p > '9') continue;
        for (; *p >= '0' && *p <= '9'; p++)
            if ((layer = layer * 10 + (*p - '0')) > (int64_t)1 << 40) break;
        if (*p == '.' && layer + 1 > count) count = layer + 1;
    }
    return count;
}

static kiln_status check_layer_count(const kiln_llm *m, int64_t present, const char *key) {
    if (present == m->hp.n_layers) return KILN_OK;
    const char *pfx = m->format == KILN_FORMAT_GGUF ? "blk" : "model.layers";
    if (present == 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %d but the weights have no %s.N tensors", m->path, key, m->hp.n_layers,
                         pfx);
    return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %d but the weights have tensors for %lld layer%s (%s.0 to %s.%lld)",
                     m->path, key, m->hp.n_layers, (long long)present, present == 1 ? "" : "s", pfx, pfx,
                     (long long)present - 1);
}

static kiln_status bind_weights(kiln_llm *m, find_fn find) {
    m->w.layers = calloc((size_t)m->hp.n_layers, sizeof *m->w.layers);
    if (!m->w.layers) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", m->path);
    for (size_t i = 0; i < kiln_llama_n_weights; i++) {
        const kiln_weight_desc *d = &kiln_llama_weights[i];
        for (int l = 0; l < (d->per_layer ? m->hp.n_layers : 1); l++) {
            kiln_status st = bind_weight(m, d, l, find);
            if (st != KILN_OK) return st;
        }
    }
    if (m->hp.tied_embeddings) m->w.output = m->w.tok_embd;
    return KILN_OK;
}

static kiln_status load_gguf(kiln_llm *m) {
    kiln_status st = kiln_gguf_open(m->path, &m->gguf);
    if (st != KILN_OK) return st;
    if ((st = kiln_hparams_from_gguf(m->gguf, m->path, &m->hp)) != KILN_OK) return st;
    // Llama 3.x stores its RoPE scaling as per-frequency divisors.
    const kiln_gguf_tensor_info *freqs = kiln_gguf_find_tensor(m->gguf, "rope_freqs.weight");
    if (freqs) {
        if (freqs->t.dtype != KILN_F32 || freqs->t.ne[0] != m->hp.rope.rot_dim / 2 || freqs->t.ne[1] != 1 ||
            freqs->t.ne[2] != 1 || freqs->t.ne[3] != 1)
            return kiln_fail(KILN_ERR_FORMAT, "%s: rope_freqs.weight must be F32 of %d elements", m->path,
                             m->hp.rope.rot_dim / 2);
        m->rope_freq_factors = malloc(sizeof(float) * (size_t)freqs->t.ne[0]);
        if (!m->rope_freq_factors) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", m->path);
        memcpy(m->rope_freq_factors, freqs->t.data, sizeof(float) * (size_t)freqs->t.ne[0]);
        // Each is a divisor of a frequency: zero, negative or NaN would make
        // the angles meaningless.
        for (int64_t i = 0; i < freqs->t.ne[0]; i++)
            if (!(m->rope_freq_factors[i] > 0.0f && isfinite(m->rope_freq_factors[i])))
                return kiln_fail(KILN_ERR_FORMAT, "%s: rope_freqs.weight[%lld] = %g is not a positive divisor",
                                 m->path, (long long)i, (double)m->rope_freq_factors[i]);
    }
    char key[96];
    snprintf(key, sizeof key, "%s.block_count", m->hp.arch);
    if ((st = check_layer_count(m, layers_present(m, m->gguf->n_tensors, name_gguf, "blk."), key)) != KILN_OK)
        return st;
    if ((st = bind_weights(m, find_gguf)) != KILN_OK) return st;
    // The tokenizer's messages name the file, except for running out of memory.
    if ((st = kiln_tokenizer_from_gguf(m->gguf, &m->tok)) != KILN_OK)
        return strstr(kiln_last_error(), m->path) ? st : kiln_fail_context(st, "%s", m->path);
    return KILN_OK;
}

static kiln_status load_hf(kiln_llm *m) {
    char file[PATH_MAX], config_path[PATH_MAX];
    snprintf(config_path, sizeof config_path, "%s/config.json", m->path);
    kiln_hf_config config;
    kiln_status st = kiln_hf_config_load(config_path, &config);
    if (st != KILN_OK) return st;
    if ((st = kiln_hparams_from_hf(&config, config_path, &m->hp, &m->rope_freq_factors)) != KILN_OK) return st;
    if ((st = kiln_safetensors_open_dir(m->path, &m->st)) != KILN_OK) return st;
    // Some tied checkpoints still carry lm_head.weight; use it when present.
    if (m->hp.tied_embeddings && kiln_safetensors_find(m->st, "lm_head.weight")) m->hp.tied_embeddings = false;
    if ((st = check_layer_count(m, layers_present(m, m->st->n_tensors, name_hf, "model.layers."),
                                "config.json num_hidden_layers")) != KILN_OK)
        return st;
    if ((st = bind_weights(m, find_hf)) != KILN_OK) return st;
    snprintf(file, sizeof file, "%s/tokenizer.json", m->path);
    snprintf(config_path, sizeof config_path, "%s/tokenizer_config.json", m->path);
    struct stat sb;
    return kiln_tokenizer_from_hf(file, stat(config_path, &sb) == 0 ? config_path : NULL, &m->tok);
}

kiln_status kiln_llm_load(const char *path, kiln_llm **out) {
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kiln_fail(KILN_ERR_IO, "%s: no such file or folder (expected a .gguf file or a Hugging Face folder)",
                         path);
    kiln_llm *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    m->format = S_ISDIR(sb.st_mode) ? KILN_FORMAT_HF : KILN_FORMAT_GGUF;
    kiln_status st = m->format == KILN_FORMAT_HF ? load_hf(m) : load_gguf(m);
    if (st == KILN_OK && kiln_tokenizer_vocab_size(m->tok) > m->hp.vocab)
        st = kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer has %d tokens but the model only %d rows of embeddings", path,
                       kiln_tokenizer_vocab_size(m->tok), m->hp.vocab);
    if (st != KILN_OK) {
        kiln_llm_free(m);
        return st;
    }
    m->hp.rope.freq_factors = m->rope_freq_factors;
    *out = m;
    return KILN_OK;
}

void kiln_llm_free(kiln_llm *m) {
    if (!m) return;
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->w.layers);
    free(m->rope_freq_factors);
    kiln_tokenizer_free(m->tok);
    kiln_gguf_close(m->gguf);
    kiln_safetensors_close(m->st);
    free(m->path);
    free(m);
}

uint64_t kiln_llm_weight_bytes(const kiln_llm *m) {
    uint64_t total = 0;
    if (m->gguf)
        for (uint64_t i = 0; i < m->gguf->n_tensors; i++) total += m->gguf->tensors[i].t.nbytes;
    if (m->st)
        for (uint64_t i = 0; i < m->st->n_tensors; i++) total += m->st->tensors[i].nbytes;
    return total;
}
