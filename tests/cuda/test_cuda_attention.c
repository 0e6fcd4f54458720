// Paged attention kernels (cuda_attention.cu) against a float64 reference
// computed on the host from the same f16 cache values. The cache's blocks are
// handed out in shuffled order to several sequences; every slot a kernel must
// not read (past a sequence's end, table entries past its blocks) holds NaN,
// and outputs are NaN-filled before each run, so a wrong index, a read past
// the end or an unwritten output shows up as NaN or a large error. The decode
// workspace is cleared once (its counters must start at zero) and then holds
// the partials of an earlier launch with other queries, so reading a partial
// this launch did not write shows up as a large error.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/cuda/cuda_kernels.h"
#include "cuda/cuda_test_util.h"

enum { BLOCK_SIZE = 16, SPARE_BLOCKS = 3 }; // the engine's block size; some cases use others
#define F16_NAN 0x7e00u

// Relative L2 error allowed per case: the f16 roundings below are ~5e-4
// relative to the outputs.
#define MAX_REL_L2 5e-3
// Both kernels feed the tensor cores f16 and accumulate in float32. They round
// (a) P to f16 before P.V: each weight off by <= 2^-11 relative, and the
// output is a convex combination of |v| <= 1, so <= 4.9e-4;
// (b) q (times scale) to f16: each logit moves by scale * sum_d dq_d k_d with
// |dq_d| <= 2^-11 |q_d|, standard deviation about scale * 2^-11 / sqrt(3) *
// sqrt(sum_d q_d^2 k_d^2) = 2^-11 / sqrt(3) * 2/3 = 1.9e-4 for |q| <= 2,
// |k| <= 1 (independent of head_dim), and an output moves by at most that
// times max |v_j - v_i|, which stays below ~5 sigma = 1e-3 over a case.
// 4.9e-4 + 1e-3 < 2e-3. (A wrong or missing position moves outputs by ~1e-2
// at short contexts and the relative L2 error by > 1e-2 at 3000 positions.)
#define MAX_ABS_ERR 2e-3
#define Q_RANGE 2.0f

typedef struct geometry {
    int head_dim, n_heads, n_kv_heads;
} geometry;

static const geometry SMOLLM = {64, 9, 3};    // SmolLM2-135M
static const geometry LLAMA8B = {128, 32, 8}; // Llama 3 8B
static const geometry WIDE_GROUP = {64, 40, 2}; // 20 query heads per kv head

// ---- f16 on the host --------------------------------------------------------

static uint16_t half_from_float(float f) {
    uint32_t x;
    memcpy(&x, &f, sizeof x);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | (ax > 0x7f800000u ? F16_NAN : 0x7c00u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); // rounds past 65504
    if (ax < 0x38800000u) {                                   // below 2^-14: subnormal, units of 2^-24
        float a;
        memcpy(&a, &ax, sizeof a);
        return (uint16_t)(sign | (uint32_t)lrintf(a * 16777216.0f)); // exact scaling, nearest even
    }
    uint32_t h = ((((ax >> 23) - 127 + 15) << 10) | ((ax & 0x7fffffu) >> 13));
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; // nearest even; a carry bumps the exponent
    return (uint16_t)(sign | h);
}

static float half_to_float(uint16_t h) {
    const int exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    float f;
    if (exp == 0) f = ldexpf((float)mant, -24);
    else if (exp == 31) f = mant ? NAN : INFINITY;
    else f = ldexpf((float)(mant | 0x400), exp - 25);
    return (h & 0x8000u) ? -f : f;
}

static void test_half_conversion(void **state) {
    (void)state;
    assert_int_equal(half_from_float(1.0f), 0x3c00);
    assert_int_equal(half_from_float(-2.0f), 0xc000);
    assert_int_equal(half_from_float(65504.0f), 0x7bff);
    assert_int_equal(half_from_float(0x1.0p-24f), 0x0001);
    assert_int_equal(half_from_float(1.0f + 0x1.0p-11f), 0x3c00); // tie: to even
    assert_int_equal(half_from_float(1.0f + 0x1.8p-11f), 0x3c01);
    uint64_t rng = 99;
    for (int i = 0; i < 100000; i++) {
        const float f = kiln_test_rand_f(&rng) * 4.0f, back = half_to_float(half_from_float(f));
        assert_true(fabsf(back - f) <= fabsf(f) * 0x1.0p-11f + 0x1.0p-25f);
    }
}

