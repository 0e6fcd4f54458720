// The public API's model information (kiln_model_get_info, the tensor list)
// and vocab_only loading: metadata and tokenizer of any model whose tokenizer
// kiln reads, also of architectures it cannot run, with the reason.
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "kiln.h"
#include "test_util.h"

static kiln_model *load(const char *rel, bool vocab_only) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", KILN_FIXTURES, rel);
    kiln_model_params mp = {.n_threads = 1, .device = KILN_DEVICE_CPU, .vocab_only = vocab_only};
    kiln_model *m = NULL;
    if (kiln_model_load(path, &mp, &m) != KILN_OK) fail_msg("%s: %s", path, kiln_last_error());
    return m;
}

static void same_ids(kiln_model *a, kiln_model *b, const char *text) {
    int32_t *x, *y;
    size_t nx, ny;
    assert_int_equal(kiln_tokenize(a, text, strlen(text), true, true, &x, &nx), KILN_OK);
    assert_int_equal(kiln_tokenize(b, text, strlen(text), true, true, &y, &ny), KILN_OK);
    assert_int_equal(nx, ny);
    assert_memory_equal(x, y, nx * sizeof *x);
    free(x);
    free(y);
}

// A model kiln runs: vocab_only gives the same facts and ids as a full load,
// without a device.
static void test_vocab_only_matches_full(void **state) {
    (void)state;
    const char *models[] = {"tiny/llama.gguf", "tiny/llama", "tiny/qwen2.gguf", "tiny/llama3"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        kiln_model *full = load(models[i], false), *vocab = load(models[i], true);
        kiln_model_info fi, vi;
        kiln_model_get_info(full, &fi);
        kiln_model_get_info(vocab, &vi);
        assert_true(fi.supported);
        assert_null(fi.unsupported);
        assert_false(fi.vocab_only);
        assert_string_equal(fi.device, "cpu");
        assert_string_equal(fi.kv_dtype, "f32");
        assert_true(vi.supported);
        assert_true(vi.vocab_only);
        assert_null(vi.device);
        assert_null(vi.kv_dtype);
        assert_string_equal(fi.arch, vi.arch);
        assert_string_equal(fi.format, vi.format);
        assert_int_equal(fi.n_layers, vi.n_layers);
        assert_int_equal(fi.dim, vi.dim);
        assert_int_equal(fi.ffn_dim, vi.ffn_dim);
        assert_int_equal(fi.n_heads, vi.n_heads);
        assert_int_equal(fi.n_kv_heads, vi.n_kv_heads);
        assert_int_equal(fi.head_dim, vi.head_dim);
        assert_int_equal(fi.vocab, vi.vocab);
        assert_int_equal(fi.ctx_train, vi.ctx_train);
        assert_int_equal(fi.rope_interleaved, vi.rope_interleaved);
        assert_int_equal(fi.rope_llama3, vi.rope_llama3);
        assert_int_equal(fi.qkv_bias, vi.qkv_bias);
        assert_int_equal(fi.tied_embeddings, vi.tied_embeddings);
        assert_int_equal(fi.tokenizer_vocab, vi.tokenizer_vocab);
        assert_int_equal(fi.bos, vi.bos);
        assert_int_equal(fi.eos, vi.eos);
        assert_int_equal(fi.n_tensors, vi.n_tensors);
        assert_int_equal(fi.weight_bytes, vi.weight_bytes);
        assert_int_equal(kiln_model_bos(full), kiln_model_bos(vocab));
        // Nothing that runs: refused with a message, never a crash.
        kiln_session *sess = NULL;
        kiln_engine *eng = NULL;
        assert_int_equal(kiln_session_create(vocab, 64, &sess), KILN_ERR_INVALID_ARG);
        assert_null(sess);
        assert_non_null(strstr(kiln_last_error(), "vocab_only"));
        assert_int_equal(kiln_engine_create(vocab, NULL, &eng), KILN_ERR_INVALID_ARG);
        kiln_memory_info mem;
        kiln_model_memory(vocab, 0, &mem);
        assert_int_equal(mem.kv_cache, 0);
        assert_string_equal(kiln_model_device(vocab), "none");
        assert_int_equal(kiln_model_threads(vocab), 0);
        assert_int_equal(kiln_model_adds_bos(full), kiln_model_adds_bos(vocab));
        assert_true(fi.n_tensors > 0);
        same_ids(full, vocab, "Hello world, 2024! <|im_start|>");
        // The tensor list: every entry named, sized, in range; one past the end refused.
        uint64_t bytes = 0;
        for (uint64_t t = 0; t < fi.n_tensors; t++) {
            kiln_tensor_info ti;
            assert_int_equal(kiln_model_tensor_info(vocab, t, &ti), KILN_OK);
            assert_non_null(ti.name);
            assert_non_null(ti.dtype);
            assert_true(ti.n_dims >= 1 && ti.n_dims <= 4);
            bytes += ti.bytes;
        }
        assert_int_equal(bytes, fi.weight_bytes);
        kiln_tensor_info ti;
        assert_int_equal(kiln_model_tensor_info(vocab, fi.n_tensors, &ti), KILN_ERR_INVALID_ARG);
        kiln_model_free(full);
        kiln_model_free(vocab);
    }
}

