#include "tokenizer/tok_utf8.h"

#include <stdbool.h>

tok_utf8_class tok_utf8_classify(const uint8_t *s, size_t n, size_t *len) {
    uint8_t b0 = s[0];
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF; // allowed range of the second byte
    if (b0 < 0x80) {
        *len = 1;
        return TOK_UTF8_OK;
    } else if (b0 >= 0xC2 && b0 <= 0xDF) {
        need = 2;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
        need = 3;
        if (b0 == 0xE0) lo = 0xA0;      // overlong
        if (b0 == 0xED) hi = 0x9F;      // surrogates
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
        need = 4;
        if (b0 == 0xF0) lo = 0x90;      // overlong
        if (b0 == 0xF4) hi = 0x8F;      // above U+10FFFF
    } else {
        *len = 1;
        return TOK_UTF8_INVALID;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) {
            *len = i;
            return TOK_UTF8_INCOMPLETE;
        }
        uint8_t min = i == 1 ? lo : 0x80, max = i == 1 ? hi : 0xBF;
        if (s[i] < min || s[i] > max) {
            *len = i;
            return TOK_UTF8_INVALID;
        }
    }
    *len = need;
    return TOK_UTF8_OK;
}

size_t tok_utf8_char_len(const uint8_t *s, size_t n) {
    size_t len;
    return tok_utf8_classify(s, n, &len) == TOK_UTF8_OK ? len : 1;
}

size_t tok_utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

// GPT-2 keeps '!'..'~', '¡'..'¬' and '®'..'ÿ' as themselves and shifts the
// other 68 bytes, in order, to U+0100 onwards.
static bool byte_is_kept(uint32_t b) {
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_cp(uint8_t b) {
    if (byte_is_kept(b)) return b;
    uint32_t shifted = 0;
    for (uint32_t i = 0; i < b; i++) shifted += !byte_is_kept(i);
    return 0x100 + shifted;
}

int tok_cp_to_byte(uint32_t cp) {
    if (cp < 0x100) return byte_is_kept(cp) ? (int)cp : -1;
    if (cp >= 0x100 + 68) return -1;
    uint32_t k = cp - 0x100;
    for (uint32_t b = 0; b < 256; b++) {
        if (!byte_is_kept(b)) {
            if (k == 0) return (int)b;
            k--;
        }
    }
    return -1;
}
