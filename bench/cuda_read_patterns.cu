// How fast can a decode step's weights be read at all, in the shapes decode
// reads them? Pure reads (no arithmetic) of the Llama 3 8B layer matrices,
// one kernel per product as decode launches them, two ways:
//   grid  - the ceiling kernel's pattern: the grid sweeps the matrix in
//           address order, every thread 16-byte loads a grid-stride apart;
//   rows  - the matrix-vector kernel's pattern: each warp owns whole rows
//           (blocked, rows per warp from the occupancy), lanes read 16 bytes
//           each, LOADS loads in flight per lane.
// Each pattern runs alone per matrix, and as a whole "step" (32 layers x
// Q/K/V, O, gate+up, down) captured in a CUDA graph, against the 4 GiB
// streaming read. If rows reach what grid does, the read pattern costs
// nothing and decode's loss is in the kernels' arithmetic or epilogues; if
// both fall short of the 4 GiB figure, the loss is the per-kernel ramp and
// drain.  Usage: bench_read_patterns   (prints a table; about 10 s)
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime.h>

#include "backend/cuda/cuda_matvec.cuh" // load_stream: the kernel's own weight load

#define CHECK(call)                                                                                                  \
    do {                                                                                                             \
        cudaError_t e_ = (call);                                                                                     \
        if (e_ != cudaSuccess) {                                                                                     \
            fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_));                              \
            exit(1);                                                                                                 \
        }                                                                                                            \
    } while (0)

template <int LOADS> __global__ void read_grid(const uint4 *src, size_t n, unsigned *sink) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    unsigned acc = 0;
    for (; i + (LOADS - 1) * stride < n; i += LOADS * stride) {
        uint4 v[LOADS];
#pragma unroll
        for (int u = 0; u < LOADS; u++) v[u] = load_stream(src + i + u * stride);
#pragma unroll
        for (int u = 0; u < LOADS; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
    }
    for (; i < n; i += stride) {
        const uint4 v = load_stream(src + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    if (acc == 0x12345678u) atomicXor(sink, acc); // keeps the loads; almost never taken
}

template <int LOADS> __global__ void __launch_bounds__(256) read_rows(const uint4 *src, int rows, int row_chunks, int per_warp, unsigned *sink) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x % 32;
    const int r0 = warp * per_warp, r1 = min(r0 + per_warp, rows);
    unsigned acc = 0;
    for (int r = r0; r < r1; r++) {
        const uint4 *row = src + (size_t)r * row_chunks;
        int c = lane;
        for (; c + 32 * (LOADS - 1) < row_chunks; c += 32 * LOADS) {
            uint4 v[LOADS];
#pragma unroll
            for (int u = 0; u < LOADS; u++) v[u] = load_stream(row + c + 32 * u);
#pragma unroll
            for (int u = 0; u < LOADS; u++) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
        }
        for (; c < row_chunks; c += 32) {
            const uint4 v = load_stream(row + c);
            acc ^= v.x ^ v.y ^ v.z ^ v.w;
        }
    }
    if (acc == 0x12345678u) atomicXor(sink, acc);
}

typedef struct {
    const char *name;
    int rows, k; // bf16 [rows][k]
} shape;

// One decode layer of the Llama 3 8B geometry, in launch order.
static const shape LAYER[] = {{"qkv", 6144, 4096}, {"o", 4096, 4096}, {"gate+up", 28672, 4096}, {"down", 4096, 14336}};
#define N_SHAPES 4
#define COPIES 4 // distinct copies of each layer's matrices: the next read never finds its matrix in L2

static int sms, per_sm_rows4, per_sm_rows8, per_sm_grid;


static void launch(int pattern, const void *m, const shape *s, unsigned *sink, cudaStream_t st) {
    const size_t n16 = (size_t)s->rows * s->k * 2 / 16;
    const int row_chunks = s->k * 2 / 16;
    if (pattern == 0) {
        read_grid<8><<<sms * per_sm_grid, 256, 0, st>>>((const uint4 *)m, n16, sink);
    } else {
        const int per_sm = pattern == 1 ? per_sm_rows4 : per_sm_rows8;
        const int warps = sms * per_sm * 8, per_warp = (s->rows + warps - 1) / warps;
        const int blocks = (s->rows + per_warp * 8 - 1) / (per_warp * 8);
        if (pattern == 1)
            read_rows<4><<<blocks, 256, 0, st>>>((const uint4 *)m, s->rows, row_chunks, per_warp, sink);
        else
            read_rows<8><<<blocks, 256, 0, st>>>((const uint4 *)m, s->rows, row_chunks, per_warp, sink);
    }
}

static float time_graph(cudaGraphExec_t g, cudaStream_t st) {
    cudaEvent_t a, b;
    CHECK(cudaEventCreate(&a));
    CHECK(cudaEventCreate(&b));
    float best[7];
    for (int rep = 0; rep < 7; rep++) {
        CHECK(cudaEventRecord(a, st));
        CHECK(cudaGraphLaunch(g, st));
        CHECK(cudaEventRecord(b, st));
        CHECK(cudaEventSynchronize(b));
        CHECK(cudaEventElapsedTime(&best[rep], a, b));
    }
    for (int i = 1; i < 7; i++) // median
        for (int j = i; j > 0 && best[j - 1] > best[j]; j--) {
            float t = best[j];
            best[j] = best[j - 1];
            best[j - 1] = t;
        }
    CHECK(cudaEventDestroy(a));
    CHECK(cudaEventDestroy(b));
    return best[3];
}

// A graph of `reps` launches of one pattern over the matrices in `which`
// (all shapes when -1), cycling through the copies.
static cudaGraphExec_t capture(int pattern, int which, int reps, void *mats[COPIES][N_SHAPES], unsigned *sink,
                               cudaStream_t st, double *bytes) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    *bytes = 0;
    CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int r = 0; r < reps; r++)
        for (int s = 0; s < N_SHAPES; s++) {
            if (which >= 0 && s != which) continue;
            launch(pattern, mats[r % COPIES][s], &LAYER[s], sink, st);
            *bytes += (double)LAYER[s].rows * LAYER[s].k * 2;
        }
    CHECK(cudaStreamEndCapture(st, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphDestroy(g));
    return ge;
}