// An architecture kiln cannot run: the full load is refused, vocab_only
// loads its metadata and tokenizer and says why it cannot run.
static void test_unsupported_architecture(void **state) {
    (void)state;
    const char *models[] = {"corrupt_models/arch_gpt2.gguf", "corrupt_models/hf_model_type_gpt2"};
    for (size_t i = 0; i < sizeof models / sizeof *models; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", KILN_FIXTURES, models[i]);
        kiln_model_params full = {.n_threads = 1, .device = KILN_DEVICE_CPU};
        kiln_model *m = NULL;
        assert_int_equal(kiln_model_load(path, &full, &m), KILN_ERR_UNSUPPORTED);
        assert_null(m);
        m = load(models[i], true);
        kiln_model_info info;
        kiln_model_get_info(m, &info);
        assert_false(info.supported);
        assert_true(info.vocab_only);
        assert_non_null(info.unsupported);
        assert_non_null(strstr(info.unsupported, "gpt2"));
        assert_string_equal(info.arch, "gpt2");
        // The GGUF keeps llama.* keys under its gpt2 name: no sizes to show.
        if (i == 1) assert_int_equal(info.n_layers, 1);
        assert_true(info.vocab > 0);
        assert_true(info.tokenizer_vocab > 0);
        int32_t *ids;
        size_t n;
        assert_int_equal(kiln_tokenize(m, "hello", 5, false, true, &ids, &n), KILN_OK);
        assert_true(n > 0);
        free(ids);
        kiln_model_free(m);
    }
}

// vocab_only does not bind weights: a file whose weights are broken still
// gives its tokenizer.
static void test_vocab_only_skips_weights(void **state) {
    (void)state;
    kiln_model *m = load("corrupt_models/missing_tensor.gguf", true);
    kiln_model_info info;
    kiln_model_get_info(m, &info);
    assert_true(info.supported);
    kiln_model_free(m);
    kiln_model_params mp = {.vocab_only = true};
    assert_int_equal(kiln_model_load("/nonexistent/model.gguf", &mp, &m), KILN_ERR_IO);
    assert_null(m);
    assert_non_null(strstr(kiln_last_error(), "/nonexistent/model.gguf"));
}

static void test_sampling_params_check(void **state) {
    (void)state;
    kiln_sampling_params p = kiln_sampling_default();
    assert_int_equal(kiln_sampling_params_check(&p), KILN_OK);
    p.top_p = 2.0f;
    assert_int_equal(kiln_sampling_params_check(&p), KILN_ERR_INVALID_ARG);
    assert_non_null(strstr(kiln_last_error(), "top-p"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_only_matches_full),
        cmocka_unit_test(test_unsupported_architecture),
        cmocka_unit_test(test_vocab_only_skips_weights),
        cmocka_unit_test(test_sampling_params_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
