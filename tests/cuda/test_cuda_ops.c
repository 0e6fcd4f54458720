// The CUDA backend's operations as model code calls them: through the
// backend table (kiln_backend_cuda_create), on buffers from be->device->alloc,
// weights prepared by weight_bytes / weight_load / weights_done. Each op runs
// alone on fresh random inputs and is compared with a float64 reference on
// the host that uses the weights' device values (after their rounding to F16
// or BF16), so what remains is the kernel's own arithmetic. Outputs are
// NaN-filled before every op, so an element that is not written fails.
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

#include "backend/backend.h"
#include "backend/step.h"
#include "backend/cuda/cuda_ops.h"
#include "core/dtype.h"
#include "core/quant.h"
#include "cuda/cuda_test_util.h"

#define F16_NAN 0x7e00u

// ---- backend plumbing ---------------------------------------------------------

// The one-token matrix-vector form a test's backend runs
// (kiln_kernel_options.matvec_form, through the backend's configure). The
// tests of products of one token run three times: with the form timed per
// shape (the default: whichever this card is faster with), then with each
// form for every shape ("_plain", "_pipelined"), so that both forms are
// checked on every card. A test's initial state names the form (NULL: timed).
static const kiln_matvec_form FORM_PLAIN = KILN_MATVEC_PLAIN, FORM_PIPELINED = KILN_MATVEC_PIPELINED;

static kiln_matvec_form form_of(void *state) { return state ? *(const kiln_matvec_form *)state : KILN_MATVEC_TIMED; }

static kiln_status backend_open(kiln_matvec_form form, kiln_backend **out) {
    kiln_status st = kiln_backend_cuda_create(0, out);
    if (st != KILN_OK) return st;
    const kiln_kernel_options k = {.matvec_form = form};
    st = (*out)->device->configure(*out, &k);
    if (st != KILN_OK) {
        kiln_backend_destroy(*out);
        *out = NULL;
    }
    return st;
}

static kiln_backend *backend_new(kiln_matvec_form form) {
    kiln_backend *be = NULL;
    if (backend_open(form, &be) != KILN_OK) fail_msg("cuda backend: %s", kiln_last_error());
    assert_non_null(be);
    return be;
}

static int setup_backend(void **state) {
    kiln_backend *be = NULL;
    if (backend_open(form_of(*state), &be) != KILN_OK) {
        fprintf(stderr, "cuda backend: %s\n", kiln_last_error());
        return -1;
    }
    *state = be;
    return 0;
}

static int teardown_backend(void **state) {
    kiln_backend_destroy(*state);
    return 0;
}

// Every op is followed by this: an asynchronous failure shows up here.
static void sync_ok(kiln_backend *be, const char *what) {
    const kiln_status st = be->stream->sync(be);
    if (st != KILN_OK) fail_msg("%s: sync: %s", what, kiln_last_error());
}

static void *dev_alloc(kiln_backend *be, size_t bytes) {
    void *p = be->device->alloc(be, bytes);
    assert_non_null(p);
    return p;
}

static void *dev_upload(kiln_backend *be, const void *host, size_t bytes) {
    void *p = dev_alloc(be, bytes);
    be->stream->from_host(be, p, host, bytes);
    // The kernels under test run on the default stream, which does not wait
    // for the backend's (non-blocking) one.
    sync_ok(be, "from_host");
    return p;
}

static void dev_poison(kiln_backend *be, float *dev, size_t n) {
    float *nan_host = malloc(sizeof(float) * n);
    assert_non_null(nan_host);
    for (size_t i = 0; i < n; i++) nan_host[i] = NAN;
    be->stream->from_host(be, dev, nan_host, sizeof(float) * n);
    free(nan_host); // from_host returns once the source has been read
}

static float *dev_nan(kiln_backend *be, size_t n) {
    float *p = dev_alloc(be, sizeof(float) * n);
    dev_poison(be, p, n);
    return p;
}

static void *host_download(kiln_backend *be, const void *dev, size_t bytes) {
    void *h = malloc(bytes);
    assert_non_null(h);
    be->stream->to_host(be, h, dev, bytes);
    sync_ok(be, "to_host");
    return h;
}

static float rand01(uint64_t *rng) { return 0.5f * (kiln_test_rand_f(rng) + 1.0f); }

static float *random_floats(size_t n, float scale, uint64_t *rng) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++) x[i] = kiln_test_rand_f(rng) * scale;
    return x;
}

// Fails on a non-finite output or one past its bound (bound NULL: none);
// prints and checks the relative L2 error over all n.
static void check_outputs(const char *what, const float *got, const double *ref, const double *bound, size_t n,
                          double max_rel_l2) {
    double err2 = 0, ref2 = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) fail_msg("%s: output %zu is %g (not written?)", what, i, (double)got[i]);
        const double e = fabs((double)got[i] - ref[i]);
        err2 += e * e, ref2 += ref[i] * ref[i];
        if (bound && !(e <= bound[i]))
            fail_msg("%s: output %zu: %.9g vs reference %.9g: error %.3g > bound %.3g", what, i, (double)got[i],
                     ref[i], e, bound[i]);
        if (bound && bound[i] > 0 && e / bound[i] > worst) worst = e / bound[i];
    }
    const double rel = ref2 > 0 ? sqrt(err2 / ref2) : sqrt(err2);
    printf("  %-64s rel L2 %.2e  worst error/bound %.2f\n", what, rel, worst);
    if (!(rel < max_rel_l2)) fail_msg("%s: relative L2 error %.3g >= %.3g", what, rel, max_rel_l2);
}

// ---- weights ------------------------------------------------------------------------

// The device form weight_load gives (cuda_weights.c): vectors stay F32,
// matrices become F16 (F16 and quantized sources) or BF16 (F32, BF16).
static kiln_dtype device_form(kiln_dtype src, int rows) {
    if (rows == 1) return KILN_F32;
    return src == KILN_F32 || src == KILN_BF16 ? KILN_BF16 : KILN_F16;
}

static double round_to(kiln_dtype type, float v) {
    switch (type) {
    case KILN_BF16: return kiln_bf16_to_f32(kiln_f32_to_bf16(v));
    case KILN_F16: return kiln_f16_to_f32(kiln_f32_to_f16(v));
    default: return v;
    }
}

// Q4_1 by hand (kiln_quantize_row does not produce it): per block of 32,
// m = min, d = (max - min) / 15, q = round((x - m) / d). Element j < 16 is
// the low nibble of qs[j], element j + 16 the high one.
static void quantize_q4_1_row(const float *x, kiln_block_q4_1 *out, int cols) {
    for (int b = 0; b < cols / KILN_QK; b++) {
        const float *xb = x + (size_t)b * KILN_QK;
        float lo = xb[0], hi = xb[0];
        for (int j = 1; j < KILN_QK; j++) lo = fminf(lo, xb[j]), hi = fmaxf(hi, xb[j]);
        out[b].d = kiln_f32_to_f16((hi - lo) / 15.0f);
        out[b].m = kiln_f32_to_f16(lo);
        const float d = kiln_f16_to_f32(out[b].d), m = kiln_f16_to_f32(out[b].m);
        uint8_t q[KILN_QK];
        for (int j = 0; j < KILN_QK; j++) {
            long v = d > 0 ? lrintf((xb[j] - m) / d) : 0;
            q[j] = (uint8_t)(v < 0 ? 0 : v > 15 ? 15 : v);
        }
        for (int j = 0; j < KILN_QK / 2; j++) out[b].qs[j] = (uint8_t)(q[j] | q[j + KILN_QK / 2] << 4);
    }
}

typedef struct weight {
    kiln_tensor dev; // what weight_load described: device data, device dtype
    void *mem;       // the backend memory behind dev.data
    double *val;     // [rows][cols] the device form's values
    int rows, cols;
} weight;

// A [rows][cols] matrix (rows == 1: a vector) drawn uniformly from
// [-scale, scale], stored as `src`, loaded into backend memory. The caller
// runs weights_done once its weights are loaded.
static weight weight_make(kiln_backend *be, kiln_dtype src, int rows, int cols, float scale, uint64_t *rng) {
    weight w = {.rows = rows, .cols = cols};
    uint64_t row_bytes = 0;
    assert_true(kiln_dtype_row_bytes(src, (uint64_t)cols, &row_bytes));
    const size_t elems = (size_t)rows * cols;
    float *x = random_floats(elems, scale, rng);
    char *data = malloc((size_t)row_bytes * rows);
    assert_non_null(data);
    for (int r = 0; r < rows; r++) {
        if (src == KILN_Q4_1)
            quantize_q4_1_row(x + (size_t)r * cols, (kiln_block_q4_1 *)(data + (size_t)r * row_bytes), cols);
        else
            assert_true(kiln_quantize_row(src, x + (size_t)r * cols, data + (size_t)r * row_bytes, cols));
    }
    const kiln_tensor host = {.name = "test.weight", .dtype = src, .n_dims = rows == 1 ? 1 : 2,
                              .ne = {cols, rows, 1, 1}, .data = data, .nbytes = row_bytes * (uint64_t)rows};
    const kiln_dtype form = device_form(src, rows);

    // The values the device holds: the source's exact values, then the
    // rounding to the device form (what convert_rows does).
    w.val = malloc(sizeof(double) * elems);
    float *row = malloc(sizeof(float) * (size_t)cols);
    assert_true(w.val && row);
    for (int r = 0; r < rows; r++) {
        kiln_dequantize_row(src, data + (size_t)r * row_bytes, row, cols);
        for (int c = 0; c < cols; c++) w.val[(size_t)r * cols + c] = round_to(form, row[c]);
    }
    free(row);

    const uint64_t bytes = be->device->weight_bytes(be, &host);
    assert_int_equal(bytes, (uint64_t)elems * (form == KILN_F32 ? 4 : 2));
    w.mem = dev_alloc(be, (size_t)bytes);
    if (be->device->weight_load(be, &host, w.mem, &w.dev) != KILN_OK) fail_msg("weight_load: %s", kiln_last_error());
    assert_int_equal(w.dev.dtype, form);
    assert_ptr_equal(w.dev.data, w.mem);
    assert_int_equal(w.dev.ne[0], cols);
    assert_int_equal(w.dev.ne[1], rows);
    free(data); // weight_load converted it into pinned staging memory already
    free(x);
    return w;
}

static void weights_done_ok(kiln_backend *be) {
    if (be->device->weights_done(be) != KILN_OK) fail_msg("weights_done: %s", kiln_last_error());
}

static void weight_free(kiln_backend *be, weight *w) {
    be->device->free(be, w->mem);
    free(w->val);
}

// ---- linear -------------------------------------------------------------------------

typedef struct linear_case {
    int n, k, count;
    kiln_dtype src[KILN_LINEAR_MAX];
    int rows[KILN_LINEAR_MAX];
    bool bias, accumulate, glu;
} linear_case;

// cuda_linear.c's dispatch, needed only to know whether the input was
// rounded to the weights' 16-bit type (the cuBLASLt path) or used as float
// (the matrix-vector kernel): one token, or up to KILN_MATVEC_MAX_TOKENS
// whose inputs fit KILN_CUDA_MATVEC_X_LIMIT_DEFAULT; k % 8 == 0, one device type
// for all weights, and no GLU with biases.
static bool takes_gemm(const linear_case *lc) {
    if (lc->n > KILN_MATVEC_MAX_TOKENS || lc->k % 8 != 0) return true;
    if (lc->n > 1 && (size_t)lc->n * (size_t)lc->k * sizeof(float) > KILN_CUDA_MATVEC_X_LIMIT_DEFAULT) return true;
    for (int i = 1; i < lc->count; i++)
        if (device_form(lc->src[i], lc->rows[i]) != device_form(lc->src[0], lc->rows[0])) return true;
    return lc->glu && lc->bias;
}

// Bound on the error of a float32 sum of k exact products (fmaf in the
// matvec; products of 16-bit values are exact in float32 on tensor cores)
// plus a bias and a previous y, in any order and grouping: every term is
// rounded at most once when it joins a partial sum (a tensor core aligns the
// products of one step to the largest and truncates), and every partial sum
// at most once, each by <= 2^-23 (truncation; 2^-24 when rounding to
// nearest) of a magnitude <= the sum of absolute values: <= 2 (k + 2) 2^-23
// in all, which (k + 3) 2^-22 covers. A worst case: it catches NaN and wrong
// elements; the relative L2 check is the tight one.
static double sum_bound(int k, double abs_sum) { return (k + 3) * 0x1.0p-22 * abs_sum; }

