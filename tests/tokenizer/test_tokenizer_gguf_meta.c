// GGUF tokenizer metadata handling on small GGUF files built in memory:
// every known pre-tokenizer name compiles; an unknown name falls back to the
// GPT-2 regex and is recorded; hostile metadata fails with a message.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_util.h"
#include "tok_test_util.h"

typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 256;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}
static void kv_str(buf *b, const char *k, const char *v) {
    put_str(b, k);
    put_u32(b, 8);
    put_str(b, v);
}
static void kv_u32(buf *b, const char *k, uint32_t v) {
    put_str(b, k);
    put_u32(b, 4);
    put_u32(b, v);
}
static void kv_strs(buf *b, const char *k, const char **v, size_t n) {
    put_str(b, k);
    put_u32(b, 9);
    put_u32(b, 8);
    put_u64(b, n);
    for (size_t i = 0; i < n; i++) put_str(b, v[i]);
}
static void kv_i32s(buf *b, const char *k, const int32_t *v, size_t n) {
    put_str(b, k);
    put_u32(b, 9);
    put_u32(b, 5);
    put_u64(b, n);
    put(b, v, n * 4);
}

// A byte-level vocabulary: the 256 GPT-2 byte characters, "ab", "<|end|>".
static const char *vocab[258];
static char vocab_store[256][4];

static void make_vocab(void) {
    for (int b = 0, extra = 0; b < 256; b++) {
        int keep = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        unsigned cp = keep ? (unsigned)b : 0x100u + (unsigned)extra++;
        char *s = vocab_store[b];
        if (cp < 0x80) s[0] = (char)cp, s[1] = 0;
        else s[0] = (char)(0xC0 | (cp >> 6)), s[1] = (char)(0x80 | (cp & 0x3F)), s[2] = 0;
        vocab[b] = s;
    }
    vocab[256] = "ab";
    vocab[257] = "<|end|>";
}

// Builds a GGUF with the given tokenizer metadata; `variant` breaks one thing.
static buf build(const char *model, const char *pre, int variant) {
    buf b = {0};
    put(&b, "GGUF", 4);
    put_u32(&b, 3);
    put_u64(&b, 0); // tensors
    int n_kv = 5 + (pre != NULL) + (variant == 3);
    put_u64(&b, (uint64_t)n_kv);
    kv_str(&b, "tokenizer.ggml.model", model);
    if (pre) kv_str(&b, "tokenizer.ggml.pre", pre);
    size_t n_tok = variant == 1 ? 0 : 258;
    static const char *empty[258];
    for (int i = 0; i < 258; i++) empty[i] = "";
    kv_strs(&b, "tokenizer.ggml.tokens", variant == 5 ? empty : vocab, n_tok);
    int32_t types[258];
    for (int i = 0; i < 258; i++) types[i] = i == 257 ? 3 : 1;
    kv_i32s(&b, "tokenizer.ggml.token_type", types, variant == 2 ? 100 : 258);
    const char *merges[] = {"a b"};
    kv_strs(&b, "tokenizer.ggml.merges", merges, 1);
    kv_u32(&b, "tokenizer.ggml.eos_token_id", variant == 4 ? 5000 : 257);
    if (variant == 3) kv_u32(&b, "tokenizer.ggml.bos_token_id", 999999);
    return b;
}

static kiln_status load(buf *b, kiln_gguf **g, kiln_tokenizer **tok) {
    *tok = NULL;
    kiln_status s = kiln_gguf_parse(b->p, b->n, "synthetic.gguf", g);
    if (s != KILN_OK) return s;
    return kiln_tokenizer_from_gguf(*g, tok);
}

// Runs load() with stderr captured into `err`.
static kiln_status load_capturing(buf *b, kiln_gguf **g, kiln_tokenizer **tok, char *err, size_t cap) {
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    assert_true(saved >= 0 && tmp && dup2(fileno(tmp), 2) >= 0);
    kiln_status s = load(b, g, tok);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(err, 1, cap - 1, tmp);
    err[n] = '\0';
    fclose(tmp);
    return s;
}

