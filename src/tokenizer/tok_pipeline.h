// The text pipeline applied to each stretch of text between special tokens:
// normalizers (Replace, Prepend) then pre-tokenizers (regex Split, Digits,
// Metaspace, ByteLevel prefix space), producing the pieces that BPE sees.
#ifndef KILN_TOKENIZER_TOK_PIPELINE_H
#define KILN_TOKENIZER_TOK_PIPELINE_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/error.h"

typedef enum tok_stage_kind {
    TOK_STAGE_REPLACE,       // replace every `a` with `b`
    TOK_STAGE_PREPEND,       // prepend `a` to non-empty text
    TOK_STAGE_SPLIT,         // regex split with a behaviour
    TOK_STAGE_METASPACE,     // spaces -> `a`, optional prefix, optional split
    TOK_STAGE_PREFIX_SPACE,  // ByteLevel add_prefix_space: prepend ' ' unless present
} tok_stage_kind;

typedef enum tok_split_behavior {
    TOK_SPLIT_ISOLATED,
    TOK_SPLIT_REMOVED,
    TOK_SPLIT_MERGED_WITH_PREVIOUS,
    TOK_SPLIT_MERGED_WITH_NEXT,
    TOK_SPLIT_CONTIGUOUS,
} tok_split_behavior;

typedef enum tok_prepend_scheme { TOK_PREPEND_ALWAYS, TOK_PREPEND_FIRST, TOK_PREPEND_NEVER } tok_prepend_scheme;

typedef struct tok_stage {
    tok_stage_kind kind;
    char *a, *b; // owned, NUL-terminated
    size_t a_len, b_len;
    pcre2_code *re;
    tok_split_behavior behavior;
    bool invert;
    tok_prepend_scheme prepend_scheme;
    bool split;
} tok_stage;

typedef struct tok_pipeline {
    tok_stage *stages;
    size_t n;
} tok_pipeline;

void tok_pipeline_free(tok_pipeline *p);
// Appenders; they copy their strings. `where` names the file for messages.
kiln_status tok_pipeline_add_replace(tok_pipeline *p, const char *from, size_t from_len, const char *to, size_t to_len);
kiln_status tok_pipeline_add_prepend(tok_pipeline *p, const char *s, size_t len);
kiln_status tok_pipeline_add_split(tok_pipeline *p, const char *where, const char *regex, size_t regex_len,
                                   tok_split_behavior behavior, bool invert);
kiln_status tok_pipeline_add_metaspace(tok_pipeline *p, const char *replacement, size_t len, tok_prepend_scheme scheme,
                                       bool split);
kiln_status tok_pipeline_add_prefix_space(tok_pipeline *p);

// Pieces of text: views into buf.
typedef struct tok_piece {
    size_t off, len;
    bool at_origin; // starts at offset 0 of the caller's whole text
} tok_piece;

typedef struct tok_pieces {
    char *buf;
    size_t len, cap;
    tok_piece *p;
    size_t n, cap_p;
} tok_pieces;

void tok_pieces_free(tok_pieces *ps);
void tok_pieces_clear(tok_pieces *ps);
bool tok_pieces_add(tok_pieces *ps, const char *s, size_t len, bool at_origin);

// Per-call matching state (the compiled pipeline is shared and read-only).
typedef struct tok_match_state {
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit_stack;
    tok_pieces scratch;
} tok_match_state;

bool tok_match_state_init(tok_match_state *st);
void tok_match_state_free(tok_match_state *st);

// Runs the pipeline over `text` and leaves the resulting pieces in *out.
kiln_status tok_pipeline_run(const tok_pipeline *p, tok_match_state *st, const char *text, size_t len, bool at_origin,
                             tok_pieces *out);

#endif
