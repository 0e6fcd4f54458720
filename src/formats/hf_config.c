// Hugging Face config.json for Llama-family models (llama, mistral, qwen2).
// Defaults follow transformers' LlamaConfig; limits reject values no real
// model has, so that later size computations cannot overflow.
#include "formats/hf_config.h"

#include "core/file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONFIG_BYTES (4u * 1024 * 1024)

typedef struct field_limit {
    const char *name;
    uint32_t *dst;
    bool required;
    uint32_t fallback; // used when absent and not required
    uint32_t max;
} field_limit;

static kiln_status read_uint(const cJSON *root, const char *file, const char *field, bool required,
                             uint32_t fallback, uint32_t max, uint32_t *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        if (required) return kiln_fail(KILN_ERR_FORMAT, "%s: missing required field \"%s\"", file, field);
        *out = fallback;
        return KILN_OK;
    }
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!isfinite(v) || v != floor(v))
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" must be an integer", file, field);
    if (v < 1 || v > max)
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" = %.17g is out of range [1, %u]", file, field, v, max);
    *out = (uint32_t)v;
    return KILN_OK;
}

// A positive finite float below `max`.
static kiln_status read_float(const cJSON *root, const char *file, const char *field, bool required,
                              float fallback, double max, float *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        if (required) return kiln_fail(KILN_ERR_FORMAT, "%s: missing required field \"%s\"", file, field);
        *out = fallback;
        return KILN_OK;
    }
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!isfinite(v) || v <= 0 || v > max)
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" must be a number in (0, %g]", file, field, max);
    *out = (float)v;
    return KILN_OK;
}

static kiln_status read_bool(const cJSON *root, const char *file, const char *field, bool fallback, bool *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, field);
    if (!item || cJSON_IsNull(item)) {
        *out = fallback;
        return KILN_OK;
    }
    if (!cJSON_IsBool(item)) return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" must be true or false", file, field);
    *out = cJSON_IsTrue(item);
    return KILN_OK;
}

// Copies an optional string field; absent leaves dst empty.
static kiln_status read_string(const cJSON *item, const char *file, const char *field, char *dst, size_t cap) {
    dst[0] = '\0';
    if (!item || cJSON_IsNull(item)) return KILN_OK;
    if (!cJSON_IsString(item)) return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" must be a string", file, field);
    if (strlen(item->valuestring) >= cap)
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" is longer than %zu bytes", file, field, cap - 1);
    memcpy(dst, item->valuestring, strlen(item->valuestring) + 1);
    return KILN_OK;
}

// A token id: integer in [0, vocab_size).
static kiln_status token_id(const cJSON *item, const char *file, const char *field, uint32_t vocab, int32_t *out) {
    double v = cJSON_IsNumber(item) ? item->valuedouble : NAN;
    if (!isfinite(v) || v != floor(v) || v < 0 || v >= vocab)
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"%s\" must be a token id in [0, %u)", file, field, vocab);
    *out = (int32_t)v;
    return KILN_OK;
}

