// GGUF reader and scalar dequantizers against files written by the gguf PyPI
// package (tools/make_gguf_fixtures.py) and against the real model.
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/dtype.h"
#include "core/quant.h"
#include "formats/gguf.h"
#include "test_util.h"

#define FIXTURE(name) KILN_FIXTURES "/gguf/" name

static kiln_gguf *open_ok(const char *path) {
    kiln_gguf *g = NULL;
    kiln_status st = kiln_gguf_open(path, &g);
    if (st != KILN_OK) fail_msg("%s: %s", path, kiln_last_error());
    return g;
}

static void assert_str(kiln_gguf_str s, const char *expected, size_t len) {
    assert_int_equal(s.len, len);
    assert_memory_equal(s.ptr, expected, len);
}

static const kiln_gguf_value *get_typed(const kiln_gguf *g, const char *key, kiln_gguf_type type) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v) fail_msg("key %s missing", key);
    assert_int_equal(v->type, type);
    return v;
}

static void check_metadata(const char *path, uint32_t version) {
    kiln_gguf *g = open_ok(path);
    assert_int_equal(g->version, version);
    assert_int_equal(g->n_tensors, 0);
    assert_int_equal(g->n_kv, 28); // general.architecture + 27 test keys
    assert_int_equal(g->alignment, 32);
    kiln_gguf_str s;
    assert_true(kiln_gguf_get_str(g, "general.architecture", &s));
    assert_str(s, "kilntest", 8);

    // Scalars, each with its GGUF type.
    assert_int_equal(get_typed(g, "test.uint8", KILN_GGUF_UINT8)->u64, 200);
    assert_int_equal(get_typed(g, "test.int8", KILN_GGUF_INT8)->i64, -100);
    assert_int_equal(get_typed(g, "test.uint16", KILN_GGUF_UINT16)->u64, 60000);
    assert_int_equal(get_typed(g, "test.int16", KILN_GGUF_INT16)->i64, -30000);
    assert_int_equal(get_typed(g, "test.uint32", KILN_GGUF_UINT32)->u64, 4000000000u);
    assert_int_equal(get_typed(g, "test.int32", KILN_GGUF_INT32)->i64, -2000000000);
    assert_true(get_typed(g, "test.float32", KILN_GGUF_FLOAT32)->f64 == 3.25);
    assert_true(get_typed(g, "test.bool", KILN_GGUF_BOOL)->b);
    assert_true(get_typed(g, "test.uint64", KILN_GGUF_UINT64)->u64 == (1ull << 63) + 5);
    assert_true(get_typed(g, "test.int64", KILN_GGUF_INT64)->i64 == -(1ll << 62) - 7);
    assert_true(get_typed(g, "test.float64", KILN_GGUF_FLOAT64)->f64 == -1.5e300);
    assert_str(get_typed(g, "test.string", KILN_GGUF_STRING)->str, "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xf0\x9f\xa6\x99",
               22);
    assert_str(get_typed(g, "test.string_nul", KILN_GGUF_STRING)->str, "a\0b", 3);

    // Typed getters convert integers that fit and refuse the rest.
    const kiln_gguf_value *a0;
    uint32_t u;
    float f;
    bool b;
    assert_true(kiln_gguf_get_u32(g, "test.uint8", &u) && u == 200);
    assert_true(kiln_gguf_get_u32(g, "test.uint32", &u) && u == 4000000000u);
    assert_false(kiln_gguf_get_u32(g, "test.int8", &u));   // negative
    assert_false(kiln_gguf_get_u32(g, "test.uint64", &u)); // too large
    assert_false(kiln_gguf_get_u32(g, "test.string", &u));
    assert_false(kiln_gguf_get_u32(g, "no.such.key", &u));
    assert_true(kiln_gguf_get_f32(g, "test.float32", &f) && f == 3.25f);
    assert_true(kiln_gguf_get_bool(g, "test.bool", &b) && b);
    assert_false(kiln_gguf_get_bool(g, "test.uint8", &b));
    assert_false(kiln_gguf_get_str(g, "test.uint8", &s));

    // The readers of known keys: absent is no error (and leaves the default),
    // a wrong type or a value that does not fit is one, naming the key.
    bool found = true;
    u = 77;
    assert_int_equal(kiln_gguf_read_u32(g, "no.such.key", &u, &found), KILN_OK);
    assert_false(found);
    assert_int_equal(u, 77);
    assert_int_equal(kiln_gguf_read_u32(g, "test.uint8", &u, &found), KILN_OK);
    assert_true(found && u == 200);
    assert_int_equal(kiln_gguf_read_f32(g, "test.float32", &f, NULL), KILN_OK);
    assert_true(f == 3.25f);
    assert_int_equal(kiln_gguf_read_bool(g, "test.bool", &b, NULL), KILN_OK);
    assert_int_equal(kiln_gguf_read_str(g, "test.string", &s, NULL), KILN_OK);
    assert_int_equal(kiln_gguf_read_array(g, "test.array.int32", KILN_GGUF_INT32, &a0), KILN_OK);
    assert_non_null(a0);
    assert_int_equal(kiln_gguf_read_array(g, "no.such.key", KILN_GGUF_INT32, &a0), KILN_OK);
    assert_null(a0);
    static const struct {
        const char *key;
        int reader; // 0 u32, 1 f32, 2 bool, 3 str, 4 array of int32
        const char *message;
    } wrong[] = {
        {"test.string", 0, "test.string has type string, expected an unsigned integer"},
        {"test.float32", 0, "test.float32 has type float32, expected an unsigned integer"},
        {"test.int8", 0, "test.int8 = -100 is out of range"},
        {"test.uint64", 0, "is out of range"},
        {"test.string", 1, "test.string has type string, expected a number"},
        {"test.bool", 1, "test.bool has type bool, expected a number"},
        {"test.uint8", 2, "test.uint8 has type uint8, expected bool"},
        {"test.uint8", 3, "test.uint8 has type uint8, expected string"},
        {"test.array.uint8", 4, "test.array.uint8 has type array of uint8, expected array of int32"},
        {"test.string", 4, "test.string has type string, expected array of int32"},
        {"test.array.nested", 4, "test.array.nested has type array of arrays, expected array of int32"},
    };
    for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
        kiln_status st = KILN_OK;
        switch (wrong[i].reader) {
        case 0: st = kiln_gguf_read_u32(g, wrong[i].key, &u, NULL); break;
        case 1: st = kiln_gguf_read_f32(g, wrong[i].key, &f, NULL); break;
        case 2: st = kiln_gguf_read_bool(g, wrong[i].key, &b, NULL); break;
        case 3: st = kiln_gguf_read_str(g, wrong[i].key, &s, NULL); break;
        case 4: st = kiln_gguf_read_array(g, wrong[i].key, KILN_GGUF_INT32, &a0); break;
        }
        assert_int_equal(st, KILN_ERR_FORMAT);
        if (!strstr(kiln_last_error(), wrong[i].message) || !strstr(kiln_last_error(), path))
            fail_msg("%s: \"%s\" should name the file and say \"%s\"", wrong[i].key, kiln_last_error(),
                     wrong[i].message);
    }

    // Arrays of every element type.
    const kiln_gguf_value *a;
    assert_null(kiln_gguf_get_array(g, "test.array.uint8", KILN_GGUF_INT8)); // wrong element type
    a = kiln_gguf_get_array(g, "test.array.uint8", KILN_GGUF_UINT8);
    assert_non_null(a);
    assert_int_equal(a->arr.n, 3);
    assert_int_equal(a->arr.items[2].u64, 255);
    a = kiln_gguf_get_array(g, "test.array.int8", KILN_GGUF_INT8);
    assert_true(a && a->arr.n == 3 && a->arr.items[0].i64 == -128 && a->arr.items[2].i64 == 127);
    a = kiln_gguf_get_array(g, "test.array.uint16", KILN_GGUF_UINT16);
    assert_true(a && a->arr.n == 2 && a->arr.items[1].u64 == 65535);
    a = kiln_gguf_get_array(g, "test.array.int16", KILN_GGUF_INT16);
    assert_true(a && a->arr.n == 2 && a->arr.items[0].i64 == -32768);
    a = kiln_gguf_get_array(g, "test.array.uint32", KILN_GGUF_UINT32);
    assert_true(a && a->arr.n == 2 && a->arr.items[0].u64 == 4294967295u && a->arr.items[1].u64 == 7);
    a = kiln_gguf_get_array(g, "test.array.int32", KILN_GGUF_INT32);
    assert_true(a && a->arr.n == 3 && a->arr.items[0].i64 == INT32_MIN && a->arr.items[2].i64 == -1);
    a = kiln_gguf_get_array(g, "test.array.uint64", KILN_GGUF_UINT64);
    assert_true(a && a->arr.n == 1 && a->arr.items[0].u64 == UINT64_MAX);
    a = kiln_gguf_get_array(g, "test.array.int64", KILN_GGUF_INT64);
    assert_true(a && a->arr.n == 2 && a->arr.items[0].i64 == INT64_MIN && a->arr.items[1].i64 == INT64_MAX);
    a = kiln_gguf_get_array(g, "test.array.float32", KILN_GGUF_FLOAT32);
    assert_true(a && a->arr.n == 3 && a->arr.items[1].f64 == -1.25 && a->arr.items[2].f64 == 1024.0);
    a = kiln_gguf_get_array(g, "test.array.float64", KILN_GGUF_FLOAT64);
    assert_true(a && a->arr.n == 2 && a->arr.items[0].f64 == 1e-300 && a->arr.items[1].f64 == 2.5);
    a = kiln_gguf_get_array(g, "test.array.bool", KILN_GGUF_BOOL);
    assert_true(a && a->arr.n == 3 && a->arr.items[0].b && !a->arr.items[1].b && a->arr.items[2].b);
    a = kiln_gguf_get_array(g, "test.array.string", KILN_GGUF_STRING);
    assert_true(a && a->arr.n == 4);
    assert_str(a->arr.items[0].str, "a", 1);
    assert_str(a->arr.items[1].str, "\xc3\xbc" "n" "\xc3\xaf" "c" "\xc3\xb6" "d" "\xc3\xa9", 11);
    assert_str(a->arr.items[2].str, "", 0);
    assert_str(a->arr.items[3].str, "\xf0\x9f\xa6\x99", 4);

    // [[1, 2], [3], [4, 5, 6]]
    a = kiln_gguf_get_array(g, "test.array.nested", KILN_GGUF_ARRAY);
    assert_true(a && a->arr.n == 3);
    const int64_t want[3][3] = {{1, 2}, {3}, {4, 5, 6}};
    const uint64_t want_n[3] = {2, 1, 3};
    for (int i = 0; i < 3; i++) {
        const kiln_gguf_value *inner = &a->arr.items[i];
        assert_int_equal(inner->type, KILN_GGUF_ARRAY);
        assert_int_equal(inner->arr.elem_type, KILN_GGUF_INT32);
        assert_int_equal(inner->arr.n, want_n[i]);
        for (uint64_t j = 0; j < want_n[i]; j++) assert_int_equal(inner->arr.items[j].i64, want[i][j]);
    }
    // [[["x", "yz"]], [["w"], ["", "q"]]]
    a = kiln_gguf_get_array(g, "test.array.nested3", KILN_GGUF_ARRAY);
    assert_true(a && a->arr.n == 2);
    assert_true(a->arr.items[0].arr.elem_type == KILN_GGUF_ARRAY && a->arr.items[0].arr.n == 1);
    const kiln_gguf_value *xs = &a->arr.items[0].arr.items[0];
    assert_true(xs->type == KILN_GGUF_ARRAY && xs->arr.elem_type == KILN_GGUF_STRING && xs->arr.n == 2);
    assert_str(xs->arr.items[1].str, "yz", 2);
    assert_int_equal(a->arr.items[1].arr.n, 2);
    const kiln_gguf_value *q = &a->arr.items[1].arr.items[1];
    assert_true(q->arr.n == 2);
    assert_str(q->arr.items[0].str, "", 0);
    assert_str(q->arr.items[1].str, "q", 1);
    kiln_gguf_close(g);
}

