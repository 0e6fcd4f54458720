// Element types of tensors. The numeric values are GGUF's (ggml_type), so a
// GGUF tensor's type field maps straight onto this enum after validation.
#ifndef KILN_CORE_DTYPE_H
#define KILN_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum kiln_dtype {
    KILN_F32 = 0,
    KILN_F16 = 1,
    KILN_Q4_0 = 2,
    KILN_Q4_1 = 3,
    KILN_Q5_0 = 6,
    KILN_Q5_1 = 7,
    KILN_Q8_0 = 8,
    KILN_Q8_1 = 9,   // activations only (CPU kernels)
    KILN_Q4_K = 12,
    KILN_Q5_K = 13,
    KILN_Q6_K = 14,
    KILN_Q8_K = 15,  // activations only (CPU kernels)
    KILN_BF16 = 30,
    KILN_DTYPE_COUNT = 31
} kiln_dtype;

typedef struct kiln_dtype_traits {
    const char *name;     // "Q4_K", as GGUF tools print it
    uint32_t block_elems; // elements per block (1 for plain floats)
    uint32_t block_bytes; // bytes per block
    bool is_quantized;
} kiln_dtype_traits;

// NULL for a value that is not a type kiln knows (e.g. an unsupported GGUF type).
const kiln_dtype_traits *kiln_dtype_info(uint32_t dtype);
const char *kiln_dtype_name(kiln_dtype dtype);

// Bytes of a row of n elements; false if n is not a multiple of the block size
// or the size overflows.
bool kiln_dtype_row_bytes(kiln_dtype dtype, uint64_t n, uint64_t *bytes);

// Scalar reference conversion of one row of n elements (n a multiple of the
// block size) to float. Used at load (embeddings, norms) and as the test oracle
// for the SIMD kernels. Implemented in core/quant.c.
void kiln_dequantize_row(kiln_dtype dtype, const void *src, float *dst, int64_t n);

// Scalar reference quantization (for KILN_Q8_0, KILN_Q8_1, KILN_Q8_K and the
// float types); returns false for a type it cannot produce.
bool kiln_quantize_row(kiln_dtype dtype, const float *src, void *dst, int64_t n);

// IEEE half and bfloat16 conversions.
float kiln_f16_to_f32(uint16_t h);
uint16_t kiln_f32_to_f16(float f);
float kiln_bf16_to_f32(uint16_t h);
uint16_t kiln_f32_to_bf16(float f); // round to nearest even

#endif
