// libFuzzer harness for the GGUF reader: parses the input as a whole file and,
// when it is accepted, walks every value and dequantizes the first row of
// every tensor, so that anything the parser lets through is also exercised.
// Then what the model loader reads from the metadata: the hyperparameters and
// the tokenizer (which tokenizes and detokenizes a fixed text).
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "formats/gguf.h"
#include "model/hparams.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink; // keeps the reads from being optimised away

static void touch_value(const kiln_gguf_value *v) {
    switch (v->type) {
    case KILN_GGUF_STRING:
        if (v->str.len) sink += (uint8_t)v->str.ptr[0] + (uint8_t)v->str.ptr[v->str.len - 1];
        break;
    case KILN_GGUF_ARRAY:
        for (uint64_t i = 0; i < v->arr.n; i++) touch_value(&v->arr.items[i]);
        break;
    default: sink += v->u64; break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_gguf *g;
    if (kiln_gguf_parse(data, size, "fuzz.gguf", &g) != KILN_OK) return 0;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        touch_value(&g->kv[i].value);
        sink += kiln_gguf_get(g, g->kv[i].key) == &g->kv[i].value;
    }
    uint32_t u;
    float f;
    sink += kiln_gguf_get_u32(g, "general.alignment", &u) + kiln_gguf_get_f32(g, "general.alignment", &f);
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const kiln_tensor *t = &g->tensors[i].t;
        if (kiln_gguf_find_tensor(g, t->name) != &g->tensors[i]) abort(); // names are unique
        if ((const uint8_t *)t->data < data || (const uint8_t *)t->data + t->nbytes > data + size) abort();
        if (t->ne[0] > (1 << 20)) continue;
        float *row = malloc((size_t)t->ne[0] * sizeof *row);
        if (!row) continue;
        kiln_dequantize_row(t->dtype, t->data, row, t->ne[0]);
        for (int64_t j = 0; j < t->ne[0]; j++) sink += row[j] == row[j];
        free(row);
    }
    kiln_hparams hp;
    if (kiln_hparams_from_gguf(g, "fuzz.gguf", &hp) == KILN_OK && (hp.n_layers <= 0 || hp.head_dim <= 0)) abort();
    kiln_tokenizer *tok;
    if (kiln_tokenizer_from_gguf(g, &tok) == KILN_OK) {
        static const char text[] = "Hello world, 2024! <|endoftext|><s> caf\xC3\xA9 \xF0\x9F\xA6\x99 \xFF\n  x";
        int32_t *ids;
        size_t n;
        if (kiln_tokenizer_encode(tok, text, sizeof text - 1, true, true, &ids, &n) == KILN_OK) {
            char out[4096];
            kiln_detok d;
            kiln_detok_init(&d, tok);
            for (size_t i = 0; i < n; i++) {
                if (ids[i] < 0 || ids[i] >= kiln_tokenizer_vocab_size(tok)) abort();
                if (kiln_tokenizer_max_token_bytes(tok) + 64 <= sizeof out) sink += kiln_detok_push(&d, ids[i], out, sizeof out);
            }
            free(ids);
        }
        kiln_tokenizer_free(tok);
    }
    kiln_gguf_close(g);
    return 0;
}
