// kiln bench --gpu-suite: the GPU workloads of the performance goals, each
// printed as an absolute figure and as a fraction of the card's own ceilings
// (streaming-read bandwidth, cuBLASLt BF16 GEMM rate) measured in the same run.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_gpu.h"
#include "cli/cli.h"


#define DECODE_STEPS 128
#define BATCH_STEPS 64

// KV bytes attention reads for one token at context ctx (f16 K and V).
static double kv_bytes_per_token(const kiln_model_info *hp, double ctx) {
    return 2.0 * hp->n_layers * ctx * hp->n_kv_heads * hp->head_dim * 2.0;
}

// FLOPs of a causal prefill of n tokens from position 0: matrix products
// (2 per weight element per token; the logits for the last token only) plus
// attention (QK^T and PV: 4 * head_dim per head per visible position).
static double prefill_flops(const kiln_model_info *hp, int n) {
    double q = (double)hp->n_heads * hp->head_dim, kv = (double)hp->n_kv_heads * hp->head_dim;
    double per_layer = hp->dim * (q + 2 * kv) + q * hp->dim + 3.0 * hp->dim * hp->ffn_dim;
    double matmul = 2.0 * n * per_layer * hp->n_layers + 2.0 * hp->dim * hp->vocab;
    double visible = (double)n * (n + 1) / 2.0;
    return matmul + 4.0 * hp->n_layers * hp->n_heads * hp->head_dim * visible;
}

typedef struct ceilings {
    double read_gbps, copy_gbps, gemm_tflops;
} ceilings;

static bool measure_ceilings(const kiln_model *m, ceilings *c) {
    memset(c, 0, sizeof *c);
    kiln_device_ceilings k;
    if (kiln_device_measure_ceilings(m, &k) != KILN_OK) {
        fprintf(stderr, "kiln bench: %s\n", kiln_last_error());
        return false;
    }
    *c = (ceilings){k.read_gbps, k.copy_gbps, k.gemm_bf16_tflops};
    return true;
}

// Decode at batch 1: a prompt of ctx tokens, then DECODE_STEPS greedy steps
// sampled on the device (the real generation loop).
// "81.2%", or "  n/a" when the ceiling was not measured.
static const char *fraction(char buf[16], double value, double ceiling) {
    if (ceiling > 0)
        snprintf(buf, 16, "%5.1f%%", 100.0 * value / ceiling);
    else
        snprintf(buf, 16, "  n/a");
    return buf;
}

static bool bench_decode(kiln_model *m, const int32_t *ids, int ctx, int reps, const ceilings *c, double w_bytes) {
    kiln_session *s = NULL;
    if (kiln_session_create(m, ctx + DECODE_STEPS + 1, &s) != KILN_OK) return false;
    kiln_sampling_params greedy = kiln_sampling_default();
    greedy.temperature = 0.0f;
    double times[16];
    for (int r = 0; r < reps; r++) {
        kiln_session_reset(s);
        int32_t id;
        if (kiln_session_eval(s, ids, (size_t)ctx, NULL) != KILN_OK || kiln_session_sync(s) != KILN_OK) goto fail;
        double t0 = kiln_now_seconds();
        for (int i = 0; i < DECODE_STEPS; i++)
            if (kiln_session_sample(s, &greedy, &id) != KILN_OK || kiln_session_eval(s, &id, 1, NULL) != KILN_OK)
                goto fail;
        times[r] = kiln_now_seconds() - t0;
    }
    double t = cli_median(times, reps) / DECODE_STEPS;
    kiln_model_info info;
    kiln_model_get_info(m, &info);
    double bytes = w_bytes + kv_bytes_per_token(&info, ctx + DECODE_STEPS / 2.0);
    double gbps = bytes / t / 1e9;
    char of[16];
    printf("| decode b1 ctx %-5d | %9.1f tok/s | %7.1f GB/s | %s of read bw | %.3f ms/token |\n", ctx, 1.0 / t, gbps,
           fraction(of, gbps, c->read_gbps), t * 1e3);
    kiln_session_free(s);
    return true;
fail:
    fprintf(stderr, "kiln bench: decode at %d failed: %s\n", ctx, kiln_last_error());
    kiln_session_free(s);
    return false;
}

