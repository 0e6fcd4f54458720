// Block layouts of the quantized types, bit-compatible with GGUF / ggml.
// A block holds block_elems consecutive elements of one row.
#ifndef KILN_CORE_QUANT_H
#define KILN_CORE_QUANT_H

#include <assert.h>
#include <stdint.h>

#define KILN_QK 32   // elements per block of the simple types
#define KILN_QK_K 256 // elements per super-block of the K types

typedef struct { uint16_t d; uint8_t qs[KILN_QK / 2]; } kiln_block_q4_0;             // x = (q - 8) * d
typedef struct { uint16_t d, m; uint8_t qs[KILN_QK / 2]; } kiln_block_q4_1;          // x = q * d + m
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[KILN_QK / 2]; } kiln_block_q5_0;    // x = (q - 16) * d
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[KILN_QK / 2]; } kiln_block_q5_1; // x = q * d + m
typedef struct { uint16_t d; int8_t qs[KILN_QK]; } kiln_block_q8_0;                  // x = q * d
typedef struct { uint16_t d, s; int8_t qs[KILN_QK]; } kiln_block_q8_1;               // s = d * sum(q)
// In the simple 4/5-bit types, element j < 16 is the low nibble of qs[j] and
// element j + 16 the high nibble; bit 4 of element j is bit j of qh.

typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12]; // 8 sub-blocks of 32: 6-bit scale and 6-bit min each, packed
    uint8_t qs[KILN_QK_K / 2];
} kiln_block_q4_k;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[KILN_QK_K / 8];
    uint8_t qs[KILN_QK_K / 2];
} kiln_block_q5_k;
typedef struct {
    uint8_t ql[KILN_QK_K / 2];
    uint8_t qh[KILN_QK_K / 4];
    int8_t scales[KILN_QK_K / 16];
    uint16_t d;
} kiln_block_q6_k;
typedef struct {
    float d;
    int8_t qs[KILN_QK_K];
    int16_t bsums[KILN_QK_K / 16]; // sums of groups of 16 qs
} kiln_block_q8_k;

static_assert(sizeof(kiln_block_q4_0) == 18, "q4_0 layout");
static_assert(sizeof(kiln_block_q4_1) == 20, "q4_1 layout");
static_assert(sizeof(kiln_block_q5_0) == 22, "q5_0 layout");
static_assert(sizeof(kiln_block_q5_1) == 24, "q5_1 layout");
static_assert(sizeof(kiln_block_q8_0) == 34, "q8_0 layout");
static_assert(sizeof(kiln_block_q8_1) == 36, "q8_1 layout");
static_assert(sizeof(kiln_block_q4_k) == 144, "q4_k layout");
static_assert(sizeof(kiln_block_q5_k) == 176, "q5_k layout");
static_assert(sizeof(kiln_block_q6_k) == 210, "q6_k layout");
static_assert(sizeof(kiln_block_q8_k) == 292, "q8_k layout");

#endif
