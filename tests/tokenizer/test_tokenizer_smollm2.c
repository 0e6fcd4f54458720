// The default model's tokenizer (SmolLM2 GGUF: byte-level BPE, pre "smollm")
// against ids from an independent reference: a Hugging Face `tokenizers`
// Tokenizer built from the GGUF vocab + merges with Digits(individual) +
// ByteLevel (tools/make_tokenizer_fixtures.py). Also: the same tokenizer from
// tokenizer.json files when present, throughput, EOG, special tokens.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "test_util.h"
#include "tok_test_util.h"

static const char *model_path;

static kiln_tokenizer *open_model(kiln_gguf **g) {
    assert_int_equal(kiln_gguf_open(model_path, g), KILN_OK);
    kiln_tokenizer *tok = NULL;
    kiln_status s = kiln_tokenizer_from_gguf(*g, &tok);
    if (s != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(s, KILN_OK);
    return tok;
}

static void test_gguf_matches_reference(void **state) {
    (void)state;
    kiln_gguf *g;
    kiln_tokenizer *tok = open_model(&g);
    assert_int_equal(kiln_tokenizer_get_kind(tok), KILN_TOKENIZER_BYTE_BPE);
    assert_string_equal(kiln_tokenizer_pre_name(tok), "smollm");
    assert_true(kiln_tokenizer_pre_known(tok));
    cJSON *exp = tt_load_json("smollm2.expected.json");
    assert_non_null(exp);
    int n = 0, bad = tt_check_cases(tok, exp, "smollm2 gguf", &n);
    fprintf(stderr, "smollm2 gguf: %d/%d encodings equal to the reference\n", n - bad, n);
    assert_int_equal(bad, 0);
    cJSON_Delete(exp);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
}

static void test_metadata(void **state) {
    (void)state;
    kiln_gguf *g;
    kiln_tokenizer *tok = open_model(&g);
    assert_int_equal(kiln_tokenizer_vocab_size(tok), 49152);
    assert_int_equal(kiln_tokenizer_bos(tok), 1);
    assert_int_equal(kiln_tokenizer_eos(tok), 2);
    assert_false(kiln_tokenizer_add_bos_default(tok));
    assert_int_equal(kiln_tokenizer_find(tok, "<|im_end|>"), 2);
    assert_int_equal(kiln_tokenizer_find(tok, "<|im_start|>"), 1);
    assert_true(kiln_tokenizer_is_eog(tok, 2));                               // eos, <|im_end|>
    assert_true(kiln_tokenizer_is_eog(tok, 0));                               // <|endoftext|>
    assert_false(kiln_tokenizer_is_eog(tok, 1));                              // <|im_start|>
    assert_false(kiln_tokenizer_is_eog(tok, kiln_tokenizer_find(tok, "a")));
    assert_false(kiln_tokenizer_is_eog(tok, -5));
    assert_false(kiln_tokenizer_is_eog(tok, 1 << 30));
    const char *tmpl = kiln_tokenizer_chat_template(tok);
    assert_non_null(tmpl);
    assert_non_null(strstr(tmpl, "<|im_start|>"));
    const char *b;
    size_t bl;
    assert_true(kiln_tokenizer_token_bytes(tok, kiln_tokenizer_find(tok, "\xC4\xA0the"), &b, &bl)); // "Ġthe"
    assert_int_equal(bl, 4);
    assert_memory_equal(b, " the", 4);
    assert_false(kiln_tokenizer_token_bytes(tok, 49152, &b, &bl));
    int32_t *ids;
    size_t n;
    assert_int_equal(kiln_tokenizer_encode(tok, "hi", 2, true, false, &ids, &n), KILN_OK);
    assert_int_equal(ids[0], 1);
    free(ids);
    assert_int_equal(kiln_tokenizer_encode(tok, "", 0, false, true, &ids, &n), KILN_OK);
    assert_int_equal(n, 0);
    free(ids);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
}

// 100+ KB of mixed text: equal to the reference and well under a second.
static void test_throughput(void **state) {
    (void)state;
    kiln_gguf *g;
    kiln_tokenizer *tok = open_model(&g);
    cJSON *corpus = tt_load_json("corpus.json"), *exp = tt_load_json("smollm2_big.expected.json");
    int repeat = cJSON_GetObjectItem(exp, "repeat")->valueint;
    size_t bytes = (size_t)cJSON_GetObjectItem(exp, "bytes")->valuedouble;
    size_t one = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(corpus, "valid")) one += strlen(it->valuestring);
    char *big = malloc(one * (size_t)repeat + 1);
    size_t w = 0;
    for (int r = 0; r < repeat; r++)
        cJSON_ArrayForEach(it, cJSON_GetObjectItem(corpus, "valid")) {
            memcpy(big + w, it->valuestring, strlen(it->valuestring));
            w += strlen(it->valuestring);
        }
    assert_int_equal(bytes, w);
    assert_true(bytes >= 100000);
    struct timespec t0, t1;
    int32_t *ids;
    size_t n;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(kiln_tokenizer_encode(tok, big, bytes, false, true, &ids, &n), KILN_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9;
    fprintf(stderr, "encoded %zu bytes into %zu tokens in %.3f s\n", bytes, n, secs);
    assert_true(tt_same_ids("smollm2 big", "(100+ KB text)", ids, n, cJSON_GetObjectItem(exp, "ids")));
    assert_true(secs < 1.0);
    free(ids);
    free(big);
    cJSON_Delete(corpus);
    cJSON_Delete(exp);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
}

// Invalid UTF-8 reads as U+FFFD (the reference cases cover more of it).
static void test_invalid_utf8(void **state) {
    (void)state;
    kiln_gguf *g;
    kiln_tokenizer *tok = open_model(&g);
    int32_t *a, *b;
    size_t na, nb;
    assert_int_equal(kiln_tokenizer_encode(tok, "abc\xFF\xC0" "def", 8, false, true, &a, &na), KILN_OK);
    assert_int_equal(kiln_tokenizer_encode(tok, "abc\xEF\xBF\xBD\xEF\xBF\xBD" "def", 12, false, true, &b, &nb), KILN_OK);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof *a);
    for (size_t i = 0; i < na; i++) assert_false(kiln_tokenizer_is_eog(tok, a[i]));
    free(a);
    free(b);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
}