// ---- a paged cache with shuffled blocks -------------------------------------

typedef struct cache {
    geometry g;
    int block_size;
    int n_seqs, max_blocks, n_blocks, poison_block;
    int *len;       // positions of each sequence that hold data
    int32_t *table; // [n_seqs][max_blocks]
    uint16_t *k, *v;
    void *dk, *dv;
    int32_t *dtable;
} cache;

static size_t slot_elems(const geometry *g) { return (size_t)g->n_kv_heads * g->head_dim; }

// Sequence s gets len[s] positions of random data in blocks drawn from a
// shuffled pool. Slots past a sequence's length and table entries past its
// blocks (they point at an all-NaN block) must never be read.
static cache cache_create(geometry g, int bs, const int *len, int n_seqs, int max_blocks, uint64_t *rng) {
    cache c = {.g = g, .block_size = bs, .n_seqs = n_seqs, .max_blocks = max_blocks};
    int needed = 0;
    for (int s = 0; s < n_seqs; s++) {
        const int nb = (len[s] + bs - 1) / bs;
        assert_true(nb <= max_blocks);
        needed += nb;
    }
    c.n_blocks = needed + 1 + SPARE_BLOCKS;
    int *perm = malloc(sizeof(int) * c.n_blocks);
    assert_non_null(perm);
    for (int i = 0; i < c.n_blocks; i++) perm[i] = i;
    for (int i = c.n_blocks - 1; i > 0; i--) {
        const int j = (int)(kiln_test_rand_u64(rng) % (uint64_t)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    c.poison_block = perm[0];
    const size_t elems = (size_t)c.n_blocks * bs * slot_elems(&g);
    c.k = malloc(elems * sizeof(uint16_t));
    c.v = malloc(elems * sizeof(uint16_t));
    c.len = malloc(sizeof(int) * n_seqs);
    c.table = malloc(sizeof(int32_t) * (size_t)n_seqs * max_blocks);
    assert_true(c.k && c.v && c.len && c.table);
    for (size_t i = 0; i < elems; i++) {
        c.k[i] = half_from_float(kiln_test_rand_f(rng));
        c.v[i] = half_from_float(kiln_test_rand_f(rng));
    }
    const size_t block_elems = (size_t)bs * slot_elems(&g);
    for (size_t i = 0; i < block_elems; i++)
        c.k[(size_t)c.poison_block * block_elems + i] = c.v[(size_t)c.poison_block * block_elems + i] = F16_NAN;
    int next = 1;
    for (int s = 0; s < n_seqs; s++) {
        c.len[s] = len[s];
        const int nb = (len[s] + bs - 1) / bs;
        for (int b = 0; b < max_blocks; b++) c.table[(size_t)s * max_blocks + b] = b < nb ? perm[next++] : c.poison_block;
        for (int p = len[s]; p < nb * bs; p++) { // the tail of the last block
            const size_t slot = (size_t)c.table[(size_t)s * max_blocks + p / bs] * bs + p % bs;
            for (size_t i = 0; i < slot_elems(&g); i++)
                c.k[slot * slot_elems(&g) + i] = c.v[slot * slot_elems(&g) + i] = F16_NAN;
        }
    }
    free(perm);
    CUDA_CHECK(cudaMalloc(&c.dk, elems * sizeof(uint16_t)));
    CUDA_CHECK(cudaMalloc(&c.dv, elems * sizeof(uint16_t)));
    CUDA_CHECK(cudaMalloc((void **)&c.dtable, sizeof(int32_t) * (size_t)n_seqs * max_blocks));
    CUDA_CHECK(cudaMemcpy(c.dk, c.k, elems * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c.dv, c.v, elems * sizeof(uint16_t), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(c.dtable, c.table, sizeof(int32_t) * (size_t)n_seqs * max_blocks, cudaMemcpyHostToDevice));
    return c;
}

static void cache_destroy(cache *c) {
    CUDA_CHECK(cudaFree(c->dk));
    CUDA_CHECK(cudaFree(c->dv));
    CUDA_CHECK(cudaFree(c->dtable));
    free(c->k), free(c->v), free(c->len), free(c->table);
}

static kiln_cuda_kv cache_view(const cache *c) {
    return (kiln_cuda_kv){.k = c->dk,
                          .v = c->dv,
                          .block_tables = c->dtable,
                          .max_blocks_per_seq = c->max_blocks,
                          .block_size = c->block_size,
                          .n_kv_heads = c->g.n_kv_heads,
                          .head_dim = c->g.head_dim};
}

// Element index of (sequence s, position p, kv head h, dim 0) in the host copy.
static size_t cache_index(const cache *c, int s, int p, int h) {
    assert_true(p >= 0 && p < c->len[s]);
    const size_t slot = (size_t)c->table[(size_t)s * c->max_blocks + p / c->block_size] * c->block_size + p % c->block_size;
    return (slot * c->g.n_kv_heads + h) * c->g.head_dim;
}

// out[t][h][:] = softmax(q k^T * scale) v over positions 0..pos[t] of seq[t], in float64.
static void reference(const cache *c, const float *q, const int32_t *pos, const int32_t *seq, int n_tokens,
                      float scale, double *out) {
    const int hd = c->g.head_dim, group = c->g.n_heads / c->g.n_kv_heads;
    double *w = malloc(sizeof(double) * (size_t)(pos[0] + 1));
    int w_cap = pos[0] + 1;
    for (int t = 0; t < n_tokens; t++) {
        if (pos[t] + 1 > w_cap) {
            w_cap = pos[t] + 1;
            w = realloc(w, sizeof(double) * (size_t)w_cap);
        }
        assert_non_null(w);
        for (int h = 0; h < c->g.n_heads; h++) {
            const float *qh = q + ((size_t)t * c->g.n_heads + h) * hd;
            const int kvh = h / group;
            double mx = -INFINITY, total = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *kp = c->k + cache_index(c, seq[t], p, kvh);
                double d = 0;
                for (int i = 0; i < hd; i++) d += (double)qh[i] * half_to_float(kp[i]);
                w[p] = d * scale;
                mx = fmax(mx, w[p]);
            }
            for (int p = 0; p <= pos[t]; p++) total += w[p] = exp(w[p] - mx);
            double *o = out + ((size_t)t * c->g.n_heads + h) * hd;
            for (int i = 0; i < hd; i++) o[i] = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *vp = c->v + cache_index(c, seq[t], p, kvh);
                for (int i = 0; i < hd; i++) o[i] += w[p] / total * half_to_float(vp[i]);
            }
        }
    }
    free(w);
}

static void compare(const char *what, const float *got, const double *ref, size_t n, double max_abs_tol) {
    double err2 = 0, ref2 = 0, max_abs = 0;
    size_t worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) fail_msg("%s: output %zu is %g (unwritten, or a poisoned slot was read)", what, i, got[i]);
        const double e = fabs(got[i] - ref[i]);
        err2 += e * e, ref2 += ref[i] * ref[i];
        if (e > max_abs) max_abs = e, worst = i;
    }
    const double rel = sqrt(err2 / ref2);
    printf("  %-44s rel L2 %.2e  max abs %.2e\n", what, rel, max_abs);
    if (!(rel < MAX_REL_L2)) fail_msg("%s: relative L2 error %g >= %g", what, rel, MAX_REL_L2);
    if (!(max_abs <= max_abs_tol))
        fail_msg("%s: output %zu: %g vs %g (error %g > %g)", what, worst, got[worst], ref[worst], max_abs, max_abs_tol);
}

