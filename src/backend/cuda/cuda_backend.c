// The CUDA backend: one stream per backend, device memory from cudaMalloc,
// kiln's kernels for everything but the large dense products (cuBLASLt).
// Operations only enqueue work; failures are kept and reported by sync().
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"
#include "backend/cuda/cuda_kernels.h"

#define LT_WORKSPACE_BYTES (32u << 20)

static void cuda_destroy(kiln_backend *be) {
    cuda_impl *c = cuda_of(be);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream) cudaStreamSynchronize(c->stream);
        cuda_staging_free(c);
        cuda_scratch *scratch[] = {&c->gemm_input,         &c->gemm_trial, &c->attention_ws,
                                   &c->attention_counters, &c->sample_ws,  &c->norm_buf,
                                   &c->prep_x,             &c->prep_ss};
        for (size_t i = 0; i < sizeof scratch / sizeof scratch[0]; i++) cuda_scratch_release(scratch[i]);
        cuda_scratch_free_retired(c);
        cuda_rope_tables_free(c);
        if (c->sampled) cudaFree(c->sampled);
        if (c->sampled_host) cudaFreeHost(c->sampled_host);
        if (c->sampled_ready) cudaEventDestroy(c->sampled_ready);
        cuda_gemm_cache_free(c->gemm_cache);
        if (c->lt_workspace) cudaFree(c->lt_workspace);
        if (c->lt) cublasLtDestroy(c->lt);
        if (c->upload) cudaStreamDestroy(c->upload);
        if (c->stream) cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

// Sizes are prefixed so that free() can keep the count of bytes in use.
#define ALLOC_HEADER 256

static void *cuda_alloc(kiln_backend *be, size_t bytes) {
    cuda_impl *c = cuda_of(be);
    char *p = NULL;
    if (bytes > SIZE_MAX - ALLOC_HEADER || cudaMalloc((void **)&p, bytes + ALLOC_HEADER) != cudaSuccess) {
        cudaGetLastError(); // an allocation failure is reported by the NULL, not later
        return NULL;
    }
    size_t header = bytes;
    // Zeroed before anything else (the weight upload uses another stream).
    if (cudaMemcpy(p, &header, sizeof header, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemsetAsync(p + ALLOC_HEADER, 0, bytes, c->stream) != cudaSuccess ||
        cudaStreamSynchronize(c->stream) != cudaSuccess) {
        cudaFree(p);
        return NULL;
    }
    c->allocated += bytes;
    return p + ALLOC_HEADER;
}

static void cuda_free(kiln_backend *be, void *ptr) {
    cuda_impl *c = cuda_of(be);
    if (!ptr) return;
    char *p = (char *)ptr - ALLOC_HEADER;
    size_t bytes = 0;
    cudaStreamSynchronize(c->stream); // kernels queued before may still use it
    if (cudaMemcpy(&bytes, p, sizeof bytes, cudaMemcpyDeviceToHost) == cudaSuccess) c->allocated -= bytes;
    cudaFree(p);
}

static void cuda_get_rows(kiln_backend *be, const kiln_tensor *table, const int32_t *ids, int n, float *out) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, kiln_cuda_get_rows(c->stream, table->data, kiln_cuda_type_of(table->dtype), (int)table->ne[0],
                                    (int)table->ne[1], ids, n,
                                    out),
              "get_rows");
}

