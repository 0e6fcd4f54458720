// Hugging Face config.json: the fields a Llama-family model needs, validated.
#ifndef KILN_FORMATS_HF_CONFIG_H
#define KILN_FORMATS_HF_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"

typedef struct kiln_hf_config {
    char model_type[64];   // "llama", "mistral", "qwen2", ...
    char architecture[64]; // architectures[0], e.g. "LlamaForCausalLM"
    uint32_t hidden_size;
    uint32_t intermediate_size;
    uint32_t num_hidden_layers;
    uint32_t num_attention_heads;
    uint32_t num_key_value_heads; // defaults to num_attention_heads
    uint32_t head_dim;            // defaults to hidden_size / num_attention_heads
    uint32_t vocab_size;
    uint32_t max_position_embeddings;
    uint32_t sliding_window; // 0: none (Mistral v0.1 sets 4096)
    float rms_norm_eps;
    float rope_theta; // default 10000
    bool tie_word_embeddings;
    bool attention_bias; // qwen2 is true regardless of the field
    int32_t bos_token_id; // -1 when absent
    int32_t eos_token_ids[8]; // eos_token_id may be a number or a list
    int n_eos_token_ids;
    // rope_scaling {"rope_type": "llama3", ...}; rope_scaling_type[0] == 0 when absent
    char rope_scaling_type[32];
    float rope_scaling_factor;
    float rope_scaling_low_freq_factor;
    float rope_scaling_high_freq_factor;
    uint32_t rope_scaling_original_max_pos;
    char torch_dtype[16];
} kiln_hf_config;

kiln_status kiln_hf_config_load(const char *path, kiln_hf_config *out);
kiln_status kiln_hf_config_parse(const char *json, uint64_t len, const char *name, kiln_hf_config *out);

#endif