// The same tokenizer as tokenizer.json (made by tools/make_hf_folder.py or
// tools/make_tokenizer_fixtures.py); skipped when neither file exists.
static void test_tokenizer_json(void **state) {
    (void)state;
    const char *home = getenv("HOME");
    const char *cache = getenv("KILN_CACHE");
    char base[900], paths[2][1024];
    snprintf(base, sizeof base, "%s", cache && *cache ? cache : "");
    if (!(cache && *cache)) snprintf(base, sizeof base, "%s/.cache/kiln", home ? home : "");
    snprintf(paths[0], sizeof paths[0], "%s/smollm2-hf-f32/tokenizer.json", base);
    snprintf(paths[1], sizeof paths[1], "%s/smollm2-ref/tokenizer.json", base);
    cJSON *exp = tt_load_json("smollm2.expected.json");
    int found = 0;
    for (int i = 0; i < 2; i++) {
        if (access(paths[i], R_OK) != 0) {
            fprintf(stderr, "note: %s absent, not checked\n", paths[i]);
            continue;
        }
        found++;
        kiln_tokenizer *tok = NULL;
        kiln_status s = kiln_tokenizer_from_hf(paths[i], NULL, &tok);
        if (s != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
        assert_int_equal(s, KILN_OK);
        int n = 0, bad = tt_check_cases(tok, exp, paths[i], &n);
        fprintf(stderr, "%s: %d/%d encodings equal to the reference\n", paths[i], n - bad, n);
        assert_int_equal(bad, 0);
        kiln_tokenizer_free(tok);
    }
    cJSON_Delete(exp);
    if (!found) skip();
}

int main(void) {
    KILN_REQUIRE_MODEL(path);
    model_path = path;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_matches_reference), cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_throughput),             cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_tokenizer_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