static float *random_queries(const geometry *g, int n_tokens, uint64_t *rng) {
    const size_t n = (size_t)n_tokens * g->n_heads * g->head_dim;
    float *q = malloc(sizeof(float) * n);
    assert_non_null(q);
    for (size_t i = 0; i < n; i++) q[i] = kiln_test_rand_f(rng) * Q_RANGE;
    return q;
}

// Device copies of a batch of up to `cap` tokens; outputs and the workspace
// NaN-filled; the counters cleared once.
typedef struct batch {
    int n_tokens, cap;
    size_t out_elems;
    float *dq, *dout;
    int32_t *dpos, *dseq;
    void *dws;
    int *dcounters;
} batch;

static batch batch_alloc(const geometry *g, int cap, size_t ws_bytes) {
    batch b = {.cap = cap};
    const size_t elems = (size_t)cap * g->n_heads * g->head_dim;
    CUDA_CHECK(cudaMalloc((void **)&b.dq, elems * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&b.dout, elems * sizeof(float)));
    CUDA_CHECK(cudaMalloc((void **)&b.dpos, sizeof(int32_t) * cap));
    CUDA_CHECK(cudaMalloc((void **)&b.dseq, sizeof(int32_t) * cap));
    if (ws_bytes) { // partials left as they are (NaN, or an earlier launch's); counters cleared once
        CUDA_CHECK(cudaMalloc(&b.dws, ws_bytes));
        CUDA_CHECK(cudaMemset(b.dws, 0xff, ws_bytes));
        const size_t counter_bytes = kiln_cuda_attention_decode_counters(cap, g->n_heads);
        CUDA_CHECK(cudaMalloc((void **)&b.dcounters, counter_bytes));
        CUDA_CHECK(kiln_cuda_attention_decode_counters_clear(0, b.dcounters, counter_bytes));
    }
    return b;
}