static void test_metadata_v3(void **state) {
    (void)state;
    check_metadata(FIXTURE("metadata_v3.gguf"), 3);
}

static void test_metadata_v2(void **state) {
    (void)state;
    check_metadata(FIXTURE("metadata_v2.gguf"), 2);
}

static const kiln_gguf_tensor_info *find(const kiln_gguf *g, const char *name) {
    const kiln_gguf_tensor_info *t = kiln_gguf_find_tensor(g, name);
    if (!t) fail_msg("tensor %s missing", name);
    return t;
}

// Dequantizes every row of `t` and compares bit for bit with the F32 tensor
// "<name>.expected" that gguf.quants.dequantize produced. Exact equality is
// the right test: both sides are ggml's formulas evaluated as the same
// sequence of IEEE float32 operations (f16 -> f32 widening is exact, and C17
// mode turns off FMA contraction), so any difference is a bug. Bitwise
// comparison also pins NaN payloads, infinities and signed zeros of F16/BF16.
static void check_dequant(const kiln_gguf *g, const char *name, kiln_dtype dtype) {
    const kiln_gguf_tensor_info *t = find(g, name);
    char exp_name[64];
    snprintf(exp_name, sizeof exp_name, "%s.expected", name);
    const kiln_gguf_tensor_info *e = find(g, exp_name);
    assert_int_equal(t->t.dtype, dtype);
    assert_int_equal(e->t.dtype, KILN_F32);
    assert_int_equal(t->t.n_dims, 2);
    assert_int_equal(t->t.ne[0], 256);
    assert_int_equal(t->t.ne[1], 4);
    uint64_t row_bytes;
    assert_true(kiln_dtype_row_bytes(dtype, 256, &row_bytes));
    assert_int_equal(t->t.nbytes, 4 * row_bytes);
    assert_int_equal((uintptr_t)t->t.data % 64, (uintptr_t)g->file->data % 64); // 64-byte file alignment
    float row[256];
    for (int r = 0; r < 4; r++) {
        kiln_dequantize_row(dtype, (const uint8_t *)t->t.data + r * row_bytes, row, 256);
        const float *want = (const float *)e->t.data + r * 256;
        for (int i = 0; i < 256; i++) {
            uint32_t a, b;
            memcpy(&a, &row[i], 4);
            memcpy(&b, &want[i], 4);
            if (a != b) fail_msg("%s row %d elem %d: got %g (%08x), gguf-py %g (%08x)", name, r, i, row[i], a, want[i], b);
        }
    }
}