// Relative L2 error. Matvec: float32 with round to nearest, ~k/32 fmaf per
// lane and 5 shuffle levels: ~sqrt(k/32 + 5) 2^-24 ~ 4e-7 for k = 1000. GEMM:
// the input is rounded to the weights' type by both the kernel and the
// reference (nearest even: kiln_f32_to_f16/bf16 = __float2half_rn /
// __float2bfloat16_rn), so only float32 accumulation is left; tensor cores
// truncate (a bias toward zero), once per k-step of 16 products: <= k/16 *
// 2^-23 ~ 7.5e-6 for k = 1000 even if it all adds up. 1e-4 leaves a factor
// >= 10; one element wrong by its own size among the <= 1283 * 130 outputs
// of a case already gives 1 / sqrt(outputs) >= 2.4e-3.
#define LINEAR_MAX_REL_L2 1e-4

static double silu(double g) { return g / (1.0 + exp(-g)); }

static void run_linear(kiln_backend *be, const linear_case *lc, uint64_t seed) {
    uint64_t rng = seed;
    const int n = lc->n, k = lc->k, count = lc->count;
    const bool gemm = takes_gemm(lc);
    assert_true(count >= 1 && count <= KILN_LINEAR_MAX);
    assert_true(!lc->glu || (count == 2 && lc->rows[0] == lc->rows[1]));
    assert_true(!lc->accumulate || count == 1);

    weight w[KILN_LINEAR_MAX], bias[KILN_LINEAR_MAX];
    memset(w, 0, sizeof w);
    memset(bias, 0, sizeof bias);
    for (int i = 0; i < count; i++) {
        w[i] = weight_make(be, lc->src[i], lc->rows[i], k, 1.0f, &rng);
        if (lc->bias) bias[i] = weight_make(be, KILN_F32, 1, lc->rows[i], 1.0f, &rng); // a vector: stays F32
    }
    weights_done_ok(be);

    float *x = random_floats((size_t)n * k, 1.0f, &rng);
    float *dx = dev_upload(be, x, sizeof(float) * (size_t)n * k);
    float *dy[KILN_LINEAR_MAX] = {0};
    float *y_before = NULL;
    for (int i = 0; i < count; i++) {
        const size_t ny = (size_t)n * lc->rows[i];
        if (lc->accumulate) { // the residual: y += W x
            y_before = random_floats(ny, 1.0f, &rng);
            dy[i] = dev_upload(be, y_before, sizeof(float) * ny);
        } else {
            dy[i] = dev_nan(be, ny);
        }
    }
    kiln_linear_args a = {.count = count, .x = dx, .n = n, .accumulate = lc->accumulate, .glu = lc->glu};
    for (int i = 0; i < count; i++) {
        a.w[i] = &w[i].dev;
        a.bias[i] = lc->bias ? bias[i].dev.data : NULL;
        a.y[i] = dy[i];
    }
    char label[160];
    snprintf(label, sizeof label, "linear %s%s%s%s %dx%d n %d%s%s%s [%s]", kiln_dtype_name(lc->src[0]),
             count > 1 ? "," : "", count > 1 ? kiln_dtype_name(lc->src[1]) : "", count > 2 ? ",.." : "",
             lc->rows[0], k, n, lc->bias ? " bias" : "", lc->accumulate ? " accumulate" : "", lc->glu ? " glu" : "",
             gemm ? "gemm" : "matvec");
    be->ops->linear(be, &a);
    sync_ok(be, label);

    // Reference: each weight sees the input as the kernel does (rounded to
    // the weight's type on the GEMM path).
    double *xr[KILN_LINEAR_MAX] = {0};
    for (int i = 0; i < count; i++) {
        xr[i] = malloc(sizeof(double) * (size_t)n * k);
        assert_non_null(xr[i]);
        for (size_t e = 0; e < (size_t)n * k; e++) xr[i][e] = gemm ? round_to(w[i].dev.dtype, x[e]) : x[e];
    }
    const int outputs = lc->glu ? 1 : count;
    for (int i = 0; i < outputs; i++) {
        const size_t ny = (size_t)n * lc->rows[i];
        float *got = host_download(be, dy[i], sizeof(float) * ny);
        double *ref = malloc(sizeof(double) * ny), *bound = malloc(sizeof(double) * ny);
        assert_true(ref && bound);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < lc->rows[i]; r++) {
                double dot[2] = {0, 0}, abs_sum[2] = {0, 0};
                for (int j = 0; j < (lc->glu ? 2 : 1); j++) {
                    const int wi = lc->glu ? j : i;
                    const double *wr = w[wi].val + (size_t)r * k, *xt = xr[wi] + (size_t)t * k;
                    for (int c = 0; c < k; c++) {
                        dot[j] += wr[c] * xt[c];
                        abs_sum[j] += fabs(wr[c] * xt[c]);
                    }
                    if (lc->bias) {
                        const double b = bias[wi].val[r];
                        dot[j] += b, abs_sum[j] += fabs(b);
                    }
                }
                const size_t o = (size_t)t * lc->rows[i] + r;
                if (lc->glu) {
                    // silu(g) * u: |silu'| <= 1.1 carries g's error, silu(g)
                    // carries u's; __expf is off by <= (2 + 1.2 |g|) ulp
                    // (CUDA's table), and the divide and the product round.
                    const double g = dot[0], u = dot[1], eg = sum_bound(k, abs_sum[0]), eu = sum_bound(k, abs_sum[1]);
                    ref[o] = silu(g) * u;
                    bound[o] = 1.1 * eg * (fabs(u) + eu) + fabs(silu(g)) * eu +
                               (8.0 + 1.2 * fabs(g)) * 0x1.0p-23 * fabs(ref[o]);
                } else {
                    ref[o] = dot[0], bound[o] = sum_bound(k, abs_sum[0]);
                    if (lc->accumulate) {
                        ref[o] += y_before[o];
                        bound[o] = sum_bound(k, abs_sum[0] + fabs(y_before[o]));
                    }
                }
            }
        char what[192];
        snprintf(what, sizeof what, "%s y%d (%d rows)", label, i, lc->rows[i]);
        check_outputs(what, got, ref, bound, ny, LINEAR_MAX_REL_L2);
        free(got), free(ref), free(bound);
    }

    for (int i = 0; i < count; i++) free(xr[i]);
    free(x), free(y_before);
    be->device->free(be, dx);
    for (int i = 0; i < count; i++) {
        be->device->free(be, dy[i]);
        weight_free(be, &w[i]);
        if (lc->bias) weight_free(be, &bias[i]);
    }
}

static void run_linear_ns(kiln_backend *be, linear_case lc, const int *ns, int n_ns, uint64_t seed) {
    for (int i = 0; i < n_ns; i++) {
        lc.n = ns[i];
        run_linear(be, &lc, seed + (uint64_t)i * 7919);
    }
}

#define NS(...) (const int[]){__VA_ARGS__}, (int)(sizeof((const int[]){__VA_ARGS__}) / sizeof(int))

// n 1..8: the matrix-vector kernel; 9 and up: cuBLASLt.
static void test_linear_f16(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 296, .count = 1, .src = {KILN_F16}, .rows = {77}}, NS(1, 2, 5, 8, 9, 37, 130),
                  0x11001);
    run_linear_ns(be, (linear_case){.k = 1000, .count = 1, .src = {KILN_F16}, .rows = {1283}}, NS(1, 3, 8, 9, 130),
                  0x11002);
}

static void test_linear_bf16(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 1000, .count = 1, .src = {KILN_BF16}, .rows = {1283}},
                  NS(1, 2, 5, 8, 9, 37, 130), 0x12001);
    run_linear_ns(be, (linear_case){.k = 296, .count = 1, .src = {KILN_BF16}, .rows = {77}}, NS(4, 9), 0x12002);
}

// F32 matrices become BF16 on the device.
static void test_linear_f32_source(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 1000, .count = 1, .src = {KILN_F32}, .rows = {77}}, NS(1, 8, 37), 0x13001);
}

// Quantized matrices become F16 on the device (k: a multiple of 32).
static void test_linear_quantized(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 992, .count = 1, .src = {KILN_Q8_0}, .rows = {77}}, NS(1, 5, 37), 0x14001);
    run_linear_ns(be, (linear_case){.k = 992, .count = 1, .src = {KILN_Q4_1}, .rows = {1283}}, NS(2, 8, 130),
                  0x14002);
}

// k % 8 != 0: the matvec cannot take it (16-byte rows), so even n = 1 goes
// to cuBLASLt, with leading dimensions that are not 16-byte multiples.
static void test_linear_k_not_multiple_of_8(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 1001, .count = 1, .src = {KILN_F16}, .rows = {77}}, NS(1, 2, 37), 0x15001);
    run_linear_ns(be, (linear_case){.k = 1001, .count = 1, .src = {KILN_BF16}, .rows = {1283}}, NS(1, 130),
                  0x15002);
}

// Q, K, V of different row counts sharing one input, with biases.
static void test_linear_qkv(void **state) {
    kiln_backend *be = *state;
    const linear_case qkv16 = {.k = 296, .count = 3, .src = {KILN_F16, KILN_F16, KILN_F16}, .rows = {96, 32, 32},
                               .bias = true};
    run_linear_ns(be, qkv16, NS(1, 5, 8, 9, 37), 0x16001);
    const linear_case qkv_bf16 = {.k = 1000, .count = 3, .src = {KILN_BF16, KILN_BF16, KILN_BF16},
                                  .rows = {96, 32, 32}, .bias = true};
    run_linear_ns(be, qkv_bf16, NS(2, 130), 0x16002);
    const linear_case no_bias = {.k = 296, .count = 3, .src = {KILN_F16, KILN_F16, KILN_F16}, .rows = {96, 32, 32}};
    run_linear_ns(be, no_bias, NS(4, 17), 0x16003);
    // Device types F16, BF16, F16: the GEMM path converts the input anew for
    // each change of type.
    const linear_case mixed = {.k = 992, .count = 3, .src = {KILN_F16, KILN_F32, KILN_Q8_0}, .rows = {96, 32, 32},
                               .bias = true};
    run_linear_ns(be, mixed, NS(2, 37), 0x16004);
}

// y += W x (the residual add), y pre-filled with random values.
static void test_linear_accumulate(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 1000, .count = 1, .src = {KILN_F16}, .rows = {77}, .accumulate = true},
                  NS(1, 8, 9, 130), 0x17001);
    run_linear_ns(be, (linear_case){.k = 296, .count = 1, .src = {KILN_BF16}, .rows = {1283}, .accumulate = true},
                  NS(3, 37), 0x17002);
    run_linear_ns(be,
                  (linear_case){.k = 296, .count = 1, .src = {KILN_F16}, .rows = {77}, .accumulate = true,
                                .bias = true},
                  NS(1, 37), 0x17003);
}

// y0 = silu(W0 x) * (W1 x); with biases the matvec declines, so n = 1 goes
// through cuBLASLt and the separate SwiGLU kernel.
// k long enough for several rounds of the one-token pipeline (k = 4104: 513
// chunks of 8, four rounds of 128 and a tail for the plain form, eight of 64
// for the two-row forms), which the shorter cases above leave to the tail
// loop (the "_plain" and "_pipelined" runs take each form's rounds).
static void test_linear_long_k(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be, (linear_case){.k = 4104, .count = 1, .src = {KILN_F16}, .rows = {45}}, NS(1), 0x19001);
    run_linear_ns(be,
                  (linear_case){.k = 4104, .count = 1, .src = {KILN_BF16}, .rows = {45}, .accumulate = true,
                                .bias = true},
                  NS(1), 0x19002);
    run_linear_ns(be,
                  (linear_case){.k = 4104, .count = 2, .src = {KILN_BF16, KILN_BF16}, .rows = {45, 45}, .glu = true},
                  NS(1), 0x19003);
    run_linear_ns(be,
                  (linear_case){.k = 4104, .count = 3, .src = {KILN_F16, KILN_F16, KILN_F16}, .rows = {40, 16, 16}},
                  NS(1), 0x19004);
}

