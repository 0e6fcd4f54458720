// libFuzzer harness for config.json: any byte string must parse or fail
// cleanly; what parses goes on to the hyperparameter checks the loader makes
// (kiln_hparams_from_hf), whose result must then be sane.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "formats/hf_config.h"
#include "model/hparams.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_hf_config c;
    if (kiln_hf_config_parse((const char *)data, size, "config.json", &c) != KILN_OK) return 0;
    if (c.n_eos_token_ids < 0 || c.n_eos_token_ids > 8) abort();
    kiln_hparams hp;
    float *freq = NULL;
    if (kiln_hparams_from_hf(&c, "config.json", &hp, &freq) == KILN_OK) {
        if (hp.n_layers <= 0 || hp.dim <= 0 || hp.n_heads <= 0 || hp.n_kv_heads <= 0 || hp.head_dim <= 0 ||
            hp.vocab <= 0 || hp.n_heads % hp.n_kv_heads != 0 || !(hp.norm_eps > 0.0f))
            abort(); // the checks let through something the forward pass cannot take
        for (int i = 0; freq && i < hp.rope.rot_dim / 2; i++)
            if (!(freq[i] > 0.0f)) abort();
    }
    free(freq);
    return 0;
}
