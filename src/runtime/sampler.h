// Token sampling from logits: penalties, then greedy or temperature with
// top-k, top-p and min-p filtering, drawn from a seeded generator so that the
// same seed gives the same output.
#ifndef KILN_RUNTIME_SAMPLER_H
#define KILN_RUNTIME_SAMPLER_H

#include <stdint.h>

#include "core/error.h"

typedef struct kiln_sampler kiln_sampler;

kiln_status kiln_sampler_create(int vocab, const kiln_sampling_params *params, kiln_sampler **out);
void kiln_sampler_free(kiln_sampler *s);
// Checks ranges (temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, ...).
kiln_status kiln_sampling_params_check(const kiln_sampling_params *p);

// Picks the next token into *id. history: the tokens so far (prompt and
// output), for the penalties. logits are not modified. A NaN or +infinity
// logit, or logits that are all -infinity (no candidate left), is
// KILN_ERR_FORMAT: such logits come from broken weights, and no token drawn
// from them means anything. (-infinity alone is a token of probability 0.)
kiln_status kiln_sampler_sample(kiln_sampler *s, const float *logits, const int32_t *history, int n_history,
                                int32_t *id);
// The next uniform number in [0, 1) of the sampler's seeded stream, for a
// backend that samples on its own device.
double kiln_sampler_next_uniform(kiln_sampler *s);

#endif
