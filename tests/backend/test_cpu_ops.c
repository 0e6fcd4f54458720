// CPU backend operations against float64 references written from the
// definitions: paged grouped-query attention, RoPE in both layouts, RMSNorm,
// SwiGLU.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "backend/cpu/cpu_ops.h"

static kiln_backend *be;

static float frand(void) { return (float)rand() / (float)RAND_MAX * 2.0f - 1.0f; }

static int setup(void **state) {
    (void)state;
    srand(1234);
    return kiln_backend_cpu_create(2, false, &be) == KILN_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    kiln_backend_destroy(be);
    return 0;
}

// Two sequences share a pool of blocks handed out out of order; a batch holds
// the last 3 tokens of sequence 0 (positions 37..39) and 2 of sequence 1
// (positions 0..1). Each token must see exactly its own sequence's prefix.
static void check_attention(kiln_dtype kv_dtype, double tol, int n_batch) {
    enum { BS = 16, HD = 40, KVH = 2, H = 6, BLOCKS = 8, MAXB = 4 };
    const int row = KVH * HD;
    int32_t tables[2][MAXB] = {{5, 2, 7, 0}, {3, 1, 4, 6}};
    kiln_kv_view kv = {.dtype = kv_dtype, .block_size = BS, .n_kv_heads = KVH, .head_dim = HD,
                       .max_blocks_per_seq = MAXB, .block_tables = &tables[0][0]};
    size_t elem = kv_dtype == KILN_F16 ? 2 : 4;
    kiln_kv_layer layer = {be->device->alloc(be, BLOCKS * BS * row * elem), be->device->alloc(be, BLOCKS * BS * row * elem)};
    // Logical K/V of each sequence, written through kv_store one token at a time.
    static float k_ref[2][40][KVH * HD], v_ref[2][40][KVH * HD];
    int lens[2] = {40, 2};
    for (int s = 0; s < 2; s++)
        for (int p = 0; p < lens[s]; p++) {
            for (int i = 0; i < row; i++) k_ref[s][p][i] = frand(), v_ref[s][p][i] = frand();
            int32_t pos = p, seq = s;
            kiln_batch_layout one = {.n_tokens = 1, .pos = &pos, .seq = &seq};
            kiln_cpu_kv_store(be, &kv, layer, &one, k_ref[s][p], v_ref[s][p]);
        }
    if (kv_dtype == KILN_F16) // the reference sees what the cache holds
        for (int s = 0; s < 2; s++)
            for (int p = 0; p < lens[s]; p++)
                for (int i = 0; i < row; i++) {
                    k_ref[s][p][i] = kiln_f16_to_f32(kiln_f32_to_f16(k_ref[s][p][i]));
                    v_ref[s][p][i] = kiln_f16_to_f32(kiln_f32_to_f16(v_ref[s][p][i]));
                }
    int32_t pos[5] = {37, 38, 39, 0, 1}, seq[5] = {0, 0, 0, 1, 1};
    // n_batch 5: the batch above; 1: only the first token, as in decode (few
    // work items: the kernel then splits by head instead of by group).
    kiln_batch_layout batch = {.n_tokens = n_batch, .pos = pos, .seq = seq};
    float q[5 * H * HD], out[5 * H * HD];
    for (int i = 0; i < 5 * H * HD; i++) q[i] = frand() * 3.0f;
    for (int i = 0; i < 5 * H * HD; i++) out[i] = NAN;
    const float scale = 1.0f / sqrtf((float)HD);
    kiln_cpu_attention(be, &kv, layer, &batch, q, H, scale, out);
    for (int t = 0; t < n_batch; t++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (t * H + h) * HD;
            int kvh = h / (H / KVH), s = seq[t];
            double w[40], mx = -INFINITY, total = 0;
            for (int p = 0; p <= pos[t]; p++) {
                double d = 0;
                for (int i = 0; i < HD; i++) d += (double)qh[i] * k_ref[s][p][kvh * HD + i];
                w[p] = d * scale;
                mx = fmax(mx, w[p]);
            }
            for (int p = 0; p <= pos[t]; p++) total += w[p] = exp(w[p] - mx);
            for (int i = 0; i < HD; i++) {
                double ref = 0;
                for (int p = 0; p <= pos[t]; p++) ref += w[p] / total * v_ref[s][p][kvh * HD + i];
                float got = out[(t * H + h) * HD + i];
                if (!(fabs(got - ref) <= tol)) fail_msg("token %d head %d dim %d: %g vs %g", t, h, i, got, ref);
            }
        }
    be->device->free(be, layer.k);
    be->device->free(be, layer.v);
}

