// Measured ceilings of the current GPU: streaming-read bandwidth, device-to-
// device copy bandwidth and cuBLASLt BF16 GEMM throughput (cuda_ceilings.h).
#include "backend/cuda/cuda_ceilings.h"

#include <stdint.h>
#include <string.h>

#include <cublasLt.h>
#include <cuda_bf16.h>

#define CEIL_WARMUP 3
#define CEIL_RUNS 11 // odd: the median is one run
#define CEIL_READ_MAX_BYTES ((size_t)4 << 30)
#define CEIL_COPY_MAX_BYTES ((size_t)2 << 30)
#define CEIL_GEMM_N 8192
#define CEIL_GEMM_WORKSPACE ((size_t)32 << 20)
#define CEIL_READ_THREADS 256
#define CEIL_READ_UNROLL 4

// Each thread keeps CEIL_READ_UNROLL independent 16-byte loads in flight per
// iteration; the XOR of everything read goes through one atomic per warp into
// *sink so that the loads cannot be optimised away.
__global__ void ceil_read_kernel(const uint4 *__restrict__ src, size_t n, unsigned int *sink) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned int acc = 0;
    for (; i + (CEIL_READ_UNROLL - 1) * stride < n; i += CEIL_READ_UNROLL * stride) {
        uint4 v[CEIL_READ_UNROLL];
#pragma unroll
        for (int u = 0; u < CEIL_READ_UNROLL; u++) v[u] = __ldcs(src + i + u * stride);
#pragma unroll
        for (int u = 0; u < CEIL_READ_UNROLL; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n; i += stride) {
        uint4 v = __ldcs(src + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    for (int off = 16; off > 0; off >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, off);
    if ((threadIdx.x & 31) == 0) atomicXor(sink, acc);
}

// Pseudo-random bf16 in [-1, 1): a hash of the index (random data draws the
// power, hence the clocks, that real weights do; zeros would flatter the GEMM).
__global__ void ceil_fill_bf16_kernel(__nv_bfloat16 *dst, size_t n, uint32_t seed) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        uint32_t h = (uint32_t)i * 0x9E3779B1u ^ (uint32_t)(i >> 32) ^ seed;
        h ^= h >> 16, h *= 0x85EBCA6Bu, h ^= h >> 13, h *= 0xC2B2AE35u, h ^= h >> 16;
        dst[i] = __float2bfloat16((float)(h >> 8) * (2.0f / 16777216.0f) - 1.0f);
    }
}

static double median_ms(float *ms, int n) {
    for (int i = 1; i < n; i++) { // insertion sort: n is tiny
        float x = ms[i];
        int j = i - 1;
        for (; j >= 0 && ms[j] > x; j--) ms[j + 1] = ms[j];
        ms[j + 1] = x;
    }
    return (double)ms[n / 2];
}

// What one timed operation enqueues on the stream.
typedef enum { CEIL_OP_READ, CEIL_OP_COPY, CEIL_OP_GEMM } ceil_op_kind;

typedef struct ceil_op {
    ceil_op_kind kind;
    // read
    const uint4 *src;
    size_t n16;
    unsigned int *sink;
    int grid;
    // copy
    void *dst;
    size_t bytes;
    // gemm
    cublasLtHandle_t lt;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a_layout, b_layout, d_layout;
    const cublasLtMatmulAlgo_t *algo;
    const void *a, *b;
    void *d, *workspace;
} ceil_op;

static cudaError_t from_cublas(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return cudaSuccess;
    case CUBLAS_STATUS_ALLOC_FAILED: return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_NOT_SUPPORTED:
    case CUBLAS_STATUS_ARCH_MISMATCH: return cudaErrorNotSupported;
    default: return cudaErrorUnknown;
    }
}

static cudaError_t enqueue(const ceil_op *op, cudaStream_t stream) {
    switch (op->kind) {
    case CEIL_OP_READ:
        ceil_read_kernel<<<op->grid, CEIL_READ_THREADS, 0, stream>>>(op->src, op->n16, op->sink);
        return cudaGetLastError();
    case CEIL_OP_COPY: return cudaMemcpyAsync(op->dst, op->src, op->bytes, cudaMemcpyDeviceToDevice, stream);
    case CEIL_OP_GEMM: {
        const float alpha = 1.0f, beta = 0.0f;
        return from_cublas(cublasLtMatmul(op->lt, op->desc, &alpha, op->a, op->a_layout, op->b, op->b_layout, &beta,
                                          op->d, op->d_layout, op->d, op->d_layout, op->algo, op->workspace,
                                          CEIL_GEMM_WORKSPACE, stream));
    }
    }
    return cudaErrorInvalidValue;
}

