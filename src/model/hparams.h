#ifndef KILN_MODEL_HPARAMS_H
#define KILN_MODEL_HPARAMS_H

#include <stdlib.h>

#include "formats/hf_config.h"
#include "model/model.h"

kiln_status kiln_hparams_from_gguf(const kiln_gguf *g, const char *path, kiln_hparams *hp);
// *freq_factors: malloc'd Llama 3 RoPE divisors, or NULL when unscaled.
kiln_status kiln_hparams_from_hf(const kiln_hf_config *c, const char *path, kiln_hparams *hp, float **freq_factors);

#endif
