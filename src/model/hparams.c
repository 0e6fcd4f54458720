// Hyperparameters from GGUF metadata or a Hugging Face config.json, validated
// so that nothing downstream sees a zero, a negative or an absurd size.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/hf_config.h"
#include "model/hparams.h"

#define KILN_MAX_SIZE (1 << 20)

static kiln_status check_hparams(const char *path, kiln_hparams *hp) {
    struct { const char *name; int value; } sizes[] = {
        {"layers", hp->n_layers}, {"hidden size", hp->dim}, {"feed-forward size", hp->ffn_dim},
        {"attention heads", hp->n_heads}, {"key/value heads", hp->n_kv_heads},
        {"head size", hp->head_dim}, {"vocabulary size", hp->vocab},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].value <= 0 || sizes[i].value > KILN_MAX_SIZE * 4)
            return kiln_fail(KILN_ERR_FORMAT, "%s: %s is %d, expected 1..%d", path, sizes[i].name,
                             sizes[i].value, KILN_MAX_SIZE * 4);
    if (hp->n_heads % hp->n_kv_heads != 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %d attention heads are not a multiple of %d key/value heads", path,
                         hp->n_heads, hp->n_kv_heads);
    if (hp->n_heads / hp->n_kv_heads > 64)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: %d query heads per key/value head (kiln supports up to 64)", path,
                         hp->n_heads / hp->n_kv_heads);
    if (hp->head_dim > 512 || hp->head_dim % 2 != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: head size %d (kiln supports even sizes up to 512)", path,
                         hp->head_dim);
    if (hp->rope.rot_dim <= 0 || hp->rope.rot_dim > hp->head_dim || hp->rope.rot_dim % 2 != 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: RoPE dimension %d does not fit head size %d", path, hp->rope.rot_dim,
                         hp->head_dim);
    if (!(hp->norm_eps > 0.0f && hp->norm_eps < 1.0f))
        return kiln_fail(KILN_ERR_FORMAT, "%s: RMSNorm epsilon %g out of range", path, (double)hp->norm_eps);
    if (!(hp->rope.theta > 1.0f && isfinite(hp->rope.theta)))
        return kiln_fail(KILN_ERR_FORMAT, "%s: RoPE base %g out of range", path, (double)hp->rope.theta);
    if (hp->ctx_train <= 0) hp->ctx_train = 2048;
    return KILN_OK;
}

kiln_status kiln_hparams_from_gguf(const kiln_gguf *g, const char *path, kiln_hparams *hp) {
    memset(hp, 0, sizeof *hp);
    kiln_gguf_str arch;
    bool found;
    kiln_status st = kiln_gguf_read_str(g, "general.architecture", &arch, &found);
    if (st != KILN_OK) return st;
    if (!found) return kiln_fail(KILN_ERR_FORMAT, "%s: no general.architecture", path);
    if (arch.len >= sizeof hp->arch || memchr(arch.ptr, '\0', arch.len))
        return kiln_fail(KILN_ERR_FORMAT, "%s: general.architecture is not a short name", path);
    memcpy(hp->arch, arch.ptr, arch.len);
    hp->arch[arch.len] = '\0';
    if (strcmp(hp->arch, "llama") != 0 && strcmp(hp->arch, "qwen2") != 0 && strcmp(hp->arch, "mistral") != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "%s: architecture '%s' is not supported (kiln runs llama, mistral and qwen2)", path,
                         hp->arch);

    // A key present with the wrong type is an error naming it (the readers
    // say so), never a default.
    char key[128];
    uint32_t u;
    struct { const char *key; int *dst; bool required; } ints[] = {
        {"block_count", &hp->n_layers, true},
        {"embedding_length", &hp->dim, true},
        {"feed_forward_length", &hp->ffn_dim, true},
        {"attention.head_count", &hp->n_heads, true},
        {"attention.head_count_kv", &hp->n_kv_heads, false},
        {"attention.key_length", &hp->head_dim, false},
        {"context_length", &hp->ctx_train, false},
        {"vocab_size", &hp->vocab, false},
        {"rope.dimension_count", &hp->rope.rot_dim, false},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        snprintf(key, sizeof key, "%s.%s", hp->arch, ints[i].key);
        if ((st = kiln_gguf_read_u32(g, key, &u, &found)) != KILN_OK) return st;
        if (found) {
            if (u > KILN_MAX_SIZE * 4u) return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %u is out of range", path, key, u);
            *ints[i].dst = (int)u;
        } else if (ints[i].required) {
            return kiln_fail(KILN_ERR_FORMAT, "%s: missing %s", path, key);
        }
    }
    if (!hp->n_kv_heads) hp->n_kv_heads = hp->n_heads;
    if (!hp->head_dim && hp->n_heads) {
        if (hp->dim % hp->n_heads != 0)
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: %d attention heads do not divide hidden size %d (and no %s.attention.key_length)", path,
                             hp->n_heads, hp->dim, hp->arch);
        hp->head_dim = hp->dim / hp->n_heads;
    }
    if (!hp->rope.rot_dim) hp->rope.rot_dim = hp->head_dim;
    if (!hp->vocab) {
        const kiln_gguf_tensor_info *embd = kiln_gguf_find_tensor(g, "token_embd.weight");
        if (embd && embd->t.ne[1] <= KILN_MAX_SIZE * 4) hp->vocab = (int)embd->t.ne[1];
    }
    hp->norm_eps = 1e-5f;
    hp->rope.theta = 10000.0f;
    snprintf(key, sizeof key, "%s.attention.layer_norm_rms_epsilon", hp->arch);
    if ((st = kiln_gguf_read_f32(g, key, &hp->norm_eps, NULL)) != KILN_OK) return st;
    snprintf(key, sizeof key, "%s.rope.freq_base", hp->arch);
    if ((st = kiln_gguf_read_f32(g, key, &hp->rope.theta, NULL)) != KILN_OK) return st;
    // Linear, YaRN and LongRoPE scaling change every angle; running without
    // them would give wrong logits, so refuse. (Llama 3's scaling has no such
    // key: it comes as the rope_freqs.weight tensor.)
    kiln_gguf_str scaling;
    snprintf(key, sizeof key, "%s.rope.scaling.type", hp->arch);
    if ((st = kiln_gguf_read_str(g, key, &scaling, &found)) != KILN_OK) return st;
    if (found && !(scaling.len == 4 && memcmp(scaling.ptr, "none", 4) == 0))
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: RoPE scaling type '%.*s' is not supported", path,
                         (int)(scaling.len > 32 ? 32 : scaling.len), scaling.ptr);
    // llama.cpp's converter permutes Q and K of llama-arch models so that RoPE
    // rotates adjacent pairs; qwen2 keeps Hugging Face's halves layout.
    hp->rope.interleaved = strcmp(hp->arch, "qwen2") != 0;
    hp->qkv_bias = strcmp(hp->arch, "qwen2") == 0;
    hp->tied_embeddings = kiln_gguf_find_tensor(g, "output.weight") == NULL;
    return check_hparams(path, hp);
}