// Median milliseconds of CEIL_RUNS timed runs after CEIL_WARMUP untimed ones.
static cudaError_t time_op(const ceil_op *op, cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop,
                           double *ms_out) {
    float ms[CEIL_RUNS];
    cudaError_t e;
    for (int i = 0; i < CEIL_WARMUP; i++)
        if ((e = enqueue(op, stream)) != cudaSuccess) return e;
    for (int i = 0; i < CEIL_RUNS; i++) {
        if ((e = cudaEventRecord(start, stream)) != cudaSuccess || (e = enqueue(op, stream)) != cudaSuccess ||
            (e = cudaEventRecord(stop, stream)) != cudaSuccess || (e = cudaEventSynchronize(stop)) != cudaSuccess ||
            (e = cudaEventElapsedTime(&ms[i], start, stop)) != cudaSuccess)
            return e;
    }
    *ms_out = median_ms(ms, CEIL_RUNS);
    return *ms_out > 0 ? cudaSuccess : cudaErrorUnknown;
}

// (a) streaming read and (b) device-to-device copy, on one buffer: the copy
// moves its first half to its second.
static cudaError_t measure_bandwidth(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, int n_sms,
                                     kiln_cuda_ceilings *out) {
    size_t free_b = 0, total_b = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess) return e;
    size_t bytes = free_b / 2 < CEIL_READ_MAX_BYTES ? free_b / 2 : CEIL_READ_MAX_BYTES;
    bytes &= ~(((size_t)2 << 20) - 1); // whole 2 MiB pages, so both halves stay 16-byte aligned
    if (bytes < ((size_t)64 << 20)) return cudaErrorMemoryAllocation;
    void *buf = NULL;
    unsigned int *sink = NULL;
    if ((e = cudaMalloc(&buf, bytes)) != cudaSuccess) return e;
    if ((e = cudaMalloc((void **)&sink, sizeof *sink)) != cudaSuccess) goto done;
    // Touch every page first: the first pass over fresh memory is not a read.
    if ((e = cudaMemsetAsync(buf, 0x5A, bytes, stream)) != cudaSuccess ||
        (e = cudaMemsetAsync(sink, 0, sizeof *sink, stream)) != cudaSuccess)
        goto done;
    {
        ceil_op read_op;
        memset(&read_op, 0, sizeof read_op);
        read_op.kind = CEIL_OP_READ;
        read_op.src = (const uint4 *)buf;
        read_op.n16 = bytes / 16;
        read_op.sink = sink;
        read_op.grid = n_sms * (2048 / CEIL_READ_THREADS); // a full SM's worth of threads on sm_80/sm_90
        double ms;
        if ((e = time_op(&read_op, stream, start, stop, &ms)) != cudaSuccess) goto done;
        out->read_gbps = (double)bytes / (ms * 1e-3) / 1e9;

        ceil_op copy_op;
        memset(&copy_op, 0, sizeof copy_op);
        copy_op.kind = CEIL_OP_COPY;
        copy_op.bytes = bytes / 2 < CEIL_COPY_MAX_BYTES ? bytes / 2 : CEIL_COPY_MAX_BYTES;
        copy_op.src = (const uint4 *)buf;
        copy_op.dst = (char *)buf + bytes / 2;
        if ((e = time_op(&copy_op, stream, start, stop, &ms)) != cudaSuccess) goto done;
        out->copy_gbps = 2.0 * (double)copy_op.bytes / (ms * 1e-3) / 1e9;
    }
done:
    cudaError_t sync_e = cudaStreamSynchronize(stream); // nothing may still use buf when it is freed
    if (e == cudaSuccess) e = sync_e;
    cudaFree(sink);
    cudaFree(buf);
    return e;
}