// The one-token forms (plain rounds, pipelined rounds) add each lane's
// chunks in the same order, so their outputs are bitwise identical: what
// lets the backend pick between them by speed alone (cuda_matvec_tune.c).
// Called straight, k long enough for several rounds.
static void run_matvec_forms(kiln_backend *be, bool glu, bool norm, bool accumulate, uint64_t seed) {
    enum { K = 4104, ROWS = 301 };
    uint64_t rng = seed;
    const int count = glu ? 2 : 1;
    uint16_t *w = malloc(sizeof(uint16_t) * (size_t)K * ROWS);
    assert_non_null(w);
    kiln_cuda_matvec_args a = {.count = count, .type = KILN_CUDA_BF16, .k = K, .n_tokens = 1, .glu = glu,
                               .accumulate = accumulate, .norm_eps = 1e-5f};
    float *x = random_floats(K, 1.0f, &rng), *y0 = random_floats(ROWS, 1.0f, &rng), *gain = random_floats(K, 1.0f, &rng);
    for (int i = 0; i < count; i++) {
        for (size_t j = 0; j < (size_t)K * ROWS; j++) {
            const float v = 0.1f * kiln_test_rand_f(&rng);
            uint32_t bits;
            memcpy(&bits, &v, sizeof bits);
            w[j] = (uint16_t)(bits >> 16);
        }
        a.w[i] = dev_upload(be, w, sizeof(uint16_t) * (size_t)K * ROWS);
        a.rows[i] = ROWS;
    }
    a.x = dev_upload(be, x, sizeof(float) * K);
    if (norm) a.norm = dev_upload(be, gain, sizeof(float) * K);
    float *outs[2];
    for (int f = 0; f < 2; f++) {
        float *dy = dev_upload(be, y0, sizeof(float) * ROWS);
        a.y[0] = dy;
        if (glu) a.y[1] = dy; // not written with glu
        a.pipe = f == 1;
        CUDA_CHECK(kiln_cuda_matvec(0, &a));
        CUDA_CHECK(cudaDeviceSynchronize());
        outs[f] = host_download(be, dy, sizeof(float) * ROWS);
        be->device->free(be, dy);
    }
    for (int r = 0; r < ROWS; r++)
        if (memcmp(&outs[0][r], &outs[1][r], sizeof(float)) != 0)
            fail_msg("matvec%s%s%s: row %d is %.9g with plain rounds, %.9g with pipelined rounds", glu ? " glu" : "",
                     norm ? " norm" : "", accumulate ? " accumulate" : "", r, outs[0][r], outs[1][r]);
    for (int f = 0; f < 2; f++) free(outs[f]);
    for (int i = 0; i < count; i++) be->device->free(be, (void *)a.w[i]);
    be->device->free(be, (void *)a.x);
    if (norm) be->device->free(be, (void *)a.norm);
    free(w), free(x), free(y0), free(gain);
}

static void test_matvec_forms_identical(void **state) {
    kiln_backend *be = *state;
    run_matvec_forms(be, false, false, false, 0x1a001);
    run_matvec_forms(be, false, false, true, 0x1a002);
    run_matvec_forms(be, false, true, false, 0x1a003);
    run_matvec_forms(be, true, true, false, 0x1a004);
    run_matvec_forms(be, true, false, false, 0x1a005);
}

static void test_linear_glu(void **state) {
    kiln_backend *be = *state;
    run_linear_ns(be,
                  (linear_case){.k = 296, .count = 2, .src = {KILN_F16, KILN_F16}, .rows = {1283, 1283}, .glu = true},
                  NS(1, 8, 9, 37), 0x18001);
    run_linear_ns(be,
                  (linear_case){.k = 1000, .count = 2, .src = {KILN_BF16, KILN_BF16}, .rows = {77, 77}, .glu = true},
                  NS(2, 130), 0x18002);
    run_linear_ns(be,
                  (linear_case){.k = 296, .count = 2, .src = {KILN_F16, KILN_F16}, .rows = {77, 77}, .glu = true,
                                .bias = true},
                  NS(1, 37), 0x18003);
}

// ---- mlp (the SwiGLU block with its residual add) -----------------------------------

// x += W_down (silu(W_gate h) * (W_up h)), reference in float64 on the device
// weights, without any rounding of activations. n <= 8: the matrix-vector
// kernels keep everything in float (1e-4, as linear). n > 8: cuBLASLt takes
// 16-bit inputs, so h and the SwiGLU product are rounded to the weights'
// type (and gate and up too: they stay 16-bit from cuBLASLt to the down
// projection): at most 4 roundings of unit roundoff u (2^-8 for BF16, 2^-11 for F16), each uniform with RMS
// u/sqrt(3), adding in quadrature over random signs to about 1.15 u; the
// bound is 3 u. With norm, h is RMSNorm(h) * g first (the rounding of h then
// applies to the normalised input: the same count).
static void run_mlp(kiln_backend *be, kiln_dtype src, int n, bool norm, uint64_t seed) {
    enum { DIM = 96, FFN = 200 };
    uint64_t rng = seed;
    weight wg = weight_make(be, src, FFN, DIM, 0.5f, &rng), wu = weight_make(be, src, FFN, DIM, 0.5f, &rng),
           wd = weight_make(be, src, DIM, FFN, 0.5f, &rng);
    weights_done_ok(be);
    float *h = random_floats((size_t)n * DIM, 1.0f, &rng), *x0 = random_floats((size_t)n * DIM, 1.0f, &rng);
    float *gain = random_floats(DIM, 1.0f, &rng);
    const float eps = 1e-5f;
    double *ref = malloc(sizeof(double) * n * DIM), *mid = malloc(sizeof(double) * FFN), *hn = malloc(sizeof(double) * DIM);
    assert_true(ref && mid && hn);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int c = 0; c < DIM; c++) ss += (double)h[t * DIM + c] * h[t * DIM + c];
        const double inv = 1.0 / sqrt(ss / DIM + eps);
        for (int c = 0; c < DIM; c++) hn[c] = norm ? h[t * DIM + c] * inv * gain[c] : h[t * DIM + c];
        for (int j = 0; j < FFN; j++) {
            double g = 0, u = 0;
            for (int c = 0; c < DIM; c++) {
                g += wg.val[(size_t)j * DIM + c] * hn[c];
                u += wu.val[(size_t)j * DIM + c] * hn[c];
            }
            mid[j] = silu(g) * u;
        }
        for (int r = 0; r < DIM; r++) {
            double acc = x0[t * DIM + r];
            for (int j = 0; j < FFN; j++) acc += wd.val[(size_t)r * FFN + j] * mid[j];
            ref[t * DIM + r] = acc - x0[t * DIM + r]; // compare the added part: x0 would hide its error
        }
    }
    float *dh = dev_upload(be, h, sizeof(float) * n * DIM), *dx = dev_upload(be, x0, sizeof(float) * n * DIM);
    float *dgate = dev_nan(be, (size_t)n * FFN), *dup = dev_nan(be, (size_t)n * FFN);
    float *dgain = dev_upload(be, gain, sizeof(float) * DIM);
    be->ops->mlp(be, &(kiln_mlp_args){.w_gate = &wg.dev, .w_up = &wu.dev, .w_down = &wd.dev, .h = dh, .x = dx,
                                      .gate = dgate, .up = dup, .n = n, .norm = norm ? dgain : NULL,
                                      .norm_eps = eps});
    sync_ok(be, "mlp");
    float *got = host_download(be, dx, sizeof(float) * n * DIM);
    for (int i = 0; i < n * DIM; i++) got[i] -= x0[i];
    char what[96];
    snprintf(what, sizeof what, "mlp %s n=%d%s", kiln_dtype_name(src), n, norm ? " with norm" : "");
    const double u = device_form(src, 2) == KILN_BF16 ? 0x1.0p-8 : 0x1.0p-11;
    const double bound = n <= 8 ? 1e-4 : 3 * u;
    check_outputs(what, got, ref, NULL, (size_t)n * DIM, bound);
    free(got);
    be->device->free(be, dh);
    be->device->free(be, dx);
    be->device->free(be, dgate);
    be->device->free(be, dup);
    be->device->free(be, dgain);
    free(h);
    free(x0);
    free(gain);
    free(hn);
    free(ref);
    free(mid);
    weight_free(be, &wg);
    weight_free(be, &wu);
    weight_free(be, &wd);
}

// linear with norm: y = W (RMSNorm(x) * g), reference in float64. n <= 8:
// the matrix-vector kernel (normalising itself for 1 or 2 tokens, after a
// separate RMSNorm otherwise), float throughout: 1e-4. n > 8: the
// normalised input is rounded once to the weights' 16-bit type for cuBLASLt
// (RMS u/sqrt(3)); the bound is 2 u.
static void run_linear_norm(kiln_backend *be, kiln_dtype src, int n, int count, uint64_t seed) {
    enum { K = 136, ROWS0 = 72, ROWS1 = 40 };
    uint64_t rng = seed;
    const int rows[2] = {ROWS0, ROWS1};
    weight w[2];
    for (int i = 0; i < count; i++) w[i] = weight_make(be, src, rows[i], K, 0.5f, &rng);
    weights_done_ok(be);
    float *x = random_floats((size_t)n * K, 2.0f, &rng), *g = random_floats(K, 1.0f, &rng);
    const float eps = 1e-5f;
    double *h = malloc(sizeof(double) * n * K);
    assert_non_null(h);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int c = 0; c < K; c++) ss += (double)x[t * K + c] * x[t * K + c];
        const double inv = 1.0 / sqrt(ss / K + eps);
        for (int c = 0; c < K; c++) h[t * K + c] = x[t * K + c] * inv * g[c];
    }
    float *dx = dev_upload(be, x, sizeof(float) * n * K), *dg = dev_upload(be, g, sizeof(float) * K), *dy[2];
    kiln_linear_args a = {.count = count, .x = dx, .n = n, .norm = dg, .norm_eps = eps};
    for (int i = 0; i < count; i++) {
        dy[i] = dev_nan(be, (size_t)n * rows[i]);
        a.w[i] = &w[i].dev;
        a.y[i] = dy[i];
    }
    be->ops->linear(be, &a);
    sync_ok(be, "linear with norm");
    const double u = device_form(src, 2) == KILN_BF16 ? 0x1.0p-8 : 0x1.0p-11;
    for (int i = 0; i < count; i++) {
        double *ref = malloc(sizeof(double) * n * rows[i]);
        assert_non_null(ref);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows[i]; r++) {
                double acc = 0;
                for (int c = 0; c < K; c++) acc += w[i].val[(size_t)r * K + c] * h[t * K + c];
                ref[t * rows[i] + r] = acc;
            }
        float *got = host_download(be, dy[i], sizeof(float) * n * rows[i]);
        char what[96];
        snprintf(what, sizeof what, "linear+norm %s n=%d weight %d of %d", kiln_dtype_name(src), n, i, count);
        check_outputs(what, got, ref, NULL, (size_t)n * rows[i], n <= 8 ? 1e-4 : 2 * u);
        free(got);
        free(ref);
        be->device->free(be, dy[i]);
        weight_free(be, &w[i]);
    }
    be->device->free(be, dx);
    be->device->free(be, dg);
    free(x);
    free(g);
    free(h);
}

// Between the residual product and its reader: nothing; a copy through the
// backend that rewrites the residual (the step's plan then pairs nothing: the
// reader must normalise the new values itself); or the same rewrite behind
// the backend's back, with the hand-off set as the plan sets it (a reader
// that took the preparation still sees the residual as the product left it:
// this shows the preparation is used).
enum { BETWEEN_NOTHING, BETWEEN_COPY, BETWEEN_RAW_COPY };

