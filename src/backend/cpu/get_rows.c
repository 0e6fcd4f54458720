// Embedding lookup: the chosen rows of a table, dequantized to floats.
#include <string.h>

#include "backend/cpu/cpu_matmul.h"

void kiln_cpu_get_rows(const kiln_tensor *w, const int32_t *ids, int n, float *out) {
    const int64_t dim = w->ne[0];
    uint64_t row_bytes = 0;
    if (!kiln_dtype_row_bytes(w->dtype, (uint64_t)dim, &row_bytes)) return; // loader validated; unreachable
    for (int t = 0; t < n; t++) {
        const uint8_t *row = (const uint8_t *)w->data + (uint64_t)ids[t] * row_bytes;
        kiln_dequantize_row(w->dtype, row, out + (int64_t)t * dim, dim);
    }
}