// (c) D = A^T B in cuBLASLt's column-major terms ("TN", the layout every GEMM
// kernel generation supports), m = n = k = 8192.
static cudaError_t measure_gemm(cudaStream_t stream, cudaEvent_t start, cudaEvent_t stop, kiln_cuda_ceilings *out) {
    const int64_t n = CEIL_GEMM_N;
    const size_t elems = (size_t)n * (size_t)n;
    void *a = NULL, *b = NULL, *d = NULL, *workspace = NULL;
    cublasLtHandle_t lt = NULL;
    cublasLtMatmulDesc_t desc = NULL;
    cublasLtMatrixLayout_t a_layout = NULL, b_layout = NULL, d_layout = NULL;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t heur;
    int n_results = 0;
    cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
    uint64_t ws_bytes = CEIL_GEMM_WORKSPACE;
    cudaError_t e;
    if ((e = cudaMalloc(&a, elems * sizeof(__nv_bfloat16))) != cudaSuccess ||
        (e = cudaMalloc(&b, elems * sizeof(__nv_bfloat16))) != cudaSuccess ||
        (e = cudaMalloc(&d, elems * sizeof(__nv_bfloat16))) != cudaSuccess ||
        (e = cudaMalloc(&workspace, CEIL_GEMM_WORKSPACE)) != cudaSuccess)
        goto done;
    ceil_fill_bf16_kernel<<<1024, 256, 0, stream>>>((__nv_bfloat16 *)a, elems, 0x1234567u);
    ceil_fill_bf16_kernel<<<1024, 256, 0, stream>>>((__nv_bfloat16 *)b, elems, 0x89ABCDEu);
    if ((e = cudaGetLastError()) != cudaSuccess) goto done;
    if ((e = from_cublas(cublasLtCreate(&lt))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                        sizeof trans_a))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                        sizeof trans_b))) != cudaSuccess ||
        // A is stored k x m (op T), B k x n, D m x n; all square here.
        (e = from_cublas(cublasLtMatrixLayoutCreate(&a_layout, CUDA_R_16BF, n, n, n))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatrixLayoutCreate(&b_layout, CUDA_R_16BF, n, n, n))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatrixLayoutCreate(&d_layout, CUDA_R_16BF, n, n, n))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulPreferenceCreate(&pref))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                              &ws_bytes, sizeof ws_bytes))) != cudaSuccess ||
        (e = from_cublas(cublasLtMatmulAlgoGetHeuristic(lt, desc, a_layout, b_layout, d_layout, d_layout, pref, 1,
                                                        &heur, &n_results))) != cudaSuccess)
        goto done;
    if (n_results < 1) {
        e = cudaErrorNotSupported;
        goto done;
    }
    {
        ceil_op op;
        memset(&op, 0, sizeof op);
        op.kind = CEIL_OP_GEMM;
        op.lt = lt;
        op.desc = desc;
        op.a_layout = a_layout;
        op.b_layout = b_layout;
        op.d_layout = d_layout;
        op.algo = &heur.algo;
        op.a = a;
        op.b = b;
        op.d = d;
        op.workspace = workspace;
        double ms;
        if ((e = time_op(&op, stream, start, stop, &ms)) != cudaSuccess) goto done;
        out->gemm_bf16_tflops = 2.0 * (double)n * (double)n * (double)n / (ms * 1e-3) / 1e12;
    }
done:
    cudaError_t sync_e = cudaStreamSynchronize(stream);
    if (e == cudaSuccess) e = sync_e;
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d_layout) cublasLtMatrixLayoutDestroy(d_layout);
    if (b_layout) cublasLtMatrixLayoutDestroy(b_layout);
    if (a_layout) cublasLtMatrixLayoutDestroy(a_layout);
    if (desc) cublasLtMatmulDescDestroy(desc);
    if (lt) cublasLtDestroy(lt);
    cudaFree(workspace);
    cudaFree(d);
    cudaFree(b);
    cudaFree(a);
    return e;
}

extern "C" cudaError_t kiln_cuda_measure_ceilings(kiln_cuda_ceilings *out) {
    if (!out) return cudaErrorInvalidValue;
    memset(out, 0, sizeof *out);
    int dev = 0, n_sms = 0;
    cudaStream_t stream = NULL;
    cudaEvent_t start = NULL, stop = NULL;
    cudaError_t e;
    if ((e = cudaGetDevice(&dev)) != cudaSuccess ||
        (e = cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = cudaEventCreate(&start)) != cudaSuccess || (e = cudaEventCreate(&stop)) != cudaSuccess)
        goto done;
    // Bandwidth first: its buffer is freed before the GEMM allocates.
    if ((e = measure_bandwidth(stream, start, stop, n_sms, out)) != cudaSuccess) goto done;
    e = measure_gemm(stream, start, stop, out);
done:
    if (stop) cudaEventDestroy(stop);
    if (start) cudaEventDestroy(start);
    if (stream) cudaStreamDestroy(stream);
    return e;
}