// Llama 3.1 "llama3" RoPE scaling: long wavelengths are slowed by `factor`,
// short ones kept, the band between interpolated. Returns the divisors of each
// frequency, the form GGUF files store in rope_freqs.weight.
static void llama3_freq_factors(const kiln_hf_config *c, int rot_dim, float theta, float *out) {
    double old_ctx = c->rope_scaling_original_max_pos ? c->rope_scaling_original_max_pos : 8192;
    double low = c->rope_scaling_low_freq_factor > 0 ? c->rope_scaling_low_freq_factor : 1.0;
    double high = c->rope_scaling_high_freq_factor > 0 ? c->rope_scaling_high_freq_factor : 4.0;
    double factor = c->rope_scaling_factor > 0 ? c->rope_scaling_factor : 8.0;
    double low_wavelen = old_ctx / low, high_wavelen = old_ctx / high;
    for (int i = 0; i < rot_dim / 2; i++) {
        double freq = pow(theta, -2.0 * i / rot_dim);
        double wavelen = 2.0 * M_PI / freq;
        if (wavelen < high_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > low_wavelen) {
            out[i] = (float)factor;
        } else {
            double smooth = (old_ctx / wavelen - low) / (high - low);
            out[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
}

kiln_status kiln_hparams_from_hf(const kiln_hf_config *c, const char *path, kiln_hparams *hp,
                                 float **freq_factors) {
    memset(hp, 0, sizeof *hp);
    *freq_factors = NULL;
    if (strcmp(c->model_type, "llama") != 0 && strcmp(c->model_type, "mistral") != 0 &&
        strcmp(c->model_type, "qwen2") != 0)
        return kiln_fail(KILN_ERR_UNSUPPORTED,
                         "%s: model_type '%s' is not supported (kiln runs llama, mistral and qwen2)", path,
                         c->model_type);
    snprintf(hp->arch, sizeof hp->arch, "%s", c->model_type);
    hp->n_layers = (int)c->num_hidden_layers;
    hp->dim = (int)c->hidden_size;
    hp->ffn_dim = (int)c->intermediate_size;
    hp->n_heads = (int)c->num_attention_heads;
    hp->n_kv_heads = (int)c->num_key_value_heads;
    hp->head_dim = (int)c->head_dim;
    hp->vocab = (int)c->vocab_size;
    hp->ctx_train = (int)c->max_position_embeddings;
    hp->sliding_window = c->sliding_window < c->max_position_embeddings ? (int)c->sliding_window : 0;
    hp->norm_eps = c->rms_norm_eps;
    hp->rope.theta = c->rope_theta;
    hp->rope.rot_dim = hp->head_dim;
    hp->rope.interleaved = 0; // Hugging Face rotates halves
    hp->qkv_bias = c->attention_bias;
    hp->tied_embeddings = c->tie_word_embeddings;
    kiln_status st = check_hparams(path, hp);
    if (st != KILN_OK) return st;
    if (c->rope_scaling_type[0] && strcmp(c->rope_scaling_type, "default") != 0) {
        if (strcmp(c->rope_scaling_type, "llama3") != 0)
            return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: rope_scaling type '%s' is not supported (llama3 is)", path,
                             c->rope_scaling_type);
        float *f = malloc(sizeof(float) * (size_t)(hp->rope.rot_dim / 2));
        if (!f) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
        llama3_freq_factors(c, hp->rope.rot_dim, hp->rope.theta, f);
        *freq_factors = f;
    }
    return KILN_OK;
}