static kiln_status read_token_ids(const cJSON *root, const char *file, kiln_hf_config *c) {
    c->bos_token_id = -1;
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(root, "bos_token_id");
    if (bos && !cJSON_IsNull(bos)) {
        kiln_status st = token_id(bos, file, "bos_token_id", c->vocab_size, &c->bos_token_id);
        if (st != KILN_OK) return st;
    }
    c->n_eos_token_ids = 0;
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
    if (!eos || cJSON_IsNull(eos)) return KILN_OK;
    if (!cJSON_IsArray(eos)) return token_id(eos, file, "eos_token_id", c->vocab_size, &c->eos_token_ids[c->n_eos_token_ids++]);
    int max = (int)(sizeof c->eos_token_ids / sizeof *c->eos_token_ids);
    for (const cJSON *e = eos->child; e; e = e->next) {
        if (c->n_eos_token_ids == max)
            return kiln_fail(KILN_ERR_FORMAT, "%s: field \"eos_token_id\" lists more than %d ids", file, max);
        kiln_status st = token_id(e, file, "eos_token_id", c->vocab_size, &c->eos_token_ids[c->n_eos_token_ids++]);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

// transformers >= 5 writes rope_theta and the scaling fields together in
// "rope_parameters" instead of top-level rope_theta and "rope_scaling".
static kiln_status rope_parameters(const cJSON *root, const char *file, const cJSON **out) {
    *out = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    if (*out && cJSON_IsNull(*out)) *out = NULL;
    if (*out && !cJSON_IsObject(*out))
        return kiln_fail(KILN_ERR_FORMAT, "%s: field \"rope_parameters\" must be an object or null", file);
    return KILN_OK;
}

static kiln_status read_rope_scaling(const cJSON *root, const char *file, kiln_hf_config *c) {
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(root, "rope_scaling");
    if (!rs || cJSON_IsNull(rs)) {
        kiln_status st = rope_parameters(root, file, &rs);
        if (st != KILN_OK || !rs) return st;
    }
    if (!cJSON_IsObject(rs)) return kiln_fail(KILN_ERR_FORMAT, "%s: field \"rope_scaling\" must be an object or null", file);
    // Newer configs say "rope_type", older ones "type".
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(rs, "rope_type");
    if (!type) type = cJSON_GetObjectItemCaseSensitive(rs, "type");
    kiln_status st = read_string(type, file, "rope_scaling.rope_type", c->rope_scaling_type, sizeof c->rope_scaling_type);
    if (st != KILN_OK) return st;
    if (c->rope_scaling_type[0] == '\0' || strcmp(c->rope_scaling_type, "default") == 0) {
        c->rope_scaling_type[0] = '\0';
        return KILN_OK;
    }
    if (strcmp(c->rope_scaling_type, "llama3") != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: rope_scaling type \"%s\" is not supported (only llama3 is)", file,
                         c->rope_scaling_type);
    if ((st = read_float(rs, file, "factor", true, 0, 1024, &c->rope_scaling_factor)) != KILN_OK ||
        (st = read_float(rs, file, "low_freq_factor", true, 0, 1024, &c->rope_scaling_low_freq_factor)) != KILN_OK ||
        (st = read_float(rs, file, "high_freq_factor", true, 0, 1024, &c->rope_scaling_high_freq_factor)) != KILN_OK ||
        (st = read_uint(rs, file, "original_max_position_embeddings", true, 0, 1u << 26,
                        &c->rope_scaling_original_max_pos)) != KILN_OK)
    {
        char msg[512]; // kiln_last_error() is the buffer kiln_fail writes into
        snprintf(msg, sizeof msg, "%s", kiln_last_error());
        return kiln_fail(st, "%s (in rope_scaling)", msg);
    }
    // The llama3 formula divides by (high - low).
    if (!(c->rope_scaling_high_freq_factor > c->rope_scaling_low_freq_factor))
        return kiln_fail(KILN_ERR_FORMAT, "%s: rope_scaling high_freq_factor must exceed low_freq_factor", file);
    return KILN_OK;
}

static kiln_status read_identity(const cJSON *root, const char *file, kiln_hf_config *c) {
    kiln_status st = read_string(cJSON_GetObjectItemCaseSensitive(root, "model_type"), file, "model_type",
                                 c->model_type, sizeof c->model_type);
    if (st != KILN_OK) return st;
    const cJSON *archs = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (archs && !cJSON_IsNull(archs)) {
        if (!cJSON_IsArray(archs) || !archs->child)
            return kiln_fail(KILN_ERR_FORMAT, "%s: field \"architectures\" must be a non-empty list", file);
        st = read_string(archs->child, file, "architectures", c->architecture, sizeof c->architecture);
        if (st != KILN_OK) return st;
    }
    static const char *const types[][2] = {
        {"llama", "LlamaForCausalLM"}, {"mistral", "MistralForCausalLM"}, {"qwen2", "Qwen2ForCausalLM"}};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++) {
        if (strcmp(c->model_type, types[i][0]) != 0) continue;
        if (c->architecture[0] && strcmp(c->architecture, types[i][1]) != 0)
            return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: architecture \"%s\" is not supported for model_type \"%s\" (want %s)",
                             file, c->architecture, c->model_type, types[i][1]);
        return KILN_OK;
    }
    if (c->model_type[0] == '\0') return kiln_fail(KILN_ERR_FORMAT, "%s: missing required field \"model_type\"", file);
    return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (llama, mistral, qwen2 are)", file,
                     c->model_type);
}

