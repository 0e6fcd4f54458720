// libFuzzer harness for the Hugging Face tokenizer.json loader: any byte
// string must load or fail cleanly. What loads is used: a fixed text is
// tokenized with and without special tokens, every id is detokenized, and
// every token's bytes are read.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_tokenizer *tok;
    if (kiln_tokenizer_from_hf_text((const char *)data, size, "fuzz.json", NULL, 0, NULL, &tok) != KILN_OK) return 0;
    static const char text[] = "Hello world, 2024! <s></s><|im_end|> \xE2\x96\x81 caf\xC3\xA9 \xF0\x9F\xA6\x99 \xFF\n\t  x";
    char out[4096];
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (kiln_tokenizer_encode(tok, text, sizeof text - 1, true, special, &ids, &n) != KILN_OK) continue;
        if (kiln_tokenizer_max_token_bytes(tok) + 64 <= sizeof out) {
            kiln_detok d;
            kiln_detok_init(&d, tok);
            for (size_t i = 0; i < n; i++) sink += kiln_detok_push(&d, ids[i], out, sizeof out);
            sink += kiln_detok_flush(&d, out, sizeof out);
        }
        for (size_t i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= kiln_tokenizer_vocab_size(tok)) abort(); // ids are tokens
        free(ids);
    }
    for (int32_t id = 0; id < kiln_tokenizer_vocab_size(tok) && id < 4096; id++) {
        const char *bytes;
        size_t len;
        if (!kiln_tokenizer_token_bytes(tok, id, &bytes, &len)) abort();
        if (len) sink += (uint8_t)bytes[0] + (uint8_t)bytes[len - 1];
    }
    sink += kiln_tokenizer_is_eog(tok, kiln_tokenizer_eos(tok)) + (uint64_t)kiln_tokenizer_bos(tok);
    kiln_tokenizer_free(tok);
    return 0;
}
