// A growable NUL-terminated byte buffer (streamed text, rendered prompts).
#ifndef KILN_CORE_STRBUF_H
#define KILN_CORE_STRBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct kiln_strbuf {
    char *data; // NULL until the first append; then always NUL-terminated
    size_t len, cap;
} kiln_strbuf;

// False when memory runs out (the buffer is left as it was).
bool kiln_strbuf_append(kiln_strbuf *b, const char *s, size_t n);
// Drops the first n bytes.
void kiln_strbuf_consume(kiln_strbuf *b, size_t n);
void kiln_strbuf_free(kiln_strbuf *b);

#endif