// kiln_quantize_row of "<name>.src" must reproduce gguf-py's bytes exactly.
static void check_quantize(const kiln_gguf *g, const char *name, kiln_dtype dtype) {
    const kiln_gguf_tensor_info *t = find(g, name);
    char src_name[64];
    snprintf(src_name, sizeof src_name, "%s.src", name);
    const kiln_gguf_tensor_info *s = find(g, src_name);
    uint8_t *out = malloc(t->t.nbytes);
    assert_non_null(out);
    assert_true(kiln_quantize_row(dtype, s->t.data, out, kiln_tensor_nelements(&s->t)));
    assert_memory_equal(out, t->t.data, t->t.nbytes);
    free(out);
}

static void test_dequantize_matches_gguf_py(void **state) {
    (void)state;
    kiln_gguf *g = open_ok(FIXTURE("tensors.gguf"));
    assert_int_equal(g->version, 3);
    assert_int_equal(g->alignment, 64);
    assert_int_equal(g->data_offset % 64, 0);
    static const struct { const char *name; kiln_dtype dtype; } types[] = {
        {"t_f32", KILN_F32},   {"t_f16", KILN_F16},   {"t_bf16", KILN_BF16}, {"t_q8_0", KILN_Q8_0},
        {"t_q4_0", KILN_Q4_0}, {"t_q4_1", KILN_Q4_1}, {"t_q5_0", KILN_Q5_0}, {"t_q5_1", KILN_Q5_1},
        {"t_q4_k", KILN_Q4_K}, {"t_q5_k", KILN_Q5_K}, {"t_q6_k", KILN_Q6_K},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) check_dequant(g, types[i].name, types[i].dtype);
    kiln_gguf_close(g);
}

