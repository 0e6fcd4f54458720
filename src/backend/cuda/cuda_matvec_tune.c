// Which one-token matrix-vector form runs each product shape: pipelined rounds
// (each round's loads go out before the previous round's arithmetic) or plain
// rounds (more blocks an SM; twice the loads a round for one-row products).
// The card decides: on one H200 pipelining gained 5.7% of decode, on an H100
// and another H200 it lost 2.8% and 4.5% (2026-11-26). Both forms add each lane's chunks in the same
// order, so they give bitwise-identical results and the choice can follow
// the clock alone. Each shape is timed once, on its first uncaptured call (a
// session's first decode step runs uncaptured), on the real weights, every
// run after an L2 flush so that no run finds the weights of the one before.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_impl.h"

#define TUNE_RUNS 15     // per form, alternating; the median counts
#define PIPE_MARGIN 0.97f // pipelined must take under 97% of plain rounds' time

static bool same_shape(const cuda_matvec_choice *ch, const kiln_cuda_matvec_args *a) {
    if (ch->type != a->type || ch->k != a->k || ch->count != a->count || ch->glu != a->glu ||
        ch->rope != a->has_rope || ch->norm != (a->norm != NULL) || ch->accumulate != a->accumulate ||
        ch->prepared != (a->ss != NULL) || ch->prepares != (a->next_x != NULL))
        return false;
    for (int i = 0; i < a->count; i++)
        if (ch->rows[i] != a->rows[i]) return false;
    return true;
}

static float median(float *v, int n) {
    for (int i = 1; i < n; i++) // insertion sort: n is tiny
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            const float t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return v[n / 2];
}

// Median microseconds of each form (us[0]: plain rounds, us[1]: pipelined);
// false when the timing could not be done.
static bool time_forms(cuda_impl *c, const kiln_cuda_matvec_args *a, float us[2]) {
    // Outputs into scratch: an accumulating product must not add twice. The
    // RoPE form also stores k and v into the cache slot of the token's
    // position, and a producing product its next_x and next_ss: the real call
    // stores them again next.
    size_t out_floats = 0;
    for (int i = 0; i < a->count; i++) out_floats += (size_t)a->rows[i];
    // The flush reads twice L2 of clean data: none of the weights stay, and
    // nothing is written back during the timed run (a memset's dirty lines
    // would be, which the real step never does).
    const size_t flush_bytes = 2 * (size_t)(c->prop.l2CacheSize > 0 ? c->prop.l2CacheSize : 64 << 20);
    void *out = NULL, *flush = NULL;
    if (cudaMalloc(&out, sizeof(float) * out_floats) != cudaSuccess ||
        cudaMalloc(&flush, flush_bytes) != cudaSuccess ||
        cudaMemsetAsync(flush, 0, flush_bytes, c->stream) != cudaSuccess) {
        cudaFree(out);
        cudaFree(flush);
        (void)cudaGetLastError(); // an allocation failure here is not the step's error
        return false;
    }
    kiln_cuda_matvec_args trial = *a;
    size_t offset = 0;
    for (int i = 0; i < a->count; i++) {
        trial.y[i] = (float *)out + offset;
        offset += (size_t)a->rows[i];
    }
    cudaEvent_t ev[2][TUNE_RUNS][2];
    int made = 0;
    bool ok = true;
    for (int f = 0; f < 2 && ok; f++)
        for (int r = 0; r < TUNE_RUNS && ok; r++)
            for (int e = 0; e < 2 && ok; e++, made++) ok = cudaEventCreate(&ev[f][r][e]) == cudaSuccess;
    for (int r = 0; r < TUNE_RUNS && ok; r++)
        for (int f = 0; f < 2 && ok; f++) {
            trial.pipe = f == 1;
            ok = kiln_cuda_read_through(c->stream, flush, flush_bytes, out) == cudaSuccess &&
                 cudaEventRecord(ev[f][r][0], c->stream) == cudaSuccess &&
                 kiln_cuda_matvec(c->stream, &trial) == cudaSuccess &&
                 cudaEventRecord(ev[f][r][1], c->stream) == cudaSuccess;
        }
    ok = ok && cudaStreamSynchronize(c->stream) == cudaSuccess;
    for (int f = 0; f < 2 && ok; f++) {
        float runs[TUNE_RUNS];
        for (int r = 0; r < TUNE_RUNS && ok; r++)
            ok = cudaEventElapsedTime(&runs[r], ev[f][r][0], ev[f][r][1]) == cudaSuccess;
        if (ok) us[f] = 1000.0f * median(runs, TUNE_RUNS);
    }
    for (int i = 0; i < made; i++) cudaEventDestroy((&ev[0][0][0])[i]);
    cudaFree(out);
    cudaFree(flush);
    return ok;
}

