// The public API's model information (include/kiln.h, "Model information"):
// what `kiln inspect` prints, and loading a model's metadata and tokenizer
// alone (kiln_model_params.vocab_only), which works for any architecture
// whose tokenizer kiln reads.
#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/hf_config.h"
#include "model/hparams.h"
#include "runtime/sampler.h"
#include "runtime/session.h"

// A vocab_only model: a kiln_model without a backend or weights (be NULL),
// and why kiln could not run it. The kiln_model comes first, so that
// kiln_model_free's free() of it frees the whole.
typedef struct vocab_model {
    kiln_model base;
    bool supported;
    char unsupported[512];
} vocab_model;

static const vocab_model *as_vocab(const kiln_model *m) { return m->be ? NULL : (const vocab_model *)m; }

// Text from a file, made safe to print: anything but printable ASCII
// becomes '?'.
static void copy_printable(char *dst, size_t cap, const char *src, size_t len) {
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++) dst[i] = src[i] >= 0x20 && src[i] < 0x7f ? src[i] : '?';
    dst[n] = '\0';
}

static void note_unsupported(vocab_model *v) {
    v->supported = false;
    const char *msg = kiln_last_error();
    copy_printable(v->unsupported, sizeof v->unsupported, msg, strlen(msg));
}

static int bounded(uint64_t v) { return v <= (1u << 24) ? (int)v : 0; }

// The standard GGUF keys under the file's own architecture name, for an
// architecture kiln cannot run: only what the metadata says, unchecked
// (nothing is computed from it).
static void gguf_generic_hparams(const kiln_gguf *g, kiln_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kiln_gguf_str arch;
    if (kiln_gguf_get_str(g, "general.architecture", &arch))
        copy_printable(hp->arch, sizeof hp->arch, arch.ptr, arch.len);
    struct { const char *key; int *dst; } ints[] = {
        {"block_count", &hp->n_layers},
        {"embedding_length", &hp->dim},
        {"feed_forward_length", &hp->ffn_dim},
        {"attention.head_count", &hp->n_heads},
        {"attention.head_count_kv", &hp->n_kv_heads},
        {"attention.key_length", &hp->head_dim},
        {"context_length", &hp->ctx_train},
        {"vocab_size", &hp->vocab},
        {"rope.dimension_count", &hp->rope.rot_dim},
        {"attention.sliding_window", &hp->sliding_window},
    };
    char key[128];
    uint32_t u;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", hp->arch, ints[i].key);
        if (hp->arch[0] && kiln_gguf_get_u32(g, key, &u)) *ints[i].dst = bounded(u);
    }
    if (!hp->n_kv_heads) hp->n_kv_heads = hp->n_heads;
    if (!hp->head_dim && hp->n_heads && hp->dim % hp->n_heads == 0) hp->head_dim = hp->dim / hp->n_heads;
    if (!hp->rope.rot_dim) hp->rope.rot_dim = hp->head_dim;
    const kiln_gguf_tensor_info *embd = kiln_gguf_find_tensor(g, "token_embd.weight");
    if (!hp->vocab && embd) hp->vocab = bounded((uint64_t)embd->t.ne[1]);
    float f;
    snprintf(key, sizeof key, "%s.rope.freq_base", hp->arch);
    if (hp->arch[0] && kiln_gguf_get_f32(g, key, &f) && f > 0.0f && f < 1e12f) hp->rope.theta = f;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", hp->arch);
    if (hp->arch[0] && kiln_gguf_get_f32(g, key, &f) && f > 0.0f && f < 1.0f) hp->norm_eps = f;
    hp->qkv_bias = kiln_gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    hp->tied_embeddings = embd && !kiln_gguf_find_tensor(g, "output.weight");
}

static int json_size(const cJSON *obj, const char *name) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    return cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= (1 << 24) ? (int)v->valuedouble : 0;
}

