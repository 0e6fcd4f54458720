#include "tokenizer/tok_pipeline.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_utf8.h"

void tok_pipeline_free(tok_pipeline *p) {
    for (size_t i = 0; i < p->n; i++) {
        free(p->stages[i].a);
        free(p->stages[i].b);
        pcre2_code_free(p->stages[i].re);
    }
    free(p->stages);
    p->stages = NULL;
    p->n = 0;
}

static char *dup_bytes(const char *s, size_t n) {
    char *d = malloc(n + 1);
    if (!d) return NULL;
    if (n) memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static tok_stage *push_stage(tok_pipeline *p, tok_stage_kind kind) {
    tok_stage *grown = realloc(p->stages, (p->n + 1) * sizeof *grown);
    if (!grown) return NULL;
    p->stages = grown;
    tok_stage *s = &p->stages[p->n++];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    return s;
}

kiln_status tok_pipeline_add_replace(tok_pipeline *p, const char *from, size_t from_len, const char *to, size_t to_len) {
    if (from_len == 0) return KILN_OK; // replacing "" is meaningless; HF ignores it too
    tok_stage *s = push_stage(p, TOK_STAGE_REPLACE);
    if (!s) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    s->a = dup_bytes(from, from_len);
    s->b = dup_bytes(to, to_len);
    s->a_len = from_len;
    s->b_len = to_len;
    if (!s->a || !s->b) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    return KILN_OK;
}

kiln_status tok_pipeline_add_prepend(tok_pipeline *p, const char *str, size_t len) {
    tok_stage *s = push_stage(p, TOK_STAGE_PREPEND);
    if (!s || !(s->a = dup_bytes(str, len))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    s->a_len = len;
    return KILN_OK;
}

kiln_status tok_pipeline_add_split(tok_pipeline *p, const char *where, const char *regex, size_t regex_len,
                                   tok_split_behavior behavior, bool invert) {
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // UCP makes \s, \w, \d and POSIX classes Unicode-aware like the Rust/Oniguruma
    // engines the tokenizers were defined with; MATCH_INVALID_UTF lets raw
    // invalid bytes through (they never match, so they end up between matches).
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)regex, regex_len, PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err,
                                   &err_off, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return kiln_fail(KILN_ERR_FORMAT, "%s: pre-tokenizer regex does not compile at offset %zu: %s", where,
                         (size_t)err_off, (const char *)msg);
    }
    // JIT is an optimisation only: the interpreter gives the same matches.
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    tok_stage *s = push_stage(p, TOK_STAGE_SPLIT);
    if (!s) {
        pcre2_code_free(re);
        return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    s->re = re;
    s->behavior = behavior;
    s->invert = invert;
    return KILN_OK;
}

kiln_status tok_pipeline_add_metaspace(tok_pipeline *p, const char *replacement, size_t len, tok_prepend_scheme scheme,
                                       bool split) {
    tok_stage *s = push_stage(p, TOK_STAGE_METASPACE);
    if (!s || !(s->a = dup_bytes(replacement, len))) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    s->a_len = len;
    s->prepend_scheme = scheme;
    s->split = split && len > 0;
    return KILN_OK;
}

kiln_status tok_pipeline_add_prefix_space(tok_pipeline *p) {
    if (!push_stage(p, TOK_STAGE_PREFIX_SPACE)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    return KILN_OK;
}

void tok_pieces_free(tok_pieces *ps) {
    free(ps->buf);
    free(ps->p);
    memset(ps, 0, sizeof *ps);
}

void tok_pieces_clear(tok_pieces *ps) {
    ps->len = 0;
    ps->n = 0;
}

static bool reserve_bytes(tok_pieces *ps, size_t extra) {
    if (extra > SIZE_MAX / 2 - ps->len) return false;
    size_t need = ps->len + extra;
    if (need <= ps->cap) return true;
    size_t cap = ps->cap ? ps->cap : 256;
    while (cap < need) cap *= 2;
    char *grown = realloc(ps->buf, cap);
    if (!grown) return false;
    ps->buf = grown;
    ps->cap = cap;
    return true;
}

// Starts a new, empty piece at the end of buf.
static bool begin_piece(tok_pieces *ps, bool at_origin) {
    if (ps->n == ps->cap_p) {
        size_t cap = ps->cap_p ? ps->cap_p * 2 : 64;
        tok_piece *grown = realloc(ps->p, cap * sizeof *grown);
        if (!grown) return false;
        ps->p = grown;
        ps->cap_p = cap;
    }
    ps->p[ps->n++] = (tok_piece){ps->len, 0, at_origin};
    return true;
}

static bool append_to_piece(tok_pieces *ps, const char *s, size_t len) {
    if (!reserve_bytes(ps, len)) return false;
    if (len) memcpy(ps->buf + ps->len, s, len);
    ps->len += len;
    ps->p[ps->n - 1].len += len;
    return true;
}

bool tok_pieces_add(tok_pieces *ps, const char *s, size_t len, bool at_origin) {
    if (len == 0) return true; // empty pieces produce no tokens
    return begin_piece(ps, at_origin) && append_to_piece(ps, s, len);
}

bool tok_match_state_init(tok_match_state *st) {
    memset(st, 0, sizeof *st);
    st->md = pcre2_match_data_create(1, NULL);
    st->mctx = pcre2_match_context_create(NULL);
    // Long runs of whitespace with look-ahead need more than the default 32 KiB.
    st->jit_stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!st->md || !st->mctx) {
        tok_match_state_free(st);
        return false;
    }
    if (st->jit_stack) pcre2_jit_stack_assign(st->mctx, NULL, st->jit_stack);
    return true;
}

void tok_match_state_free(tok_match_state *st) {
    pcre2_match_data_free(st->md);
    pcre2_match_context_free(st->mctx);
    pcre2_jit_stack_free(st->jit_stack);
    tok_pieces_free(&st->scratch);
    memset(st, 0, sizeof *st);
}

typedef struct segment {
    size_t start, end;
    bool is_match;
} segment;

typedef struct seg_list {
    segment *s;
    size_t n, cap;
} seg_list;

static bool seg_push(seg_list *l, size_t start, size_t end, bool is_match) {
    if (start == end) return true;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        segment *grown = realloc(l->s, cap * sizeof *grown);
        if (!grown) return false;
        l->s = grown;
        l->cap = cap;
    }
    l->s[l->n++] = (segment){start, end, is_match};
    return true;
}

