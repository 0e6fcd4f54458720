// The Llama family's weights, described once for both file formats: the GGUF
// name, the Hugging Face name and the expected shape of every tensor.
#ifndef KILN_MODEL_ARCH_H
#define KILN_MODEL_ARCH_H

#include <stdbool.h>
#include <stddef.h>

#include "model/model.h"

typedef enum kiln_dim_symbol { KILN_D_ONE, KILN_D_DIM, KILN_D_FFN, KILN_D_Q, KILN_D_KV, KILN_D_VOCAB } kiln_dim_symbol;

typedef enum kiln_weight_presence {
    KILN_W_REQUIRED,
    KILN_W_QKV_BIAS, // required when hp.qkv_bias, else absent
    KILN_W_UNTIED,   // the output matrix: required unless embeddings are tied
} kiln_weight_presence;

typedef struct kiln_weight_desc {
    const char *gguf_name; // printf format with the layer index for per-layer weights
    const char *hf_name;
    bool per_layer;
    size_t offset;         // into kiln_layer_weights (per_layer) or kiln_weights
    kiln_weight_presence presence;
    bool is_vector;        // norms and biases: converted to F32 at load
    kiln_dim_symbol ne0, ne1;
} kiln_weight_desc;

extern const kiln_weight_desc kiln_llama_weights[];
extern const size_t kiln_llama_n_weights;

int64_t kiln_dim_value(const kiln_hparams *hp, kiln_dim_symbol s);

#endif
