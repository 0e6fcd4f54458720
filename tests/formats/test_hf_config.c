// config.json parsing: published configs of Llama 3.1, Mistral and Qwen2.5
// (copied verbatim), transformers' defaults, and invalid configs that must be
// rejected with a message naming the file and the field.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/hf_config.h"
#include "test_util.h"

// meta-llama/Llama-3.1-8B-Instruct
static const char llama31[] =
    "{\"architectures\": [\"LlamaForCausalLM\"], \"attention_bias\": false, \"attention_dropout\": 0.0, "
    "\"bos_token_id\": 128000, \"eos_token_id\": [128001, 128008, 128009], \"hidden_act\": \"silu\", "
    "\"hidden_size\": 4096, \"initializer_range\": 0.02, \"intermediate_size\": 14336, "
    "\"max_position_embeddings\": 131072, \"mlp_bias\": false, \"model_type\": \"llama\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"pretraining_tp\": 1, "
    "\"rms_norm_eps\": 1e-05, \"rope_scaling\": {\"factor\": 8.0, \"low_freq_factor\": 1.0, \"high_freq_factor\": 4.0, "
    "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, \"rope_theta\": 500000.0, "
    "\"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.42.3\", "
    "\"use_cache\": true, \"vocab_size\": 128256}";

// mistralai/Mistral-7B-Instruct-v0.2
static const char mistral[] =
    "{\"architectures\": [\"MistralForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 1, "
    "\"eos_token_id\": 2, \"hidden_act\": \"silu\", \"hidden_size\": 4096, \"initializer_range\": 0.02, "
    "\"intermediate_size\": 14336, \"max_position_embeddings\": 32768, \"model_type\": \"mistral\", "
    "\"num_attention_heads\": 32, \"num_hidden_layers\": 32, \"num_key_value_heads\": 8, \"rms_norm_eps\": 1e-05, "
    "\"rope_theta\": 1000000.0, \"sliding_window\": null, \"tie_word_embeddings\": false, "
    "\"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.36.0\", \"use_cache\": true, \"vocab_size\": 32000}";

// Qwen/Qwen2.5-0.5B-Instruct
static const char qwen2[] =
    "{\"architectures\": [\"Qwen2ForCausalLM\"], \"attention_dropout\": 0.0, \"bos_token_id\": 151643, "
    "\"eos_token_id\": 151645, \"hidden_act\": \"silu\", \"hidden_size\": 896, \"initializer_range\": 0.02, "
    "\"intermediate_size\": 4864, \"max_position_embeddings\": 32768, \"max_window_layers\": 21, "
    "\"model_type\": \"qwen2\", \"num_attention_heads\": 14, \"num_hidden_layers\": 24, \"num_key_value_heads\": 2, "
    "\"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0, \"sliding_window\": 32768, \"tie_word_embeddings\": true, "
    "\"torch_dtype\": \"bfloat16\", \"transformers_version\": \"4.43.1\", \"use_cache\": true, "
    "\"use_sliding_window\": false, \"vocab_size\": 151936}";

static kiln_hf_config parse_ok(const char *json) {
    kiln_hf_config c;
    if (kiln_hf_config_parse(json, strlen(json), "config.json", &c) != KILN_OK) fail_msg("%s", kiln_last_error());
    return c;
}

static void test_llama31(void **state) {
    (void)state;
    kiln_hf_config c = parse_ok(llama31);
    assert_string_equal(c.model_type, "llama");
    assert_string_equal(c.architecture, "LlamaForCausalLM");
    assert_int_equal(c.hidden_size, 4096);
    assert_int_equal(c.intermediate_size, 14336);
    assert_int_equal(c.num_hidden_layers, 32);
    assert_int_equal(c.num_attention_heads, 32);
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab_size, 128256);
    assert_int_equal(c.max_position_embeddings, 131072);
    assert_float_equal(c.rms_norm_eps, 1e-5f, 0);
    assert_float_equal(c.rope_theta, 500000.0f, 0);
    assert_false(c.tie_word_embeddings);
    assert_false(c.attention_bias);
    assert_int_equal(c.bos_token_id, 128000);
    assert_int_equal(c.n_eos_token_ids, 3);
    assert_int_equal(c.eos_token_ids[0], 128001);
    assert_int_equal(c.eos_token_ids[1], 128008);
    assert_int_equal(c.eos_token_ids[2], 128009);
    assert_string_equal(c.rope_scaling_type, "llama3");
    assert_float_equal(c.rope_scaling_factor, 8.0f, 0);
    assert_float_equal(c.rope_scaling_low_freq_factor, 1.0f, 0);
    assert_float_equal(c.rope_scaling_high_freq_factor, 4.0f, 0);
    assert_int_equal(c.rope_scaling_original_max_pos, 8192);
    assert_string_equal(c.torch_dtype, "bfloat16");
}

