// Loading a tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp does.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

static bool str_eq(kiln_gguf_str s, const char *lit) { return s.len == strlen(lit) && memcmp(s.ptr, lit, s.len) == 0; }

// A token id key (tokenizer.ggml.*_token_id): absent, or -1 / UINT32_MAX
// (what some converters write for "none"), leave *out at -1; anything else
// must be an integer id inside the vocabulary.
static kiln_status get_id(const kiln_gguf *g, const char *path, const char *key, int32_t n_vocab, int32_t *out) {
    *out = -1;
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v) return KILN_OK;
    if (v->type == KILN_GGUF_INT8 || v->type == KILN_GGUF_INT16 || v->type == KILN_GGUF_INT32 ||
        v->type == KILN_GGUF_INT64) {
        if (v->i64 == -1) return KILN_OK;
    }
    uint32_t id;
    kiln_status st = kiln_gguf_read_u32(g, key, &id, NULL);
    if (st != KILN_OK) return st;
    if (id == UINT32_MAX) return KILN_OK;
    if (id >= (uint32_t)n_vocab)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %u is outside the vocabulary (%d tokens)", path, key, id,
                         (int)n_vocab);
    *out = (int32_t)id;
    return KILN_OK;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

// Every tokenizer.ggml.*_token_id in the file (bos, eos, padding, separator,
// mask, the fill-in-the-middle ones, ...) is checked, used or not: an id
// outside the vocabulary is a broken file either way.
static kiln_status check_all_ids(const kiln_gguf *g, const char *path, int32_t n_vocab) {
    for (uint64_t i = 0; i < g->n_kv; i++) {
        const char *key = g->kv[i].key;
        int32_t id;
        if (strncmp(key, "tokenizer.ggml.", 15) != 0 || !ends_with(key, "_token_id")) continue;
        kiln_status st = get_id(g, path, key, n_vocab, &id);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static kiln_status load_merges(kiln_tokenizer *tok, const kiln_gguf *g) {
    const kiln_gguf_value *merges;
    kiln_status st = kiln_gguf_read_array(g, "tokenizer.ggml.merges", KILN_GGUF_STRING, &merges);
    if (st != KILN_OK) return st;
    if (!merges) return kiln_fail(KILN_ERR_FORMAT, "%s: byte-level BPE tokenizer without tokenizer.ggml.merges", g->path);
    if (merges->arr.n > INT32_MAX) return kiln_fail(KILN_ERR_FORMAT, "%s: too many merges", g->path);
    if (!tok_pairmap_init(&tok->merges, merges->arr.n)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    char *joined = NULL;
    size_t joined_cap = 0;
    for (uint64_t i = 0; i < merges->arr.n; i++) {
        kiln_gguf_str m = merges->arr.items[i].str;
        // "left right"; the separator is the first space after the first byte.
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
        if (!sp) {
            free(joined);
            return kiln_fail(KILN_ERR_FORMAT, "%s: merge %llu has no space separating its two tokens", g->path,
                             (unsigned long long)i);
        }
        size_t llen = (size_t)(sp - m.ptr), rlen = m.len - llen - 1;
        int32_t l = tok_strmap_get(&tok->vocab, m.ptr, llen), r = tok_strmap_get(&tok->vocab, sp + 1, rlen);
        if (llen + rlen > joined_cap) {
            joined_cap = (llen + rlen) * 2;
            char *grown = realloc(joined, joined_cap);
            if (!grown) {
                free(joined);
                return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
            }
            joined = grown;
        }
        memcpy(joined, m.ptr, llen);
        memcpy(joined + llen, sp + 1, rlen);
        int32_t result = tok_strmap_get(&tok->vocab, joined, llen + rlen);
        // llama.cpp ignores merges whose parts or result are not tokens.
        if (l >= 0 && r >= 0 && result >= 0) tok_pairmap_put(&tok->merges, l, r, (int32_t)i, result);
    }
    free(joined);
    return KILN_OK;
}

// llama.cpp's converter stores SentencePiece's user-defined whitespace pieces
// ("▁▁▁") with real spaces so they can be matched in raw text. SentencePiece
// itself sees a "▁" typed in the text as a space, so the "▁" spelling must
// still find these tokens during BPE: add it as a second vocab key.
static kiln_status alias_user_defined_spaces(kiln_tokenizer *tok) {
    size_t total = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        size_t len;
        const char *t = tok_text(tok, id, &len);
        if (tok->type[id] == TOK_TYPE_USER_DEFINED && len > 0 && memchr(t, ' ', len)) total += len * 3;
    }
    if (total == 0) return KILN_OK;
    if (!(tok->alias_buf = malloc(total))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    size_t w = 0;
    for (int32_t id = 0; id < tok->n_vocab; id++) {
        size_t len;
        const char *t = tok_text(tok, id, &len);
        if (tok->type[id] != TOK_TYPE_USER_DEFINED || len == 0 || !memchr(t, ' ', len)) continue;
        char *alias = tok->alias_buf + w;
        size_t n = 0;
        for (size_t i = 0; i < len; i++) {
            if (t[i] == ' ') {
                memcpy(alias + n, "\xE2\x96\x81", 3);
                n += 3;
            } else {
                alias[n++] = t[i];
            }
        }
        w += n;
        if (tok_strmap_get(&tok->vocab, alias, n) < 0 && tok->vocab.n + 1 <= tok->vocab.cap / 2)
            tok_strmap_put(&tok->vocab, alias, n, id);
    }
    return KILN_OK;
}

static kiln_status copy_str(char **dst, kiln_gguf_str s) {
    free(*dst);
    if (!(*dst = malloc(s.len + 1))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(*dst, s.ptr, s.len);
    (*dst)[s.len] = '\0';
    return KILN_OK;
}

// Every key is read with its type checked: a known key stored with another
// type is an error naming it, never taken for an absent one.
static kiln_status load(kiln_tokenizer **out, const kiln_gguf *g) {
    const char *path = g->path ? g->path : "gguf";
    kiln_gguf_str model;
    bool found, flag;
    kiln_status s = kiln_gguf_read_str(g, "tokenizer.ggml.model", &model, &found);
    if (s != KILN_OK) return s;
    if (!found) return kiln_fail(KILN_ERR_FORMAT, "%s: no tokenizer.ggml.model", path);
    kiln_tokenizer_kind kind;
    if (str_eq(model, "gpt2")) kind = KILN_TOKENIZER_BYTE_BPE;
    else if (str_eq(model, "llama")) kind = KILN_TOKENIZER_SPM;
    else
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tokenizer model \"%.*s\" is not supported (only gpt2 and llama)", path,
                         (int)(model.len > 64 ? 64 : model.len), model.ptr);
    const kiln_gguf_value *tokens;
    if ((s = kiln_gguf_read_array(g, "tokenizer.ggml.tokens", KILN_GGUF_STRING, &tokens)) != KILN_OK) return s;
    if (!tokens || tokens->arr.n == 0) return kiln_fail(KILN_ERR_FORMAT, "%s: no tokenizer.ggml.tokens", path);
    if (tokens->arr.n > INT32_MAX / 2) return kiln_fail(KILN_ERR_FORMAT, "%s: too many tokens", path);
    int32_t n = (int32_t)tokens->arr.n;
    bool any_text = false;
    for (int32_t i = 0; i < n && !any_text; i++) any_text = tokens->arr.items[i].str.len > 0;
    if (!any_text) return kiln_fail(KILN_ERR_FORMAT, "%s: every token of tokenizer.ggml.tokens is an empty string", path);
    if ((s = tok_alloc(n, out)) != KILN_OK) return s;
    kiln_tokenizer *tok = *out;
    tok->kind = kind;
    for (int32_t i = 0; i < n; i++) {
        kiln_gguf_str t = tokens->arr.items[i].str;
        if ((s = tok_set_text(tok, i, t.ptr, t.len)) != KILN_OK) return s;
    }
    const kiln_gguf_value *types;
    if ((s = kiln_gguf_read_array(g, "tokenizer.ggml.token_type", KILN_GGUF_INT32, &types)) != KILN_OK) return s;
    if (types) {
        if (types->arr.n != (uint64_t)n)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", path,
                             (unsigned long long)types->arr.n, (int)n);
        for (int32_t i = 0; i < n; i++) {
            int64_t t = types->arr.items[i].i64;
            // 0 is llama.cpp's "undefined", read as normal.
            if (t < 0 || t > TOK_TYPE_BYTE)
                return kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.token_type[%d] = %lld is not a token type (0 to 6)",
                                 path, (int)i, (long long)t);
            tok->type[i] = t == 0 ? TOK_TYPE_NORMAL : (uint8_t)t;
        }
    }
    if ((s = check_all_ids(g, path, n)) != KILN_OK ||
        (s = get_id(g, path, "tokenizer.ggml.bos_token_id", n, &tok->bos)) != KILN_OK ||
        (s = get_id(g, path, "tokenizer.ggml.eos_token_id", n, &tok->eos)) != KILN_OK ||
        (s = get_id(g, path, "tokenizer.ggml.eot_token_id", n, &tok->eot)) != KILN_OK ||
        (s = get_id(g, path, "tokenizer.ggml.unknown_token_id", n, &tok->unk)) != KILN_OK)
        return s;
    if ((s = kiln_gguf_read_bool(g, "tokenizer.ggml.add_bos_token", &flag, &found)) != KILN_OK) return s;
    tok->add_bos = found ? flag : kind == KILN_TOKENIZER_SPM;
    kiln_gguf_str tmpl;
    if ((s = kiln_gguf_read_str(g, "tokenizer.chat_template", &tmpl, &found)) != KILN_OK) return s;
    if (found && (s = copy_str(&tok->chat_template, tmpl)) != KILN_OK) return s;
    kiln_gguf_str pre;
    bool has_pre;
    if ((s = kiln_gguf_read_str(g, "tokenizer.ggml.pre", &pre, &has_pre)) != KILN_OK) return s;
    if (kind == KILN_TOKENIZER_SPM) {
        const kiln_gguf_value *scores;
        if ((s = kiln_gguf_read_array(g, "tokenizer.ggml.scores", KILN_GGUF_FLOAT32, &scores)) != KILN_OK) return s;
        if (!scores || scores->arr.n != (uint64_t)n)
            return kiln_fail(KILN_ERR_FORMAT, "%s: SentencePiece tokenizer needs tokenizer.ggml.scores for each token",
                             path);
        if (!(tok->scores = malloc((size_t)n * sizeof *tok->scores)))
            return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        for (int32_t i = 0; i < n; i++) {
            tok->scores[i] = (float)scores->arr.items[i].f64;
            // The merge order compares scores; a NaN compares with nothing.
            if (isnan(tok->scores[i]))
                return kiln_fail(KILN_ERR_FORMAT, "%s: tokenizer.ggml.scores[%d] is NaN", path, (int)i);
        }
        // llama.cpp: the text after BOS / a special token gets a leading space
        // (when add_space_prefix, default true), then spaces become U+2581.
        if ((s = kiln_gguf_read_bool(g, "tokenizer.ggml.add_space_prefix", &flag, &found)) != KILN_OK) return s;
        tok->strip_leading_space = found ? flag : true;
        if (tok->strip_leading_space && (s = tok_pipeline_add_prepend(&tok->pipe, " ", 1)) != KILN_OK) return s;
        if ((s = tok_pipeline_add_replace(&tok->pipe, " ", 1, "\xE2\x96\x81", 3)) != KILN_OK) return s;
        free(tok->pre_name);
        tok->pre_name = NULL;
        if (has_pre && (s = copy_str(&tok->pre_name, pre)) != KILN_OK) return s;
        tok->pre_known = true; // SentencePiece has no regex pre-tokenizer
    } else {
        if ((s = tok_set_pre_by_name(tok, path, has_pre ? pre.ptr : NULL, has_pre ? pre.len : 0)) != KILN_OK) return s;
        if (!tok->pre_known)
            fprintf(stderr,
                    "kiln: warning: %s: tokenizer.ggml.pre \"%.64s\" is not a pre-tokenizer kiln knows; splitting with "
                    "GPT-2's regex instead, so tokens may differ from the model's own tokenizer\n",
                    path, tok->pre_name);
    }
    // The vocab hash is needed to resolve merges; tok_finish builds it.
    if ((s = tok_finish(tok, path)) != KILN_OK) return s;
    if (kind == KILN_TOKENIZER_BYTE_BPE && (s = load_merges(tok, g)) != KILN_OK) return s;
    if (kind == KILN_TOKENIZER_SPM && (s = alias_user_defined_spaces(tok)) != KILN_OK) return s;
    return KILN_OK;
}

kiln_status kiln_tokenizer_from_gguf(const kiln_gguf *gguf, kiln_tokenizer **out) {
    *out = NULL;
    kiln_tokenizer *tok = NULL;
    kiln_status s = load(&tok, gguf);
    if (s != KILN_OK) {
        kiln_tokenizer_free(tok);
        return s;
    }
    *out = tok;
    return KILN_OK;
}