// Splits src[0..len) at regex matches into segments covering all of it.
static kiln_status regex_segments(const tok_stage *stage, tok_match_state *st, const char *src, size_t len,
                                  seg_list *segs) {
    size_t pos = 0, prev = 0;
    while (pos <= len) {
        int rc = pcre2_match(stage->re, (PCRE2_SPTR)src, len, pos, 0, st->md, st->mctx);
        if (rc < 0 && rc != PCRE2_ERROR_NOMATCH) {
            // The JIT stack can run out on pathological input; the interpreter
            // keeps its state on the heap.
            rc = pcre2_match(stage->re, (PCRE2_SPTR)src, len, pos, PCRE2_NO_JIT, st->md, st->mctx);
        }
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return kiln_fail(KILN_ERR_UNSUPPORTED, "tokenizer: pre-tokenizer regex failed (PCRE2 error %d)", rc);
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        size_t ms = ov[0], me = ov[1];
        if (ms < pos || me < ms || me > len) break; // \K tricks; cannot happen with our patterns
        if (me == ms) {
            // Empty match: step over one character and keep looking.
            if (ms >= len) break;
            pos = ms + tok_utf8_char_len((const uint8_t *)src + ms, len - ms);
            continue;
        }
        if (!seg_push(segs, prev, ms, false) || !seg_push(segs, ms, me, true))
            return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        prev = pos = me;
    }
    if (!seg_push(segs, prev, len, false)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    return KILN_OK;
}

// Turns segments into pieces following Hugging Face's SplitDelimiterBehavior.
static bool emit_segments(seg_list *segs, tok_split_behavior behavior, bool invert, const char *src, bool at_origin,
                          tok_pieces *out) {
    if (invert)
        for (size_t i = 0; i < segs->n; i++) segs->s[i].is_match = !segs->s[i].is_match;
    // Merge in place, then emit.
    size_t n = 0;
    switch (behavior) {
    case TOK_SPLIT_ISOLATED:
        n = segs->n;
        break;
    case TOK_SPLIT_REMOVED:
        for (size_t i = 0; i < segs->n; i++)
            if (!segs->s[i].is_match) segs->s[n++] = segs->s[i];
        break;
    case TOK_SPLIT_MERGED_WITH_PREVIOUS: {
        bool prev_match = false;
        for (size_t i = 0; i < segs->n; i++) {
            segment sg = segs->s[i];
            if (sg.is_match && !prev_match && n > 0) segs->s[n - 1].end = sg.end;
            else segs->s[n++] = sg;
            prev_match = sg.is_match;
        }
        break;
    }
    case TOK_SPLIT_MERGED_WITH_NEXT: {
        // Walk backwards: a match joins the segment after it unless that one is a match.
        bool next_match = false;
        size_t w = segs->n;
        for (size_t i = segs->n; i-- > 0;) {
            segment sg = segs->s[i];
            if (sg.is_match && !next_match && w < segs->n) segs->s[w].start = sg.start;
            else segs->s[--w] = sg;
            next_match = sg.is_match;
        }
        n = segs->n - w;
        memmove(segs->s, segs->s + w, n * sizeof *segs->s);
        break;
    }
    case TOK_SPLIT_CONTIGUOUS: {
        bool prev_match = false;
        for (size_t i = 0; i < segs->n; i++) {
            segment sg = segs->s[i];
            if (n > 0 && sg.is_match == prev_match) segs->s[n - 1].end = sg.end;
            else segs->s[n++] = sg;
            prev_match = sg.is_match;
        }
        break;
    }
    }
    for (size_t i = 0; i < n; i++) {
        segment sg = segs->s[i];
        if (!tok_pieces_add(out, src + sg.start, sg.end - sg.start, at_origin && sg.start == 0)) return false;
    }
    return true;
}

static bool replace_into(tok_pieces *out, const char *src, size_t len, const char *a, size_t a_len, const char *b,
                         size_t b_len) {
    size_t i = 0;
    while (i < len) {
        if (i + a_len <= len && memcmp(src + i, a, a_len) == 0) {
            if (!append_to_piece(out, b, b_len)) return false;
            i += a_len;
        } else {
            if (!append_to_piece(out, src + i, 1)) return false;
            i++;
        }
    }
    return true;
}

static kiln_status run_stage(const tok_stage *stage, tok_match_state *st, const tok_pieces *in, tok_pieces *out,
                             seg_list *segs) {
    for (size_t k = 0; k < in->n; k++) {
        const char *src = in->buf + in->p[k].off;
        size_t len = in->p[k].len;
        bool origin = in->p[k].at_origin;
        bool ok = true;
        switch (stage->kind) {
        case TOK_STAGE_REPLACE:
            ok = begin_piece(out, origin) && replace_into(out, src, len, stage->a, stage->a_len, stage->b, stage->b_len);
            break;
        case TOK_STAGE_PREPEND:
            ok = begin_piece(out, origin) && append_to_piece(out, stage->a, stage->a_len) &&
                 append_to_piece(out, src, len);
            break;
        case TOK_STAGE_PREFIX_SPACE:
            ok = begin_piece(out, origin) && (len > 0 && src[0] == ' ' ? true : append_to_piece(out, " ", 1)) &&
                 append_to_piece(out, src, len);
            break;
        case TOK_STAGE_METASPACE: {
            size_t first = out->n;
            ok = begin_piece(out, origin);
            bool starts_with_repl = false;
            if (ok) {
                // Does the text, after replacing spaces, start with the replacement?
                starts_with_repl = (len > 0 && src[0] == ' ') ||
                                   (len >= stage->a_len && memcmp(src, stage->a, stage->a_len) == 0);
                bool prepend = stage->prepend_scheme == TOK_PREPEND_ALWAYS ||
                               (stage->prepend_scheme == TOK_PREPEND_FIRST && origin);
                if (prepend && !starts_with_repl) ok = append_to_piece(out, stage->a, stage->a_len);
            }
            ok = ok && replace_into(out, src, len, " ", 1, stage->a, stage->a_len);
            if (ok && stage->split) {
                // Re-split the piece just written at each replacement character,
                // each one starting a new piece (MergedWithNext).
                tok_piece whole = out->p[first];
                out->n = first;
                segs->n = 0;
                const char *w = out->buf + whole.off;
                size_t prev = 0;
                for (size_t i = 0; i + stage->a_len <= whole.len;) {
                    if (memcmp(w + i, stage->a, stage->a_len) == 0) {
                        if (!seg_push(segs, prev, i, false) || !seg_push(segs, i, i + stage->a_len, true))
                            return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
                        i += stage->a_len;
                        prev = i;
                    } else {
                        i++;
                    }
                }
                if (!seg_push(segs, prev, whole.len, false)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
                // The pieces are re-added from the same buffer region, which
                // stays valid: adding only appends after it. Copy out first in
                // case the buffer moves.
                char *copy = malloc(whole.len ? whole.len : 1);
                if (!copy) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
                memcpy(copy, w, whole.len);
                out->len = whole.off;
                ok = emit_segments(segs, TOK_SPLIT_MERGED_WITH_NEXT, false, copy, whole.at_origin, out);
                free(copy);
            } else if (ok && out->p[first].len == 0) {
                out->n = first; // drop the empty piece
            }
            break;
        }
        case TOK_STAGE_SPLIT: {
            segs->n = 0;
            kiln_status s = regex_segments(stage, st, src, len, segs);
            if (s != KILN_OK) return s;
            ok = emit_segments(segs, stage->behavior, stage->invert, src, origin, out);
            break;
        }
        }
        if (!ok) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        // Drop a piece that ended up empty.
        if (out->n > 0 && out->p[out->n - 1].len == 0) out->n--;
    }
    return KILN_OK;
}

kiln_status tok_pipeline_run(const tok_pipeline *p, tok_match_state *st, const char *text, size_t len, bool at_origin,
                             tok_pieces *out) {
    tok_pieces cur = *out, tmp = st->scratch;
    tok_pieces_clear(&cur);
    kiln_status s = KILN_OK;
    seg_list segs = {0};
    if (!tok_pieces_add(&cur, text, len, at_origin)) s = kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; s == KILN_OK && i < p->n && cur.n > 0; i++) {
        tok_pieces_clear(&tmp);
        s = run_stage(&p->stages[i], st, &cur, &tmp, &segs);
        tok_pieces swap = cur;
        cur = tmp;
        tmp = swap;
    }
    free(segs.s);
    *out = cur;
    st->scratch = tmp;
    return s;
}