static void test_mistral(void **state) {
    (void)state;
    kiln_hf_config c = parse_ok(mistral);
    assert_string_equal(c.model_type, "mistral");
    assert_string_equal(c.architecture, "MistralForCausalLM");
    assert_int_equal(c.num_key_value_heads, 8);
    assert_int_equal(c.head_dim, 128);
    assert_int_equal(c.vocab_size, 32000);
    assert_float_equal(c.rope_theta, 1e6f, 0);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos_token_ids, 1);
    assert_int_equal(c.eos_token_ids[0], 2);
    assert_int_equal(c.rope_scaling_type[0], '\0');
    assert_false(c.attention_bias);
}

static void test_qwen2_has_attention_bias(void **state) {
    (void)state;
    kiln_hf_config c = parse_ok(qwen2);
    assert_string_equal(c.model_type, "qwen2");
    assert_true(c.attention_bias); // not in the file: implied by qwen2
    assert_true(c.tie_word_embeddings);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.num_key_value_heads, 2);
    assert_float_equal(c.rms_norm_eps, 1e-6f, 0);
    assert_int_equal(c.eos_token_ids[0], 151645);
    assert_int_equal(c.sliding_window, 0); // present, but use_sliding_window is false
}

// Mistral 7B v0.1 attends within a 4096-token window.
static void test_sliding_window(void **state) {
    (void)state;
    static const char v01[] = "{\"model_type\": \"mistral\", \"hidden_size\": 4096, \"intermediate_size\": 14336, "
                              "\"num_hidden_layers\": 32, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
                              "\"vocab_size\": 32000, \"max_position_embeddings\": 32768, \"sliding_window\": 4096}";
    kiln_hf_config c = parse_ok(v01);
    assert_int_equal(c.sliding_window, 4096);
    assert_int_equal(parse_ok(mistral).sliding_window, 0); // v0.2: null
}

// transformers' LlamaConfig defaults for absent fields.
static void test_defaults(void **state) {
    (void)state;
    kiln_hf_config c = parse_ok("{\"model_type\": \"llama\", \"hidden_size\": 64, \"intermediate_size\": 128, "
                                "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, \"vocab_size\": 100}");
    assert_int_equal(c.num_key_value_heads, 4);
    assert_int_equal(c.head_dim, 16);
    assert_float_equal(c.rope_theta, 10000.0f, 0);
    assert_float_equal(c.rms_norm_eps, 1e-6f, 0);
    assert_int_equal(c.max_position_embeddings, 2048);
    assert_false(c.tie_word_embeddings);
    assert_false(c.attention_bias);
    assert_int_equal(c.bos_token_id, -1);
    assert_int_equal(c.n_eos_token_ids, 0);
    assert_int_equal(c.architecture[0], '\0');
    assert_int_equal(c.torch_dtype[0], '\0');
    // An explicit head_dim need not divide hidden_size (Mistral Nemo style).
    c = parse_ok("{\"model_type\": \"mistral\", \"hidden_size\": 5120, \"intermediate_size\": 14336, "
                 "\"num_hidden_layers\": 2, \"num_attention_heads\": 32, \"num_key_value_heads\": 8, "
                 "\"head_dim\": 128, \"vocab_size\": 131072, \"dtype\": \"bfloat16\", \"rope_scaling\": null}");
    assert_int_equal(c.head_dim, 128);
    assert_string_equal(c.torch_dtype, "bfloat16");
}

// The config tools/make_hf_folder.py writes for SmolLM2 (skipped when absent).
static void test_generated_smollm2_config(void **state) {
    (void)state;
    char path[PATH_MAX];
    const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
    if (cache && *cache) snprintf(path, sizeof path, "%s/smollm2-hf-f32/config.json", cache);
    else snprintf(path, sizeof path, "%s/.cache/kiln/smollm2-hf-f32/config.json", home ? home : "");
    if (access(path, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found (run tools/make_hf_folder.py)\n", path);
        skip();
    }
    kiln_hf_config c;
    if (kiln_hf_config_load(path, &c) != KILN_OK) fail_msg("%s", kiln_last_error());
    // Values of the GGUF's llama.* metadata.
    assert_int_equal(c.hidden_size, 576);
    assert_int_equal(c.intermediate_size, 1536);
    assert_int_equal(c.num_hidden_layers, 30);
    assert_int_equal(c.num_attention_heads, 9);
    assert_int_equal(c.num_key_value_heads, 3);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.vocab_size, 49152);
    assert_int_equal(c.max_position_embeddings, 8192);
    assert_float_equal(c.rope_theta, 100000.0f, 0);
    assert_float_equal(c.rms_norm_eps, 1e-5f, 1e-12);
    assert_true(c.tie_word_embeddings);
    assert_int_equal(c.bos_token_id, 1);
    assert_int_equal(c.n_eos_token_ids, 1);
    assert_int_equal(c.eos_token_ids[0], 2);
    assert_string_equal(c.torch_dtype, "float32");
}