int main(void) {
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    sms = prop.multiProcessorCount;
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_rows4, read_rows<4>, 256, 0));
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_rows8, read_rows<8>, 256, 0));
    CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm_grid, read_grid<8>, 256, 0));
    // Real decode kernels hold 4-5 blocks an SM (registers): match that.
    if (per_sm_rows4 > 5) per_sm_rows4 = 5;
    if (per_sm_rows8 > 4) per_sm_rows8 = 4;
    void *mats[COPIES][N_SHAPES];
    unsigned *sink;
    CHECK(cudaMalloc(&sink, sizeof(unsigned)));
    for (int c = 0; c < COPIES; c++)
        for (int s = 0; s < N_SHAPES; s++) {
            const size_t bytes = (size_t)LAYER[s].rows * LAYER[s].k * 2;
            CHECK(cudaMalloc(&mats[c][s], bytes));
            CHECK(cudaMemset(mats[c][s], 0x3c + c + s, bytes));
        }
    cudaStream_t st;
    CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    // The ceiling: the grid pattern over one large buffer (2 GiB).
    void *big;
    const size_t big_bytes = (size_t)2 << 30;
    CHECK(cudaMalloc(&big, big_bytes));
    CHECK(cudaMemset(big, 1, big_bytes));
    cudaGraph_t g;
    cudaGraphExec_t ge;
    CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    read_grid<8><<<sms * per_sm_grid, 256, 0, st>>>((const uint4 *)big, big_bytes / 16, sink);
    CHECK(cudaStreamEndCapture(st, &g));
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    time_graph(ge, st);
    const double ceiling = big_bytes / (time_graph(ge, st) * 1e-3) / 1e9;
    printf("%s, %d SMs; blocks an SM: grid %d, rows/4 %d, rows/8 %d\n", prop.name, sms, per_sm_grid, per_sm_rows4,
           per_sm_rows8);
    printf("streaming read of 2 GiB (grid pattern, one kernel): %.0f GB/s\n\n", ceiling);
    printf("| reads | grid | rows, 4 loads | rows, 8 loads |\n|---|---:|---:|---:|\n");
    for (int which = -1; which < N_SHAPES; which++) {
        const int reps = which < 0 ? 32 : 64;
        if (which < 0)
            printf("| decode step: 32 x (qkv, o, gate+up, down) |");
        else
            printf("| %s alone (%d x %.1f MB) |", LAYER[which].name, reps,
                   (double)LAYER[which].rows * LAYER[which].k * 2 / 1e6);
        for (int pattern = 0; pattern < 3; pattern++) {
            double bytes;
            cudaGraphExec_t e = capture(pattern, which, reps, mats, sink, st, &bytes);
            time_graph(e, st); // warm-up
            const float ms = time_graph(e, st);
            const double gbps = bytes / (ms * 1e-3) / 1e9;
            printf(" %.0f GB/s (%.1f%%, %.1f us a kernel) |", gbps, 100.0 * gbps / ceiling,
                   ms * 1e3 / (which < 0 ? reps * N_SHAPES : reps));
            CHECK(cudaGraphExecDestroy(e));
        }
        printf("\n");
    }
    return 0;
}
