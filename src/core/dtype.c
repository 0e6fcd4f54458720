#include "core/dtype.h"

#include <string.h>

static const kiln_dtype_traits traits[KILN_DTYPE_COUNT] = {
    [KILN_F32] = {"F32", 1, 4, false},
    [KILN_F16] = {"F16", 1, 2, false},
    [KILN_Q4_0] = {"Q4_0", 32, 2 + 16, true},
    [KILN_Q4_1] = {"Q4_1", 32, 2 + 2 + 16, true},
    [KILN_Q5_0] = {"Q5_0", 32, 2 + 4 + 16, true},
    [KILN_Q5_1] = {"Q5_1", 32, 2 + 2 + 4 + 16, true},
    [KILN_Q8_0] = {"Q8_0", 32, 2 + 32, true},
    [KILN_Q8_1] = {"Q8_1", 32, 4 + 32, true},
    [KILN_Q4_K] = {"Q4_K", 256, 2 + 2 + 12 + 128, true},
    [KILN_Q5_K] = {"Q5_K", 256, 2 + 2 + 12 + 32 + 128, true},
    [KILN_Q6_K] = {"Q6_K", 256, 128 + 64 + 16 + 2, true},
    [KILN_Q8_K] = {"Q8_K", 256, 4 + 256 + 32, true},
    [KILN_BF16] = {"BF16", 1, 2, false},
};

const kiln_dtype_traits *kiln_dtype_info(uint32_t dtype) {
    if (dtype >= KILN_DTYPE_COUNT || traits[dtype].name == NULL) return NULL;
    return &traits[dtype];
}

const char *kiln_dtype_name(kiln_dtype dtype) {
    const kiln_dtype_traits *t = kiln_dtype_info((uint32_t)dtype);
    return t ? t->name : "unknown";
}

bool kiln_dtype_row_bytes(kiln_dtype dtype, uint64_t n, uint64_t *bytes) {
    const kiln_dtype_traits *t = kiln_dtype_info((uint32_t)dtype);
    if (!t || n % t->block_elems != 0) return false;
    uint64_t blocks = n / t->block_elems;
    if (blocks > UINT64_MAX / t->block_bytes) return false;
    *bytes = blocks * t->block_bytes;
    return true;
}

float kiln_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { // subnormal: normalise
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t kiln_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffff;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); // rounds to inf
    if (absx < 0x38800000u) {                                     // subnormal or zero in half
        if (absx < 0x33000000u) return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; // 14 + (113 - e)
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = ((absx >> 13) - ((127 - 15) << 10));
    uint32_t rem = absx & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
    return (uint16_t)(sign | half);
}

float kiln_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t kiln_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40); // quiet NaN
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