static void cuda_attention(kiln_backend *be, const kiln_kv_view *kv, kiln_kv_layer layer,
                           const kiln_batch_layout *batch, const float *q, int n_heads, float scale, float *out) {
    cuda_impl *c = cuda_of(be);
    kiln_cuda_attention_args a = {
        .kv = {.k = layer.k, .v = layer.v, .block_tables = kv->block_tables,
               .max_blocks_per_seq = kv->max_blocks_per_seq, .block_size = kv->block_size,
               .n_kv_heads = kv->n_kv_heads, .head_dim = kv->head_dim},
        .n_tokens = batch->n_tokens, .pos = batch->pos, .seq = batch->seq, .q = q, .out = out, .n_heads = n_heads,
        .scale = scale};
    // A prompt chunk of one sequence goes to the tensor-core kernel; single
    // tokens (decode, batched decode) to the split-K one.
    if (batch->one_seq && batch->n_tokens > 1) {
        cuda_note(c, kiln_cuda_attention_prefill(c->stream, &a), "attention prefill");
        return;
    }
    size_t ws = kiln_cuda_attention_decode_workspace(batch->n_tokens, n_heads, kv->head_dim, kv->max_blocks_per_seq);
    const size_t counter_bytes = kiln_cuda_attention_decode_counters(batch->n_tokens, n_heads);
    const void *counters_before = c->attention_counters.ptr;
    if (!cuda_scratch_reserve(c, &c->attention_ws, ws) ||
        !cuda_scratch_reserve(c, &c->attention_counters, counter_bytes)) {
        cuda_note(c, cudaErrorMemoryAllocation, "attention workspace");
        return;
    }
    // New counters start at zero (growth never happens inside a capture).
    if (c->attention_counters.ptr != counters_before)
        cuda_note(c,
                  kiln_cuda_attention_decode_counters_clear(c->stream, c->attention_counters.ptr,
                                                             c->attention_counters.bytes),
                  "attention counters");
    a.counters = c->attention_counters.ptr;
    cuda_note(c, kiln_cuda_attention_decode(c->stream, &a, c->attention_ws.ptr), "attention decode");
}

static void cuda_copy(kiln_backend *be, void *dst, const void *src, size_t n) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, c->stream), "copy");
}

static void cuda_to_host(kiln_backend *be, void *dst, const void *src, size_t n) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream), "to_host");
    cuda_note(c, cudaStreamSynchronize(c->stream), "to_host");
}

static void cuda_from_host(kiln_backend *be, void *dst, const void *src, size_t n) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream), "from_host");
}

static kiln_status report(cuda_impl *c) {
    if (c->error == cudaSuccess) return KILN_OK;
    cudaError_t e = c->error;
    c->error = cudaSuccess;
    if (c->gemm_error && strstr(c->error_where, "cublasLt")) {
        const char *lt = c->gemm_error;
        c->gemm_error = NULL;
        return kiln_fail(KILN_ERR_IO, "cuda: %s failed: %s", c->error_where, lt);
    }
    return kiln_fail(KILN_ERR_IO, "cuda: %s failed: %s", c->error_where, cudaGetErrorString(e));
}

static kiln_status cuda_sync(kiln_backend *be) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaStreamSynchronize(c->stream), "a queued kernel");
    return report(c);
}

static kiln_status cuda_check(kiln_backend *be) { return report(cuda_of(be)); }

static void cuda_memory(kiln_backend *be, kiln_backend_memory *out) {
    cuda_impl *c = cuda_of(be);
    size_t free_bytes = 0, total = 0;
    cudaMemGetInfo(&free_bytes, &total);
    *out = (kiln_backend_memory){.weights = c->weight_bytes, .in_use = c->allocated, .free = free_bytes,
                                 .total = total};
}

static kiln_status cuda_sample_start(kiln_backend *be, const float *logits, int vocab,
                                     const kiln_backend_sample_args *a, int32_t *dev_id) {
    cuda_impl *c = cuda_of(be);
    if (!cuda_scratch_reserve(c, &c->sample_ws, kiln_cuda_sample_workspace(vocab)))
        return kiln_fail(KILN_ERR_NOMEM, "cuda: cannot allocate the sampler's workspace");
    kiln_cuda_sample_params p = {.temperature = a->temperature, .top_k = a->top_k, .top_p = a->top_p,
                                 .min_p = a->min_p, .u = a->u, .portable = c->portable};
    cuda_note(c, kiln_cuda_sample(c->stream, logits, vocab, &p, c->sample_ws.ptr, c->sampled), "sample");
    cuda_note(c, cudaMemcpyAsync(c->sampled_host, c->sampled, sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream),
              "sample");
    cuda_note(c, cudaEventRecord(c->sampled_ready, c->stream), "sample");
    if (dev_id)
        cuda_note(c, cudaMemcpyAsync(dev_id, c->sampled, sizeof(int32_t), cudaMemcpyDeviceToDevice, c->stream),
                  "sample");
    return report(c);
}

