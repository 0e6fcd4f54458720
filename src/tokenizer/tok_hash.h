// Hash tables for the tokenizer: token text -> id, and (left id, right id) ->
// merge rank + result id. Open addressing, power-of-two capacity.
#ifndef KILN_TOKENIZER_TOK_HASH_H
#define KILN_TOKENIZER_TOK_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// Keys are (ptr, len) views into memory the caller keeps alive.
typedef struct tok_strmap {
    const char **keys;
    uint32_t *lens;
    int32_t *vals;
    size_t cap; // power of two; 0 when empty
    size_t n;
} tok_strmap;

bool tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
// Inserts or overwrites. False only when full (cannot happen when sized by init).
bool tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val);
int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len); // -1 if absent

typedef struct tok_merge {
    uint64_t key; // left << 32 | right; UINT64_MAX marks an empty slot
    int32_t rank;
    int32_t result;
} tok_merge;

typedef struct tok_pairmap {
    tok_merge *slots;
    size_t cap;
    size_t n;
} tok_pairmap;

bool tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
// Keeps the first (lowest) rank when a pair is listed twice.
bool tok_pairmap_put(tok_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t result);
const tok_merge *tok_pairmap_get(const tok_pairmap *m, int32_t left, int32_t right);

uint64_t tok_hash_bytes(const char *s, size_t n);

#endif
