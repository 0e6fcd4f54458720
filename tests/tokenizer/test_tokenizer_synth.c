// tokenizer.json loading on small synthetic tokenizers trained with the
// Hugging Face `tokenizers` library (tools/make_tokenizer_fixtures.py):
// byte-level BPE (Llama 3 Split regex, pair merges; SmolLM Digits+ByteLevel,
// "a b" merges) and SentencePiece-style BPE with byte fallback (Metaspace;
// Prepend+Replace normalizers). Expected ids come from tokenizers' encode().
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_util.h"
#include "tok_test_util.h"

static kiln_tokenizer *load_synth(const char *name, bool with_config) {
    char path[1024], cfg[1024];
    snprintf(path, sizeof path, "%s/tokenizer/%s.tokenizer.json", KILN_FIXTURES, name);
    snprintf(cfg, sizeof cfg, "%s/tokenizer/synth_config.json", KILN_FIXTURES);
    kiln_tokenizer *tok = NULL;
    kiln_status s = kiln_tokenizer_from_hf(path, with_config ? cfg : NULL, &tok);
    if (s != KILN_OK) fprintf(stderr, "%s\n", kiln_last_error());
    assert_int_equal(s, KILN_OK);
    return tok;
}

static void check_against_reference(const char *name, kiln_tokenizer_kind kind) {
    kiln_tokenizer *tok = load_synth(name, false);
    assert_int_equal(kiln_tokenizer_get_kind(tok), kind);
    char fname[256];
    snprintf(fname, sizeof fname, "%s.expected.json", name);
    cJSON *exp = tt_load_json(fname);
    assert_non_null(exp);
    int n = 0, bad = tt_check_cases(tok, exp, name, &n);
    fprintf(stderr, "%s: %d/%d encodings equal to the reference\n", name, n - bad, n);
    assert_int_equal(bad, 0);
    assert_true(n > 100);
    cJSON_Delete(exp);
    kiln_tokenizer_free(tok);
}

static void test_bpe_llama3_style(void **state) {
    (void)state;
    check_against_reference("synth_bpe_llama3", KILN_TOKENIZER_BYTE_BPE);
}
static void test_bpe_smollm_style(void **state) {
    (void)state;
    check_against_reference("synth_bpe_smollm", KILN_TOKENIZER_BYTE_BPE);
}
static void test_spm_metaspace(void **state) {
    (void)state;
    check_against_reference("synth_spm_metaspace", KILN_TOKENIZER_SPM);
}
static void test_spm_prepend(void **state) {
    (void)state;
    check_against_reference("synth_spm_prepend", KILN_TOKENIZER_SPM);
}

// Byte-level decoding gives back exactly the input.
static void test_bpe_round_trip(void **state) {
    (void)state;
    kiln_tokenizer *tok = load_synth("synth_bpe_smollm", false);
    cJSON *corpus = tt_load_json("corpus.json");
    const cJSON *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(corpus, "valid")) {
        const char *text = it->valuestring;
        int32_t *ids;
        size_t n, len;
        assert_int_equal(kiln_tokenizer_encode(tok, text, strlen(text), false, true, &ids, &n), KILN_OK);
        char *back = tt_detokenize(tok, ids, n, &len);
        assert_int_equal(len, strlen(text));
        assert_memory_equal(back, text, len);
        free(back);
        free(ids);
    }
    cJSON_Delete(corpus);
    kiln_tokenizer_free(tok);
}

static void test_spm_decode_drops_prefix_space(void **state) {
    (void)state;
    kiln_tokenizer *tok = load_synth("synth_spm_prepend", false);
    const char *text = "Hello world \xE2\x98\x83 snowman and \xE4\xBD\xA0\xE5\xA5\xBD";
    int32_t *ids;
    size_t n, len;
    assert_int_equal(kiln_tokenizer_encode(tok, text, strlen(text), false, false, &ids, &n), KILN_OK);
    // The snowman is not in the vocab: byte fallback must be used.
    int32_t b0 = kiln_tokenizer_find(tok, "<0x83>");
    bool used_bytes = false;
    for (size_t i = 0; i < n; i++) used_bytes |= ids[i] == b0;
    assert_true(used_bytes);
    char *back = tt_detokenize(tok, ids, n, &len);
    assert_string_equal(back, text);
    free(back);
    free(ids);
    kiln_tokenizer_free(tok);
}

