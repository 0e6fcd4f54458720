// The public API's measuring side (kiln bench): clocks, threads, the
// device's ceilings and what a decode step reads.
#include <string.h>
#include <time.h>

#include "backend/cpu/cpu_matmul.h"
#include "backend/cpu/cpu_ops.h"
#include "runtime/engine.h"
#ifdef KILN_HAVE_CUDA
#include "backend/cuda/cuda_ceilings.h"
#endif

double kiln_now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int kiln_model_threads(const kiln_model *m) {
    return m->be && strcmp(m->be->device->name, "cpu") == 0 ? kiln_cpu_threads(m->be) : 0;
}

const char *kiln_cpu_kernels(void) { return kiln_cpu_simd_name(); }

kiln_status kiln_device_measure_ceilings(const kiln_model *m, kiln_device_ceilings *out) {
    memset(out, 0, sizeof *out);
#ifdef KILN_HAVE_CUDA
    if (m->be && strcmp(m->be->device->name, "cuda") == 0) {
        kiln_cuda_ceilings k;
        cudaError_t e = kiln_cuda_measure_ceilings(&k);
        if (e != cudaSuccess)
            return kiln_fail(KILN_ERR_IO, "measuring the GPU's ceilings failed: %s", cudaGetErrorString(e));
        *out = (kiln_device_ceilings){k.read_gbps, k.copy_gbps, k.gemm_bf16_tflops};
        return KILN_OK;
    }
#endif
    return kiln_fail(KILN_ERR_UNSUPPORTED, "ceilings are measured on a GPU; the model is on the %s",
                     kiln_model_device(m));
}

uint64_t kiln_model_decode_read_bytes(const kiln_model *m) {
    const kiln_hparams *hp = &m->llm->hp;
    const uint64_t table = m->weights.w.tok_embd.nbytes, row = hp->vocab ? table / (uint64_t)hp->vocab : 0;
    const uint64_t total = m->weights.bytes ? m->weights.bytes : kiln_llm_weight_bytes(m->llm);
    // A tied output matrix is the embedding table, read whole by the logits.
    return hp->tied_embeddings ? total : total - table + row;
}
