// Helpers shared by the tokenizer tests: reading expected-id fixtures and
// comparing kiln's ids with them.
#ifndef KILN_TESTS_TOK_TEST_UTIL_H
#define KILN_TESTS_TOK_TEST_UTIL_H

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "tokenizer/tokenizer.h"

static inline cJSON *tt_load_json(const char *name) {
    char path[1024], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/tokenizer/%s", KILN_FIXTURES, name);
    if (kiln_file_read_all(path, (size_t)64 << 20, &text, &len) != KILN_OK) {
        fprintf(stderr, "cannot read %s: %s\n", path, kiln_last_error());
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(text, len);
    free(text);
    return j;
}

static inline size_t tt_unhex(const char *hex, char *out) {
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (char)v;
    }
    return n;
}

// Compares ids with a JSON array; prints the first difference.
static inline int tt_same_ids(const char *label, const char *text, const int32_t *ids, size_t n, const cJSON *want) {
    size_t wn = (size_t)cJSON_GetArraySize(want);
    size_t i = 0;
    const cJSON *it;
    bool same = wn == n;
    cJSON_ArrayForEach(it, want) {
        if (i >= n || ids[i] != (int32_t)it->valuedouble) same = false;
        i++;
    }
    if (!same) {
        fprintf(stderr, "MISMATCH %s on \"%s\"\n  kiln:", label, text);
        for (size_t k = 0; k < n; k++) fprintf(stderr, " %d", ids[k]);
        fprintf(stderr, "\n  want:");
        cJSON_ArrayForEach(it, want) fprintf(stderr, " %d", (int)it->valuedouble);
        fprintf(stderr, "\n");
    }
    return same;
}

// Runs every case of an expected-ids fixture (parse_special on and off);
// returns the number of mismatches and counts the comparisons in *n_checked.
static inline int tt_check_cases(const kiln_tokenizer *tok, const cJSON *expected, const char *label, int *n_checked) {
    int bad = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(expected, "cases")) {
        const char *hex = cJSON_GetObjectItem(c, "hex")->valuestring;
        char *text = malloc(strlen(hex) / 2 + 1);
        size_t len = tt_unhex(hex, text);
        text[len] = '\0';
        for (int special = 0; special < 2; special++) {
            int32_t *ids = NULL;
            size_t n = 0;
            if (kiln_tokenizer_encode(tok, text, len, false, special, &ids, &n) != KILN_OK) {
                fprintf(stderr, "encode failed: %s\n", kiln_last_error());
                bad++;
            } else {
                char l[128];
                snprintf(l, sizeof l, "%s (parse_special=%d)", label, special);
                bad += !tt_same_ids(l, text, ids, n, cJSON_GetObjectItem(c, special ? "special" : "plain"));
            }
            free(ids);
            (*n_checked)++;
        }
        free(text);
    }
    return bad;
}

// Decodes ids with the streaming detokenizer into a malloc'd string.
static inline char *tt_detokenize(const kiln_tokenizer *tok, const int32_t *ids, size_t n, size_t *out_len) {
    size_t cap = 64 + 4 * n * 64 + 1024, w = 0;
    char *out = malloc(cap), buf[4096];
    kiln_detok d;
    kiln_detok_init(&d, tok);
    for (size_t i = 0; i < n; i++) {
        size_t k = kiln_detok_push(&d, ids[i], buf, sizeof buf);
        if (w + k < cap) memcpy(out + w, buf, k), w += k;
    }
    size_t k = kiln_detok_flush(&d, buf, sizeof buf);
    memcpy(out + w, buf, k);
    w += k;
    out[w] = '\0';
    *out_len = w;
    return out;
}

#endif