// config.json of a model_type kiln cannot run: the usual field names, also
// under "text_config" (multimodal checkpoints), unchecked.
static void hf_generic_hparams(const char *config_path, kiln_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    char *text;
    size_t len;
    if (kiln_file_read_all(config_path, (size_t)16 << 20, &text, &len) != KILN_OK) return;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return;
    }
    const cJSON *c = root, *tc = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (cJSON_IsString(type)) copy_printable(hp->arch, sizeof hp->arch, type->valuestring, strlen(type->valuestring));
    if (!json_size(c, "num_hidden_layers") && cJSON_IsObject(tc)) c = tc;
    hp->n_layers = json_size(c, "num_hidden_layers");
    hp->dim = json_size(c, "hidden_size");
    hp->ffn_dim = json_size(c, "intermediate_size");
    hp->n_heads = json_size(c, "num_attention_heads");
    hp->n_kv_heads = json_size(c, "num_key_value_heads");
    hp->head_dim = json_size(c, "head_dim");
    hp->vocab = json_size(c, "vocab_size");
    hp->ctx_train = json_size(c, "max_position_embeddings");
    hp->sliding_window = json_size(c, "sliding_window");
    if (!hp->n_kv_heads) hp->n_kv_heads = hp->n_heads;
    if (!hp->head_dim && hp->n_heads && hp->dim % hp->n_heads == 0) hp->head_dim = hp->dim / hp->n_heads;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(c, "rope_theta");
    if (cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1e12) hp->rope.theta = (float)v->valuedouble;
    v = cJSON_GetObjectItemCaseSensitive(c, "rms_norm_eps");
    if (cJSON_IsNumber(v) && v->valuedouble > 0 && v->valuedouble < 1) hp->norm_eps = (float)v->valuedouble;
    hp->rope.rot_dim = hp->head_dim;
    hp->tied_embeddings = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "tie_word_embeddings"));
    cJSON_Delete(root);
}

static kiln_status vocab_gguf(vocab_model *v) {
    kiln_llm *m = v->base.llm;
    kiln_status st = kiln_gguf_open(m->path, &m->gguf);
    if (st != KILN_OK) return st;
    v->supported = kiln_hparams_from_gguf(m->gguf, m->path, &m->hp) == KILN_OK;
    if (!v->supported) {
        note_unsupported(v);
        gguf_generic_hparams(m->gguf, &m->hp);
    }
    if ((st = kiln_tokenizer_from_gguf(m->gguf, &m->tok)) != KILN_OK) return kiln_fail_context(st, "%s", m->path);
    return KILN_OK;
}

static kiln_status vocab_hf(vocab_model *v) {
    kiln_llm *m = v->base.llm;
    char config_path[PATH_MAX], tok_path[PATH_MAX], tok_config[PATH_MAX];
    snprintf(config_path, sizeof config_path, "%s/config.json", m->path);
    snprintf(tok_path, sizeof tok_path, "%s/tokenizer.json", m->path);
    snprintf(tok_config, sizeof tok_config, "%s/tokenizer_config.json", m->path);
    kiln_hf_config config;
    v->supported = kiln_hf_config_load(config_path, &config) == KILN_OK &&
                   kiln_hparams_from_hf(&config, config_path, &m->hp, &m->rope_freq_factors) == KILN_OK;
    if (!v->supported) {
        note_unsupported(v);
        free(m->rope_freq_factors);
        m->rope_freq_factors = NULL;
        hf_generic_hparams(config_path, &m->hp);
    }
    m->hp.rope.freq_factors = m->rope_freq_factors;
    struct stat sb;
    kiln_status st = kiln_tokenizer_from_hf(tok_path, stat(tok_config, &sb) == 0 ? tok_config : NULL, &m->tok);
    if (st != KILN_OK) return st;
    // The tensor list is for information only: a folder without readable
    // safetensors still tokenizes.
    if (kiln_safetensors_open_dir(m->path, &m->st) != KILN_OK) m->st = NULL;
    if (m->st && m->hp.tied_embeddings && kiln_safetensors_find(m->st, "lm_head.weight")) m->hp.tied_embeddings = false;
    return KILN_OK;
}