bool cuda_tune_log(void) {
    static int enabled = -1;
    if (enabled < 0) {
        const char *env = getenv("KILN_CUDA_TUNE_LOG");
        enabled = env && strcmp(env, "1") == 0;
    }
    return enabled;
}

static void log_choice(const kiln_cuda_matvec_args *a, const float us[2], bool timed, bool pipe) {
    if (!cuda_tune_log()) return;
    int rows = 0;
    for (int i = 0; i < a->count; i++) rows += a->rows[i];
    const char *what = a->glu ? "swiglu" : a->has_rope ? "qkv+rope" : a->accumulate ? "residual" : "plain";
    const char *norm = a->norm ? "+norm" : a->ss ? "+prepared norm" : a->next_x ? "+next norm" : "";
    if (timed)
        fprintf(stderr, "kiln cuda: matvec %s%s k %d rows %d: plain rounds %.1f us, pipelined %.1f us -> %s\n", what,
                norm, a->k, rows, us[0], us[1], pipe ? "pipelined" : "plain rounds");
    else
        fprintf(stderr, "kiln cuda: matvec %s%s k %d rows %d: not timed -> %s\n", what, norm, a->k, rows,
                pipe ? "pipelined" : "plain rounds");
}

bool cuda_matvec_pipe_for(cuda_impl *c, const kiln_cuda_matvec_args *a) {
    if (a->n_tokens != 1) return false; // only one token has the pipelined form
    if (c->matvec_pipe_mode >= 0) return c->matvec_pipe_mode == 1;
    for (int i = 0; i < c->n_matvec_choices; i++)
        if (same_shape(&c->matvec_choices[i], a)) return c->matvec_choices[i].pipe;
    // Untimed (inside a capture, the table full, or an error pending): plain
    // rounds, which the whole decode step ran fastest with on both cards.
    if (c->capturing || c->n_matvec_choices == CUDA_MATVEC_CHOICES || c->error != cudaSuccess) return false;
    float us[2] = {0, 0};
    const bool timed = time_forms(c, a, us);
    // Plain rounds unless pipelining clearly wins: on near-ties alone, the
    // full decode step ran as fast or faster with plain rounds on both cards
    // measured (H100 and H200, 2026-11-26).
    const bool pipe = timed && us[1] < PIPE_MARGIN * us[0];
    cuda_matvec_choice *ch = &c->matvec_choices[c->n_matvec_choices++];
    memset(ch, 0, sizeof *ch);
    ch->type = a->type;
    ch->k = a->k;
    ch->count = a->count;
    for (int i = 0; i < a->count; i++) ch->rows[i] = a->rows[i];
    ch->glu = a->glu;
    ch->rope = a->has_rope;
    ch->norm = a->norm != NULL;
    ch->accumulate = a->accumulate;
    ch->prepared = a->ss != NULL;
    ch->prepares = a->next_x != NULL;
    ch->pipe = pipe;
    log_choice(a, us, timed, pipe);
    return pipe;
}
