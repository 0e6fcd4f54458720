// Generation loop shared by `kiln run`, `kiln chat` and the bench: feed the
// prompt, sample, stream complete UTF-8 text, stop at end-of-generation
// tokens, stop strings or the token limit.
#ifndef KILN_RUNTIME_GENERATE_H
#define KILN_RUNTIME_GENERATE_H

#include <stdbool.h>
#include <stddef.h>

#include "runtime/session.h"

// Receives text as it becomes final; return false to stop generating.
typedef bool (*kiln_text_fn)(const char *text, size_t len, void *user);

typedef struct kiln_generate_params {
    int max_new_tokens;       // <= 0: until the context is full
    const char *const *stop;  // stop strings (not emitted), or NULL
    int n_stop;
    bool ignore_eog;          // keep going past end-of-generation tokens
} kiln_generate_params;

typedef struct kiln_generate_stats {
    int n_prompt;
    int n_generated;
    double prefill_seconds;
    double decode_seconds;
    const char *stop_reason; // "eog", "stop string", "length", "context", "callback"
} kiln_generate_stats;

kiln_status kiln_generate(kiln_session *s, const int32_t *prompt, size_t n_prompt, const kiln_sampling_params *sp,
                          const kiln_generate_params *gp, kiln_text_fn on_text, void *user,
                          kiln_generate_stats *stats);

double kiln_now_seconds(void);

#endif