static void test_quantize_matches_gguf_py(void **state) {
    (void)state;
    kiln_gguf *g = open_ok(FIXTURE("tensors.gguf"));
    check_quantize(g, "t_f32", KILN_F32);
    check_quantize(g, "t_f16", KILN_F16);   // numpy astype(float16): incl. subnormals, inf, nan
    check_quantize(g, "t_bf16", KILN_BF16); // gguf-py's port of ggml_compute_fp32_to_bf16
    check_quantize(g, "t_q8_0", KILN_Q8_0); // gguf-py's bit-exact port of quantize_row_q8_0_ref
    kiln_gguf_close(g);
}

// Q8_1 and Q8_K against numpy ports of ggml's quantize_row_*_ref stored in
// the fixture as uint8 arrays of raw blocks.
static void check_activation_quant(const kiln_gguf *g, const char *key, kiln_dtype dtype, size_t block_bytes,
                                   size_t n_blocks) {
    const kiln_gguf_tensor_info *s = find(g, "quant_src");
    const kiln_gguf_value *ref = kiln_gguf_get_array(g, key, KILN_GGUF_UINT8);
    assert_non_null(ref);
    assert_int_equal(ref->arr.n, block_bytes * n_blocks);
    uint8_t *out = malloc(ref->arr.n);
    assert_non_null(out);
    assert_true(kiln_quantize_row(dtype, s->t.data, out, kiln_tensor_nelements(&s->t)));
    for (uint64_t i = 0; i < ref->arr.n; i++)
        if (out[i] != ref->arr.items[i].u64)
            fail_msg("%s: byte %llu (block %llu, offset %llu): got %u, reference %u", key, (unsigned long long)i,
                     (unsigned long long)(i / block_bytes), (unsigned long long)(i % block_bytes), out[i],
                     (unsigned)ref->arr.items[i].u64);
    free(out);
}