// A residual product followed by a product that reads the residual through
// RMSNorm: the step's plan (cuda_plan.c, through backend/step.c) makes the
// first prepare the norm and the second take it (cuda_linear.c; up to
// KILN_MATVEC_NORM_MAX_TOKENS tokens): both outputs against float64. Plain
// reader (count 1), two weights, or SwiGLU.
static void run_prepared_norm(kiln_backend *be, kiln_dtype src, int n, int count, bool glu, int between,
                              uint64_t seed) {
    enum { DIM = 264, IN = 136, OUT = 72 };
    uint64_t rng = seed;
    weight wo = weight_make(be, src, DIM, IN, 0.5f, &rng), w2[2];
    for (int i = 0; i < count; i++) w2[i] = weight_make(be, src, OUT, DIM, 0.5f, &rng);
    weights_done_ok(be);
    const size_t ny = (size_t)n * DIM, nz = (size_t)n * OUT;
    float *att = random_floats((size_t)n * IN, 1.0f, &rng), *y0 = random_floats(ny, 2.0f, &rng),
          *other = random_floats(ny, 2.0f, &rng), *g = random_floats(DIM, 1.0f, &rng);
    const float eps = 1e-5f;
    float *datt = dev_upload(be, att, sizeof(float) * (size_t)n * IN), *dy = dev_upload(be, y0, sizeof(float) * ny),
          *dother = dev_upload(be, other, sizeof(float) * ny), *dg = dev_upload(be, g, sizeof(float) * DIM), *dz[2];
    for (int i = 0; i < count; i++) dz[i] = dev_nan(be, nz);
    const kiln_linear_args residual = {.count = 1, .w = {&wo.dev}, .y = {dy}, .x = datt, .n = n, .accumulate = true};
    kiln_linear_args reader = {.count = count, .x = dy, .n = n, .glu = glu, .norm = dg, .norm_eps = eps};
    for (int i = 0; i < count; i++) reader.w[i] = &w2[i].dev, reader.y[i] = dz[i];
    if (between == BETWEEN_RAW_COPY) {
        kiln_linear_args producer = residual;
        producer.next_norm = dg;
        reader.prepared_input = true;
        be->ops->linear(be, &producer);
        sync_ok(be, "residual product");
        CUDA_CHECK(cudaMemcpy(dy, dother, sizeof(float) * ny, cudaMemcpyDeviceToDevice));
        be->ops->linear(be, &reader);
    } else {
        kiln_step_recorder rec = {0};
        kiln_backend *step = kiln_step_begin(&rec, be);
        assert_ptr_not_equal(step, be); // the CUDA backend plans its steps
        step->ops->linear(step, &residual);
        if (between == BETWEEN_COPY) step->ops->copy(step, dy, dother, sizeof(float) * ny);
        step->ops->linear(step, &reader);
        assert_int_equal(rec.n_ops, between == BETWEEN_COPY ? 3 : 2);
        assert_int_equal(kiln_step_end(&rec), KILN_OK);
        kiln_step_recorder_free(&rec);
    }
    // What the reader normalises: the new residual, unless it took the
    // preparation made before the raw rewrite.
    const bool reads_other = between == BETWEEN_COPY || (between == BETWEEN_RAW_COPY && n > KILN_MATVEC_NORM_MAX_TOKENS);
    char what[128];
    static const char *const betweens[] = {"", ", residual rewritten", ", residual rewritten behind the backend"};
    snprintf(what, sizeof what, "prepared norm %s n=%d count %d%s%s", kiln_dtype_name(src), n, count,
             glu ? " glu" : "", betweens[between]);
    sync_ok(be, what);

    // y: the residual in the end; read: what the reader normalises.
    double *y = malloc(sizeof(double) * ny), *read = malloc(sizeof(double) * ny), *h = malloc(sizeof(double) * ny),
           *ref[2];
    assert_true(y && read && h);
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int r = 0; r < DIM; r++) {
            const size_t i = (size_t)t * DIM + r;
            double acc = y0[i];
            for (int c = 0; c < IN; c++) acc += wo.val[(size_t)r * IN + c] * att[(size_t)t * IN + c];
            y[i] = between != BETWEEN_NOTHING ? other[i] : acc;
            read[i] = reads_other ? other[i] : acc;
            ss += read[i] * read[i];
        }
        const double inv = 1.0 / sqrt(ss / DIM + eps);
        for (int r = 0; r < DIM; r++) h[(size_t)t * DIM + r] = read[(size_t)t * DIM + r] * inv * g[r];
    }
    for (int i = 0; i < count; i++) {
        ref[i] = malloc(sizeof(double) * nz);
        assert_non_null(ref[i]);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < OUT; r++) {
                double acc = 0;
                for (int c = 0; c < DIM; c++) acc += w2[i].val[(size_t)r * DIM + c] * h[(size_t)t * DIM + c];
                ref[i][(size_t)t * OUT + r] = acc;
            }
    }
    if (glu)
        for (size_t j = 0; j < nz; j++) ref[0][j] = silu(ref[0][j]) * ref[1][j];
    const double tol = 1e-4; // the matrix-vector kernel: float inputs (n = 3 too: its inputs fit the bound)
    char part[160];
    float *got_y = host_download(be, dy, sizeof(float) * ny);
    snprintf(part, sizeof part, "%s: residual", what);
    check_outputs(part, got_y, y, NULL, ny, tol);
    for (int i = 0; i < (glu ? 1 : count); i++) {
        float *got = host_download(be, dz[i], sizeof(float) * nz);
        snprintf(part, sizeof part, "%s: output %d", what, i);
        check_outputs(part, got, ref[i], NULL, nz, tol);
        free(got);
    }
    free(got_y), free(y), free(read), free(h), free(att), free(y0), free(other), free(g);
    for (int i = 0; i < count; i++) {
        free(ref[i]);
        be->device->free(be, dz[i]);
        weight_free(be, &w2[i]);
    }
    weight_free(be, &wo);
    void *bufs[] = {datt, dy, dother, dg};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->device->free(be, bufs[i]);
}

static void test_prepared_norm(void **state) {
    kiln_backend *be = *state;
    for (int n = 1; n <= 3; n++) { // 3: more tokens than the preparation takes
        run_prepared_norm(be, KILN_BF16, n, 1, false, BETWEEN_NOTHING, 0x4301 + n);
        run_prepared_norm(be, KILN_F16, n, 2, true, BETWEEN_NOTHING, 0x4311 + n);
        run_prepared_norm(be, KILN_BF16, n, 2, false, BETWEEN_NOTHING, 0x4321 + n);
        run_prepared_norm(be, KILN_BF16, n, 1, false, BETWEEN_COPY, 0x4331 + n);
        run_prepared_norm(be, KILN_F16, n, 2, true, BETWEEN_COPY, 0x4341 + n);
        run_prepared_norm(be, KILN_BF16, n, 1, false, BETWEEN_RAW_COPY, 0x4351 + n);
        run_prepared_norm(be, KILN_F16, n, 2, true, BETWEEN_RAW_COPY, 0x4361 + n);
    }
}

// The plan's rule alone: a residual product (linear with accumulate, or the
// feed-forward block) hands its RMSNorm to the very next operation when that
// reads the residual through a norm, and to nothing else.
static void test_step_plan(void **state) {
    kiln_backend *be = *state;
    float x[4], other[4], att[4], gate[4], up[4], norm1[4], norm2[4];
    const kiln_tensor w = {0};
    kiln_op ops[] = {
        {.kind = KILN_OP_LINEAR, .linear = {.count = 1, .w = {&w}, .y = {x}, .x = att, .n = 1, .accumulate = true}},
        {.kind = KILN_OP_MLP, .mlp = {.h = x, .x = x, .gate = gate, .up = up, .n = 1, .norm = norm1}},
        {.kind = KILN_OP_LINEAR, .linear = {.count = 3, .x = x, .n = 1, .norm = norm2}},    // next block's Q/K/V
        {.kind = KILN_OP_ATTENTION},
        {.kind = KILN_OP_LINEAR, .linear = {.count = 1, .y = {x}, .x = att, .n = 1, .accumulate = true}},
        {.kind = KILN_OP_COPY},                                                                 // in between
        {.kind = KILN_OP_MLP, .mlp = {.h = x, .x = x, .n = 1, .norm = norm1}},
        {.kind = KILN_OP_LINEAR, .linear = {.count = 1, .x = other, .n = 1, .norm = norm2}}, // another buffer
        {.kind = KILN_OP_LINEAR, .linear = {.count = 1, .y = {x}, .x = att, .n = 1, .accumulate = true}},
        {.kind = KILN_OP_LINEAR, .linear = {.count = 1, .x = x, .n = 1}},                    // no norm
    };
    const int n = (int)(sizeof ops / sizeof ops[0]);
    assert_non_null(be->ops->plan);
    be->ops->plan(be, ops, n);
    assert_ptr_equal(ops[0].linear.next_norm, norm1);
    assert_true(ops[1].mlp.prepared_input);
    assert_ptr_equal(ops[1].mlp.next_norm, norm2);
    assert_true(ops[2].linear.prepared_input);
    assert_null(ops[4].linear.next_norm);
    assert_false(ops[6].mlp.prepared_input);
    assert_null(ops[6].mlp.next_norm);
    assert_false(ops[7].linear.prepared_input);
    assert_null(ops[8].linear.next_norm);
    assert_false(ops[9].linear.prepared_input);
}

static void test_linear_norm(void **state) {
    kiln_backend *be = *state;
    static const int ns[] = {1, 2, 3, 8, 9, 37};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        run_linear_norm(be, KILN_F16, ns[i], 1, 0x4101 + i);
        run_linear_norm(be, KILN_BF16, ns[i], 2, 0x4201 + i);
    }
}

static void test_mlp(void **state) {
    kiln_backend *be = *state;
    static const int ns[] = {1, 2, 5, 9, 37, 130};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        run_mlp(be, KILN_F16, ns[i], false, 0x3101 + i);
        run_mlp(be, KILN_BF16, ns[i], false, 0x3201 + i);
        run_mlp(be, KILN_F16, ns[i], true, 0x3301 + i);
        run_mlp(be, KILN_BF16, ns[i], true, 0x3401 + i);
    }
}

// ---- rmsnorm ------------------------------------------------------------------------

// Relative error per element: the float32 sum of squares of positive terms
// goes through at most dim / blockDim + 10 additions per term (<= 14 for
// dim 4096), 2^-24 each; then / dim and + eps (2 roundings), rsqrtf (<= 2
// ulp), half of the sum's error through the square root, and the two
// products: < 1.5e-6 in all. 1e-5 leaves a factor of about 7.
#define RMSNORM_MAX_REL 1e-5

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * weight, in float64.
static void rmsnorm_ref(const float *x, const double *weight, int n, int dim, float eps, double *ref, double *bound) {
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int i = 0; i < dim; i++) ss += (double)x[(size_t)t * dim + i] * x[(size_t)t * dim + i];
        const double inv = 1.0 / sqrt(ss / dim + (double)eps);
        for (int i = 0; i < dim; i++) {
            const size_t o = (size_t)t * dim + i;
            ref[o] = x[o] * inv * weight[i];
            bound[o] = RMSNORM_MAX_REL * fabs(ref[o]) + 1e-30;
        }
    }
}

static void run_rmsnorm(kiln_backend *be, int n, int dim, float eps, kiln_dtype weight_src, bool in_place,
                        uint64_t seed) {
    uint64_t rng = seed;
    weight g = weight_make(be, weight_src, 1, dim, 2.0f, &rng); // a vector: F32 on the device
    weights_done_ok(be);
    const size_t elems = (size_t)n * dim;
    float *x = random_floats(elems, 2.0f, &rng);
    // Row 1 is tiny: mean(x^2) ~ 1e-7 < eps, so eps must be inside the root.
    for (int i = 0; i < dim && n > 1; i++) x[(size_t)dim + i] *= 5e-4f;
    float *dx = dev_upload(be, x, sizeof(float) * elems);
    float *dy = in_place ? dx : dev_nan(be, elems);
    char what[128];
    snprintf(what, sizeof what, "rmsnorm n %d dim %d eps %g weight %s%s", n, dim, (double)eps,
             kiln_dtype_name(weight_src), in_place ? " in place" : "");
    // The kernel alone (the backend asks for it through linear's norm): on
    // the default stream, after the backend's uploads have landed.
    sync_ok(be, "upload");
    CUDA_CHECK(kiln_cuda_rmsnorm(0, dx, g.dev.data, dy, n, dim, eps));
    CUDA_CHECK(cudaDeviceSynchronize());
    float *got = host_download(be, dy, sizeof(float) * elems);
    double *ref = malloc(sizeof(double) * elems), *bound = malloc(sizeof(double) * elems);
    assert_true(ref && bound);
    rmsnorm_ref(x, g.val, n, dim, eps, ref, bound);
    check_outputs(what, got, ref, bound, elems, RMSNORM_MAX_REL);
    free(got), free(ref), free(bound), free(x);
    be->device->free(be, dx);
    if (!in_place) be->device->free(be, dy);
    weight_free(be, &g);
}

static void test_rmsnorm(void **state) {
    kiln_backend *be = *state;
    run_rmsnorm(be, 3, 67, 1e-5f, KILN_F32, false, 0x21001);
    run_rmsnorm(be, 3, 67, 1e-6f, KILN_F32, true, 0x21002);
    run_rmsnorm(be, 3, 4096, 1e-5f, KILN_F16, false, 0x21003);
    run_rmsnorm(be, 3, 4096, 1e-5f, KILN_F32, true, 0x21004);
    run_rmsnorm(be, 1, 1000, 1e-6f, KILN_BF16, true, 0x21005);
}

// ---- get_rows -----------------------------------------------------------------------

// A conversion to float is exact: rows must match bit for bit.
static void run_get_rows(kiln_backend *be, kiln_dtype src, int vocab, int dim, uint64_t seed) {
    uint64_t rng = seed;
    weight table = weight_make(be, src, vocab, dim, 3.0f, &rng);
    weights_done_ok(be);
    enum { N = 9 };
    int32_t ids[N] = {0, vocab - 1, 0, vocab / 2};
    for (int t = 4; t < N; t++) ids[t] = (int32_t)(kiln_test_rand_u64(&rng) % (uint64_t)vocab);
    int32_t *dids = dev_upload(be, ids, sizeof ids);
    const size_t elems = (size_t)N * dim;
    float *dout = dev_nan(be, elems);
    char what[96];
    snprintf(what, sizeof what, "get_rows %s (device %s) %dx%d", kiln_dtype_name(src), kiln_dtype_name(table.dev.dtype),
             vocab, dim);
    be->ops->get_rows(be, &table.dev, dids, N, dout);
    sync_ok(be, what);
    float *got = host_download(be, dout, sizeof(float) * elems);
    for (int t = 0; t < N; t++)
        for (int c = 0; c < dim; c++) {
            const float want = (float)table.val[(size_t)ids[t] * dim + c], have = got[(size_t)t * dim + c];
            if (!(have == want))
                fail_msg("%s: token %d (id %d) column %d: %.9g, want %.9g", what, t, ids[t], c, (double)have,
                         (double)want);
        }
    printf("  %-64s exact\n", what);
    free(got);
    be->device->free(be, dids);
    be->device->free(be, dout);
    weight_free(be, &table);
}

