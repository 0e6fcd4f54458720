// kiln_model_load on broken models (tests/fixtures/corrupt_models/, written by
// tools/make_tiny_models.py): each file parses as GGUF / JSON / safetensors,
// but the model in it is wrong in one way. Each must be refused with the
// right status and a message naming the file and the problem, never crash.
// The unbroken originals (valid.gguf, hf_valid/) must load, so that each
// failure is the one defect's doing.
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "kiln.h"
#include "test_util.h"

typedef struct bad_model {
    const char *name;      // under corrupt_models/
    kiln_status status;
    const char *file;      // the file the message must name (relative to corrupt_models/)
    const char *problem[3]; // substrings the message must contain
} bad_model;

static const bad_model bad_models[] = {
    {"missing_tensor.gguf", KILN_ERR_FORMAT, "missing_tensor.gguf", {"missing tensor blk.0.ffn_down.weight"}},
    {"wrong_shape.gguf", KILN_ERR_FORMAT, "wrong_shape.gguf", {"blk.0.attn_k.weight", "shape [4, 4", "expected [8, 4]"}},
    {"heads_not_dividing.gguf", KILN_ERR_FORMAT, "heads_not_dividing.gguf", {"3 attention heads do not divide hidden size 8"}},
    {"kv_heads_not_dividing.gguf", KILN_ERR_FORMAT, "kv_heads_not_dividing.gguf",
     {"2 attention heads are not a multiple of 3 key/value heads"}},
    {"arch_gpt2.gguf", KILN_ERR_UNSUPPORTED, "arch_gpt2.gguf", {"architecture 'gpt2' is not supported"}},
    {"matrix_type_i32.gguf", KILN_ERR_UNSUPPORTED, "matrix_type_i32.gguf", {"blk.0.ffn_down.weight", "type 26"}},
    {"matrix_type_q8_k.gguf", KILN_ERR_UNSUPPORTED, "matrix_type_q8_k.gguf",
     {"blk.0.ffn_down.weight", "type Q8_K", "cannot multiply"}},
    {"vocab_too_big.gguf", KILN_ERR_FORMAT, "vocab_too_big.gguf", {"tokenizer has 657 tokens", "only 600 rows"}},
    {"rope_scaling_linear.gguf", KILN_ERR_UNSUPPORTED, "rope_scaling_linear.gguf", {"RoPE scaling type 'linear'"}},
    {"rope_freqs_zero.gguf", KILN_ERR_FORMAT, "rope_freqs_zero.gguf", {"rope_freqs.weight[1] = 0"}},
    {"hf_no_config", KILN_ERR_IO, "hf_no_config/config.json", {""}},
    {"hf_no_tokenizer", KILN_ERR_IO, "hf_no_tokenizer/tokenizer.json", {""}},
    {"hf_bad_config", KILN_ERR_FORMAT, "hf_bad_config/config.json", {"num_key_value_heads", "3"}},
    {"hf_bad_config_size", KILN_ERR_FORMAT, "hf_bad_config_size/config.json", {"hidden_size", "out of range"}},
    {"hf_model_type_gpt2", KILN_ERR_UNSUPPORTED, "hf_model_type_gpt2/config.json", {"model_type \"gpt2\" is not supported"}},
    {"hf_missing_tensor", KILN_ERR_FORMAT, "hf_missing_tensor",
     {"missing tensor model.layers.0.mlp.down_proj.weight"}},
};

static void corrupt_path(char *out, size_t cap, const char *name) {
    snprintf(out, cap, "%s/corrupt_models/%s", KILN_FIXTURES, name);
}

static void test_controls_load(void **state) {
    (void)state;
    const char *names[] = {"valid.gguf", "hf_valid"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[PATH_MAX];
        corrupt_path(path, sizeof path, names[i]);
        kiln_model_params mp = {.n_threads = 1};
        kiln_model *model = NULL;
        if (kiln_model_load(path, &mp, &model) != KILN_OK) fail_msg("control %s: %s", path, kiln_last_error());
        assert_int_equal(kiln_model_vocab_size(model), 657);
        kiln_model_free(model);
    }
}

static void test_bad_models_refused(void **state) {
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_models / sizeof *bad_models; i++) {
        const bad_model *b = &bad_models[i];
        char path[PATH_MAX], file[PATH_MAX];
        corrupt_path(path, sizeof path, b->name);
        corrupt_path(file, sizeof file, b->file);
        kiln_model_params mp = {.n_threads = 1};
        kiln_model *model = NULL;
        kiln_status st = kiln_model_load(path, &mp, &model);
        const char *msg = kiln_last_error();
        bool ok = st == b->status && model == NULL && strstr(msg, file) != NULL;
        for (int k = 0; k < 3 && b->problem[k]; k++) ok = ok && strstr(msg, b->problem[k]) != NULL;
        printf("  %-28s %-22s %s\n", b->name, kiln_status_name(st), st == KILN_OK ? "(loaded!)" : msg);
        if (!ok) {
            printf("    expected %s naming %s\n", kiln_status_name(b->status), file);
            failures++;
        }
        if (model) kiln_model_free(model);
    }
    assert_int_equal(failures, 0);
}

static void test_missing_path(void **state) {
    (void)state;
    char path[PATH_MAX];
    corrupt_path(path, sizeof path, "no_such_model.gguf");
    kiln_model_params mp = {.n_threads = 1};
    kiln_model *model = NULL;
    assert_int_equal(kiln_model_load(path, &mp, &model), KILN_ERR_IO);
    assert_null(model);
    assert_non_null(strstr(kiln_last_error(), path));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controls_load),
        cmocka_unit_test(test_bad_models_refused),
        cmocka_unit_test(test_missing_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
