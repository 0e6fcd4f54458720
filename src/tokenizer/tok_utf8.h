// UTF-8 helpers and the GPT-2 byte <-> unicode table used by byte-level BPE.
#ifndef KILN_TOKENIZER_TOK_UTF8_H
#define KILN_TOKENIZER_TOK_UTF8_H

#include <stddef.h>
#include <stdint.h>

typedef enum tok_utf8_class {
    TOK_UTF8_OK,         // a complete, valid sequence of *len bytes
    TOK_UTF8_INCOMPLETE, // a valid prefix that runs past the end of the input
    TOK_UTF8_INVALID,    // invalid; *len = the maximal invalid subpart (>= 1)
} tok_utf8_class;

// Classifies the sequence starting at s[0] (n >= 1), strictly: no overlongs,
// no surrogates, nothing above U+10FFFF.
tok_utf8_class tok_utf8_classify(const uint8_t *s, size_t n, size_t *len);

// Length of the character at s[0]: its sequence length when valid, else 1.
size_t tok_utf8_char_len(const uint8_t *s, size_t n);

// Writes the UTF-8 encoding of cp (< 0x110000) to out (4 bytes room); returns length.
size_t tok_utf8_encode(uint32_t cp, char *out);

// GPT-2's byte -> code point table (printable bytes map to themselves, the
// rest to U+0100..), and the reverse (-1 for code points outside the table).
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp);

#endif
