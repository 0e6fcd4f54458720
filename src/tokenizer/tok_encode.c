// Encoding: special/added tokens are cut out of the text first (leftmost,
// longest match), then each stretch between them goes through the pipeline
// and BPE.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_utf8.h"

// Text that is not valid UTF-8 is read the way Python's
// bytes.decode("utf-8", errors="replace") reads it: each maximal invalid
// subpart becomes U+FFFD. Byte-level vocabularies lack tokens for bytes such
// as 0xFF, and the reference tokenizers only take valid text. Returns NULL
// (and leaves *out_len alone) when the text is already valid.
static char *sanitize_utf8(const char *text, size_t len, size_t *out_len, bool *nomem) {
    size_t i = 0, clen;
    const uint8_t *s = (const uint8_t *)text;
    while (i < len && tok_utf8_classify(s + i, len - i, &clen) == TOK_UTF8_OK) i += clen;
    if (i == len) return NULL;
    if (len > SIZE_MAX / 3) {
        *nomem = true;
        return NULL;
    }
    char *out = malloc(len * 3);
    if (!out) {
        *nomem = true;
        return NULL;
    }
    size_t w = 0;
    for (i = 0; i < len; i += clen) {
        if (tok_utf8_classify(s + i, len - i, &clen) == TOK_UTF8_OK) {
            memcpy(out + w, s + i, clen);
            w += clen;
        } else {
            memcpy(out + w, "\xEF\xBF\xBD", 3);
            w += 3;
        }
    }
    *out_len = w;
    return out;
}

// The special token starting at text[pos], longest first; -1 if none.
static int32_t match_special(const kiln_tokenizer *tok, const char *text, size_t len, size_t pos, bool parse_special,
                             size_t *match_len) {
    uint8_t b = (uint8_t)text[pos];
    for (size_t i = 0; i < tok->n_special_lens[b]; i++) {
        size_t l = tok->special_lens[b][i];
        if (l > len - pos) continue;
        int32_t slot = tok_strmap_get(&tok->special_map, text + pos, l);
        if (slot < 0) continue;
        const tok_special *sp = &tok->specials[slot];
        if (sp->only_when_parsing && !parse_special) continue;
        *match_len = l;
        return sp->id;
    }
    return -1;
}

typedef struct encoder {
    const kiln_tokenizer *tok;
    tok_match_state match;
    tok_pieces pieces;
    tok_bpe_state *bpe;
    tok_ids ids;
} encoder;

static kiln_status encode_text(encoder *e, const char *text, size_t len, bool at_origin) {
    if (len == 0) return KILN_OK;
    kiln_status s = tok_pipeline_run(&e->tok->pipe, &e->match, text, len, at_origin, &e->pieces);
    for (size_t i = 0; s == KILN_OK && i < e->pieces.n; i++)
        s = tok_bpe_word(e->tok, e->bpe, e->pieces.buf + e->pieces.p[i].off, e->pieces.p[i].len, &e->ids);
    return s;
}

kiln_status kiln_tokenizer_encode(const kiln_tokenizer *tok, const char *text, size_t len, bool add_bos,
                                  bool parse_special, int32_t **ids, size_t *n_ids) {
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0) return kiln_fail(KILN_ERR_INVALID_ARG, "tokenizer: NULL text");
    encoder e = {.tok = tok};
    kiln_status s = KILN_OK;
    bool nomem = false;
    char *clean = sanitize_utf8(text, len, &len, &nomem);
    if (nomem) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    if (clean) text = clean;
    e.bpe = tok_bpe_state_new();
    if (!e.bpe || !tok_match_state_init(&e.match)) {
        s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    if (add_bos && tok->bos >= 0 && !tok_ids_push(&e.ids, tok->bos)) {
        s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        goto done;
    }
    size_t start = 0;
    for (size_t pos = 0; pos < len && s == KILN_OK;) {
        size_t mlen = 0;
        int32_t id = tok->n_specials ? match_special(tok, text, len, pos, parse_special, &mlen) : -1;
        if (id < 0) {
            pos++;
            continue;
        }
        s = encode_text(&e, text + start, pos - start, start == 0);
        if (s == KILN_OK && !tok_ids_push(&e.ids, id)) s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        pos += mlen;
        start = pos;
    }
    if (s == KILN_OK) s = encode_text(&e, text + start, len - start, start == 0);
done:
    free(clean);
    tok_match_state_free(&e.match);
    tok_pieces_free(&e.pieces);
    tok_bpe_state_free(e.bpe);
    if (s != KILN_OK) {
        free(e.ids.v);
        return s;
    }
    if (!e.ids.v) e.ids.v = malloc(sizeof(int32_t)); // callers may free() unconditionally
    *ids = e.ids.v;
    *n_ids = e.ids.n;
    return KILN_OK;
}