// kiln_model_load with vocab_only (called from api.c).
kiln_status kiln_model_load_vocab(const char *path, kiln_model **out) {
    *out = NULL;
    if (!path) return kiln_fail(KILN_ERR_INVALID_ARG, "no model path given");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kiln_fail(KILN_ERR_IO, "%s: no such file or folder (expected a .gguf file or a Hugging Face folder)",
                         path);
    vocab_model *v = calloc(1, sizeof *v);
    kiln_llm *m = calloc(1, sizeof *m);
    if (!v || !m || !(m->path = strdup(path))) {
        free(v);
        free(m);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    v->base.llm = m;
    m->format = S_ISDIR(sb.st_mode) ? KILN_FORMAT_HF : KILN_FORMAT_GGUF;
    kiln_status st = m->format == KILN_FORMAT_HF ? vocab_hf(v) : vocab_gguf(v);
    if (st != KILN_OK) {
        kiln_model_free(&v->base);
        return st;
    }
    if (m->hp.vocab <= 0) m->hp.vocab = kiln_tokenizer_vocab_size(m->tok);
    *out = &v->base;
    return KILN_OK;
}

static const char *kv_dtype_name(kiln_dtype t) {
    switch (t) {
    case KILN_F32: return "f32";
    case KILN_F16: return "f16";
    case KILN_BF16: return "bf16";
    default: return kiln_dtype_name(t);
    }
}

void kiln_model_get_info(const kiln_model *model, kiln_model_info *out) {
    memset(out, 0, sizeof *out);
    const kiln_llm *m = model->llm;
    const kiln_hparams *hp = &m->hp;
    const vocab_model *v = as_vocab(model);
    out->path = m->path;
    out->format = m->format == KILN_FORMAT_GGUF ? "gguf" : "safetensors";
    if (m->gguf) {
        out->gguf_version = m->gguf->version;
        out->n_metadata = m->gguf->n_kv;
    }
    out->n_tensors = kiln_model_tensor_count(model);
    out->arch = hp->arch;
    out->supported = !v || v->supported;
    out->unsupported = out->supported ? NULL : v->unsupported;
    out->vocab_only = v != NULL;
    out->n_layers = hp->n_layers;
    out->dim = hp->dim;
    out->ffn_dim = hp->ffn_dim;
    out->n_heads = hp->n_heads;
    out->n_kv_heads = hp->n_kv_heads;
    out->head_dim = hp->head_dim;
    out->vocab = hp->vocab;
    out->ctx_train = hp->ctx_train;
    out->sliding_window = hp->sliding_window;
    out->rope_theta = hp->rope.theta;
    out->rope_dims = hp->rope.rot_dim;
    out->rope_interleaved = hp->rope.interleaved;
    out->rope_llama3 = hp->rope.freq_factors || (m->gguf && kiln_gguf_find_tensor(m->gguf, "rope_freqs.weight"));
    out->norm_eps = hp->norm_eps;
    out->qkv_bias = hp->qkv_bias;
    out->tied_embeddings = hp->tied_embeddings;
    const kiln_tokenizer *tok = m->tok;
    out->tokenizer = kiln_tokenizer_get_kind(tok) == KILN_TOKENIZER_BYTE_BPE ? "byte-level BPE" : "SentencePiece BPE";
    out->tokenizer_vocab = kiln_tokenizer_vocab_size(tok);
    out->pre_tokenizer = kiln_tokenizer_pre_name(tok);
    out->pre_tokenizer_known = kiln_tokenizer_pre_known(tok);
    out->bos = kiln_tokenizer_bos(tok);
    out->eos = kiln_tokenizer_eos(tok);
    out->adds_bos = kiln_tokenizer_add_bos_default(tok);
    out->has_chat_template = kiln_tokenizer_chat_template(tok) != NULL;
    out->chat_template_family = kiln_chat_template_family(model);
    out->weight_bytes = kiln_llm_weight_bytes(m);
    if (model->be) {
        out->device = model->be->device->name;
        out->kv_dtype = kv_dtype_name(model->be->kv_dtype);
    }
}

uint64_t kiln_model_tensor_count(const kiln_model *model) {
    const kiln_llm *m = model->llm;
    return m->gguf ? m->gguf->n_tensors : m->st ? m->st->n_tensors : 0;
}

kiln_status kiln_model_tensor_info(const kiln_model *model, uint64_t i, kiln_tensor_info *out) {
    memset(out, 0, sizeof *out);
    const kiln_llm *m = model->llm;
    if (i >= kiln_model_tensor_count(model))
        return kiln_fail(KILN_ERR_INVALID_ARG, "tensor %llu out of range (the model has %llu)", (unsigned long long)i,
                         (unsigned long long)kiln_model_tensor_count(model));
    const kiln_tensor *t = m->gguf ? &m->gguf->tensors[i].t : &m->st->tensors[i];
    out->name = t->name;
    out->dtype = kiln_dtype_name(t->dtype);
    out->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) out->ne[d] = t->ne[d];
    out->bytes = t->nbytes;
    return KILN_OK;
}