static kiln_status read_config(const cJSON *root, const char *file, kiln_hf_config *c) {
    if (!cJSON_IsObject(root)) return kiln_fail(KILN_ERR_FORMAT, "%s: not a JSON object", file);
    kiln_status st = read_identity(root, file, c);
    if (st != KILN_OK) return st;

    const field_limit sizes[] = {
        {"hidden_size", &c->hidden_size, true, 0, 1u << 20},
        {"intermediate_size", &c->intermediate_size, true, 0, 1u << 22},
        {"num_hidden_layers", &c->num_hidden_layers, true, 0, 4096},
        {"num_attention_heads", &c->num_attention_heads, true, 0, 1u << 16},
        {"vocab_size", &c->vocab_size, true, 0, 1u << 24},
        {"max_position_embeddings", &c->max_position_embeddings, false, 2048, 1u << 26},
        {"sliding_window", &c->sliding_window, false, 0, 1u << 26},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        st = read_uint(root, file, sizes[i].name, sizes[i].required, sizes[i].fallback, sizes[i].max, sizes[i].dst);
        if (st != KILN_OK) return st;
    }
    uint32_t heads = c->num_attention_heads;
    if ((st = read_uint(root, file, "num_key_value_heads", false, heads, heads, &c->num_key_value_heads)) != KILN_OK)
        return st;
    if (heads % c->num_key_value_heads != 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: num_key_value_heads (%u) does not divide num_attention_heads (%u)", file,
                         c->num_key_value_heads, heads);
    const cJSON *head_dim = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (!head_dim || cJSON_IsNull(head_dim)) {
        if (c->hidden_size % heads != 0)
            return kiln_fail(KILN_ERR_FORMAT, "%s: num_attention_heads (%u) does not divide hidden_size (%u)", file, heads,
                             c->hidden_size);
        c->head_dim = c->hidden_size / heads;
    } else if ((st = read_uint(root, file, "head_dim", true, 0, 1u << 16, &c->head_dim)) != KILN_OK) {
        return st;
    }
    // Rotary embedding rotates pairs of dimensions.
    if (c->head_dim % 2 != 0) return kiln_fail(KILN_ERR_FORMAT, "%s: field \"head_dim\" (%u) must be even", file, c->head_dim);
    if ((uint64_t)c->head_dim * heads > (1u << 22))
        return kiln_fail(KILN_ERR_FORMAT, "%s: head_dim * num_attention_heads is absurdly large", file);

    const cJSON *rope_params;
    if ((st = rope_parameters(root, file, &rope_params)) != KILN_OK) return st;
    const cJSON *theta_holder =
        !cJSON_GetObjectItemCaseSensitive(root, "rope_theta") && rope_params ? rope_params : root;
    if ((st = read_float(root, file, "rms_norm_eps", false, 1e-6f, 1.0, &c->rms_norm_eps)) != KILN_OK ||
        (st = read_float(theta_holder, file, "rope_theta", false, 10000.0f, 1e12, &c->rope_theta)) != KILN_OK ||
        (st = read_bool(root, file, "tie_word_embeddings", false, &c->tie_word_embeddings)) != KILN_OK ||
        (st = read_bool(root, file, "attention_bias", false, &c->attention_bias)) != KILN_OK)
        return st;
    // Qwen2 always has q/k/v biases; its config has no attention_bias field.
    if (strcmp(c->model_type, "qwen2") == 0) c->attention_bias = true;
    // Qwen2 configs carry a sliding_window that is off unless use_sliding_window.
    bool use_window = true;
    if ((st = read_bool(root, file, "use_sliding_window", true, &use_window)) != KILN_OK) return st;
    if (!use_window) c->sliding_window = 0;

    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(root, "torch_dtype");
    if (!dtype) dtype = cJSON_GetObjectItemCaseSensitive(root, "dtype"); // transformers >= 4.56 name
    if ((st = read_string(dtype, file, "torch_dtype", c->torch_dtype, sizeof c->torch_dtype)) != KILN_OK) return st;
    if ((st = read_token_ids(root, file, c)) != KILN_OK) return st;
    return read_rope_scaling(root, file, c);
}

kiln_status kiln_hf_config_parse(const char *json, uint64_t len, const char *name, kiln_hf_config *out) {
    if (!name) name = "config.json";
    memset(out, 0, sizeof *out);
    if (!json) return kiln_fail(KILN_ERR_INVALID_ARG, "%s: NULL text", name);
    cJSON *root = cJSON_ParseWithLength(json, (size_t)len);
    if (!root) return kiln_fail(KILN_ERR_FORMAT, "%s: not valid JSON", name);
    kiln_status st = read_config(root, name, out);
    cJSON_Delete(root);
    if (st != KILN_OK) memset(out, 0, sizeof *out);
    return st;
}

kiln_status kiln_hf_config_load(const char *path, kiln_hf_config *out) {
    memset(out, 0, sizeof *out);
    char *text;
    size_t len;
    kiln_status st = kiln_file_read_all(path, MAX_CONFIG_BYTES, &text, &len);
    if (st != KILN_OK) return st;
    st = kiln_hf_config_parse(text, len, path, out);
    free(text);
    return st;
}
