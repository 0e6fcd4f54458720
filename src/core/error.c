#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_error[1024];

kiln_status kiln_fail(kiln_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return status;
}

kiln_status kiln_fail_context(kiln_status status, const char *fmt, ...) {
    char prefix[512], old[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, last_error, sizeof old);
    // Truncation is fine: the message is for people, and stays NUL-terminated.
    size_t n = strlen(prefix);
    if (n > sizeof last_error - 3) n = sizeof last_error - 3;
    memcpy(last_error, prefix, n);
    memcpy(last_error + n, ": ", 2);
    size_t rest = sizeof last_error - n - 3, old_len = strlen(old);
    if (old_len > rest) old_len = rest;
    memcpy(last_error + n + 2, old, old_len);
    last_error[n + 2 + old_len] = '\0';
    return status;
}

const char *kiln_last_error(void) { return last_error; }

const char *kiln_status_name(kiln_status status) {
    switch (status) {
    case KILN_OK: return "ok";
    case KILN_ERR_IO: return "i/o error";
    case KILN_ERR_FORMAT: return "malformed file";
    case KILN_ERR_UNSUPPORTED: return "unsupported";
    case KILN_ERR_NOMEM: return "out of memory";
    case KILN_ERR_INVALID_ARG: return "invalid argument";
    case KILN_ERR_CONTEXT_FULL: return "context full";
    }
    return "unknown error";
}