// New tokens (n <= cap) in the same buffers; the outputs NaN again. The
// workspace is left as the last launch left it.
static void batch_set(batch *b, const geometry *g, const float *q, const int32_t *pos, const int32_t *seq, int n) {
    assert_true(n > 0 && n <= b->cap);
    b->n_tokens = n;
    b->out_elems = (size_t)n * g->n_heads * g->head_dim;
    CUDA_CHECK(cudaMemcpy(b->dq, q, b->out_elems * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(b->dpos, pos, sizeof(int32_t) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(b->dseq, seq, sizeof(int32_t) * n, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(b->dout, 0xff, (size_t)b->cap * g->n_heads * g->head_dim * sizeof(float))); // NaN
    CUDA_CHECK(cudaDeviceSynchronize()); // done before work on any stream starts
}

static batch batch_create(const geometry *g, const float *q, const int32_t *pos, const int32_t *seq, int n_tokens,
                          size_t ws_bytes) {
    batch b = batch_alloc(g, n_tokens, ws_bytes);
    batch_set(&b, g, q, pos, seq, n_tokens);
    return b;
}

static void batch_destroy(batch *b) {
    CUDA_CHECK(cudaFree(b->dq));
    CUDA_CHECK(cudaFree(b->dout));
    CUDA_CHECK(cudaFree(b->dpos));
    CUDA_CHECK(cudaFree(b->dseq));
    if (b->dws) CUDA_CHECK(cudaFree(b->dws));
    if (b->dcounters) CUDA_CHECK(cudaFree(b->dcounters));
}

static kiln_cuda_attention_args batch_args(const cache *c, const batch *b) {
    return (kiln_cuda_attention_args){.kv = cache_view(c),
                                      .n_tokens = b->n_tokens,
                                      .pos = b->dpos,
                                      .seq = b->dseq,
                                      .q = b->dq,
                                      .out = b->dout,
                                      .n_heads = c->g.n_heads,
                                      .scale = 1.0f / sqrtf((float)c->g.head_dim),
                                      .counters = b->dcounters};
}

static float *download(const batch *b) {
    float *out = malloc(b->out_elems * sizeof(float));
    assert_non_null(out);
    CUDA_CHECK(cudaMemcpy(out, b->dout, b->out_elems * sizeof(float), cudaMemcpyDeviceToHost));
    return out;
}

// ---- decode -----------------------------------------------------------------

// Sequences and the decode tokens read from them: position 0, both sides of
// the 128-position chunk boundaries (127, 128, 255), a multiple of 16 that is
// not one of 128 (48), positions that are neither (76, 531, 1499) and a long
// one (3000), two sequences with several tokens at different positions.
static const int DEC_LEN[] = {1, 129, 3001, 77, 256, 532};
static const int32_t DEC_SEQ[] = {0, 1, 1, 2, 3, 4, 2, 5, 3};
static const int32_t DEC_POS[] = {0, 127, 128, 3000, 76, 255, 1499, 531, 48};
enum { DEC_SEQS = sizeof DEC_LEN / sizeof DEC_LEN[0], DEC_TOKENS = sizeof DEC_POS / sizeof DEC_POS[0] };

static int blocks_needed(const int *len, int n, int bs) {
    int m = 0;
    for (int s = 0; s < n; s++) m = len[s] > m ? len[s] : m;
    return (m + bs - 1) / bs;
}

// extra_blocks > 0: a table with more columns than needed, as a CUDA graph
// captured for the longest context sees it (more chunks, all of them empty).
static void check_decode(geometry g, int bs, int extra_blocks, uint64_t seed) {
    uint64_t rng = seed;
    const int max_blocks = blocks_needed(DEC_LEN, DEC_SEQS, bs) + extra_blocks;
    cache c = cache_create(g, bs, DEC_LEN, DEC_SEQS, max_blocks, &rng);
    float *decoy = random_queries(&g, DEC_TOKENS, &rng), *q = random_queries(&g, DEC_TOKENS, &rng);
    const size_t ws = kiln_cuda_attention_decode_workspace(DEC_TOKENS, g.n_heads, g.head_dim, max_blocks);
    assert_true(ws > 0);
    // A first launch with other queries fills the workspace with partials
    // the checked launch must not read.
    batch b = batch_create(&g, decoy, DEC_POS, DEC_SEQ, DEC_TOKENS, ws);
    kiln_cuda_attention_args a = batch_args(&c, &b);
    CUDA_CHECK(kiln_cuda_attention_decode(0, &a, b.dws));
    batch_set(&b, &g, q, DEC_POS, DEC_SEQ, DEC_TOKENS);
    CUDA_CHECK(kiln_cuda_attention_decode(0, &a, b.dws));
    CUDA_CHECK(cudaDeviceSynchronize());
    float *got = download(&b);
    double *ref = malloc(b.out_elems * sizeof(double));
    assert_non_null(ref);
    reference(&c, q, DEC_POS, DEC_SEQ, DEC_TOKENS, a.scale, ref);
    char what[96];
    snprintf(what, sizeof what, "decode hd %d heads %d/%d bs %d table %d", g.head_dim, g.n_heads, g.n_kv_heads, bs,
             max_blocks);
    compare(what, got, ref, b.out_elems, MAX_ABS_ERR);
    free(got), free(ref), free(q), free(decoy);
    batch_destroy(&b);
    cache_destroy(&c);
}

static void test_decode_smollm(void **state) {
    (void)state;
    check_decode(SMOLLM, BLOCK_SIZE, 0, 0x5eed0001);
}

static void test_decode_llama8b(void **state) {
    (void)state;
    check_decode(LLAMA8B, BLOCK_SIZE, 0, 0x5eed0002);
}

// The grid depends on max_blocks_per_seq only: a larger table than the
// positions need must give the same result.
static void test_decode_larger_table(void **state) {
    (void)state;
    check_decode(SMOLLM, BLOCK_SIZE, 101, 0x5eed0003);
    check_decode(LLAMA8B, BLOCK_SIZE, 77, 0x5eed0004);
}

// Chunks are DEC_CHUNK_BLOCKS (8) cache blocks: at block_size 32 a chunk spans
// two 128-position tiles (the running max and sum carry across them); at 8
// half a tile; 24 is no power of two.
static void test_decode_other_block_sizes(void **state) {
    (void)state;
    check_decode(LLAMA8B, 32, 3, 0x5eed0006);
    check_decode(SMOLLM, 8, 0, 0x5eed0007);
    check_decode(SMOLLM, 24, 5, 0x5eed0008);
}

// Captured once, replayed after the positions (device memory) moved on: the
// captured launch configuration must still cover them. The workspace is
// cleared once, before the capture: each replay must leave its counters at
// zero for the next.
static void test_decode_graph_replay(void **state) {
    (void)state;
    const geometry g = LLAMA8B;
    uint64_t rng = 0x5eed0005;
    static const int len[] = {40, 3001, 532};
    static const int32_t seq[] = {1, 0, 2, 1};
    enum { N = 4, ROUNDS = 4 };
    static const int32_t pos[ROUNDS][N] = {
        {5, 3, 17, 130}, {2900, 39, 531, 3000}, {1000, 0, 300, 2047}, {2900, 39, 531, 3000}};
    const int max_blocks = blocks_needed(len, 3, BLOCK_SIZE) + 8;
    cache c = cache_create(g, BLOCK_SIZE, len, 3, max_blocks, &rng);
    float *q = random_queries(&g, N, &rng);
    const size_t ws = kiln_cuda_attention_decode_workspace(N, g.n_heads, g.head_dim, max_blocks);
    batch b = batch_create(&g, q, pos[0], seq, N, ws);
    kiln_cuda_attention_args a = batch_args(&c, &b);

    cudaStream_t stream;
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    const cudaError_t launched = kiln_cuda_attention_decode(stream, &a, b.dws);
    CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    CUDA_CHECK(launched);
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));

    double *ref = malloc(b.out_elems * sizeof(double));
    assert_non_null(ref);
    for (int round = 0; round < ROUNDS; round++) {
        if (round > 0) { // new positions and queries in the same buffers (synchronised: the replay's stream
                         // does not wait for the legacy stream)
            free(q);
            q = random_queries(&g, N, &rng);
            batch_set(&b, &g, q, pos[round], seq, N);
        }
        CUDA_CHECK(cudaGraphLaunch(exec, stream));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        float *got = download(&b);
        reference(&c, q, pos[round], seq, N, a.scale, ref);
        char what[64];
        snprintf(what, sizeof what, "decode graph, replay %d", round);
        compare(what, got, ref, b.out_elems, MAX_ABS_ERR);
        free(got);
    }
    CUDA_CHECK(cudaGraphExecDestroy(exec));
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaStreamDestroy(stream));
    free(ref), free(q);
    batch_destroy(&b);
    cache_destroy(&c);
}

