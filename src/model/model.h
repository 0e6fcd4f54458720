// A loaded Llama-family model: hyperparameters, weight views and tokenizer.
// The same structures come out of a GGUF file and a Hugging Face folder; the
// architecture table in arch.c says where each weight lives in either format.
#ifndef KILN_MODEL_MODEL_H
#define KILN_MODEL_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "tokenizer/tokenizer.h"

typedef struct kiln_hparams {
    char arch[64];       // "llama", "mistral", "qwen2"
    int n_layers;
    int dim;             // hidden size
    int ffn_dim;         // intermediate size
    int n_heads;
    int n_kv_heads;
    int head_dim;
    int vocab;
    int ctx_train;       // context length the model was trained for
    int sliding_window;  // attention window in tokens; 0: none
    float norm_eps;
    kiln_rope_params rope; // freq_factors owned by the model
    bool qkv_bias;
    bool tied_embeddings;
} kiln_hparams;

typedef struct kiln_layer_weights {
    kiln_tensor attn_norm; // [dim]
    kiln_tensor wq;        // [dim] -> [n_heads * head_dim]
    kiln_tensor wk;        // [dim] -> [n_kv_heads * head_dim]
    kiln_tensor wv;        // [dim] -> [n_kv_heads * head_dim]
    kiln_tensor bq, bk, bv; // biases (Qwen 2); data NULL when absent
    kiln_tensor wo;        // [n_heads * head_dim] -> [dim]
    kiln_tensor ffn_norm;  // [dim]
    kiln_tensor w_gate;    // [dim] -> [ffn_dim]
    kiln_tensor w_up;      // [dim] -> [ffn_dim]
    kiln_tensor w_down;    // [ffn_dim] -> [dim]
} kiln_layer_weights;

typedef struct kiln_weights {
    kiln_tensor tok_embd; // [dim] x vocab rows
    kiln_tensor out_norm; // [dim]
    kiln_tensor output;   // [dim] -> [vocab]; the embedding table when tied
    kiln_layer_weights *layers;
} kiln_weights;

typedef enum kiln_model_format { KILN_FORMAT_GGUF, KILN_FORMAT_HF } kiln_model_format;

typedef struct kiln_llm {
    kiln_model_format format;
    char *path;
    kiln_hparams hp;
    kiln_weights w;
    kiln_tokenizer *tok;
    kiln_gguf *gguf;       // GGUF source, or NULL
    kiln_safetensors *st;  // HF source, or NULL
    float **owned;         // float copies of small non-F32 vectors (norms, biases)
    int n_owned;
    float *rope_freq_factors;
} kiln_llm;

// Loads a GGUF file or a Hugging Face folder (decided by what `path` is).
kiln_status kiln_llm_load(const char *path, kiln_llm **out);
void kiln_llm_free(kiln_llm *m);

// Bytes of all weights as stored.
uint64_t kiln_llm_weight_bytes(const kiln_llm *m);

#endif
