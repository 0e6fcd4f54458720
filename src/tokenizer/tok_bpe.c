// BPE over one pre-token: a doubly linked list of symbols and a binary heap of
// candidate merges, as in llama.cpp and Hugging Face tokenizers. Merges are
// ranked either by the merges list (lower rank first) or, for SentencePiece
// vocabularies without merges, by the score of the merged token (higher
// first). Ties go to the leftmost pair.
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/tok_utf8.h"

typedef struct symbol {
    size_t start, len; // bytes of the word
    int32_t id;        // vocab id of the text, -1 if not in the vocab
    int prev, next;
} symbol;

typedef struct candidate {
    double priority; // lower merges first
    int left, right;
    size_t size;     // combined length when queued, to detect stale entries
    int32_t result;
} candidate;

struct tok_bpe_state {
    char *mapped;
    size_t mapped_cap;
    symbol *sym;
    size_t sym_cap;
    candidate *heap;
    size_t heap_n, heap_cap;
};

tok_bpe_state *tok_bpe_state_new(void) { return calloc(1, sizeof(tok_bpe_state)); }

void tok_bpe_state_free(tok_bpe_state *st) {
    if (!st) return;
    free(st->mapped);
    free(st->sym);
    free(st->heap);
    free(st);
}

bool tok_ids_push(tok_ids *ids, int32_t id) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *grown = realloc(ids->v, cap * sizeof *grown);
        if (!grown) return false;
        ids->v = grown;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return true;
}

static bool before(const candidate *a, const candidate *b) {
    return a->priority < b->priority || (a->priority == b->priority && a->left < b->left);
}

static bool heap_push(tok_bpe_state *st, candidate c) {
    if (st->heap_n == st->heap_cap) {
        size_t cap = st->heap_cap ? st->heap_cap * 2 : 64;
        candidate *grown = realloc(st->heap, cap * sizeof *grown);
        if (!grown) return false;
        st->heap = grown;
        st->heap_cap = cap;
    }
    size_t i = st->heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&c, &st->heap[parent])) break;
        st->heap[i] = st->heap[parent];
        i = parent;
    }
    st->heap[i] = c;
    return true;
}

static candidate heap_pop(tok_bpe_state *st) {
    candidate top = st->heap[0];
    candidate last = st->heap[--st->heap_n];
    size_t i = 0, n = st->heap_n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) break;
        if (child + 1 < n && before(&st->heap[child + 1], &st->heap[child])) child++;
        if (!before(&st->heap[child], &last)) break;
        st->heap[i] = st->heap[child];
        i = child;
    }
    if (n > 0) st->heap[i] = last;
    return top;
}

static bool try_pair(const kiln_tokenizer *tok, tok_bpe_state *st, const char *word, int left, int right) {
    if (left < 0 || right < 0) return true;
    const symbol *l = &st->sym[left], *r = &st->sym[right];
    candidate c = {0, left, right, l->len + r->len, -1};
    if (tok->scores) {
        int32_t id = tok_strmap_get(&tok->vocab, word + l->start, c.size);
        if (id < 0) return true;
        c.priority = -(double)tok->scores[id];
        c.result = id;
    } else {
        const tok_merge *m = tok_pairmap_get(&tok->merges, l->id, r->id);
        if (!m) return true;
        c.priority = m->rank;
        c.result = m->result;
    }
    return heap_push(st, c);
}

static bool emit_bytes(const kiln_tokenizer *tok, const char *s, size_t len, tok_ids *out) {
    for (size_t i = 0; i < len; i++) {
        int32_t id = tok->byte_token[(uint8_t)s[i]];
        if (id < 0) id = tok->unk;
        if (id >= 0 && !tok_ids_push(out, id)) return false;
    }
    return true;
}

// Byte-level BPE works on GPT-2's printable stand-ins for the raw bytes.
static const char *map_bytes(const kiln_tokenizer *tok, tok_bpe_state *st, const char *word, size_t *len) {
    size_t need = *len * 2;
    if (need > st->mapped_cap) {
        char *grown = realloc(st->mapped, need);
        if (!grown) return NULL;
        st->mapped = grown;
        st->mapped_cap = need;
    }
    size_t w = 0;
    for (size_t i = 0; i < *len; i++) {
        uint8_t b = (uint8_t)word[i];
        memcpy(st->mapped + w, tok->gpt2_byte_utf8[b], tok->gpt2_byte_len[b]);
        w += tok->gpt2_byte_len[b];
    }
    *len = w;
    return st->mapped;
}

kiln_status tok_bpe_word(const kiln_tokenizer *tok, tok_bpe_state *st, const char *word, size_t len, tok_ids *out) {
    if (len == 0) return KILN_OK;
    if (len > (size_t)INT32_MAX / 4) return kiln_fail(KILN_ERR_INVALID_ARG, "tokenizer: text too long");
    if (tok->kind == KILN_TOKENIZER_BYTE_BPE) {
        word = map_bytes(tok, st, word, &len);
        if (!word) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (tok->ignore_merges) {
        int32_t id = tok_strmap_get(&tok->vocab, word, len);
        if (id >= 0) return tok_ids_push(out, id) ? KILN_OK : kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (len > st->sym_cap) {
        symbol *grown = realloc(st->sym, len * sizeof *grown);
        if (!grown) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
        st->sym = grown;
        st->sym_cap = len;
    }
    int n = 0;
    for (size_t i = 0; i < len;) {
        size_t cl = tok_utf8_char_len((const uint8_t *)word + i, len - i);
        st->sym[n] = (symbol){i, cl, tok_strmap_get(&tok->vocab, word + i, cl), n - 1, -1};
        if (n > 0) st->sym[n - 1].next = n;
        n++;
        i += cl;
    }
    st->heap_n = 0;
    for (int i = 1; i < n; i++)
        if (!try_pair(tok, st, word, i - 1, i)) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    while (st->heap_n > 0) {
        candidate c = heap_pop(st);
        symbol *l = &st->sym[c.left], *r = &st->sym[c.right];
        if (l->len == 0 || r->len == 0 || l->next != c.right || l->len + r->len != c.size) continue; // stale
        l->len += r->len;
        l->id = c.result;
        r->len = 0;
        l->next = r->next;
        if (r->next >= 0) st->sym[r->next].prev = c.left;
        if (!try_pair(tok, st, word, l->prev, c.left) || !try_pair(tok, st, word, c.left, l->next))
            return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    for (int i = 0; i >= 0 && n > 0; i = st->sym[i].next) {
        const symbol *s = &st->sym[i];
        bool ok;
        if (s->id >= 0) {
            ok = tok_ids_push(out, s->id);
        } else if (tok->kind == KILN_TOKENIZER_BYTE_BPE) {
            // Map the stand-in characters back to raw bytes for byte tokens.
            ok = true;
            for (size_t k = 0; ok && k < s->len;) {
                size_t cl = tok_utf8_char_len((const uint8_t *)word + s->start + k, s->len - k);
                int32_t id = tok_strmap_get(&tok->vocab, word + s->start + k, cl);
                if (id < 0) id = tok->unk;
                if (id >= 0) ok = tok_ids_push(out, id);
                k += cl;
            }
        } else {
            ok = emit_bytes(tok, word + s->start, s->len, out); // SentencePiece byte fallback
        }
        if (!ok) return kiln_fail(KILN_ERR_NOMEM, "tokenizer: out of memory");
    }
    return KILN_OK;
}
