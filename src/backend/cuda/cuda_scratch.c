// Device buffers that grow on demand (cuda_scratch in cuda_impl.h), for every
// host file of the backend: the bottom layer, which uses none of the others.
#include <stdlib.h>

#include "backend/cuda/cuda_impl.h"

// A grown buffer's old memory is kept until the backend goes: graphs captured
// earlier may still replay into it.
bool cuda_scratch_reserve(cuda_impl *c, cuda_scratch *s, size_t bytes) {
    if (s->bytes >= bytes) return true;
    if (c->capturing) return false; // would change addresses the graph records
    if (s->ptr) {
        void **grown = realloc(c->retired, sizeof *grown * (size_t)(c->n_retired + 1));
        if (!grown) return false;
        c->retired = grown;
        c->retired[c->n_retired++] = s->ptr;
    }
    s->ptr = NULL;
    s->bytes = 0;
    if (cudaMalloc(&s->ptr, bytes) != cudaSuccess) {
        s->ptr = NULL;
        return false;
    }
    s->bytes = bytes;
    return true;
}

void cuda_scratch_release(cuda_scratch *s) {
    if (s->ptr) cudaFree(s->ptr);
    s->ptr = NULL;
    s->bytes = 0;
}

void cuda_scratch_free_retired(cuda_impl *c) {
    for (int i = 0; i < c->n_retired; i++) cudaFree(c->retired[i]);
    free(c->retired);
    c->retired = NULL;
    c->n_retired = 0;
}