static void test_known_pre_names(void **state) {
    (void)state;
    static const char *names[] = {"default", "gpt2", "gpt-2", "llama3", "llama-bpe", "qwen2", "smollm", "starcoder",
                                  "refact", "deepseek-llm", "deepseek-coder", "deepseek-v3", "falcon", "gpt-4o",
                                  "tekken", "command-r", "stablelm2", "poro-chat", "viking", "seed-coder", "dbrx"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        buf b = build("gpt2", names[i], 0);
        kiln_gguf *g;
        kiln_tokenizer *tok;
        char err[1024];
        kiln_status s = load_capturing(&b, &g, &tok, err, sizeof err);
        if (s != KILN_OK) fprintf(stderr, "%s: %s\n", names[i], kiln_last_error());
        assert_int_equal(s, KILN_OK);
        if (strstr(err, "warning")) fail_msg("%s: a known name warns: %s", names[i], err);
        assert_string_equal(kiln_tokenizer_pre_name(tok), names[i]);
        assert_true(kiln_tokenizer_pre_known(tok));
        // "ab" merges; "<|end|>" is special (and an end-of-generation token).
        int32_t *ids;
        size_t n;
        assert_int_equal(kiln_tokenizer_encode(tok, "ab<|end|>", 9, false, true, &ids, &n), KILN_OK);
        assert_int_equal(n, 2);
        assert_int_equal(ids[0], 256);
        assert_int_equal(ids[1], 257);
        free(ids);
        assert_int_equal(kiln_tokenizer_encode(tok, "ab<|end|>", 9, false, false, &ids, &n), KILN_OK);
        assert_true(n > 2);
        free(ids);
        assert_true(kiln_tokenizer_is_eog(tok, 257));
        kiln_tokenizer_free(tok);
        kiln_gguf_close(g);
        free(b.p);
    }
}

static void test_unknown_pre_recorded(void **state) {
    (void)state;
    buf b = build("gpt2", "mystery-tokenizer", 0);
    kiln_gguf *g;
    kiln_tokenizer *tok;
    char err[1024];
    assert_int_equal(load_capturing(&b, &g, &tok, err, sizeof err), KILN_OK);
    // Said on stderr, with the name and what is used instead, each time it loads.
    if (!strstr(err, "warning: synthetic.gguf: tokenizer.ggml.pre \"mystery-tokenizer\" is not a pre-tokenizer kiln "
                     "knows; splitting with GPT-2's regex instead"))
        fail_msg("no warning on stderr: \"%s\"", err);
    assert_string_equal(kiln_tokenizer_pre_name(tok), "mystery-tokenizer");
    assert_false(kiln_tokenizer_pre_known(tok));
    int32_t *ids;
    size_t n;
    assert_int_equal(kiln_tokenizer_encode(tok, "ab ab", 5, false, true, &ids, &n), KILN_OK);
    assert_int_equal(n, 3); // "ab", " ", "ab" with GPT-2 pieces "ab" and " ab"
    free(ids);
    kiln_tokenizer_free(tok);
    kiln_gguf_close(g);
    free(b.p);
}

static void test_hostile_metadata(void **state) {
    (void)state;
    struct {
        const char *model;
        int variant;
        kiln_status want;
    } cases[] = {
        {"gpt2", 1, KILN_ERR_FORMAT},  {"gpt2", 2, KILN_ERR_FORMAT},       {"gpt2", 3, KILN_ERR_FORMAT},
        {"gpt2", 4, KILN_ERR_FORMAT},  {"bert", 0, KILN_ERR_UNSUPPORTED}, {"llama", 0, KILN_ERR_FORMAT}, // no scores
        {"gpt2", 5, KILN_ERR_FORMAT}, // every token an empty string
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = build(cases[i].model, "gpt2", cases[i].variant);
        kiln_gguf *g = NULL;
        kiln_tokenizer *tok;
        kiln_status s = load(&b, &g, &tok);
        assert_int_equal(s, cases[i].want);
        assert_null(tok);
        assert_non_null(strstr(kiln_last_error(), "synthetic.gguf"));
        kiln_gguf_close(g);
        free(b.p);
    }
}

int main(void) {
    make_vocab();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_pre_names),
        cmocka_unit_test(test_unknown_pre_recorded),
        cmocka_unit_test(test_hostile_metadata),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