static bool bench_prefill(kiln_model *m, const int32_t *ids, int n, int reps, const ceilings *c) {
    kiln_session *s = NULL;
    if (kiln_session_create(m, n, &s) != KILN_OK) return false;
    double times[16];
    for (int r = 0; r < reps; r++) {
        kiln_session_reset(s);
        double t0 = kiln_now_seconds();
        // eval only queues the work on a GPU: wait for it inside the timing.
        if (kiln_session_eval(s, ids, (size_t)n, NULL) != KILN_OK || kiln_session_sync(s) != KILN_OK) {
            fprintf(stderr, "kiln bench: prefill %d failed: %s\n", n, kiln_last_error());
            kiln_session_free(s);
            return false;
        }
        times[r] = kiln_now_seconds() - t0;
    }
    kiln_model_info info;
    kiln_model_get_info(m, &info);
    double t = cli_median(times, reps), tflops = prefill_flops(&info, n) / t / 1e12;
    char of[16];
    printf("| prefill %-5d       | %9.1f tok/s | %7.1f TFLOP/s | %s of GEMM rate | %.1f ms |\n", n, n / t, tflops,
           fraction(of, tflops, c->gemm_tflops), t * 1e3);
    kiln_session_free(s);
    return true;
}

// Batched decode through the engine: n_seqs sequences each prefilled with
// ctx tokens, then BATCH_STEPS steps of one token per sequence.
static bool bench_batched(kiln_model *m, const int32_t *ids, int n_seqs, int ctx, int reps) {
    kiln_engine *e = NULL;
    const kiln_engine_options o = {.max_seqs = n_seqs, .max_seq_len = ctx + BATCH_STEPS * reps + 1};
    int32_t pos[4096], seq[4096], step_ids[4096];
    double times[16];
    if (n_seqs > 4096 || kiln_engine_create(m, &o, &e) != KILN_OK) goto fail;
    kiln_engine_options got;
    kiln_engine_get_options(e, &got);
    for (int s = 0; s < n_seqs; s++)
        for (int done = 0; done < ctx;) {
            const int chunk = ctx - done < got.max_step_tokens ? ctx - done : got.max_step_tokens;
            int32_t *p = malloc(sizeof(int32_t) * (size_t)chunk * 2);
            if (!p) goto fail;
            for (int i = 0; i < chunk; i++) p[i] = done + i, p[chunk + i] = s;
            const kiln_batch b = {.n_tokens = chunk, .tokens = ids + s + done, .pos = p, .seq = p + chunk};
            const kiln_status st = kiln_engine_step(e, &b);
            free(p);
            if (st != KILN_OK) goto fail;
            done += chunk;
        }
    if (kiln_engine_sync(e) != KILN_OK) goto fail;
    bool all[4096];
    for (int s = 0; s < n_seqs; s++) seq[s] = s, all[s] = true;
    for (int r = 0; r < reps; r++) {
        double t0 = kiln_now_seconds();
        for (int i = 0; i < BATCH_STEPS; i++) {
            for (int s = 0; s < n_seqs; s++) step_ids[s] = ids[(s + i) % ctx], pos[s] = kiln_engine_seq_length(e, s);
            const kiln_batch b = {.n_tokens = n_seqs, .tokens = step_ids, .pos = pos, .seq = seq, .logits = all};
            if (kiln_engine_step(e, &b) != KILN_OK) goto fail;
        }
        if (kiln_engine_sync(e) != KILN_OK) goto fail;
        times[r] = kiln_now_seconds() - t0;
    }
    double t = cli_median(times, reps) / BATCH_STEPS;
    printf("| batched decode %-3d  | %9.1f tok/s | %.3f ms/step (context %d) |\n", n_seqs, n_seqs / t, t * 1e3, ctx);
    kiln_engine_free(e);
    return true;
fail:
    fprintf(stderr, "kiln bench: batched decode of %d failed: %s\n", n_seqs, kiln_last_error());
    kiln_engine_free(e);
    return false;
}

