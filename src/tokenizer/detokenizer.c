// Streaming detokenizer: token bytes may split a UTF-8 character across
// tokens (byte-level BPE, <0xXX> byte tokens); incomplete tails wait in
// `pending` and invalid bytes become U+FFFD, so the output is always valid.
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_utf8.h"

static const char replacement_char[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

static void put(char *out, size_t cap, size_t *w, const void *s, size_t n) {
    if (n > cap - *w) return; // callers size `out` generously; never overflow it
    memcpy(out + *w, s, n);
    *w += n;
}

// Emits the characters of s[0..n) that start before `stop`; returns the
// number of bytes consumed (it stops early at an incomplete tail).
static size_t drain(const uint8_t *s, size_t n, size_t stop, char *out, size_t cap, size_t *w) {
    size_t i = 0;
    while (i < n && i < stop) {
        size_t len;
        tok_utf8_class c = tok_utf8_classify(s + i, n - i, &len);
        if (c == TOK_UTF8_INCOMPLETE) break;
        if (c == TOK_UTF8_OK) put(out, cap, w, s + i, len);
        else put(out, cap, w, replacement_char, 3);
        i += len;
    }
    return i;
}

void kiln_detok_init(kiln_detok *d, const kiln_tokenizer *tok) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
    d->at_start = true;
}

size_t kiln_detok_push(kiln_detok *d, int32_t id, char *out, size_t cap) {
    const char *bytes;
    size_t n, w = 0;
    if (!kiln_tokenizer_token_bytes(d->tok, id, &bytes, &n)) return 0;
    uint8_t type = d->tok->type[id];
    if (d->at_start && type != TOK_TYPE_CONTROL) {
        // SentencePiece adds a space in front of the text; take it back off.
        if (d->tok->strip_leading_space && n > 0 && bytes[0] == ' ') {
            bytes++;
            n--;
        }
        d->at_start = false;
    }
    const uint8_t *b = (const uint8_t *)bytes;
    size_t start = 0;
    if (d->n_pending > 0) {
        // Finish the pending character using up to 4 new bytes.
        uint8_t scratch[12];
        size_t np = (size_t)d->n_pending, k = n < 4 ? n : 4;
        memcpy(scratch, d->pending, np);
        memcpy(scratch + np, b, k);
        size_t used = drain(scratch, np + k, np, out, cap, &w);
        if (used < np) {
            // Still incomplete: everything seen so far stays pending (< 4 bytes).
            memcpy(d->pending, scratch + used, np + k - used);
            d->n_pending = (int)(np + k - used);
            return w;
        }
        start = used - np;
        d->n_pending = 0;
    }
    size_t used = drain(b + start, n - start, SIZE_MAX, out, cap, &w);
    size_t tail = n - start - used;
    memcpy(d->pending, b + start + used, tail); // an incomplete tail is at most 3 bytes
    d->n_pending = (int)tail;
    return w;
}

size_t kiln_detok_flush(kiln_detok *d, char *out, size_t cap) {
    size_t w = 0;
    if (d->n_pending > 0) put(out, cap, &w, replacement_char, 3);
    d->n_pending = 0;
    return w;
}