// One workspace, cleared once, serves a series of batches of different sizes,
// sequences and positions, launched with no clearing in between: the combine
// of one launch resets the counters for the next. A long sequence (20001
// positions: 157 live chunks) and a table 60 blocks larger than needed (more
// chunks than are ever live). Each round launches twice back to back on one
// stream, the first
// into a second output buffer, and checks both outputs: the second launch
// starts on the counters the first just reset.
static void check_decode_reuse(geometry g, uint64_t seed) {
    uint64_t rng = seed;
    static const int len[] = {20001, 1, 2600, 130, 3333, 700};
    enum { N_SEQS = sizeof len / sizeof len[0], MAX_TOKENS = 7, ROUNDS = 6 };
    static const struct {
        int n;
        int32_t seq[MAX_TOKENS], pos[MAX_TOKENS];
    } rounds[ROUNDS] = {
        {5, {0, 1, 2, 3, 4}, {20000, 0, 2599, 129, 3332}},
        {2, {5, 2}, {699, 127}},                                      // fewer tokens
        {7, {2, 4, 0, 3, 5, 2, 4}, {1023, 2048, 128, 100, 383, 2599, 3199}}, // more
        {1, {0}, {19999}},
        {6, {3, 3, 5, 1, 4, 2}, {0, 129, 256, 0, 1, 255}},
        {5, {0, 1, 2, 3, 4}, {20000, 0, 2599, 129, 3332}}, // round 0 again, new queries
    };
    const int max_blocks = blocks_needed(len, N_SEQS, BLOCK_SIZE) + 60;
    cache c = cache_create(g, BLOCK_SIZE, len, N_SEQS, max_blocks, &rng);
    const size_t ws = kiln_cuda_attention_decode_workspace(MAX_TOKENS, g.n_heads, g.head_dim, max_blocks);
    batch b = batch_alloc(&g, MAX_TOKENS, ws);
    const size_t cap_elems = (size_t)MAX_TOKENS * g.n_heads * g.head_dim;
    float *dout2;
    CUDA_CHECK(cudaMalloc((void **)&dout2, cap_elems * sizeof(float)));
    cudaStream_t stream;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    double *ref = malloc(cap_elems * sizeof(double));
    float *got2 = malloc(cap_elems * sizeof(float));
    assert_true(ref && got2);

    for (int r = 0; r < ROUNDS; r++) {
        const int n = rounds[r].n;
        float *q = random_queries(&g, n, &rng);
        batch_set(&b, &g, q, rounds[r].pos, rounds[r].seq, n);
        CUDA_CHECK(cudaMemset(dout2, 0xff, cap_elems * sizeof(float)));
        CUDA_CHECK(cudaDeviceSynchronize());
        kiln_cuda_attention_args a = batch_args(&c, &b);
        a.out = dout2;
        CUDA_CHECK(kiln_cuda_attention_decode(stream, &a, b.dws));
        a.out = b.dout;
        CUDA_CHECK(kiln_cuda_attention_decode(stream, &a, b.dws));
        CUDA_CHECK(cudaStreamSynchronize(stream));
        float *got = download(&b);
        CUDA_CHECK(cudaMemcpy(got2, dout2, b.out_elems * sizeof(float), cudaMemcpyDeviceToHost));
        reference(&c, q, rounds[r].pos, rounds[r].seq, n, a.scale, ref);
        char what[96];
        snprintf(what, sizeof what, "decode reuse hd %d heads %d/%d round %d, 1st", g.head_dim, g.n_heads,
                 g.n_kv_heads, r);
        compare(what, got2, ref, b.out_elems, MAX_ABS_ERR);
        snprintf(what, sizeof what, "decode reuse hd %d heads %d/%d round %d, 2nd", g.head_dim, g.n_heads,
                 g.n_kv_heads, r);
        compare(what, got, ref, b.out_elems, MAX_ABS_ERR);
        free(got), free(q);
    }
    CUDA_CHECK(cudaStreamDestroy(stream));
    CUDA_CHECK(cudaFree(dout2));
    free(ref), free(got2);
    batch_destroy(&b);
    cache_destroy(&c);
}

