// libFuzzer harness: any byte string must parse or fail cleanly, never crash
// or read out of bounds. Successful parses are walked end to end so that a
// tensor view past the image shows up under ASan.
#include <stddef.h>
#include <stdint.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    kiln_safetensors *st;
    if (kiln_safetensors_parse(data, size, "fuzz.safetensors", &st) != KILN_OK) return 0;
    volatile uint8_t sink = 0;
    for (uint64_t i = 0; i < st->n_tensors; i++) {
        const kiln_tensor *t = &st->tensors[i];
        const uint8_t *p = t->data;
        if (t->nbytes > 0) sink ^= p[0] ^ p[t->nbytes - 1];
        if (kiln_safetensors_find(st, t->name) != t) __builtin_trap();
    }
    (void)sink;
    kiln_safetensors_close(st);
    return 0;
}