static void test_get_rows(void **state) {
    kiln_backend *be = *state;
    run_get_rows(be, KILN_F16, 1000, 67, 0x31001);
    run_get_rows(be, KILN_BF16, 1000, 67, 0x31002);
    run_get_rows(be, KILN_F32, 517, 67, 0x31003);  // becomes BF16
    run_get_rows(be, KILN_Q8_0, 300, 96, 0x31004); // becomes F16
    run_get_rows(be, KILN_F32, 1, 67, 0x31005);    // one row: a vector, stays F32
}

// ---- rope_kv_store ------------------------------------------------------------------

enum { KV_BLOCK = 16 };

typedef struct rope_case {
    int n_heads, n_kv_heads, head_dim, rot_dim;
    float theta;
    bool interleaved, freq_factors;
} rope_case;

// Block tables [seqs][max_blocks] over n_blocks physical blocks in shuffled
// order (perm): every entry starts at the trap block perm[0], and each entry
// a token (seq[t], pos[t]) lands in gets the next block of perm.
static void shuffled_block_table(int32_t *table, int seqs, int max_blocks, int *perm, int n_blocks,
                                 const int32_t *seq, const int32_t *pos, int n, uint64_t *rng) {
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        const int j = (int)(kiln_test_rand_u64(rng) % (uint64_t)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    for (int i = 0; i < seqs * max_blocks; i++) table[i] = perm[0];
    int next = 1;
    for (int t = 0; t < n; t++) {
        int32_t *e = &table[(size_t)seq[t] * max_blocks + pos[t] / KV_BLOCK];
        if (*e == perm[0]) {
            assert_true(next < n_blocks);
            *e = perm[next++];
        }
    }
}

// Three sequences: a prompt start (0, 1, 2), both sides of a block boundary
// (15 | 16, 17) and the end of a 4096-position context (4094, 4095).
static const int32_t ROPE_SEQ[] = {0, 0, 0, 1, 1, 1, 2, 2};
static const int32_t ROPE_POS[] = {0, 1, 2, 15, 16, 17, 4094, 4095};
enum {
    ROPE_TOKENS = sizeof ROPE_POS / sizeof ROPE_POS[0],
    ROPE_SEQS = 3,
    ROPE_MAX_BLOCKS = 4096 / KV_BLOCK,
    ROPE_CACHE_BLOCKS = 7, // 4 used, the rest never written
};

// Rotation in float64 from the float32 inputs (angles as in cpu_elementwise.c):
// the kernel's cos/sin rounded to float (<= 2^-25 each) and <= 2 roundings
// of the float32 combination (<= 2^-24 * sqrt(2) each for |x| <= 1) give
// <= 2.3e-7; 1e-6 leaves a factor of 4. A wrong angle (position, frequency,
// factor) or pairing moves values by O(1).
#define ROPE_MAX_ABS 1e-6

static void rope_ref(const rope_case *rc, const float *factors, int pos, const float *in, int n_heads, double *out) {
    const int hd = rc->head_dim, half = rc->rot_dim / 2;
    for (int h = 0; h < n_heads; h++) {
        const float *x = in + (size_t)h * hd;
        double *y = out + (size_t)h * hd;
        for (int d = 0; d < hd; d++) y[d] = x[d];
        for (int i = 0; i < half; i++) {
            double freq = pow((double)rc->theta, -2.0 * i / rc->rot_dim);
            if (factors) freq /= factors[i];
            const double angle = (double)pos * freq, c = cos(angle), s = sin(angle);
            const int a = rc->interleaved ? 2 * i : i, b = rc->interleaved ? 2 * i + 1 : i + half;
            y[a] = x[a] * c - x[b] * s;
            y[b] = x[a] * s + x[b] * c;
        }
    }
}

// q, k after the op: rotated dims within ROPE_MAX_ABS, the others untouched.
static void check_rotated(const char *what, const rope_case *rc, const float *got, const float *in, const double *ref,
                          int n_heads) {
    for (int t = 0; t < ROPE_TOKENS; t++)
        for (int h = 0; h < n_heads; h++)
            for (int d = 0; d < rc->head_dim; d++) {
                const size_t o = ((size_t)t * n_heads + h) * rc->head_dim + d;
                if (d >= rc->rot_dim) {
                    if (!(got[o] == in[o]))
                        fail_msg("%s: token %d head %d dim %d (not rotated) changed: %.9g -> %.9g", what, t, h, d,
                                 (double)in[o], (double)got[o]);
                } else if (!(fabs(got[o] - ref[o]) <= ROPE_MAX_ABS)) {
                    fail_msg("%s: token %d (pos %d) head %d dim %d: %.9g vs reference %.9g", what, t, ROPE_POS[t], h, d,
                             (double)got[o], ref[o]);
                }
            }
}

// One fresh backend per case: the backend keeps a device table per RoPE
// parameter set, keyed by the freq_factors pointer, and at most 4 of them.
static void run_rope(const rope_case *rc, uint64_t seed) {
    kiln_backend *be = backend_new(KILN_MATVEC_TIMED);
    uint64_t rng = seed;
    const int hd = rc->head_dim, nkv = rc->n_kv_heads;
    const size_t slot_elems = (size_t)nkv * hd;

    // Shuffled physical blocks; table entries no token uses point at a trap
    // block, which (like every slot not written) must stay NaN.
    int perm[ROPE_CACHE_BLOCKS];
    static int32_t table[ROPE_SEQS][ROPE_MAX_BLOCKS];
    shuffled_block_table(&table[0][0], ROPE_SEQS, ROPE_MAX_BLOCKS, perm, ROPE_CACHE_BLOCKS, ROPE_SEQ, ROPE_POS,
                         ROPE_TOKENS, &rng);

    const size_t q_elems = (size_t)ROPE_TOKENS * rc->n_heads * hd, k_elems = (size_t)ROPE_TOKENS * slot_elems;
    float *q = random_floats(q_elems, 1.0f, &rng), *k = random_floats(k_elems, 1.0f, &rng),
          *v = random_floats(k_elems, 1.0f, &rng);
    float *factors = NULL;
    if (rc->freq_factors) {
        factors = malloc(sizeof(float) * (size_t)(rc->rot_dim / 2));
        assert_non_null(factors);
        for (int i = 0; i < rc->rot_dim / 2; i++) factors[i] = 1.0f + 7.0f * rand01(&rng); // Llama 3: 1..8
    }
    const size_t cache_elems = (size_t)ROPE_CACHE_BLOCKS * KV_BLOCK * slot_elems;
    uint16_t *nan_cache = malloc(sizeof(uint16_t) * cache_elems);
    assert_non_null(nan_cache);
    for (size_t i = 0; i < cache_elems; i++) nan_cache[i] = F16_NAN;

    float *dq = dev_upload(be, q, sizeof(float) * q_elems), *dk = dev_upload(be, k, sizeof(float) * k_elems),
          *dv = dev_upload(be, v, sizeof(float) * k_elems);
    int32_t *dpos = dev_upload(be, ROPE_POS, sizeof ROPE_POS), *dseq = dev_upload(be, ROPE_SEQ, sizeof ROPE_SEQ),
            *dtable = dev_upload(be, table, sizeof table);
    void *kc = dev_upload(be, nan_cache, sizeof(uint16_t) * cache_elems),
         *vc = dev_upload(be, nan_cache, sizeof(uint16_t) * cache_elems);

    const kiln_kv_view kv = {.dtype = KILN_F16, .block_size = KV_BLOCK, .n_kv_heads = nkv, .head_dim = hd,
                             .max_blocks_per_seq = ROPE_MAX_BLOCKS, .block_tables = dtable};
    const kiln_batch_layout batch = {.n_tokens = ROPE_TOKENS, .pos = dpos, .seq = dseq, .one_seq = false};
    const kiln_rope_params rope = {.rot_dim = rc->rot_dim, .theta = rc->theta, .freq_factors = factors,
                                   .interleaved = rc->interleaved};
    char what[128];
    snprintf(what, sizeof what, "rope_kv_store %s hd %d rot %d theta %g heads %d/%d%s",
             rc->interleaved ? "interleaved" : "halves", hd, rc->rot_dim, (double)rc->theta, rc->n_heads, nkv,
             factors ? " freq_factors" : "");
    be->ops->rope_kv_store(be, &kv, (kiln_kv_layer){.k = kc, .v = vc}, &batch, dq, rc->n_heads, dk, dv, &rope);
    sync_ok(be, what);
    double *q_ref = malloc(sizeof(double) * q_elems), *k_ref = malloc(sizeof(double) * k_elems);
    assert_true(q_ref && k_ref);
    for (int t = 0; t < ROPE_TOKENS; t++) {
        rope_ref(rc, factors, ROPE_POS[t], q + (size_t)t * rc->n_heads * hd, rc->n_heads,
                 q_ref + (size_t)t * rc->n_heads * hd);
        rope_ref(rc, factors, ROPE_POS[t], k + (size_t)t * slot_elems, nkv, k_ref + (size_t)t * slot_elems);
    }
    float *q_got = host_download(be, dq, sizeof(float) * q_elems), *k_got = host_download(be, dk, sizeof(float) * k_elems);
    check_rotated(what, rc, q_got, q, q_ref, rc->n_heads);
    check_rotated(what, rc, k_got, k, k_ref, nkv);

    // The cache: K rotated then rounded to f16 (2^-11 relative, 2^-25 below
    // f16's normal range, plus ROPE_MAX_ABS before the rounding); unrotated
    // K dims and V are f16 of the inputs, bit for bit; all else still NaN.
    uint16_t *k_cache = host_download(be, kc, sizeof(uint16_t) * cache_elems),
             *v_cache = host_download(be, vc, sizeof(uint16_t) * cache_elems);
    bool *written = calloc(cache_elems, sizeof(bool));
    assert_non_null(written);
    for (int t = 0; t < ROPE_TOKENS; t++) {
        const int p = ROPE_POS[t];
        const size_t slot = ((size_t)table[ROPE_SEQ[t]][p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK) * slot_elems;
        for (size_t e = 0; e < slot_elems; e++) {
            const size_t in = (size_t)t * slot_elems + e;
            const int d = (int)(e % (size_t)hd);
            written[slot + e] = true;
            if (d < rc->rot_dim) {
                const double have = kiln_f16_to_f32(k_cache[slot + e]);
                if (!(fabs(have - k_ref[in]) <= 0x1.0p-11 * fabs(k_ref[in]) + ROPE_MAX_ABS + 0x1.0p-25))
                    fail_msg("%s: K cache, token %d (pos %d) element %zu: %.9g vs reference %.9g", what, t, p, e,
                             have, k_ref[in]);
            } else if (k_cache[slot + e] != kiln_f32_to_f16(k[in])) {
                fail_msg("%s: K cache, token %d (pos %d) unrotated element %zu: 0x%04x, want 0x%04x", what, t, p, e,
                         k_cache[slot + e], kiln_f32_to_f16(k[in]));
            }
            if (v_cache[slot + e] != kiln_f32_to_f16(v[in]))
                fail_msg("%s: V cache, token %d (pos %d) element %zu: 0x%04x, want 0x%04x", what, t, p, e,
                         v_cache[slot + e], kiln_f32_to_f16(v[in]));
        }
    }
    for (size_t i = 0; i < cache_elems; i++)
        if (!written[i] && (k_cache[i] != F16_NAN || v_cache[i] != F16_NAN))
            fail_msg("%s: cache element %zu (block %zu) belongs to no token but was written", what, i,
                     i / ((size_t)KV_BLOCK * slot_elems));
    printf("  %-64s ok\n", what);

    free(written), free(k_cache), free(v_cache), free(q_got), free(k_got), free(q_ref), free(k_ref);
    free(q), free(k), free(v), free(factors), free(nan_cache);
    void *bufs[] = {dq, dk, dv, dpos, dseq, dtable, kc, vc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->device->free(be, bufs[i]);
    kiln_backend_destroy(be);
}

static void test_rope_kv_store(void **state) {
    (void)state;
    const rope_case cases[] = {
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 48, .theta = 10000.0f, .interleaved = true},
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 48, .theta = 500000.0f, .freq_factors = true},
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 64, .theta = 500000.0f, .interleaved = true,
         .freq_factors = true},
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 64, .theta = 10000.0f},
        // Llama 3 8B's shape: more pairs than the block has threads.
        {.n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .rot_dim = 128, .theta = 500000.0f, .freq_factors = true},
        {.n_heads = 32, .n_kv_heads = 8, .head_dim = 128, .rot_dim = 96, .theta = 10000.0f, .interleaved = true},
        // Pair counts that are not multiples of 4: the kernel without 16-byte accesses.
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 36, .theta = 10000.0f},
        {.n_heads = 6, .n_kv_heads = 2, .head_dim = 64, .rot_dim = 36, .theta = 10000.0f, .interleaved = true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_rope(&cases[i], 0x41000 + i);
}

// ---- the 16-bit elementwise kernels (GEMM inputs, SwiGLU in place) -----------------

