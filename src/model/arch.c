#include "model/arch.h"

#define LAYER(field) true, offsetof(kiln_layer_weights, field)
#define GLOBAL(field) false, offsetof(kiln_weights, field)

const kiln_weight_desc kiln_llama_weights[] = {
    {"token_embd.weight", "model.embed_tokens.weight", GLOBAL(tok_embd), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_VOCAB},
    {"output_norm.weight", "model.norm.weight", GLOBAL(out_norm), KILN_W_REQUIRED, true, KILN_D_DIM, KILN_D_ONE},
    {"output.weight", "lm_head.weight", GLOBAL(output), KILN_W_UNTIED, false, KILN_D_DIM, KILN_D_VOCAB},
    {"blk.%d.attn_norm.weight", "model.layers.%d.input_layernorm.weight", LAYER(attn_norm), KILN_W_REQUIRED, true, KILN_D_DIM, KILN_D_ONE},
    {"blk.%d.attn_q.weight", "model.layers.%d.self_attn.q_proj.weight", LAYER(wq), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_Q},
    {"blk.%d.attn_k.weight", "model.layers.%d.self_attn.k_proj.weight", LAYER(wk), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_KV},
    {"blk.%d.attn_v.weight", "model.layers.%d.self_attn.v_proj.weight", LAYER(wv), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_KV},
    {"blk.%d.attn_q.bias", "model.layers.%d.self_attn.q_proj.bias", LAYER(bq), KILN_W_QKV_BIAS, true, KILN_D_Q, KILN_D_ONE},
    {"blk.%d.attn_k.bias", "model.layers.%d.self_attn.k_proj.bias", LAYER(bk), KILN_W_QKV_BIAS, true, KILN_D_KV, KILN_D_ONE},
    {"blk.%d.attn_v.bias", "model.layers.%d.self_attn.v_proj.bias", LAYER(bv), KILN_W_QKV_BIAS, true, KILN_D_KV, KILN_D_ONE},
    {"blk.%d.attn_output.weight", "model.layers.%d.self_attn.o_proj.weight", LAYER(wo), KILN_W_REQUIRED, false, KILN_D_Q, KILN_D_DIM},
    {"blk.%d.ffn_norm.weight", "model.layers.%d.post_attention_layernorm.weight", LAYER(ffn_norm), KILN_W_REQUIRED, true, KILN_D_DIM, KILN_D_ONE},
    {"blk.%d.ffn_gate.weight", "model.layers.%d.mlp.gate_proj.weight", LAYER(w_gate), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_FFN},
    {"blk.%d.ffn_up.weight", "model.layers.%d.mlp.up_proj.weight", LAYER(w_up), KILN_W_REQUIRED, false, KILN_D_DIM, KILN_D_FFN},
    {"blk.%d.ffn_down.weight", "model.layers.%d.mlp.down_proj.weight", LAYER(w_down), KILN_W_REQUIRED, false, KILN_D_FFN, KILN_D_DIM},
};
const size_t kiln_llama_n_weights = sizeof kiln_llama_weights / sizeof kiln_llama_weights[0];

int64_t kiln_dim_value(const kiln_hparams *hp, kiln_dim_symbol s) {
    switch (s) {
    case KILN_D_ONE: return 1;
    case KILN_D_DIM: return hp->dim;
    case KILN_D_FFN: return hp->ffn_dim;
    case KILN_D_Q: return (int64_t)hp->n_heads * hp->head_dim;
    case KILN_D_KV: return (int64_t)hp->n_kv_heads * hp->head_dim;
    case KILN_D_VOCAB: return hp->vocab;
    }
    return -1;
}