typedef struct bad_config {
    const char *json;
    kiln_status status;
    const char *message;
} bad_config;

#define BASE "\"model_type\": \"llama\", \"intermediate_size\": 128, \"num_hidden_layers\": 2, \"vocab_size\": 100"

static void test_rejects_invalid_configs(void **state) {
    (void)state;
    static const bad_config cases[] = {
        {"{", KILN_ERR_FORMAT, "not valid JSON"},
        {"[1]", KILN_ERR_FORMAT, "not a JSON object"},
        {"{\"hidden_size\": 64}", KILN_ERR_FORMAT, "missing required field \"model_type\""},
        {"{\"model_type\": \"gpt2\"}", KILN_ERR_UNSUPPORTED, "model_type \"gpt2\""},
        {"{\"model_type\": 7}", KILN_ERR_FORMAT, "\"model_type\" must be a string"},
        {"{\"model_type\": \"llama\", \"architectures\": [\"MistralForCausalLM\"]}", KILN_ERR_UNSUPPORTED,
         "architecture \"MistralForCausalLM\""},
        {"{\"model_type\": \"llama\", \"architectures\": []}", KILN_ERR_FORMAT, "\"architectures\""},
        {"{" BASE ", \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "missing required field \"hidden_size\""},
        {"{" BASE ", \"hidden_size\": 0, \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "\"hidden_size\" = 0"},
        {"{" BASE ", \"hidden_size\": -64, \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "\"hidden_size\""},
        {"{" BASE ", \"hidden_size\": 2097152, \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "\"hidden_size\" = 2097152"},
        {"{" BASE ", \"hidden_size\": 64.5, \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "\"hidden_size\" must be an integer"},
        {"{" BASE ", \"hidden_size\": \"64\", \"num_attention_heads\": 4}", KILN_ERR_FORMAT, "\"hidden_size\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 5}", KILN_ERR_FORMAT,
         "num_attention_heads (5) does not divide hidden_size (64)"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}", KILN_ERR_FORMAT,
         "num_key_value_heads (3) does not divide"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"num_key_value_heads\": 8}", KILN_ERR_FORMAT,
         "\"num_key_value_heads\" = 8"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"head_dim\": 15}", KILN_ERR_FORMAT,
         "\"head_dim\" (15) must be even"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rms_norm_eps\": 0}", KILN_ERR_FORMAT,
         "\"rms_norm_eps\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_theta\": -1}", KILN_ERR_FORMAT,
         "\"rope_theta\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"tie_word_embeddings\": 1}", KILN_ERR_FORMAT,
         "\"tie_word_embeddings\" must be true or false"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"eos_token_id\": 100}", KILN_ERR_FORMAT,
         "\"eos_token_id\" must be a token id in [0, 100)"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"eos_token_id\": [1, \"2\"]}", KILN_ERR_FORMAT,
         "\"eos_token_id\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"eos_token_id\": [1,2,3,4,5,6,7,8,9]}",
         KILN_ERR_FORMAT, "more than 8 ids"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"bos_token_id\": -1}", KILN_ERR_FORMAT,
         "\"bos_token_id\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", "
         "\"factor\": 4}}", KILN_ERR_UNSUPPORTED, "rope_scaling type \"yarn\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8}}", KILN_ERR_FORMAT, "\"low_freq_factor\""},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", "
         "\"factor\": 8, \"low_freq_factor\": 4, \"high_freq_factor\": 1, \"original_max_position_embeddings\": 8192}}",
         KILN_ERR_FORMAT, "high_freq_factor must exceed low_freq_factor"},
        {"{" BASE ", \"hidden_size\": 64, \"num_attention_heads\": 4, \"rope_scaling\": 3}", KILN_ERR_FORMAT,
         "\"rope_scaling\""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        kiln_hf_config c;
        kiln_status st = kiln_hf_config_parse(cases[i].json, strlen(cases[i].json), "some/config.json", &c);
        if (st != cases[i].status || strncmp(kiln_last_error(), "some/config.json: ", 18) != 0 ||
            !strstr(kiln_last_error(), cases[i].message))
            fail_msg("case %zu %s: status %d [%s], want [%s]", i, cases[i].json, st, kiln_last_error(), cases[i].message);
    }
}

static void test_load_errors(void **state) {
    (void)state;
    kiln_hf_config c;
    assert_int_equal(kiln_hf_config_load("/nonexistent/config.json", &c), KILN_ERR_IO);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent/config.json"));
    // Parsing is bounded by len, not by a NUL.
    assert_int_equal(kiln_hf_config_parse(qwen2, 10, "config.json", &c), KILN_ERR_FORMAT);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_llama31),
        cmocka_unit_test(test_mistral),
        cmocka_unit_test(test_qwen2_has_attention_bias),
        cmocka_unit_test(test_sliding_window),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_generated_smollm2_config),
        cmocka_unit_test(test_rejects_invalid_configs),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