static void test_config(void **state) {
    (void)state;
    kiln_tokenizer *tok = load_synth("synth_spm_metaspace", true);
    assert_int_equal(kiln_tokenizer_bos(tok), kiln_tokenizer_find(tok, "<s>"));
    assert_int_equal(kiln_tokenizer_eos(tok), kiln_tokenizer_find(tok, "</s>"));
    assert_true(kiln_tokenizer_bos(tok) >= 0 && kiln_tokenizer_eos(tok) >= 0);
    assert_true(kiln_tokenizer_add_bos_default(tok));
    assert_non_null(kiln_tokenizer_chat_template(tok));
    assert_true(kiln_tokenizer_is_eog(tok, kiln_tokenizer_eos(tok)));
    assert_true(kiln_tokenizer_is_eog(tok, kiln_tokenizer_find(tok, "<end_of_turn>")));
    assert_false(kiln_tokenizer_is_eog(tok, kiln_tokenizer_find(tok, "<start_of_turn>")));
    int32_t *ids;
    size_t n;
    assert_int_equal(kiln_tokenizer_encode(tok, "hi", 2, true, true, &ids, &n), KILN_OK);
    assert_true(n >= 2);
    assert_int_equal(ids[0], kiln_tokenizer_bos(tok));
    free(ids);
    kiln_tokenizer_free(tok);
}

// Streaming decode never emits half a character, and flushes U+FFFD.
static void test_detokenizer_streaming(void **state) {
    (void)state;
    kiln_tokenizer *tok = load_synth("synth_spm_prepend", false);
    kiln_detok d;
    char out[256];
    kiln_detok_init(&d, tok);
    const char *emoji[] = {"<0xF0>", "<0x9F>", "<0x98>", "<0x80>"};
    for (int i = 0; i < 3; i++) assert_int_equal(kiln_detok_push(&d, kiln_tokenizer_find(tok, emoji[i]), out, sizeof out), 0);
    assert_int_equal(kiln_detok_push(&d, kiln_tokenizer_find(tok, emoji[3]), out, sizeof out), 4);
    assert_memory_equal(out, "\xF0\x9F\x98\x80", 4);
    // An interrupted sequence: U+FFFD, then the next character.
    assert_int_equal(kiln_detok_push(&d, kiln_tokenizer_find(tok, "<0xE4>"), out, sizeof out), 0);
    size_t k = kiln_detok_push(&d, kiln_tokenizer_find(tok, "<0x41>"), out, sizeof out);
    assert_int_equal(k, 4);
    assert_memory_equal(out, "\xEF\xBF\xBD" "A", 4);
    assert_int_equal(kiln_detok_push(&d, kiln_tokenizer_find(tok, "<0xE4>"), out, sizeof out), 0);
    assert_int_equal(kiln_detok_flush(&d, out, sizeof out), 3);
    assert_memory_equal(out, "\xEF\xBF\xBD", 3);
    assert_int_equal(kiln_detok_push(&d, kiln_tokenizer_find(tok, "<0xFF>"), out, sizeof out), 3);
    assert_int_equal(kiln_detok_push(&d, -1, out, sizeof out), 0);
    kiln_tokenizer_free(tok);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

// Hostile tokenizer.json files fail with a message naming the file.
static void test_hostile_json(void **state) {
    (void)state;
    static const char *bad[] = {
        "",
        "{",
        "[]",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a b\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":-1},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":2000000000},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0.5},\"merges\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[[\"a\"]]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[\"a\"]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"pre_tokenizer\":{\"type\":\"Split\","
        "\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},\"added_tokens\":[{\"id\":\"x\"}]}",
        "{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}",
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}}",
    };
    char path[] = "/tmp/kiln_tok_hostile_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        kiln_tokenizer *tok = (kiln_tokenizer *)1;
        kiln_status s = kiln_tokenizer_from_hf(path, NULL, &tok);
        assert_int_not_equal(s, KILN_OK);
        assert_null(tok);
        assert_non_null(strstr(kiln_last_error(), path));
    }
    unlink(path);
}