// The combine's split of a block's heads over its slots (4 rows of 128 or 8
// of 64 at once): Llama 8B, 4 heads, one per slot; SmolLM2, 3 heads over two
// slots each, merged in shared memory; 20 heads per kv head, a block of 16
// (two per slot) and one of 4 (two slots each), two counters per (token, kv
// head); 3 heads of 128, one per slot and a slot idle; one head over all
// slots, at 128 and 64.
static void test_decode_workspace_reuse(void **state) {
    (void)state;
    check_decode_reuse(LLAMA8B, 0x5eed0400);
    check_decode_reuse(SMOLLM, 0x5eed0401);
    check_decode_reuse(WIDE_GROUP, 0x5eed0402);
    check_decode_reuse((geometry){128, 6, 2}, 0x5eed0403);
    check_decode_reuse((geometry){128, 4, 4}, 0x5eed0404);
    check_decode_reuse((geometry){64, 4, 4}, 0x5eed0405);
}

// ---- prefill ----------------------------------------------------------------

// n tokens of sequence 1 at positions pos0 .. pos0 + n - 1 (positions before
// pos0 already cached); sequences 0 and 2 share the block pool.
static void check_prefill(geometry g, int bs, int pos0, int n, uint64_t seed) {
    uint64_t rng = seed;
    const int len[3] = {50, pos0 + n, 300};
    const int max_blocks = blocks_needed(len, 3, bs) + 2;
    cache c = cache_create(g, bs, len, 3, max_blocks, &rng);
    float *q = random_queries(&g, n, &rng);
    int32_t *pos = malloc(sizeof(int32_t) * n), *seq = malloc(sizeof(int32_t) * n);
    assert_true(pos && seq);
    for (int t = 0; t < n; t++) pos[t] = pos0 + t, seq[t] = 1;
    batch b = batch_create(&g, q, pos, seq, n, 0);
    kiln_cuda_attention_args a = batch_args(&c, &b);
    double *ref = malloc(b.out_elems * sizeof(double));
    assert_non_null(ref);
    reference(&c, q, pos, seq, n, a.scale, ref);
    CUDA_CHECK(cudaMemset(b.dout, 0xff, b.out_elems * sizeof(float))); // NaNs wherever nothing is written
    CUDA_CHECK(kiln_cuda_attention_prefill(0, &a));
    CUDA_CHECK(cudaDeviceSynchronize());
    float *got = download(&b);
    char what[128];
    snprintf(what, sizeof what, "prefill hd %d heads %d/%d bs %d pos0 %d n %d", g.head_dim, g.n_heads, g.n_kv_heads,
             bs, pos0, n);
    compare(what, got, ref, b.out_elems, MAX_ABS_ERR);
    free(got);
    free(ref), free(q), free(pos), free(seq);
    batch_destroy(&b);
    cache_destroy(&c);
}