static void test_activation_quant_matches_ggml(void **state) {
    (void)state;
    kiln_gguf *g = open_ok(FIXTURE("tensors.gguf"));
    check_activation_quant(g, "kiln.test.q8_1", KILN_Q8_1, sizeof(kiln_block_q8_1), 512 / 32);
    check_activation_quant(g, "kiln.test.q8_k", KILN_Q8_K, sizeof(kiln_block_q8_k), 512 / 256);
    kiln_gguf_close(g);
}

static void test_open_missing_file(void **state) {
    (void)state;
    kiln_gguf *g = (kiln_gguf *)1;
    assert_int_equal(kiln_gguf_open(FIXTURE("no_such_file.gguf"), &g), KILN_ERR_IO);
    assert_null(g);
    assert_non_null(strstr(kiln_last_error(), "no_such_file.gguf"));
}

static void check_tensor(const kiln_gguf *g, const char *name, kiln_dtype dtype, int n_dims, int64_t ne0, int64_t ne1) {
    const kiln_gguf_tensor_info *t = find(g, name);
    assert_int_equal(t->t.dtype, dtype);
    assert_int_equal(t->t.n_dims, n_dims);
    assert_int_equal(t->t.ne[0], ne0);
    assert_int_equal(t->t.ne[1], ne1);
    assert_string_equal(t->t.name, name);
}

