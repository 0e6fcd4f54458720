// Private definition of kiln_tokenizer, shared by the loaders, the encoder
// and the detokenizer.
#ifndef KILN_TOKENIZER_TOK_INTERNAL_H
#define KILN_TOKENIZER_TOK_INTERNAL_H

#include "tokenizer/tok_hash.h"
#include "tokenizer/tok_pipeline.h"
#include "tokenizer/tokenizer.h"

// Token types, numbered as GGUF's tokenizer.ggml.token_type.
enum {
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

// A token matched verbatim in the input before BPE (special/added tokens).
typedef struct tok_special {
    int32_t id;
    bool only_when_parsing; // CONTROL-like: matched only with parse_special
} tok_special;

struct kiln_tokenizer {
    kiln_tokenizer_kind kind;
    int32_t n_vocab;
    // All token texts (as the model stores them) and their decoded bytes live
    // in one arena; offsets index it.
    char *arena;
    size_t arena_len, arena_cap;
    size_t *text_off, *bytes_off;
    uint32_t *text_len, *bytes_len;
    uint8_t *type;
    float *scores; // SentencePiece scores; NULL when merges are ranked by list
    tok_strmap vocab;
    tok_pairmap merges;
    bool ignore_merges;  // a pre-token found whole in the vocab skips BPE
    int32_t byte_token[256]; // token for each raw byte that BPE could not cover
    int32_t unk, bos, eos, eot;
    bool add_bos;
    bool strip_leading_space; // SentencePiece space prefix: dropped when decoding
    bool *eog;
    // Special/added tokens, found by hashing the candidate span; lengths of
    // specials starting with each byte, longest first.
    tok_strmap special_map;
    tok_special *specials; // indexed like special_map values
    size_t n_specials;
    uint16_t *special_lens[256];
    size_t n_special_lens[256];
    tok_pipeline pipe;
    char *pre_name;
    bool pre_known;
    char *chat_template;
    char *alias_buf; // extra vocab keys (see tok_gguf.c), kept apart from the arena
    char gpt2_byte_utf8[256][2]; // byte-level: each byte's code point in UTF-8 (1-2 bytes)
    uint8_t gpt2_byte_len[256];
};

// Allocates a tokenizer with n_vocab empty tokens.
kiln_status tok_alloc(int32_t n_vocab, kiln_tokenizer **out);
// Sets a token's text (copied). Call once per id.
kiln_status tok_set_text(kiln_tokenizer *tok, int32_t id, const char *text, size_t len);
const char *tok_text(const kiln_tokenizer *tok, int32_t id, size_t *len);
// The byte a SentencePiece byte token names ("<0x41>": 0x41), or -1 when the
// text is not "<0x" two hex digits ">".
int tok_parse_byte_token(const char *s, size_t len);
// After texts, types, kind and merges are in place: builds the vocab hash,
// decoded bytes, byte tokens, the special-token index and the EOG set.
kiln_status tok_finish(kiln_tokenizer *tok, const char *where);
kiln_status tok_set_pre_by_name(kiln_tokenizer *tok, const char *where, const char *name, size_t len);

// BPE over one pre-token, appending ids.
typedef struct tok_ids {
    int32_t *v;
    size_t n, cap;
} tok_ids;
bool tok_ids_push(tok_ids *ids, int32_t id);

typedef struct tok_bpe_state tok_bpe_state;
tok_bpe_state *tok_bpe_state_new(void);
void tok_bpe_state_free(tok_bpe_state *st);
kiln_status tok_bpe_word(const kiln_tokenizer *tok, tok_bpe_state *st, const char *word, size_t len, tok_ids *out);

#endif