// Sizes around a block's 128 query rows (64: half of one) and several blocks.
static void check_prefill_cases(geometry g, uint64_t seed) {
    static const int sizes[] = {1, 37, 64, 200, 300}, starts[] = {0, 93};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 5; j++) check_prefill(g, BLOCK_SIZE, starts[i], sizes[j], seed + (uint64_t)(i * 5 + j));
}

static void test_prefill_smollm(void **state) {
    (void)state;
    check_prefill_cases(SMOLLM, 0x5eed0100);
}

static void test_prefill_llama8b(void **state) {
    (void)state;
    check_prefill_cases(LLAMA8B, 0x5eed0200);
}

// Tiles take their rows from several blocks (8, 24: no power of two) or from
// part of one (128).
static void test_prefill_other_block_sizes(void **state) {
    (void)state;
    check_prefill(SMOLLM, 8, 93, 200, 0x5eed0300);
    check_prefill(LLAMA8B, 24, 93, 200, 0x5eed0301);
    check_prefill(SMOLLM, 128, 93, 200, 0x5eed0302);
}

// More than 16 query heads per kv head: decode splits the group over blocks.
static void test_wide_group(void **state) {
    (void)state;
    check_decode(WIDE_GROUP, BLOCK_SIZE, 0, 0x5eed0009);
    check_prefill(WIDE_GROUP, BLOCK_SIZE, 93, 37, 0x5eed000a);
}