static kiln_status cuda_sample_finish(kiln_backend *be, int32_t *id) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaEventSynchronize(c->sampled_ready), "sample");
    kiln_status st = report(c);
    *id = *c->sampled_host;
    if (st == KILN_OK && *id < 0)
        return kiln_fail(KILN_ERR_FORMAT, "the model produced non-finite logits (NaN or infinity): its weights are "
                                          "likely corrupt");
    return st;
}

static kiln_status cuda_sample(kiln_backend *be, const float *logits, int vocab, const kiln_backend_sample_args *a,
                               int32_t *id) {
    kiln_status st = cuda_sample_start(be, logits, vocab, a, NULL);
    return st != KILN_OK ? st : cuda_sample_finish(be, id);
}

static kiln_status cuda_graph_begin(kiln_backend *be) {
    cuda_impl *c = cuda_of(be);
    kiln_status st = report(c);
    if (st != KILN_OK) return st;
    cudaError_t e = cudaStreamBeginCapture(c->stream, cudaStreamCaptureModeThreadLocal);
    if (e != cudaSuccess) return kiln_fail(KILN_ERR_IO, "cuda: cannot capture a graph: %s", cudaGetErrorString(e));
    c->capturing = true;
    return KILN_OK;
}

static kiln_status cuda_graph_end(kiln_backend *be, void **out) {
    cuda_impl *c = cuda_of(be);
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    *out = NULL;
    cudaError_t e = cudaStreamEndCapture(c->stream, &graph);
    c->capturing = false;
    kiln_status st = report(c); // a failure during capture (e.g. a workspace that had to grow)
    if (st == KILN_OK && e == cudaSuccess) e = cudaGraphInstantiate(&exec, graph, 0);
    if (graph) cudaGraphDestroy(graph);
    if (st != KILN_OK) return st;
    if (e != cudaSuccess) return kiln_fail(KILN_ERR_IO, "cuda: graph capture failed: %s", cudaGetErrorString(e));
    *out = exec;
    return KILN_OK;
}

static kiln_status cuda_graph_launch(kiln_backend *be, void *graph) {
    cuda_impl *c = cuda_of(be);
    cuda_note(c, cudaGraphLaunch((cudaGraphExec_t)graph, c->stream), "graph launch");
    return report(c);
}

static void cuda_graph_free(kiln_backend *be, void *graph) {
    (void)be;
    if (graph) cudaGraphExecDestroy((cudaGraphExec_t)graph);
}

static bool cuda_supports_head_dim(kiln_backend *be, int head_dim) {
    (void)be;
    return kiln_cuda_attention_supports(head_dim);
}

// The engine's kernel choices. A change of the matrix-vector form forgets
// the forms timed so far (they were timed for the old setting).
static kiln_status cuda_configure(kiln_backend *be, const kiln_kernel_options *k) {
    cuda_impl *c = cuda_of(be);
    if (k->matvec_form < KILN_MATVEC_TIMED || k->matvec_form > KILN_MATVEC_PIPELINED || k->gemm_trial_rounds < 0 ||
        k->gemm_trial_rounds > 8 || k->matvec_max_input_bytes < 0)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "cuda: kernel options out of range (matvec form %d, %d GEMM trial rounds: 0 to 8, matvec "
                         "input bound %d bytes)",
                         (int)k->matvec_form, k->gemm_trial_rounds, k->matvec_max_input_bytes);
    const int pipe = k->matvec_form == KILN_MATVEC_PLAIN ? 0 : k->matvec_form == KILN_MATVEC_PIPELINED ? 1 : -1;
    if (pipe != c->matvec_pipe_mode || k->portable != c->portable) c->n_matvec_choices = 0;
    c->matvec_pipe_mode = pipe;
    c->portable = k->portable;
    c->gemm_trial_rounds = k->gemm_trial_rounds ? k->gemm_trial_rounds : 1;
    c->matvec_x_limit = k->matvec_max_input_bytes ? (size_t)k->matvec_max_input_bytes : KILN_CUDA_MATVEC_X_LIMIT_DEFAULT;
    return KILN_OK;
}

static const char *cuda_describe(kiln_backend *be) { return cuda_of(be)->prop.name; }

