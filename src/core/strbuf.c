#include "core/strbuf.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

bool kiln_strbuf_append(kiln_strbuf *b, const char *s, size_t n) {
    if (n > SIZE_MAX / 2 - b->len - 1) return false;
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *grown = realloc(b->data, cap);
        if (!grown) return false;
        b->data = grown;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
    return true;
}

void kiln_strbuf_consume(kiln_strbuf *b, size_t n) {
    if (n >= b->len) n = b->len;
    if (b->data) memmove(b->data, b->data + n, b->len - n + 1);
    b->len -= n;
}

void kiln_strbuf_free(kiln_strbuf *b) {
    free(b->data);
    *b = (kiln_strbuf){0};
}