// convert and swiglu16 against float64 on lengths with a tail past the
// vector groups, at aligned and unaligned starts (the scalar path): each
// output is the correctly rounded 16-bit value of the float result, so the
// bound is one rounding of the float64 value (u relative) plus float's own.
static void run_convert_swiglu(kiln_backend *be, kiln_cuda_type type, size_t n, size_t offset, uint64_t seed) {
    uint64_t rng = seed;
    const kiln_dtype form = type == KILN_CUDA_BF16 ? KILN_BF16 : KILN_F16;
    const double u = type == KILN_CUDA_BF16 ? 0x1.0p-8 : 0x1.0p-11;
    float *x = random_floats(n + offset, 4.0f, &rng), *up = random_floats(n + offset, 2.0f, &rng);
    float *dx = dev_upload(be, x, sizeof(float) * (n + offset)), *dupf = dev_upload(be, up, sizeof(float) * (n + offset));
    uint16_t *d16 = dev_alloc(be, 2 * (n + offset)), *dup = dev_alloc(be, 2 * (n + offset));
    CUDA_CHECK(kiln_cuda_convert(0, dx + offset, d16 + offset, type, n));
    CUDA_CHECK(kiln_cuda_convert(0, dupf, dup, type, n + offset)); // up in 16 bits, as the GEMM leaves it
    CUDA_CHECK(cudaDeviceSynchronize());
    uint16_t *conv = host_download(be, d16, 2 * (n + offset)), *up16 = host_download(be, dup, 2 * (n + offset));
    char what[96];
    snprintf(what, sizeof what, "convert %s n %zu offset %zu", kiln_dtype_name(form), n, offset);
    for (size_t i = 0; i < n; i++) {
        const double have = form == KILN_BF16 ? kiln_bf16_to_f32(conv[offset + i]) : kiln_f16_to_f32(conv[offset + i]);
        if (!(fabs(have - x[offset + i]) <= u * fabs(x[offset + i]) + 1e-7))
            fail_msg("%s: element %zu: %.9g from %.9g", what, i, have, (double)x[offset + i]);
    }
    CUDA_CHECK(kiln_cuda_swiglu16(0, d16 + offset, dup + offset, type, n));
    CUDA_CHECK(cudaDeviceSynchronize());
    uint16_t *act = host_download(be, d16, 2 * (n + offset));
    snprintf(what, sizeof what, "swiglu16 %s n %zu offset %zu", kiln_dtype_name(form), n, offset);
    for (size_t i = 0; i < n; i++) {
        const size_t j = offset + i;
        const double g = form == KILN_BF16 ? kiln_bf16_to_f32(conv[j]) : kiln_f16_to_f32(conv[j]),
                     uv = form == KILN_BF16 ? kiln_bf16_to_f32(up16[j]) : kiln_f16_to_f32(up16[j]),
                     want = silu(g) * uv,
                     have = form == KILN_BF16 ? kiln_bf16_to_f32(act[j]) : kiln_f16_to_f32(act[j]);
        if (!(fabs(have - want) <= u * fabs(want) + 1e-5 * (fabs(uv) + 1)))
            fail_msg("%s: element %zu: %.9g, want %.9g", what, i, have, want);
    }
    printf("  %-64s ok\n", what);
    free(x), free(up), free(conv), free(up16), free(act);
    be->device->free(be, dx), be->device->free(be, dupf), be->device->free(be, d16), be->device->free(be, dup);
}

// y += x (the residual add of a GEMM written apart): exact in float.
static void run_add(kiln_backend *be, size_t n, size_t offset, uint64_t seed) {
    uint64_t rng = seed;
    float *x = random_floats(n + offset, 3.0f, &rng), *y = random_floats(n + offset, 3.0f, &rng);
    float *dx = dev_upload(be, x, sizeof(float) * (n + offset)), *dy = dev_upload(be, y, sizeof(float) * (n + offset));
    CUDA_CHECK(kiln_cuda_add(0, dy + offset, dx + offset, n));
    CUDA_CHECK(cudaDeviceSynchronize());
    float *got = host_download(be, dy, sizeof(float) * (n + offset));
    for (size_t i = 0; i < n + offset; i++) {
        const float want = i < offset ? y[i] : y[i] + x[i];
        if (!(got[i] == want)) fail_msg("add n %zu offset %zu: element %zu is %.9g, want %.9g", n, offset, i, got[i], want);
    }
    free(x), free(y), free(got);
    be->device->free(be, dx), be->device->free(be, dy);
}

static void test_convert_swiglu16(void **state) {
    kiln_backend *be = *state;
    static const size_t lengths[] = {1, 7, 8, 4096 * 3 + 5, 100003};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++)
        for (size_t offset = 0; offset < 2; offset++) {
            run_convert_swiglu(be, KILN_CUDA_BF16, lengths[i], offset, 0x81000 + i * 2 + offset);
            run_convert_swiglu(be, KILN_CUDA_F16, lengths[i], offset, 0x82000 + i * 2 + offset);
            run_add(be, lengths[i], offset, 0x83000 + i * 2 + offset);
        }
}

// ---- linear with RoPE and the cache write (the Q/K/V projection of decode) -----------

// q, k, v = W (x or RMSNorm(x) * g) + bias in float64, q and k rotated (as
// rope_ref, in float64 throughout), against the backend: n <= 8 tokens with
// whole-head rotation take the matrix-vector kernel's fused epilogue, the rest
// (n = 9, or partial rotation) the products then rope_kv_store. Bounds as
// linear's (1e-4 relative L2 for the float matrix-vector path, 2 u for the
// 16-bit GEMM input). The cache: every token's slot holds the f16 of the
// returned k and v bit for bit, and nothing else was written.
typedef struct linear_rope_case {
    kiln_dtype src;
    int n, rot_dim;
    bool interleaved, bias, norm;
} linear_rope_case;

static const int32_t LR_SEQ[] = {0, 1, 2, 0, 1, 2, 0, 1, 2};
static const int32_t LR_POS[] = {0, 15, 4095, 1, 16, 4094, 2, 17, 100};

static void run_linear_rope(kiln_matvec_form form, const linear_rope_case *lc, uint64_t seed) {
    enum { K = 136, HEADS = 6, KV_HEADS = 2, HD = 64, SEQS = 3, MAX_BLOCKS = 4096 / KV_BLOCK, CACHE_BLOCKS = 8 };
    kiln_backend *be = backend_new(form);
    uint64_t rng = seed;
    const int n = lc->n, rows[3] = {HEADS * HD, KV_HEADS * HD, KV_HEADS * HD};
    weight w[3];
    for (int i = 0; i < 3; i++) w[i] = weight_make(be, lc->src, rows[i], K, 0.5f, &rng);
    weights_done_ok(be);
    float *x = random_floats((size_t)n * K, 2.0f, &rng), *g = random_floats(K, 1.0f, &rng);
    float *bias[3] = {NULL, NULL, NULL};
    for (int i = 0; lc->bias && i < 3; i++) bias[i] = random_floats((size_t)rows[i], 1.0f, &rng);
    const float eps = 1e-5f;

    // The block tables: a trap block for every unused entry, the others shuffled.
    int perm[CACHE_BLOCKS];
    static int32_t table[SEQS][MAX_BLOCKS];
    shuffled_block_table(&table[0][0], SEQS, MAX_BLOCKS, perm, CACHE_BLOCKS, LR_SEQ, LR_POS, n, &rng);
    const size_t slot_elems = (size_t)KV_HEADS * HD, cache_elems = (size_t)CACHE_BLOCKS * KV_BLOCK * slot_elems;
    uint16_t *nan_cache = malloc(sizeof(uint16_t) * cache_elems);
    assert_non_null(nan_cache);
    for (size_t i = 0; i < cache_elems; i++) nan_cache[i] = F16_NAN;

    // The reference, in float64.
    const rope_case rc = {.n_heads = HEADS, .n_kv_heads = KV_HEADS, .head_dim = HD, .rot_dim = lc->rot_dim,
                          .theta = 500000.0f, .interleaved = lc->interleaved};
    double *ref[3], *h = malloc(sizeof(double) * K);
    assert_non_null(h);
    for (int i = 0; i < 3; i++) assert_non_null(ref[i] = malloc(sizeof(double) * (size_t)n * rows[i]));
    for (int t = 0; t < n; t++) {
        double ss = 0;
        for (int c = 0; c < K; c++) ss += (double)x[t * K + c] * x[t * K + c];
        const double inv = 1.0 / sqrt(ss / K + eps);
        for (int c = 0; c < K; c++) h[c] = lc->norm ? x[t * K + c] * inv * g[c] : x[t * K + c];
        for (int i = 0; i < 3; i++) {
            double *y = ref[i] + (size_t)t * rows[i];
            for (int r = 0; r < rows[i]; r++) {
                double acc = bias[i] ? bias[i][r] : 0.0;
                for (int c = 0; c < K; c++) acc += w[i].val[(size_t)r * K + c] * h[c];
                y[r] = acc;
            }
            if (i == 2) continue;
            for (int hh = 0; hh < rows[i] / HD; hh++) { // rope_ref's rotation, in float64 on float64 values
                double *v = y + (size_t)hh * HD;
                for (int p = 0; p < rc.rot_dim / 2; p++) {
                    const double freq = pow((double)rc.theta, -2.0 * p / rc.rot_dim), angle = LR_POS[t] * freq;
                    const int a = rc.interleaved ? 2 * p : p, b = rc.interleaved ? 2 * p + 1 : p + rc.rot_dim / 2;
                    const double va = v[a], vb = v[b];
                    v[a] = va * cos(angle) - vb * sin(angle);
                    v[b] = va * sin(angle) + vb * cos(angle);
                }
            }
        }
    }

    float *dx = dev_upload(be, x, sizeof(float) * n * K), *dg = dev_upload(be, g, sizeof(float) * K), *dy[3], *db[3];
    int32_t *dpos = dev_upload(be, LR_POS, sizeof(int32_t) * n), *dseq = dev_upload(be, LR_SEQ, sizeof(int32_t) * n),
            *dtable = dev_upload(be, table, sizeof table);
    void *kc = dev_upload(be, nan_cache, sizeof(uint16_t) * cache_elems),
         *vc = dev_upload(be, nan_cache, sizeof(uint16_t) * cache_elems);
    const kiln_kv_view kv = {.dtype = KILN_F16, .block_size = KV_BLOCK, .n_kv_heads = KV_HEADS, .head_dim = HD,
                             .max_blocks_per_seq = MAX_BLOCKS, .block_tables = dtable};
    const kiln_batch_layout batch = {.n_tokens = n, .pos = dpos, .seq = dseq, .one_seq = false};
    const kiln_rope_params params = {.rot_dim = rc.rot_dim, .theta = rc.theta, .interleaved = rc.interleaved};
    const kiln_linear_rope rope = {.kv = &kv, .layer = {.k = kc, .v = vc}, .batch = &batch, .params = &params,
                                   .n_heads = HEADS};
    kiln_linear_args a = {.count = 3, .x = dx, .n = n, .norm = lc->norm ? dg : NULL, .norm_eps = eps, .rope = &rope};
    for (int i = 0; i < 3; i++) {
        dy[i] = dev_nan(be, (size_t)n * rows[i]);
        db[i] = bias[i] ? dev_upload(be, bias[i], sizeof(float) * rows[i]) : NULL;
        a.w[i] = &w[i].dev, a.y[i] = dy[i], a.bias[i] = db[i];
    }
    char what[128];
    snprintf(what, sizeof what, "linear+rope %s n=%d rot %d %s%s%s", kiln_dtype_name(lc->src), n, rc.rot_dim,
             rc.interleaved ? "interleaved" : "halves", lc->bias ? " bias" : "", lc->norm ? " norm" : "");
    be->ops->linear(be, &a);
    sync_ok(be, what);
    const double u = device_form(lc->src, 2) == KILN_BF16 ? 0x1.0p-8 : 0x1.0p-11;
    float *got[3];
    for (int i = 0; i < 3; i++) {
        got[i] = host_download(be, dy[i], sizeof(float) * n * rows[i]);
        char part[160];
        snprintf(part, sizeof part, "%s: %c", what, "qkv"[i]);
        check_outputs(part, got[i], ref[i], NULL, (size_t)n * rows[i], n <= 8 ? 1e-4 : 2 * u);
    }
    uint16_t *k_cache = host_download(be, kc, sizeof(uint16_t) * cache_elems),
             *v_cache = host_download(be, vc, sizeof(uint16_t) * cache_elems);
    bool *written = calloc(cache_elems, sizeof(bool));
    assert_non_null(written);
    for (int t = 0; t < n; t++) {
        const int p = LR_POS[t];
        const size_t slot = ((size_t)table[LR_SEQ[t]][p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK) * slot_elems;
        for (size_t e = 0; e < slot_elems; e++) {
            written[slot + e] = true;
            const uint16_t want_k = kiln_f32_to_f16(got[1][(size_t)t * slot_elems + e]),
                           want_v = kiln_f32_to_f16(got[2][(size_t)t * slot_elems + e]);
            if (k_cache[slot + e] != want_k || v_cache[slot + e] != want_v)
                fail_msg("%s: token %d (pos %d) cache element %zu: k 0x%04x v 0x%04x, want 0x%04x 0x%04x", what, t, p,
                         e, k_cache[slot + e], v_cache[slot + e], want_k, want_v);
        }
    }
    for (size_t i = 0; i < cache_elems; i++)
        if (!written[i] && (k_cache[i] != F16_NAN || v_cache[i] != F16_NAN))
            fail_msg("%s: cache element %zu belongs to no token but was written", what, i);

    free(written), free(k_cache), free(v_cache), free(h), free(x), free(g), free(nan_cache);
    for (int i = 0; i < 3; i++) {
        free(got[i]), free(ref[i]), free(bias[i]);
        be->device->free(be, dy[i]);
        if (db[i]) be->device->free(be, db[i]);
        weight_free(be, &w[i]);
    }
    void *bufs[] = {dx, dg, dpos, dseq, dtable, kc, vc};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) be->device->free(be, bufs[i]);
    kiln_backend_destroy(be);
}

