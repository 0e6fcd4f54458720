// A tensor view: a name, a type, a shape and a pointer to data that someone
// else owns (usually a memory-mapped model file).
//
// Shape convention (GGUF's): ne[0] is the fastest-varying dimension. A weight
// matrix of a linear layer y = W x has ne[0] = in_features, ne[1] =
// out_features, i.e. ne[1] rows of ne[0] contiguous elements. Safetensors'
// row-major [out, in] is the same memory layout with the shape reversed.
#ifndef KILN_CORE_TENSOR_H
#define KILN_CORE_TENSOR_H

#include <stdint.h>

#include "core/dtype.h"

#define KILN_MAX_DIMS 4

typedef struct kiln_tensor {
    const char *name;
    kiln_dtype dtype;
    int n_dims;
    int64_t ne[KILN_MAX_DIMS]; // unused dims are 1
    const void *data;
    uint64_t nbytes;
} kiln_tensor;

static inline int64_t kiln_tensor_nelements(const kiln_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < KILN_MAX_DIMS; i++) n *= t->ne[i];
    return n;
}

#endif
