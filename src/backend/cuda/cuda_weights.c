// Weights on the GPU. F16 and BF16 matrices go up as they are; F32 ones
// become BF16 (same range); GGUF's quantized blocks become F16 (quantized GPU
// kernels come with the engine builder). Norms and biases stay F32. Host-side
// conversion fills pinned staging buffers while earlier ones are in flight on
// the upload stream.
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

#define STAGING_BYTES (64u << 20)

static bool is_vector(const kiln_tensor *t) { return t->ne[1] == 1 && t->ne[2] == 1 && t->ne[3] == 1; }

// The device type a weight becomes.
static kiln_dtype device_dtype(const kiln_tensor *src) {
    if (is_vector(src)) return KILN_F32;
    if (src->dtype == KILN_BF16 || src->dtype == KILN_F32) return KILN_BF16;
    return KILN_F16;
}

bool cuda_supports(kiln_backend *be, kiln_dtype type) {
    (void)be;
    const kiln_dtype_traits *info = kiln_dtype_info(type);
    // Q8_1 and Q8_K are activation formats; no model stores weights in them.
    return info && type != KILN_Q8_1 && type != KILN_Q8_K;
}

uint64_t cuda_weight_bytes(kiln_backend *be, const kiln_tensor *src) {
    (void)be;
    return (uint64_t)kiln_tensor_nelements(src) * (device_dtype(src) == KILN_F32 ? 4 : 2);
}

// Converts rows [row0, row0 + n_rows) of src into dst (device type).
static bool convert_rows(const kiln_tensor *src, kiln_dtype to, int64_t row0, int64_t n_rows, void *dst) {
    const int64_t cols = src->ne[0];
    uint64_t src_row_bytes = 0;
    kiln_dtype_row_bytes(src->dtype, (uint64_t)cols, &src_row_bytes); // checked by cuda_weight_load
    const size_t dst_row_bytes = (size_t)cols * (to == KILN_F32 ? 4 : 2);
    const char *in = (const char *)src->data + (uint64_t)row0 * src_row_bytes;
    if (src->dtype == to) {
        memcpy(dst, in, (size_t)n_rows * dst_row_bytes);
        return true;
    }
    bool ok = true;
#pragma omp parallel
    {
        float *row = malloc(sizeof(float) * (size_t)cols);
        if (!row) {
#pragma omp atomic write
            ok = false;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n_rows; r++) {
            if (!row) continue;
            kiln_dequantize_row(src->dtype, in + (uint64_t)r * src_row_bytes, row, cols);
            char *out = (char *)dst + (size_t)r * dst_row_bytes;
            if (to == KILN_F32)
                memcpy(out, row, dst_row_bytes);
            else
                for (int64_t i = 0; i < cols; i++)
                    ((uint16_t *)out)[i] = to == KILN_BF16 ? kiln_f32_to_bf16(row[i]) : kiln_f32_to_f16(row[i]);
        }
        free(row);
    }
    return ok;
}

static kiln_status staging_init(cuda_impl *c) {
    if (c->staging[0]) return KILN_OK;
    for (int i = 0; i < CUDA_STAGING_BUFFERS; i++) {
        cudaError_t e = cudaMallocHost(&c->staging[i], STAGING_BYTES);
        if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->staging_free[i], cudaEventDisableTiming);
        if (e != cudaSuccess) {
            cuda_staging_free(c);
            return kiln_fail(KILN_ERR_NOMEM, "cuda: cannot allocate %u MiB of pinned staging memory: %s",
                             STAGING_BYTES >> 20, cudaGetErrorString(e));
        }
    }
    c->staging_bytes = STAGING_BYTES;
    return KILN_OK;
}

void cuda_staging_free(cuda_impl *c) {
    for (int i = 0; i < CUDA_STAGING_BUFFERS; i++) {
        if (c->staging_free[i]) cudaEventDestroy(c->staging_free[i]);
        if (c->staging[i]) cudaFreeHost(c->staging[i]);
        c->staging[i] = NULL;
        c->staging_free[i] = NULL;
    }
}

kiln_status cuda_weight_load(kiln_backend *be, const kiln_tensor *src, void *dst, kiln_tensor *out) {
    cuda_impl *c = cuda_of(be);
    kiln_status st = staging_init(c);
    if (st != KILN_OK) return st;
    const kiln_dtype to = device_dtype(src);
    const int64_t cols = src->ne[0], rows = kiln_tensor_nelements(src) / cols;
    const size_t row_bytes = (size_t)cols * (to == KILN_F32 ? 4 : 2);
    uint64_t src_row_bytes = 0;
    if (cols <= 0 || !kiln_dtype_row_bytes(src->dtype, (uint64_t)cols, &src_row_bytes))
        return kiln_fail(KILN_ERR_FORMAT, "cuda: rows of %lld elements do not fit type %s", (long long)cols,
                         kiln_dtype_name(src->dtype));
    if (row_bytes > c->staging_bytes)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "cuda: a row of %lld elements exceeds the staging buffer",
                         (long long)cols);
    const int64_t rows_per_chunk = (int64_t)(c->staging_bytes / row_bytes);
    for (int64_t r = 0; r < rows; r += rows_per_chunk) {
        const int64_t n = rows - r < rows_per_chunk ? rows - r : rows_per_chunk;
        const int b = c->staging_next;
        c->staging_next = (b + 1) % CUDA_STAGING_BUFFERS;
        cudaError_t e = cudaEventSynchronize(c->staging_free[b]); // its last copy has landed
        if (e == cudaSuccess) {
            if (!convert_rows(src, to, r, n, c->staging[b]))
                return kiln_fail(KILN_ERR_NOMEM, "cuda: out of memory converting weights");
            e = cudaMemcpyAsync((char *)dst + (size_t)r * row_bytes, c->staging[b], (size_t)n * row_bytes,
                                cudaMemcpyHostToDevice, c->upload);
        }
        if (e == cudaSuccess) e = cudaEventRecord(c->staging_free[b], c->upload);
        if (e != cudaSuccess) return kiln_fail(KILN_ERR_IO, "cuda: weight upload failed: %s", cudaGetErrorString(e));
    }
    *out = *src;
    out->dtype = to;
    out->data = dst;
    out->nbytes = (uint64_t)rows * row_bytes;
    c->weight_bytes += out->nbytes;
    return KILN_OK;
}

kiln_status cuda_weights_done(kiln_backend *be) {
    cuda_impl *c = cuda_of(be);
    cudaError_t e = cudaStreamSynchronize(c->upload);
    cuda_staging_free(c);
    if (e != cudaSuccess) return kiln_fail(KILN_ERR_IO, "cuda: weight upload failed: %s", cudaGetErrorString(e));
    return KILN_OK;
}