static void test_linear_rope(void **state) {
    const kiln_matvec_form form = form_of(*state);
    const linear_rope_case cases[] = {
        {KILN_BF16, 1, 64, false, false, true},  {KILN_F16, 1, 64, true, true, false},
        {KILN_BF16, 2, 64, true, false, true},   {KILN_F16, 2, 64, false, true, true},
        {KILN_BF16, 5, 64, false, true, false},  {KILN_F16, 8, 64, true, false, true},
        {KILN_BF16, 9, 64, false, true, true},   // the GEMM, then rope_kv_store
        {KILN_F16, 1, 48, true, false, true},    // partial rotation: never fused
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_linear_rope(form, &cases[i], 0x51000 + i);
}

// ---- attention (a consistency check; cuda_attention.cu has its own test) ---------------

enum { ATT_HD = 64, ATT_HEADS = 6, ATT_KV_HEADS = 2, ATT_SEQS = 4 };
static const int ATT_LEN[ATT_SEQS] = {1, 18, 101, 50};
enum { ATT_MAX_BLOCKS = (101 + KV_BLOCK - 1) / KV_BLOCK + 2 };

// From test_cuda_attention.c: decode is float32 from the same f16 values
// (errors ~1e-6, |v| <= 1); prefill rounds q * scale and P to f16 (<= 4.9e-4
// for P, ~5 sigma of 1.9e-4 for q at |q| <= 2; |q| <= 1 here).
#define ATT_MAX_REL_L2 5e-3
#define ATT_DECODE_MAX_ABS 1e-4
#define ATT_PREFILL_MAX_ABS 2e-3

typedef struct att_cache {
    int32_t table[ATT_SEQS][ATT_MAX_BLOCKS];
    uint16_t *k, *v;
    size_t elems;
    void *dk, *dv;
    int32_t *dtable;
} att_cache;

static size_t att_index(const att_cache *c, int s, int p, int h) {
    const size_t slot = (size_t)c->table[s][p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK;
    return (slot * ATT_KV_HEADS + h) * ATT_HD;
}

// Random f16 K and V for positions < ATT_LEN of each sequence in shuffled
// blocks; slots past a sequence's end and a poison block that unused table
// entries point at hold NaN, so reading them shows.
static att_cache att_cache_make(kiln_backend *be, uint64_t *rng) {
    att_cache c = {0};
    int n_blocks = 1;
    for (int s = 0; s < ATT_SEQS; s++) n_blocks += (ATT_LEN[s] + KV_BLOCK - 1) / KV_BLOCK;
    int *perm = malloc(sizeof(int) * (size_t)n_blocks);
    assert_non_null(perm);
    for (int i = 0; i < n_blocks; i++) perm[i] = i;
    for (int i = n_blocks - 1; i > 0; i--) {
        const int j = (int)(kiln_test_rand_u64(rng) % (uint64_t)(i + 1)), tmp = perm[i];
        perm[i] = perm[j], perm[j] = tmp;
    }
    int next = 1;
    for (int s = 0; s < ATT_SEQS; s++)
        for (int b = 0; b < ATT_MAX_BLOCKS; b++)
            c.table[s][b] = b < (ATT_LEN[s] + KV_BLOCK - 1) / KV_BLOCK ? perm[next++] : perm[0];
    const size_t slot_elems = (size_t)ATT_KV_HEADS * ATT_HD;
    c.elems = (size_t)n_blocks * KV_BLOCK * slot_elems;
    c.k = malloc(sizeof(uint16_t) * c.elems);
    c.v = malloc(sizeof(uint16_t) * c.elems);
    assert_true(c.k && c.v);
    for (size_t i = 0; i < c.elems; i++) c.k[i] = c.v[i] = F16_NAN;
    for (int s = 0; s < ATT_SEQS; s++)
        for (int p = 0; p < ATT_LEN[s]; p++)
            for (size_t e = 0; e < slot_elems; e++) {
                c.k[att_index(&c, s, p, 0) + e] = kiln_f32_to_f16(kiln_test_rand_f(rng));
                c.v[att_index(&c, s, p, 0) + e] = kiln_f32_to_f16(kiln_test_rand_f(rng));
            }
    free(perm);
    c.dk = dev_upload(be, c.k, sizeof(uint16_t) * c.elems);
    c.dv = dev_upload(be, c.v, sizeof(uint16_t) * c.elems);
    c.dtable = dev_upload(be, c.table, sizeof c.table);
    return c;
}

static void att_cache_free(kiln_backend *be, att_cache *c) {
    be->device->free(be, c->dk);
    be->device->free(be, c->dv);
    be->device->free(be, c->dtable);
    free(c->k), free(c->v);
}

static void attention_ref(const att_cache *c, const float *q, const int32_t *pos, const int32_t *seq, int n,
                          double scale, double *out) {
    const int group = ATT_HEADS / ATT_KV_HEADS;
    double w[128];
    for (int t = 0; t < n; t++)
        for (int h = 0; h < ATT_HEADS; h++) {
            assert_true(pos[t] < (int)(sizeof w / sizeof w[0]));
            const float *qh = q + ((size_t)t * ATT_HEADS + h) * ATT_HD;
            double mx = -INFINITY, total = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *kp = c->k + att_index(c, seq[t], p, h / group);
                double d = 0;
                for (int i = 0; i < ATT_HD; i++) d += (double)qh[i] * kiln_f16_to_f32(kp[i]);
                w[p] = d * scale;
                mx = fmax(mx, w[p]);
            }
            for (int p = 0; p <= pos[t]; p++) total += w[p] = exp(w[p] - mx);
            double *o = out + ((size_t)t * ATT_HEADS + h) * ATT_HD;
            for (int i = 0; i < ATT_HD; i++) o[i] = 0;
            for (int p = 0; p <= pos[t]; p++) {
                const uint16_t *vp = c->v + att_index(c, seq[t], p, h / group);
                for (int i = 0; i < ATT_HD; i++) o[i] += w[p] / total * kiln_f16_to_f32(vp[i]);
            }
        }
}

static void run_attention(kiln_backend *be, const att_cache *c, const int32_t *pos, const int32_t *seq, int n,
                          bool one_seq, uint64_t seed) {
    uint64_t rng = seed;
    const size_t elems = (size_t)n * ATT_HEADS * ATT_HD;
    const float scale = 1.0f / sqrtf((float)ATT_HD);
    float *q = random_floats(elems, 1.0f, &rng);
    float *dq = dev_upload(be, q, sizeof(float) * elems), *dout = dev_nan(be, elems);
    int32_t *dpos = dev_upload(be, pos, sizeof(int32_t) * (size_t)n),
            *dseq = dev_upload(be, seq, sizeof(int32_t) * (size_t)n);
    const kiln_kv_view kv = {.dtype = KILN_F16, .block_size = KV_BLOCK, .n_kv_heads = ATT_KV_HEADS,
                             .head_dim = ATT_HD, .max_blocks_per_seq = ATT_MAX_BLOCKS, .block_tables = c->dtable};
    const kiln_batch_layout batch = {.n_tokens = n, .pos = dpos, .seq = dseq, .one_seq = one_seq};
    const bool prefill = one_seq && n > 1; // cuda_backend.c's choice of kernel
    char what[96];
    snprintf(what, sizeof what, "attention %s n %d (pos %d..%d)%s", prefill ? "prefill" : "decode", n, pos[0],
             pos[n - 1], one_seq ? " one_seq" : "");
    be->ops->attention(be, &kv, (kiln_kv_layer){.k = c->dk, .v = c->dv}, &batch, dq, ATT_HEADS, scale, dout);
    sync_ok(be, what);
    float *got = host_download(be, dout, sizeof(float) * elems);
    double *ref = malloc(sizeof(double) * elems), *bound = malloc(sizeof(double) * elems);
    assert_true(ref && bound);
    attention_ref(c, q, pos, seq, n, scale, ref);
    for (size_t i = 0; i < elems; i++) bound[i] = prefill ? ATT_PREFILL_MAX_ABS : ATT_DECODE_MAX_ABS;
    check_outputs(what, got, ref, bound, elems, ATT_MAX_REL_L2);
    free(got), free(ref), free(bound), free(q);
    be->device->free(be, dq), be->device->free(be, dout), be->device->free(be, dpos), be->device->free(be, dseq);
}

static void test_attention(void **state) {
    kiln_backend *be = *state;
    uint64_t rng = 0x51001;
    att_cache c = att_cache_make(be, &rng);
    sync_ok(be, "cache upload");
    // Decode: one token each of several sequences (two of sequence 2).
    static const int32_t dec_seq[] = {0, 1, 2, 2, 3}, dec_pos[] = {0, 17, 60, 100, 49};
    run_attention(be, &c, dec_pos, dec_seq, 5, false, 0x51002);
    // A single token flagged one_seq takes the decode kernel too.
    static const int32_t one_seq[] = {2}, one_pos[] = {100};
    run_attention(be, &c, one_pos, one_seq, 1, true, 0x51003);
    // Prefill: a chunk that continues a sequence, and one from position 0.
    int32_t pre_seq[20], pre_pos[20];
    for (int t = 0; t < 20; t++) pre_seq[t] = 3, pre_pos[t] = 30 + t;
    run_attention(be, &c, pre_pos, pre_seq, 20, true, 0x51004);
    for (int t = 0; t < 18; t++) pre_seq[t] = 1, pre_pos[t] = t;
    run_attention(be, &c, pre_pos, pre_seq, 18, true, 0x51005);
    att_cache_free(be, &c);
}

// ---- sample -------------------------------------------------------------------------

enum { VOCAB = 50257 };

static int32_t sample_once(kiln_backend *be, const float *dlogits, int vocab, kiln_backend_sample_args a) {
    assert_non_null(be->ops->sample);
    int32_t id = -1;
    if (be->ops->sample(be, dlogits, vocab, &a, &id) != KILN_OK) fail_msg("sample: %s", kiln_last_error());
    sync_ok(be, "sample");
    return id;
}

static int32_t argmax_lowest(const float *logits, int vocab) {
    int32_t best = 0;
    for (int i = 1; i < vocab; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static void check_greedy(kiln_backend *be, const float *logits, int vocab, const char *what) {
    float *d = dev_upload(be, logits, sizeof(float) * (size_t)vocab);
    const kiln_backend_sample_args a = {.temperature = 0.0f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f, .u = 0.5f};
    const int32_t id = sample_once(be, d, vocab, a), want = argmax_lowest(logits, vocab);
    if (id != want) fail_msg("greedy %s: id %d (logit %g), want %d (logit %g)", what, id,
                             id >= 0 && id < vocab ? (double)logits[id] : NAN, want, (double)logits[want]);
    printf("  greedy %-57s id %d\n", what, id);
    be->device->free(be, d);
}

static void test_sample_greedy(void **state) {
    kiln_backend *be = *state;
    uint64_t rng = 0x61001;
    float *logits = random_floats(VOCAB, 10.0f, &rng);
    check_greedy(be, logits, VOCAB, "random");
    for (int i = 0; i < VOCAB; i++) logits[i] = -5.0f - 15.0f * rand01(&rng);
    logits[VOCAB - 1] = -4.0f;
    check_greedy(be, logits, VOCAB, "all negative, max last");
    logits[0] = -1.0f;
    check_greedy(be, logits, VOCAB, "max first");
    logits[1234] = logits[40000] = 3.0f;
    check_greedy(be, logits, VOCAB, "tie: lowest id");
    for (int i = 0; i < VOCAB; i += 2) logits[i] = -INFINITY;
    check_greedy(be, logits, VOCAB, "half -inf");
    float small[1000];
    for (int i = 0; i < 1000; i++) small[i] = kiln_test_rand_f(&rng);
    small[999] = 2.0f;
    check_greedy(be, small, 1000, "vocab 1000");
    free(logits);
}

typedef struct cand {
    int32_t id;
    double l; // logit / temperature
} cand;

static int cand_desc(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->l != b->l) return a->l < b->l ? 1 : -1;
    return a->id - b->id;
}

#define SAMPLE_MARGIN 1e-3

// src/runtime/sampler.c's rule in float64: the kept candidates in draw
// order; false when a threshold (top-k's last logit, top-p's cumulative mass,
// min-p's cut) lies within SAMPLE_MARGIN of a candidate, where the GPU's
// float32 arithmetic (~1e-6) could keep a different set.
static bool sample_reference(const float *logits, int vocab, const kiln_backend_sample_args *p, cand *cands,
                             int *n_kept) {
    double best = -INFINITY;
    for (int i = 0; i < vocab; i++) best = fmax(best, (double)logits[i] / p->temperature);
    int n = 0;
    for (int i = 0; i < vocab; i++) {
        const double l = (double)logits[i] / p->temperature;
        if (l >= best - 40.0) cands[n++] = (cand){i, l}; // the rest: < 4e-18 of the best (sampler.c)
    }
    qsort(cands, (size_t)n, sizeof *cands, cand_desc);
    if (p->top_k > 0 && p->top_k < n) {
        if (cands[p->top_k - 1].l - cands[p->top_k].l < SAMPLE_MARGIN) return false;
        n = p->top_k;
    }
    const double mx = cands[0].l;
    double total = 0;
    for (int i = 0; i < n; i++) total += exp(cands[i].l - mx);
    if (p->top_p < 1.0f) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += exp(cands[i].l - mx) / total;
            if (fabs(cum - p->top_p) < SAMPLE_MARGIN) return false;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0.0f) {
        const double cut = log((double)p->min_p);
        for (int i = 0; i < n; i++)
            if (fabs((cands[i].l - mx) - cut) < SAMPLE_MARGIN) return false;
        int keep = 1;
        while (keep < n && cands[keep].l - mx >= cut) keep++;
        n = keep;
    }
    *n_kept = n;
    return true;
}

// Hot tokens (random ids, logits 8..12) over a background in [-4, 2]; some
// ids -inf when asked. Redrawn until no threshold is within the margin.
static void run_sample(kiln_backend *be, kiln_backend_sample_args a, bool with_inf, uint64_t seed) {
    uint64_t rng = seed;
    float *logits = malloc(sizeof(float) * VOCAB);
    cand *cands = malloc(sizeof(cand) * VOCAB);
    assert_true(logits && cands);
    int n = 0, tries = 0;
    for (;; tries++) {
        assert_true(tries < 200);
        for (int i = 0; i < VOCAB; i++) logits[i] = -4.0f + 6.0f * rand01(&rng);
        for (int h = 0; h < 60; h++) logits[kiln_test_rand_u64(&rng) % VOCAB] = 8.0f + 4.0f * rand01(&rng);
        if (with_inf)
            for (int i = 0; i < VOCAB; i += 3)
                if (logits[i] < 8.0f) logits[i] = -INFINITY;
        if (sample_reference(logits, VOCAB, &a, cands, &n)) break;
    }
    float *d = dev_upload(be, logits, sizeof(float) * VOCAB);
    double total = 0;
    for (int i = 0; i < n; i++) total += exp(cands[i].l - cands[0].l);
    // u at the middle of each wide enough bucket of the kept tokens, in draw
    // order: that token and no other.
    double before = 0;
    int checked = 0;
    for (int i = 0; i < n && i < 16; i++) {
        const double width = exp(cands[i].l - cands[0].l) / total;
        if (width > 2 * SAMPLE_MARGIN) {
            a.u = (float)(before + width / 2);
            const int32_t id = sample_once(be, d, VOCAB, a);
            if (id != cands[i].id)
                fail_msg("sample T %g top_k %d top_p %g min_p %g u %.6f: id %d, want %d (kept token %d of %d)",
                         (double)a.temperature, a.top_k, (double)a.top_p, (double)a.min_p, (double)a.u, id,
                         cands[i].id, i, n);
            checked++;
        }
        before += width;
    }
    a.u = 0.0f;
    assert_int_equal(sample_once(be, d, VOCAB, a), cands[0].id);
    if (exp(cands[n - 1].l - cands[0].l) / total > 2 * SAMPLE_MARGIN) { // the last kept token's bucket
        a.u = 0x1.fffffep-1f;
        assert_int_equal(sample_once(be, d, VOCAB, a), cands[n - 1].id);
    }
    printf("  sample T %.2f top_k %2d top_p %.2f min_p %.2f%s: %d kept, %d buckets checked\n", (double)a.temperature,
           a.top_k, (double)a.top_p, (double)a.min_p, with_inf ? " -inf" : "", n, checked);
    assert_true(checked > 0);
    be->device->free(be, d);
    free(logits), free(cands);
}

static void test_sample_filtered(void **state) {
    kiln_backend *be = *state;
    run_sample(be, (kiln_backend_sample_args){.temperature = 0.7f, .top_k = 40, .top_p = 0.9f, .min_p = 0.05f},
               false, 0x62001);
    run_sample(be, (kiln_backend_sample_args){.temperature = 1.3f, .top_k = 0, .top_p = 0.5f, .min_p = 0.0f}, false,
               0x62002);
    run_sample(be, (kiln_backend_sample_args){.temperature = 1.0f, .top_k = 5, .top_p = 1.0f, .min_p = 0.0f}, false,
               0x62003);
    run_sample(be, (kiln_backend_sample_args){.temperature = 0.5f, .top_k = 0, .top_p = 1.0f, .min_p = 0.2f}, false,
               0x62004);
    run_sample(be, (kiln_backend_sample_args){.temperature = 1.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f}, true,
               0x62005);
}

// ---- graphs -------------------------------------------------------------------------

// y = W x, then z = W2 RMSNorm(y) (a normalising linear: a separate RMSNorm
// into scratch, then the product), captured once, replayed on new contents
// of the same input buffer: both outputs must follow the new input.
static void run_graph(kiln_backend *be, int n, uint64_t seed) {
    uint64_t rng = seed;
    const int k = 296, rows = 80, rows2 = 45;
    const float eps = 1e-5f;
    weight w = weight_make(be, KILN_F16, rows, k, 1.0f, &rng), w2 = weight_make(be, KILN_F16, rows2, rows, 1.0f, &rng);
    weight g = weight_make(be, KILN_F32, 1, rows, 2.0f, &rng);
    weights_done_ok(be);
    const size_t nx = (size_t)n * k, ny = (size_t)n * rows, nz = (size_t)n * rows2;
    float *dx = dev_nan(be, nx), *dy = dev_nan(be, ny), *dz = dev_nan(be, nz);
    const kiln_linear_args a = {.count = 1, .w = {&w.dev}, .y = {dy}, .x = dx, .n = n};
    const kiln_linear_args b = {.count = 1, .w = {&w2.dev}, .y = {dz}, .x = dy, .n = n, .norm = g.dev.data,
                                .norm_eps = eps};
    const bool gemm = n > KILN_MATVEC_MAX_TOKENS; // the GEMM path: inputs rounded to F16
    {
        // Scratch buffers (the GEMM's input, the normalised input) and the
        // GEMM's algorithm are set up outside capture (the backend cannot
        // grow buffers while capturing), as the runtime's first, uncaptured
        // decode step does.
        float *x0 = random_floats(nx, 1.0f, &rng);
        be->stream->from_host(be, dx, x0, sizeof(float) * nx);
        be->ops->linear(be, &a);
        be->ops->linear(be, &b);
        sync_ok(be, "warm-up");
        free(x0);
    }
    if (be->stream->graph_begin(be) != KILN_OK) fail_msg("graph_begin: %s", kiln_last_error());
    be->ops->linear(be, &a);
    be->ops->linear(be, &b);
    void *graph = NULL;
    if (be->stream->graph_end(be, &graph) != KILN_OK) fail_msg("graph_end: %s", kiln_last_error());
    assert_non_null(graph);

    double *ref = malloc(sizeof(double) * ny), *bound = malloc(sizeof(double) * ny),
           *h = malloc(sizeof(double) * ny);
    assert_true(ref && bound && h);
    for (int round = 0; round < 3; round++) {
        float *x = random_floats(nx, 1.0f, &rng);
        be->stream->from_host(be, dx, x, sizeof(float) * nx);
        dev_poison(be, dy, ny);
        dev_poison(be, dz, nz);
        if (be->stream->graph_launch(be, graph) != KILN_OK) fail_msg("graph_launch: %s", kiln_last_error());
        sync_ok(be, "graph launch");
        float *y = host_download(be, dy, sizeof(float) * ny), *z = host_download(be, dz, sizeof(float) * nz);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows; r++) {
                double dot = 0, abs_sum = 0;
                for (int c = 0; c < k; c++) {
                    const double xc = gemm ? round_to(KILN_F16, x[(size_t)t * k + c]) : x[(size_t)t * k + c];
                    dot += w.val[(size_t)r * k + c] * xc;
                    abs_sum += fabs(w.val[(size_t)r * k + c] * xc);
                }
                ref[(size_t)t * rows + r] = dot, bound[(size_t)t * rows + r] = sum_bound(k, abs_sum);
            }
        char what[96];
        snprintf(what, sizeof what, "graph replay %d [%s] n %d: linear", round, gemm ? "gemm" : "matvec", n);
        check_outputs(what, y, ref, bound, ny, LINEAR_MAX_REL_L2);
        // z's reference from the y the GPU produced: the second node's own
        // error only (its normalised input rounded to F16 on the GEMM path).
        rmsnorm_ref(y, g.val, n, rows, eps, h, bound);
        for (int t = 0; t < n; t++)
            for (int r = 0; r < rows2; r++) {
                double dot = 0;
                for (int c = 0; c < rows; c++) {
                    const double hc = h[(size_t)t * rows + c];
                    dot += w2.val[(size_t)r * rows + c] * (gemm ? round_to(KILN_F16, (float)hc) : hc);
                }
                ref[(size_t)t * rows2 + r] = dot;
            }
        snprintf(what, sizeof what, "graph replay %d [%s] n %d: normalising linear", round, gemm ? "gemm" : "matvec",
                 n);
        check_outputs(what, z, ref, NULL, nz, LINEAR_MAX_REL_L2);
        free(x), free(y), free(z);
    }
    be->stream->graph_free(be, graph);
    free(ref), free(bound), free(h);
    be->device->free(be, dx), be->device->free(be, dy), be->device->free(be, dz);
    weight_free(be, &w);
    weight_free(be, &w2);
    weight_free(be, &g);
}