static const kiln_device_ops cuda_device = {
    .name = "cuda",
    .describe = cuda_describe,
    .destroy = cuda_destroy,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .supports = cuda_supports,
    .supports_head_dim = cuda_supports_head_dim,
    .weight_bytes = cuda_weight_bytes,
    .weight_load = cuda_weight_load,
    .weights_done = cuda_weights_done,
    .memory = cuda_memory,
    .configure = cuda_configure,
};

static const kiln_stream_ops cuda_stream = {
    .to_host = cuda_to_host,
    .from_host = cuda_from_host,
    .sync = cuda_sync,
    .check = cuda_check,
    .graph_begin = cuda_graph_begin,
    .graph_end = cuda_graph_end,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
};

static const kiln_backend_ops cuda_ops = {
    .get_rows = cuda_get_rows,
    .linear = cuda_linear,
    .mlp = cuda_mlp,
    .rope_kv_store = cuda_rope_kv_store,
    .attention = cuda_attention,
    .copy = cuda_copy,
    .sample = cuda_sample,
    .sample_start = cuda_sample_start,
    .sample_finish = cuda_sample_finish,
    .plan = cuda_plan,
};

int kiln_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

kiln_status kiln_backend_cuda_create(int device, kiln_backend **out) {
    *out = NULL;
    int count = kiln_cuda_device_count();
    if (count == 0) {
        cudaError_t e = cudaGetDeviceCount(&count);
        return kiln_fail(KILN_ERR_UNSUPPORTED, "cuda: no usable GPU (%s); run with --device cpu",
                         e == cudaSuccess ? "no devices" : cudaGetErrorString(e));
    }
    if (device < 0 || device >= count)
        return kiln_fail(KILN_ERR_INVALID_ARG, "cuda: device %d does not exist (%d present)", device, count);
    kiln_backend *be = calloc(1, sizeof *be);
    cuda_impl *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return kiln_fail(KILN_ERR_NOMEM, "cuda backend: out of memory");
    }
    be->device = &cuda_device;
    be->stream = &cuda_stream;
    be->ops = &cuda_ops;
    be->impl = c;
    be->kv_dtype = KILN_F16;
    be->step_tokens = 2048; // matrix-matrix products need many rows to reach the tensor cores' rate
    c->device = device;
    cudaError_t e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaGetDeviceProperties(&c->prop, device);
    if (e == cudaSuccess && c->prop.major < 8) {
        kiln_status st = kiln_fail(KILN_ERR_UNSUPPORTED,
                                   "cuda: %s has compute capability %d.%d; kiln needs 8.0 (Ampere) or later",
                                   c->prop.name, c->prop.major, c->prop.minor);
        cuda_destroy(be);
        return st;
    }
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaStreamCreateWithFlags(&c->upload, cudaStreamNonBlocking);
    if (e == cudaSuccess) e = cudaMalloc(&c->lt_workspace, LT_WORKSPACE_BYTES);
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->sampled, sizeof(int32_t));
    if (e == cudaSuccess) e = cudaMallocHost((void **)&c->sampled_host, sizeof(int32_t));
    if (e == cudaSuccess) e = cudaEventCreateWithFlags(&c->sampled_ready, cudaEventDisableTiming);
    c->lt_workspace_bytes = LT_WORKSPACE_BYTES;
    c->matvec_pipe_mode = -1;
    c->gemm_trial_rounds = 1;
    c->matvec_x_limit = KILN_CUDA_MATVEC_X_LIMIT_DEFAULT;
    if (e != cudaSuccess) {
        cuda_destroy(be);
        return kiln_fail(KILN_ERR_IO, "cuda: cannot set up device %d: %s", device, cudaGetErrorString(e));
    }
    const char *lt_missing = cuda_cublaslt_load();
    if (lt_missing) {
        cuda_destroy(be);
        return kiln_fail(KILN_ERR_UNSUPPORTED, "cuda: %s", lt_missing);
    }
    c->gemm_cache = cuda_gemm_cache_create();
    if (!c->gemm_cache || cublasLtCreate(&c->lt) != CUBLAS_STATUS_SUCCESS) {
        cuda_destroy(be);
        return kiln_fail(KILN_ERR_IO, "cuda: cannot create a cuBLASLt handle");
    }
    *out = be;
    return KILN_OK;
}