// ---- shapes the kernels do not take -----------------------------------------

static void test_supports_and_invalid(void **state) {
    (void)state;
    assert_true(kiln_cuda_attention_supports(64));
    assert_true(kiln_cuda_attention_supports(128));
    assert_false(kiln_cuda_attention_supports(80));
    assert_false(kiln_cuda_attention_supports(256));
    assert_true(kiln_cuda_attention_decode_workspace(2, 32, 128, 600) >=
                kiln_cuda_attention_decode_workspace(1, 32, 128, 300));
    // A region per token: any n_tokens may reuse a larger workspace.
    assert_true(kiln_cuda_attention_decode_workspace(3, 32, 128, 600) ==
                3 * kiln_cuda_attention_decode_workspace(1, 32, 128, 600));
    assert_int_equal(kiln_cuda_attention_decode_counters_clear(0, NULL, 0), cudaSuccess);
    assert_int_equal(kiln_cuda_attention_decode_counters_clear(0, NULL, 16), cudaErrorInvalidValue);

    // A valid-looking call with head_dim 80 must be refused before any launch.
    const geometry g = {64, 4, 2};
    uint64_t rng = 7;
    static const int len[] = {20};
    static const int32_t pos[] = {19}, seq[] = {0};
    cache c = cache_create(g, BLOCK_SIZE, len, 1, 2, &rng);
    float *q = random_queries(&g, 1, &rng);
    batch b = batch_create(&g, q, pos, seq, 1, kiln_cuda_attention_decode_workspace(1, 4, 64, 2));
    kiln_cuda_attention_args a = batch_args(&c, &b);
    a.kv.head_dim = 80;
    assert_int_equal(kiln_cuda_attention_decode(0, &a, b.dws), cudaErrorInvalidValue);
    assert_int_equal(kiln_cuda_attention_prefill(0, &a), cudaErrorInvalidValue);
    a.kv.head_dim = 64;
    // The decode kernel reads and writes float4s: a misaligned workspace is refused.
    assert_int_equal(kiln_cuda_attention_decode(0, &a, (char *)b.dws + 4), cudaErrorInvalidValue);
    int *counters = a.counters;
    a.counters = NULL; // decode needs its counters
    assert_int_equal(kiln_cuda_attention_decode(0, &a, b.dws), cudaErrorInvalidValue);
    a.counters = counters;
    a.n_heads = 3; // not a multiple of n_kv_heads
    assert_int_equal(kiln_cuda_attention_prefill(0, &a), cudaErrorInvalidValue);
    CUDA_CHECK(cudaDeviceSynchronize());
    free(q);
    batch_destroy(&b);
    cache_destroy(&c);
}

int main(void) {
    kiln_test_require_gpu();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_conversion),     cmocka_unit_test(test_supports_and_invalid),
        cmocka_unit_test(test_decode_smollm),       cmocka_unit_test(test_decode_llama8b),
        cmocka_unit_test(test_decode_larger_table), cmocka_unit_test(test_decode_other_block_sizes),
        cmocka_unit_test(test_decode_graph_replay), cmocka_unit_test(test_prefill_smollm),
        cmocka_unit_test(test_prefill_llama8b),     cmocka_unit_test(test_prefill_other_block_sizes),
        cmocka_unit_test(test_wide_group),          cmocka_unit_test(test_decode_workspace_reuse),
    };
    return KILN_RUN_TESTS(tests);
}
