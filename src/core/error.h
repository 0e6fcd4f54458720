// Error reporting: every fallible function returns a kiln_status and leaves a
// human-readable message (naming the file and the problem) in a thread-local
// buffer, read with kiln_last_error().
#ifndef KILN_CORE_ERROR_H
#define KILN_CORE_ERROR_H

#include "kiln.h" /* kiln_status lives in the public API */

// Sets the thread's message (printf-style) and returns `status`, so that
// callers can write `return kiln_fail(KILN_ERR_FORMAT, "%s: bad magic", path);`
kiln_status kiln_fail(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

// Prefixes the current message with more context ("loading model: " + old).
kiln_status kiln_fail_context(kiln_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