static void test_graph_matvec(void **state) { run_graph(*state, 1, 0x71001); }

static void test_graph_gemm(void **state) { run_graph(*state, 37, 0x71002); }

// A test on a fresh backend; the same three times, once per matrix-vector
// form (see FORM_PLAIN).
#define ON_BACKEND(f) cmocka_unit_test_setup_teardown(f, setup_backend, teardown_backend)
#define ON_EACH_FORM(f)                                                                                        \
    ON_BACKEND(f), {#f "_plain", f, setup_backend, teardown_backend, (void *)&FORM_PLAIN},                      \
        {#f "_pipelined", f, setup_backend, teardown_backend, (void *)&FORM_PIPELINED}

int main(void) {
    kiln_test_require_gpu();
    const struct CMUnitTest tests[] = {
        ON_EACH_FORM(test_linear_f16),
        ON_EACH_FORM(test_linear_bf16),
        ON_EACH_FORM(test_linear_f32_source),
        ON_EACH_FORM(test_linear_quantized),
        ON_BACKEND(test_linear_k_not_multiple_of_8),
        ON_EACH_FORM(test_linear_qkv),
        ON_EACH_FORM(test_linear_accumulate),
        ON_EACH_FORM(test_linear_glu),
        ON_EACH_FORM(test_linear_long_k),
        ON_BACKEND(test_matvec_forms_identical),
        ON_EACH_FORM(test_mlp),
        ON_EACH_FORM(test_linear_norm),
        ON_EACH_FORM(test_prepared_norm),
        ON_BACKEND(test_step_plan),
        ON_BACKEND(test_rmsnorm),
        ON_BACKEND(test_get_rows),
        ON_BACKEND(test_convert_swiglu16),
        cmocka_unit_test(test_rope_kv_store),
        cmocka_unit_test(test_linear_rope),
        {"test_linear_rope_plain", test_linear_rope, NULL, NULL, (void *)&FORM_PLAIN},
        {"test_linear_rope_pipelined", test_linear_rope, NULL, NULL, (void *)&FORM_PIPELINED},
        ON_BACKEND(test_attention),
        ON_BACKEND(test_sample_greedy),
        ON_BACKEND(test_sample_filtered),
        ON_EACH_FORM(test_graph_matvec),
        ON_BACKEND(test_graph_gemm),
    };
    return KILN_RUN_TESTS(tests);
}
