#include "tokenizer/tok_hash.h"

#include <stdlib.h>
#include <string.h>

uint64_t tok_hash_bytes(const char *s, size_t n) {
    // FNV-1a, then a final mix so that the low bits used for the index are good.
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

static size_t capacity_for(size_t expected) {
    size_t cap = 16;
    // Load factor at most 1/2; the caller bounds `expected` by the file size.
    while (cap < expected * 2 && cap < ((size_t)1 << 40)) cap <<= 1;
    return cap;
}

bool tok_strmap_init(tok_strmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = capacity_for(expected);
    m->keys = calloc(m->cap, sizeof *m->keys);
    m->lens = calloc(m->cap, sizeof *m->lens);
    m->vals = calloc(m->cap, sizeof *m->vals);
    if (!m->keys || !m->lens || !m->vals) {
        tok_strmap_free(m);
        return false;
    }
    return true;
}

void tok_strmap_free(tok_strmap *m) {
    free(m->keys);
    free(m->lens);
    free(m->vals);
    memset(m, 0, sizeof *m);
}

bool tok_strmap_put(tok_strmap *m, const char *key, size_t len, int32_t val) {
    if (m->cap == 0 || len > UINT32_MAX || m->n + 1 > m->cap / 2) return false;
    size_t mask = m->cap - 1;
    for (size_t i = tok_hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        if (!m->keys[i]) {
            m->keys[i] = key;
            m->lens[i] = (uint32_t)len;
            m->vals[i] = val;
            m->n++;
            return true;
        }
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) {
            m->vals[i] = val;
            return true;
        }
    }
}

int32_t tok_strmap_get(const tok_strmap *m, const char *key, size_t len) {
    if (m->cap == 0) return -1;
    size_t mask = m->cap - 1;
    for (size_t i = tok_hash_bytes(key, len) & mask;; i = (i + 1) & mask) {
        if (!m->keys[i]) return -1;
        if (m->lens[i] == len && memcmp(m->keys[i], key, len) == 0) return m->vals[i];
    }
}

bool tok_pairmap_init(tok_pairmap *m, size_t expected) {
    memset(m, 0, sizeof *m);
    m->cap = capacity_for(expected);
    m->slots = malloc(m->cap * sizeof *m->slots);
    if (!m->slots) {
        m->cap = 0;
        return false;
    }
    for (size_t i = 0; i < m->cap; i++) m->slots[i].key = UINT64_MAX;
    return true;
}

void tok_pairmap_free(tok_pairmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

bool tok_pairmap_put(tok_pairmap *m, int32_t left, int32_t right, int32_t rank, int32_t result) {
    if (m->cap == 0 || m->n + 1 > m->cap / 2 || left < 0 || right < 0) return false;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == UINT64_MAX) {
            m->slots[i] = (tok_merge){key, rank, result};
            m->n++;
            return true;
        }
        if (m->slots[i].key == key) return true;
    }
}

const tok_merge *tok_pairmap_get(const tok_pairmap *m, int32_t left, int32_t right) {
    if (m->cap == 0 || left < 0 || right < 0) return NULL;
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    size_t mask = m->cap - 1;
    for (size_t i = mix64(key) & mask;; i = (i + 1) & mask) {
        if (m->slots[i].key == UINT64_MAX) return NULL;
        if (m->slots[i].key == key) return &m->slots[i];
    }
}