// Expected values read from the file with gguf-py's GGUFReader.
static void test_real_model(void **state) {
    (void)state;
    const char *path = kiln_test_model_path();
    if (!path) {
        fprintf(stderr, "SKIP: default model not found\n");
        skip();
    }
    kiln_gguf *g = open_ok(path);
    assert_int_equal(g->version, 3);
    assert_int_equal(g->n_kv, 33);
    assert_int_equal(g->n_tensors, 272);
    assert_int_equal(g->alignment, 32);
    uint32_t u;
    float f;
    bool b;
    kiln_gguf_str s;
    assert_true(kiln_gguf_get_u32(g, "llama.block_count", &u) && u == 30);
    assert_true(kiln_gguf_get_u32(g, "llama.embedding_length", &u) && u == 576);
    assert_true(kiln_gguf_get_u32(g, "llama.feed_forward_length", &u) && u == 1536);
    assert_true(kiln_gguf_get_u32(g, "llama.attention.head_count", &u) && u == 9);
    assert_true(kiln_gguf_get_u32(g, "llama.attention.head_count_kv", &u) && u == 3);
    assert_true(kiln_gguf_get_u32(g, "llama.context_length", &u) && u == 8192);
    assert_true(kiln_gguf_get_u32(g, "llama.vocab_size", &u) && u == 49152);
    assert_true(kiln_gguf_get_f32(g, "llama.rope.freq_base", &f) && f == 100000.0f);
    assert_true(kiln_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f) && f == 1e-5f);
    assert_true(kiln_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &b) && !b);
    assert_true(kiln_gguf_get_str(g, "general.architecture", &s));
    assert_str(s, "llama", 5);
    assert_true(kiln_gguf_get_str(g, "tokenizer.ggml.model", &s));
    assert_str(s, "gpt2", 4);
    assert_true(kiln_gguf_get_str(g, "tokenizer.ggml.pre", &s));
    assert_str(s, "smollm", 6);
    const kiln_gguf_value *a = kiln_gguf_get_array(g, "tokenizer.ggml.tokens", KILN_GGUF_STRING);
    assert_true(a && a->arr.n == 49152);
    a = kiln_gguf_get_array(g, "tokenizer.ggml.token_type", KILN_GGUF_INT32);
    assert_true(a && a->arr.n == 49152);
    a = kiln_gguf_get_array(g, "tokenizer.ggml.merges", KILN_GGUF_STRING);
    assert_true(a && a->arr.n == 48900);

    check_tensor(g, "token_embd.weight", KILN_Q8_0, 2, 576, 49152);
    assert_int_equal(find(g, "token_embd.weight")->t.nbytes, 30081024);
    assert_int_equal(g->data_offset + find(g, "token_embd.weight")->offset, 1785664);
    check_tensor(g, "blk.0.attn_norm.weight", KILN_F32, 1, 576, 1);
    check_tensor(g, "blk.0.ffn_down.weight", KILN_Q4_1, 2, 1536, 576);
    check_tensor(g, "blk.9.attn_v.weight", KILN_Q4_1, 2, 576, 192);
    check_tensor(g, "output_norm.weight", KILN_F32, 1, 576, 1);
    const kiln_gguf_tensor_info *last = &g->tensors[g->n_tensors - 1];
    assert_string_equal(last->name, "output_norm.weight");
    const uint8_t *end = (const uint8_t *)last->t.data + last->t.nbytes;
    assert_true(end <= g->file->data + g->file->size);
    assert_true(end == g->file->data + g->file->size); // this file has no trailing bytes
    // Norm weights are ordinary finite floats.
    const float *w = last->t.data;
    for (int i = 0; i < 576; i++) assert_true(isfinite(w[i]));
    kiln_gguf_close(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metadata_v3),
        cmocka_unit_test(test_metadata_v2),
        cmocka_unit_test(test_dequantize_matches_gguf_py),
        cmocka_unit_test(test_quantize_matches_gguf_py),
        cmocka_unit_test(test_activation_quant_matches_ggml),
        cmocka_unit_test(test_open_missing_file),
        cmocka_unit_test(test_real_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
