// GGUF tokenizer.ggml.pre names -> pre-tokenizer regex lists, following
// llama.cpp (llama-vocab.cpp). Where llama.cpp rewrote a Hugging Face regex
// for std::regex, the original is used: PCRE2 supports (?i:...) and \p{..}.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define LLAMA3_RE                                                                                          \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE                                                                                       \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define TEKKEN_RE                                                                                               \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"                 \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| "         \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define GPT4O_RE                                                                                                \
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"                 \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+"                 \
    "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" \
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define PORO_RE " ?[^(\\s|.,!?…。，、।۔،)]+"

typedef struct pre_def {
    const char *names[10];
    const char *regexes[7];
    bool ignore_merges;
} pre_def;

static const pre_def pre_defs[] = {
    {{"default"}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"}, false},
    {{"gpt2", "gpt-2", "phi-2", "mpt", "olmo", "jais", "roberta-bpe", "jina-v1-en", "jina-v2-code", "trillion"},
     {GPT2_RE},
     false},
    {{"jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "gigachat"}, {GPT2_RE}, false},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"}, {LLAMA3_RE}, true},
    {{"dbrx", "smaug-bpe", "chatglm-bpe"}, {LLAMA3_RE}, false},
    {{"qwen2", "stablelm2", "deepseek-r1-qwen", "megrez", "hunyuan", "grok-2"}, {QWEN2_RE}, false},
    {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b"}, {"\\p{N}", GPT2_RE}, false},
    {{"falcon"}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]"}, false},
    // Code points that Unicode normalisation would fold (U+1F7D, U+1FBE,
    // U+1FD3, U+1FDB, U+2126, U+212A) are escaped so the ranges stay exact.
    {{"deepseek-llm"},
     {"[\r\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}ῂ-ῄῆ-ῌῐ-\\x{1FD3}ῖ-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ\U00010400-\U0001044f𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+", "\\p{N}+"},
     false},
    {{"deepseek-coder"}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}, false},
    {{"deepseek-v3"},
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
      "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"},
     false},
    {{"poro-chat", "bloom", "gpt3-finnish"}, {PORO_RE}, false},
    {{"viking"}, {PORO_RE, "\\p{N}"}, false},
    {{"tekken"}, {TEKKEN_RE}, true},
    {{"gpt-4o", "llama4", "minimax-m2"}, {GPT4O_RE}, false},
    {{"seed-coder"},
     {"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^\\s\\p{L}\\p{N}\r\n]+|\\s*[\r\n]+|"
      "\\s+(?!\\S)|\\s+"},
     false},
};

static kiln_status use_def(kiln_tokenizer *tok, const char *where, const pre_def *d) {
    for (size_t i = 0; i < sizeof d->regexes / sizeof d->regexes[0] && d->regexes[i]; i++) {
        kiln_status s = tok_pipeline_add_split(&tok->pipe, where, d->regexes[i], strlen(d->regexes[i]),
                                               TOK_SPLIT_ISOLATED, false);
        if (s != KILN_OK) return s;
    }
    tok->ignore_merges = d->ignore_merges;
    return KILN_OK;
}

kiln_status tok_set_pre_by_name(kiln_tokenizer *tok, const char *where, const char *name, size_t len) {
    if (!name) {
        name = "default";
        len = strlen(name);
    }
    free(tok->pre_name);
    tok->pre_name = malloc(len + 1);
    if (!tok->pre_name) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(tok->pre_name, name, len);
    tok->pre_name[len] = '\0';
    for (size_t k = 0; k < sizeof pre_defs / sizeof pre_defs[0]; k++) {
        const pre_def *d = &pre_defs[k];
        for (size_t i = 0; i < sizeof d->names / sizeof d->names[0] && d->names[i]; i++) {
            if (strlen(d->names[i]) == len && memcmp(d->names[i], name, len) == 0) {
                tok->pre_known = true;
                return use_def(tok, where, d);
            }
        }
    }
    // Unknown: the GPT-2 regex is the common ancestor of most of these; the
    // name stays recorded (pre_known == false) so tools can point it out.
    tok->pre_known = false;
    return use_def(tok, where, &pre_defs[1]);
}