// Float32 accumulation over <= 40 positions of values in [-1, 1]: errors stay
// near 1e-6; 1e-5 leaves room without hiding a wrong index (which gives ~0.1).
static void test_paged_attention_f32(void **state) {
    (void)state;
    check_attention(KILN_F32, 1e-5, 5);
    check_attention(KILN_F32, 1e-5, 1);
}

static void test_paged_attention_f16(void **state) {
    (void)state;
    check_attention(KILN_F16, 1e-5, 5);
    check_attention(KILN_F16, 1e-5, 1);
}

static void check_rope(int interleaved) {
    enum { N = 3, H = 2, HD = 16, ROT = 12 };
    float x[N * H * HD], ref[N * H * HD];
    int32_t pos[N] = {0, 7, 4095};
    float factors[ROT / 2] = {1, 1, 2, 4, 8, 8};
    kiln_rope_params rope = {.rot_dim = ROT, .theta = 10000.0f, .freq_factors = factors, .interleaved = interleaved};
    for (int i = 0; i < N * H * HD; i++) x[i] = ref[i] = frand();
    kiln_cpu_rope(be, x, N, H, HD, pos, &rope);
    for (int t = 0; t < N; t++)
        for (int h = 0; h < H; h++) {
            float *r = ref + (t * H + h) * HD, *got = x + (t * H + h) * HD;
            for (int i = 0; i < ROT / 2; i++) {
                double angle = pos[t] * pow(10000.0, -2.0 * i / ROT) / factors[i];
                int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + ROT / 2;
                double ra = r[a] * cos(angle) - r[b] * sin(angle), rb = r[a] * sin(angle) + r[b] * cos(angle);
                assert_true(fabs(got[a] - ra) < 1e-5 && fabs(got[b] - rb) < 1e-5);
            }
            for (int i = ROT; i < HD; i++) assert_true(got[i] == r[i]); // past rot_dim: untouched
        }
}

static void test_rope_interleaved(void **state) {
    (void)state;
    check_rope(1);
}

static void test_rope_halves(void **state) {
    (void)state;
    check_rope(0);
}

static void test_rmsnorm_and_swiglu(void **state) {
    (void)state;
    enum { N = 3, D = 67 };
    float x[N * D], w[D], y[N * D], g[N * D], u[N * D], o[N * D];
    for (int i = 0; i < N * D; i++) x[i] = frand() * 4, g[i] = frand() * 8, u[i] = frand();
    for (int i = 0; i < D; i++) w[i] = frand();
    kiln_cpu_rmsnorm(be, x, w, y, N, D, 1e-5f);
    for (int t = 0; t < N; t++) {
        double ss = 0;
        for (int i = 0; i < D; i++) ss += (double)x[t * D + i] * x[t * D + i];
        double inv = 1.0 / sqrt(ss / D + 1e-5);
        for (int i = 0; i < D; i++) assert_true(fabs(y[t * D + i] - x[t * D + i] * inv * w[i]) < 1e-5);
    }
    kiln_cpu_swiglu(be, g, u, o, N * D);
    for (int i = 0; i < N * D; i++) {
        double ref = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
        assert_true(fabs(o[i] - ref) < 1e-5);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_paged_attention_f32), cmocka_unit_test(test_paged_attention_f16),
        cmocka_unit_test(test_rope_interleaved),    cmocka_unit_test(test_rope_halves),
        cmocka_unit_test(test_rmsnorm_and_swiglu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
