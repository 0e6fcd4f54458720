// Tokenizers: byte-level BPE (GPT-2, Llama 3, Qwen 2, SmolLM) with the model's
// own pre-tokenizer regex compiled by PCRE2, and SentencePiece-style BPE with
// byte fallback (Llama 2, Mistral, Gemma). Loadable from GGUF metadata or from
// a Hugging Face tokenizer.json (+ tokenizer_config.json).
#ifndef KILN_TOKENIZER_TOKENIZER_H
#define KILN_TOKENIZER_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"
#include "formats/gguf.h"

typedef struct kiln_tokenizer kiln_tokenizer;

typedef enum kiln_tokenizer_kind {
    KILN_TOKENIZER_BYTE_BPE, // GPT-2 style byte-level BPE
    KILN_TOKENIZER_SPM,      // SentencePiece BPE with byte fallback
} kiln_tokenizer_kind;

kiln_status kiln_tokenizer_from_gguf(const kiln_gguf *gguf, kiln_tokenizer **out);
// tokenizer_config_json may be NULL (then no chat template, BOS/EOS from
// tokenizer.json's post-processor or added tokens).
kiln_status kiln_tokenizer_from_hf(const char *tokenizer_json, const char *tokenizer_config_json,
                                   kiln_tokenizer **out);
// The same from texts held in memory (the fuzz harnesses, tests); name and
// config_name are for messages; config_json may be NULL.
kiln_status kiln_tokenizer_from_hf_text(const char *tokenizer_json, size_t len, const char *name,
                                        const char *config_json, size_t config_len, const char *config_name,
                                        kiln_tokenizer **out);
void kiln_tokenizer_free(kiln_tokenizer *tok);

kiln_tokenizer_kind kiln_tokenizer_get_kind(const kiln_tokenizer *tok);
int32_t kiln_tokenizer_vocab_size(const kiln_tokenizer *tok);
int32_t kiln_tokenizer_bos(const kiln_tokenizer *tok); // -1 if none
int32_t kiln_tokenizer_eos(const kiln_tokenizer *tok); // -1 if none
bool kiln_tokenizer_add_bos_default(const kiln_tokenizer *tok);
// End of generation: EOS, EOT (<|eot_id|>, <|im_end|>, <end_of_turn>, ...).
bool kiln_tokenizer_is_eog(const kiln_tokenizer *tok, int32_t id);
// Id of a token given its exact text (e.g. "<|im_end|>"), or -1.
int32_t kiln_tokenizer_find(const kiln_tokenizer *tok, const char *text);
// Chat template text from the model files, or NULL.
const char *kiln_tokenizer_chat_template(const kiln_tokenizer *tok);
// Pre-tokenizer name (GGUF tokenizer.ggml.pre, "tokenizer.json" for HF
// files), or NULL. pre_known is false when the name was not recognised and
// the GPT-2 regex was used instead (for `kiln inspect` to report).
const char *kiln_tokenizer_pre_name(const kiln_tokenizer *tok);
bool kiln_tokenizer_pre_known(const kiln_tokenizer *tok);

// Encodes `len` bytes of text. With parse_special, special/added tokens written
// in the text become their ids; otherwise they are tokenized as plain text.
// *ids is malloc'd, the caller frees it.
kiln_status kiln_tokenizer_encode(const kiln_tokenizer *tok, const char *text, size_t len, bool add_bos,
                                  bool parse_special, int32_t **ids, size_t *n_ids);

// The raw bytes a token stands for (after byte-level / SentencePiece decoding:
// "Ġ" becomes a space, "▁" a space, <0x41> the byte 0x41). Special tokens give
// their text. Returns false for an id out of range.
bool kiln_tokenizer_token_bytes(const kiln_tokenizer *tok, int32_t id, const char **bytes, size_t *len);
// The longest token's bytes (sizes detokenizer output buffers).
size_t kiln_tokenizer_max_token_bytes(const kiln_tokenizer *tok);

// Streaming detokenizer: push ids one at a time, get back only complete UTF-8.
typedef struct kiln_detok {
    const kiln_tokenizer *tok;
    char pending[8]; // bytes of an incomplete UTF-8 sequence
    int n_pending;
    bool at_start;   // SentencePiece: drop the leading space of the first piece
} kiln_detok;

void kiln_detok_init(kiln_detok *d, const kiln_tokenizer *tok);
// Appends the complete UTF-8 text this id finishes to out (at most cap bytes,
// cap >= 64 + longest token); returns the number of bytes written. Invalid
// byte sequences become U+FFFD, never a broken sequence.
size_t kiln_detok_push(kiln_detok *d, int32_t id, char *out, size_t cap);
// Flushes what is pending at the end of generation (as U+FFFD).
size_t kiln_detok_flush(kiln_detok *d, char *out, size_t cap);

#endif