// tokenizer_config.json and tokenizer.json flags of the wrong shape, or
// naming tokens that do not exist, are errors naming the file and the key
// (they were read as absent, and a missing EOS as none).
static void test_hostile_config(void **state) {
    (void)state;
    static const char *tj =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]},"
        "\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":true},"
        "{\"id\":4,\"content\":\"</s>\",\"special\":true}]}";
    // The good ones first: strings, {"content"} objects, null, a named template list.
    static const char *good[] = {
        "{}",
        "{\"bos_token\":\"<s>\",\"eos_token\":{\"content\":\"</s>\"},\"add_bos_token\":true,\"chat_template\":\"x\"}",
        "{\"bos_token\":null,\"eos_token\":null,\"add_bos_token\":null,\"chat_template\":null}",
        "{\"chat_template\":[{\"name\":\"tool_use\",\"template\":\"t\"},{\"name\":\"default\",\"template\":\"d\"}]}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        kiln_tokenizer *tok = NULL;
        kiln_status s = kiln_tokenizer_from_hf_text(tj, strlen(tj), "t.json", good[i], strlen(good[i]), "c.json", &tok);
        if (s != KILN_OK) fail_msg("%s: %s", good[i], kiln_last_error());
        kiln_tokenizer_free(tok);
    }
    kiln_tokenizer *tok = NULL;
    assert_int_equal(kiln_tokenizer_from_hf_text(tj, strlen(tj), "t.json", good[3], strlen(good[3]), "c.json", &tok),
                     KILN_OK);
    assert_string_equal(kiln_tokenizer_chat_template(tok), "d");
    kiln_tokenizer_free(tok);
    static const struct {
        const char *config, *message;
    } bad[] = {
        {"{\"bos_token\":3}", "c.json: \"bos_token\" must be a string or {\"content\": string}"},
        {"{\"eos_token\":{\"text\":\"</s>\"}}", "c.json: \"eos_token\" must be a string"},
        {"{\"eos_token\":\"<|im_end|>\"}", "c.json: \"eos_token\" is \"<|im_end|>\", which is not a token of t.json"},
        {"{\"add_bos_token\":\"true\"}", "c.json: \"add_bos_token\" must be true or false"},
        {"{\"chat_template\":7}", "c.json: \"chat_template\" must be a string or a list"},
        {"{\"chat_template\":[{\"name\":\"default\"}]}", "c.json: a \"chat_template\" entry without"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tok = (kiln_tokenizer *)1;
        kiln_status s = kiln_tokenizer_from_hf_text(tj, strlen(tj), "t.json", bad[i].config, strlen(bad[i].config),
                                                    "c.json", &tok);
        assert_int_equal(s, KILN_ERR_FORMAT);
        assert_null(tok);
        if (!strstr(kiln_last_error(), bad[i].message))
            fail_msg("%s: \"%s\" should say \"%s\"", bad[i].config, kiln_last_error(), bad[i].message);
    }
    // A tokenizer.json flag that is not true/false.
    static const char *flag =
        "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":\"yes\",\"vocab\":{\"a\":0},\"merges\":[]}}";
    assert_int_equal(kiln_tokenizer_from_hf_text(flag, strlen(flag), "t.json", NULL, 0, NULL, &tok), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "t.json: \"byte_fallback\" must be true or false"));
    // Nothing but empty strings.
    static const char *empty = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\":0},\"merges\":[]},"
                               "\"added_tokens\":[{\"id\":1,\"content\":\"\"}]}";
    assert_int_equal(kiln_tokenizer_from_hf_text(empty, strlen(empty), "t.json", NULL, 0, NULL, &tok), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "t.json: every token of the vocabulary is an empty string"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_config),
        cmocka_unit_test(test_bpe_llama3_style),   cmocka_unit_test(test_bpe_smollm_style),
        cmocka_unit_test(test_spm_metaspace),      cmocka_unit_test(test_spm_prepend),
        cmocka_unit_test(test_bpe_round_trip),     cmocka_unit_test(test_spm_decode_drops_prefix_space),
        cmocka_unit_test(test_config),             cmocka_unit_test(test_detokenizer_streaming),
        cmocka_unit_test(test_hostile_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
