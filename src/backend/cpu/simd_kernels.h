// Internal interface between the matmul driver (matmul.c) and its kernels.
//
// Every quantized weight type is first unpacked, a tile of KILN_MR rows at a
// time, into one common "panel" form: unsigned 8-bit codes per 32-element
// group with a float scale per 16 elements and a float min per group, so that
//     w[i] = dw16[i / 16] * (q[i] - offset) + mw[i / 32].
// Activations are quantized once per call into int8 groups of 32 with a
// float scale per group (Q8_0/Q8_1 give one scale per 32, Q8_K one per 256,
// repeated over its 8 groups). The kernels then only ever multiply u8 by s8:
//     y = sum_g dx[g] * sum_h dw16[h] * idot_h          (integer dots, SIMD)
//       + sum_g mw[g] * sx[g]                           (asymmetric types)
//       - offset * sum_h dw16[h] * xs16[h]              (signed types)
// where sx[g] = dx[g] * sum(q in g) and xs16[h] = dx * sum(q in half h) are
// exact in float (at most 12 + 11 significant bits).
#ifndef KILN_BACKEND_CPU_SIMD_KERNELS_H
#define KILN_BACKEND_CPU_SIMD_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"

#define KILN_MR 4          // weight rows per tile (panel height)
#define KILN_GROUP 32      // elements per group
#define KILN_GPAD 16       // groups are padded to a multiple of this (zeros)

typedef enum kiln_simd_level { KILN_SIMD_SCALAR = 0, KILN_SIMD_AVX2 = 1, KILN_SIMD_AVX512 = 2 } kiln_simd_level;

// Best path this CPU runs, or the forced one (kiln_cpu_force_simd).
kiln_simd_level kiln_simd_level_now(void);
// Best path this CPU runs, ignoring any forcing.
kiln_simd_level kiln_simd_level_detect(void);

// Quantized activations of n tokens; arrays are 64-byte aligned, rows of q
// are gp * 32 bytes apart, rows of dx/sx are gp floats, rows of xs16 2 * gp.
typedef struct kiln_act {
    int g, gp;   // groups per row, and padded to a multiple of KILN_GPAD
    int8_t *q;
    float *dx, *sx, *xs16;
} kiln_act;

// Unpacked weight rows (see above). Rows are gp * 32 bytes / 2 * gp / gp
// floats apart, like kiln_act.
typedef struct kiln_panel {
    int g, gp;
    int offset;  // code of zero: 0 (unsigned types), 8, 16, 32 or 128
    uint8_t *q;
    float *dw16, *mw;
} kiln_panel;

// Activation quantization family a weight type pairs with.
typedef enum kiln_act_kind { KILN_ACT_Q8_32, KILN_ACT_Q8_K } kiln_act_kind;

// Quantizes token rows [t0, t1) of x (rows k floats apart) into a, bit-exact
// with kiln_quantize_row(Q8_0 / Q8_1 / Q8_K). Pads groups g..gp with zeros.
void kiln_quantize_act(kiln_act_kind kind, const float *x, int64_t k, int t0, int t1, const kiln_act *a,
                       kiln_simd_level level);

// Code offset of an unpacked weight type (0 for asymmetric types).
int kiln_panel_offset(kiln_dtype dtype);
// Unpacks rows [0, nrows) (nrows <= KILN_MR; row_bytes apart) into p; groups
// g..gp are zero-filled. level picks SIMD unpackers where they exist.
void kiln_unpack_rows(kiln_dtype dtype, const uint8_t *rows, size_t row_bytes, int nrows, const kiln_panel *p,
                      kiln_simd_level level);

// y[t * ldy + r] for r < nrows, t in [t0, t1): panel rows times act tokens.
typedef void (*kiln_qkernel_fn)(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy,
                                int nrows);
void kiln_qkernel_scalar(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy, int nrows);
void kiln_qkernel_avx2(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy, int nrows);
void kiln_qkernel_avx512(const kiln_panel *p, const kiln_act *a, int t0, int t1, float *y, int64_t ldy, int nrows);

// Float weights: rows[r] are k floats (converted from F16/BF16 if needed);
// x rows are k floats apart.
typedef void (*kiln_fkernel_fn)(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1,
                                float *y, int64_t ldy, int nrows);
void kiln_fkernel_scalar(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1, float *y,
                         int64_t ldy, int nrows);
void kiln_fkernel_avx2(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1, float *y,
                       int64_t ldy, int nrows);
void kiln_fkernel_avx512(const float *const rows[KILN_MR], int64_t k, const float *x, int t0, int t1, float *y,
                         int64_t ldy, int nrows);
// Converts one F16 or BF16 row to floats.
void kiln_convert_row(kiln_dtype dtype, const void *src, float *dst, int64_t k, kiln_simd_level level);

#endif