#define WORKLOADS "decode512,decode4096,prefill512,prefill2048,batch8,batch32,batch64"

// Whether the comma-separated list holds the item name[0..len).
static bool list_has(const char *list, const char *name, size_t len) {
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == len && strncmp(p, name, n) == 0) return true;
        if (!end) return false;
        p = end + 1;
    }
}

// Whether workload `name` is in the list `only` (NULL: every one).
static bool selected(const char *only, const char *name) { return !only || list_has(only, name, strlen(name)); }

bool bench_gpu_workload_known(const char *only) {
    if (!*only) return false;
    for (const char *p = only;;) {
        const char *end = strchr(p, ',');
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        if (!list_has(WORKLOADS, p, n)) return false;
        if (!end) return true;
        p = end + 1;
    }
}

int bench_gpu_suite(kiln_model *m, const char *path, int reps, const char *only, bool want_ceilings) {
    if (reps > 16) reps = 16;
    kiln_model_info info;
    kiln_model_get_info(m, &info);
    const kiln_model_info *hp = &info;
    ceilings c;
    memset(&c, 0, sizeof c);
    // Profiling runs skip the ceilings (their kernels would shift the launch
    // counts the profiler skips); fractions then print as n/a.
    bool have_ceilings = want_ceilings && measure_ceilings(m, &c);
    kiln_memory_info mem;
    kiln_model_memory(m, 4096 + DECODE_STEPS + 1, &mem);
    const double gib = 1u << 30;
    printf("kiln bench --gpu-suite: %s on %s\n", path, kiln_model_device(m));
    printf("geometry: %d layers, hidden %d, ffn %d, %d heads, %d kv heads, vocab %d\n", hp->n_layers, hp->dim,
           hp->ffn_dim, hp->n_heads, hp->n_kv_heads, hp->vocab);
    printf("memory: weights %.2f GiB, KV cache %.2f GiB (context %d, f16), workspace %.2f GiB; device %.1f of %.1f "
           "GiB free\n",
           mem.weights / gib, mem.kv_cache / gib, 4096 + DECODE_STEPS + 1, mem.workspace / gib, mem.device_free / gib,
           mem.device_total / gib);
    if (have_ceilings)
        printf("ceilings: streaming read %.0f GB/s, device copy %.0f GB/s (read + write), cuBLASLt BF16 GEMM %.1f "
               "TFLOP/s\n",
               c.read_gbps, c.copy_gbps, c.gemm_tflops);
    const int max_ids = 4096 + 64;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)max_ids);
    if (!ids) return 1;
    cli_fill_tokens(ids, max_ids, hp->vocab);
    const double w_bytes = (double)kiln_model_decode_read_bytes(m);
    printf("weights read per token: %.2f GB\n\n| workload | throughput | rate | of ceiling | time |\n|---|---|---|---|---|\n",
           w_bytes / 1e9);
    fflush(stdout);
    bool ok = true;
    static const int decode_ctx[] = {512, 4096}, prefill_n[] = {512, 2048}, batch_n[] = {8, 32, 64};
    char name[32];
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "decode%d", decode_ctx[i]);
        if (selected(only, name)) ok &= bench_decode(m, ids, decode_ctx[i], reps, &c, w_bytes), fflush(stdout);
    }
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "prefill%d", prefill_n[i]);
        if (selected(only, name)) ok &= bench_prefill(m, ids, prefill_n[i], reps, &c), fflush(stdout);
    }
    for (int i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "batch%d", batch_n[i]);
        if (selected(only, name)) ok &= bench_batched(m, ids, batch_n[i], 512, reps), fflush(stdout);
    }
    free(ids);
    return ok ? 0 : 1;
}
