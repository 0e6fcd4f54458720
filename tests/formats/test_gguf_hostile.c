// Hostile GGUF input: a valid file is built in memory, then damaged one field
// at a time. Every damaged buffer must be refused with the expected status
// and a message that names the file and the problem. Each parse gets an
// exact-size heap copy so that AddressSanitizer catches any read past the end.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "formats/gguf.h"

#define NAME "hostile.gguf"

typedef struct buf {
    uint8_t *p;
    size_t len, cap;
} buf;

static void put(buf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) {
    put_u64(b, strlen(s));
    put(b, s, strlen(s));
}

// Offsets of the fields the cases damage.
typedef struct layout {
    size_t version, n_tensors, n_kv;
    size_t align_type, align_value, align_key;
    size_t str_len, str_type, arr_type, arr_elem_type, arr_n, arr_key;
    size_t t0_n_dims, t0_dim0, t0_dim1, t0_type;
    size_t t1_name, t1_dim0, t1_type, t1_offset;
} layout;

// header; kv: general.alignment = 32 (u32), a.str = "hello", a.arr = [1, 2, 3] (u32);
// tensors: t0 F32 [8, 2] at 0, t1 Q8_0 [32] at 64; data section; t1 ends the file.
static buf build_valid(layout *L) {
    buf b = {0};
    put_u32(&b, 0x46554747u);
    L->version = b.len;
    put_u32(&b, 3);
    L->n_tensors = b.len;
    put_u64(&b, 2);
    L->n_kv = b.len;
    put_u64(&b, 3);

    L->align_key = b.len + 8;
    put_str(&b, "general.alignment");
    L->align_type = b.len;
    put_u32(&b, KILN_GGUF_UINT32);
    L->align_value = b.len;
    put_u32(&b, 32);
    put_str(&b, "a.str");
    L->str_type = b.len;
    put_u32(&b, KILN_GGUF_STRING);
    L->str_len = b.len;
    put_str(&b, "hello");
    L->arr_key = b.len + 8;
    put_str(&b, "a.arr");
    L->arr_type = b.len;
    put_u32(&b, KILN_GGUF_ARRAY);
    L->arr_elem_type = b.len;
    put_u32(&b, KILN_GGUF_UINT32);
    L->arr_n = b.len;
    put_u64(&b, 3);
    for (uint32_t i = 1; i <= 3; i++) put_u32(&b, i);

    put_str(&b, "t0");
    L->t0_n_dims = b.len;
    put_u32(&b, 2);
    L->t0_dim0 = b.len;
    put_u64(&b, 8);
    L->t0_dim1 = b.len;
    put_u64(&b, 2);
    L->t0_type = b.len;
    put_u32(&b, KILN_F32);
    put_u64(&b, 0);
    L->t1_name = b.len + 8;
    put_str(&b, "t1");
    put_u32(&b, 1);
    L->t1_dim0 = b.len;
    put_u64(&b, 32);
    L->t1_type = b.len;
    put_u32(&b, KILN_Q8_0);
    L->t1_offset = b.len;
    put_u64(&b, 64);

    while (b.len % 32) put(&b, "\0", 1);
    for (int i = 0; i < 16; i++) {
        float f = (float)i;
        put(&b, &f, 4);
    }
    uint8_t q8[34] = {0x00, 0x3c}; // d = 1.0
    for (int i = 0; i < 32; i++) q8[2 + i] = (uint8_t)(i - 16);
    put(&b, q8, sizeof q8);
    return b;
}

static void patch_u32(buf *b, size_t at, uint32_t v) { memcpy(b->p + at, &v, 4); }
static void patch_u64(buf *b, size_t at, uint64_t v) { memcpy(b->p + at, &v, 8); }

static kiln_status parse_copy(const uint8_t *data, size_t len, kiln_gguf **g) {
    uint8_t *copy = len ? malloc(len) : NULL;
    if (len) memcpy(copy, data, len);
    kiln_status st = kiln_gguf_parse(copy, len, NAME, g);
    if (st == KILN_OK) {
        kiln_gguf_close(*g);
        *g = NULL;
    }
    free(copy);
    return st;
}

static void expect_fail_len(const buf *b, size_t len, kiln_status status, const char *problem) {
    kiln_gguf *g = (kiln_gguf *)1;
    kiln_status st = parse_copy(b->p, len, &g);
    const char *msg = kiln_last_error();
    if (st != status) fail_msg("expected status %d (%s), got %d; message: %s", status, problem, st, msg);
    assert_null(g);
    if (!strstr(msg, NAME) || !strstr(msg, problem))
        fail_msg("message \"%s\" should name " NAME " and mention \"%s\"", msg, problem);
}

static void expect_fail(const buf *b, kiln_status status, const char *problem) {
    expect_fail_len(b, b->len, status, problem);
}

static void test_valid_base(void **state) {
    (void)state;
    layout L;
    buf b = build_valid(&L);
    kiln_gguf *g;
    assert_int_equal(kiln_gguf_parse(b.p, b.len, NAME, &g), KILN_OK);
    assert_int_equal(g->n_tensors, 2);
    assert_int_equal(g->data_offset % 32, 0);
    const kiln_gguf_tensor_info *t1 = kiln_gguf_find_tensor(g, "t1");
    assert_non_null(t1);
    assert_ptr_equal((const uint8_t *)t1->t.data + t1->t.nbytes, b.p + b.len);
    kiln_gguf_close(g);
    free(b.p);
}

static void test_truncated_at_every_length(void **state) {
    (void)state;
    layout L;
    buf b = build_valid(&L);
    for (size_t len = 0; len < b.len; len++) {
        kiln_gguf *g = (kiln_gguf *)1;
        kiln_status st = parse_copy(b.p, len, &g);
        if (st != KILN_ERR_FORMAT) fail_msg("truncated to %zu bytes: status %d, %s", len, st, kiln_last_error());
        assert_null(g);
        assert_non_null(strstr(kiln_last_error(), NAME));
    }
    expect_fail_len(&b, 0, KILN_ERR_FORMAT, "too short");
    expect_fail_len(&b, 10, KILN_ERR_FORMAT, "truncated");
    expect_fail_len(&b, b.len - 1, KILN_ERR_FORMAT, "past the end");
    free(b.p);
}

// Applies one damage to a fresh copy of the valid file and checks the result.
#define CASE(status, problem, ...)        \
    do {                                  \
        layout L;                         \
        buf b = build_valid(&L);          \
        __VA_ARGS__;                      \
        expect_fail(&b, status, problem); \
        free(b.p);                        \
    } while (0)

static void test_header(void **state) {
    (void)state;
    CASE(KILN_ERR_FORMAT, "bad magic", b.p[0] = 'X');
    CASE(KILN_ERR_UNSUPPORTED, "version 1", patch_u32(&b, L.version, 1));
    CASE(KILN_ERR_UNSUPPORTED, "version 4", patch_u32(&b, L.version, 4));
    CASE(KILN_ERR_UNSUPPORTED, "version 0", patch_u32(&b, L.version, 0));
    CASE(KILN_ERR_UNSUPPORTED, "big-endian", patch_u32(&b, L.version, 0x03000000u));
    CASE(KILN_ERR_FORMAT, "tensor infos cannot fit", patch_u64(&b, L.n_tensors, 1ull << 60));
    CASE(KILN_ERR_FORMAT, "tensor infos cannot fit", patch_u64(&b, L.n_tensors, UINT64_MAX));
    CASE(KILN_ERR_FORMAT, "metadata entries cannot fit", patch_u64(&b, L.n_kv, 1ull << 60));
    CASE(KILN_ERR_FORMAT, "metadata entries cannot fit", patch_u64(&b, L.n_kv, UINT64_MAX));
    // More entries than present but few enough to pass the size bound: runs off the end.
    CASE(KILN_ERR_FORMAT, "", patch_u64(&b, L.n_kv, 4));
}

static void test_metadata(void **state) {
    (void)state;
    CASE(KILN_ERR_FORMAT, "length 18446744073709551615", patch_u64(&b, L.str_len, UINT64_MAX));
    CASE(KILN_ERR_FORMAT, "past the end of the file", patch_u64(&b, L.str_len, 1u << 20));
    CASE(KILN_ERR_FORMAT, "unknown value type 13", patch_u32(&b, L.str_type, 13));
    CASE(KILN_ERR_FORMAT, "unknown value type 4294967295", patch_u32(&b, L.str_type, UINT32_MAX));
    CASE(KILN_ERR_FORMAT, "unknown array element type 99", patch_u32(&b, L.arr_elem_type, 99));
    CASE(KILN_ERR_FORMAT, "cannot fit", patch_u64(&b, L.arr_n, 1ull << 61));
    CASE(KILN_ERR_FORMAT, "cannot fit", patch_u64(&b, L.arr_n, UINT64_MAX));
    CASE(KILN_ERR_FORMAT, "duplicate metadata key a.str", memcpy(b.p + L.arr_key, "a.str", 5));
    CASE(KILN_ERR_FORMAT, "NUL byte", b.p[L.arr_key + 1] = 0);
    // general.alignment read as a bool: its first byte (32) is not 0 or 1.
    CASE(KILN_ERR_FORMAT, "bool value 32", patch_u32(&b, L.align_type, KILN_GGUF_BOOL));
}

static void test_alignment(void **state) {
    (void)state;
    CASE(KILN_ERR_FORMAT, "general.alignment 0 is not a nonzero power of two", patch_u32(&b, L.align_value, 0));
    CASE(KILN_ERR_FORMAT, "general.alignment 48 is not a nonzero power of two", patch_u32(&b, L.align_value, 48));
    CASE(KILN_ERR_FORMAT, "general.alignment has type float32", patch_u32(&b, L.align_type, KILN_GGUF_FLOAT32));
    // A larger power of two is valid but t1's offset no longer conforms...
    CASE(KILN_ERR_FORMAT, "offset 64 is not a multiple of the alignment 1073741824",
         patch_u32(&b, L.align_value, 1u << 30));
    // ...and with both tensors at offset 0 the data section moves past the end.
    CASE(KILN_ERR_FORMAT, "(data section at 1073741824", patch_u32(&b, L.align_value, 1u << 30);
         patch_u64(&b, L.t1_offset, 0));
    // general.alignment 1 is legal, but an element type's own alignment still holds.
    CASE(KILN_ERR_FORMAT, "is not aligned to", patch_u32(&b, L.align_value, 1);
         patch_u64(&b, L.t1_offset, (L.t1_offset + 8) % 2 ? 64 : 65));
}

static void test_tensor_infos(void **state) {
    (void)state;
    CASE(KILN_ERR_FORMAT, "tensor t0 has 5 dimensions", patch_u32(&b, L.t0_n_dims, 5));
    CASE(KILN_ERR_FORMAT, "tensor t0 has 4294967295 dimensions", patch_u32(&b, L.t0_n_dims, UINT32_MAX));
    CASE(KILN_ERR_FORMAT, "dimension 0 has invalid size 0", patch_u64(&b, L.t0_dim0, 0));
    CASE(KILN_ERR_FORMAT, "dimension 1 has invalid size 0", patch_u64(&b, L.t0_dim1, 0));
    CASE(KILN_ERR_FORMAT, "invalid size 9223372036854775808", patch_u64(&b, L.t0_dim0, 1ull << 63));
    CASE(KILN_ERR_FORMAT, "element count overflows", patch_u64(&b, L.t0_dim1, 1ull << 62));
    CASE(KILN_ERR_FORMAT, "byte size overflows", patch_u64(&b, L.t0_dim0, 1ull << 31);
         patch_u64(&b, L.t0_dim1, 1ull << 31));
    CASE(KILN_ERR_UNSUPPORTED, "unsupported type 16", patch_u32(&b, L.t1_type, 16));
    CASE(KILN_ERR_UNSUPPORTED, "unsupported type 4", patch_u32(&b, L.t1_type, 4));
    CASE(KILN_ERR_UNSUPPORTED, "unsupported type 1000", patch_u32(&b, L.t1_type, 1000));
    CASE(KILN_ERR_FORMAT, "not a multiple of the Q8_0 block size 32", patch_u64(&b, L.t1_dim0, 33));
    CASE(KILN_ERR_FORMAT, "offset 65 is not a multiple of the alignment 32", patch_u64(&b, L.t1_offset, 65));
    CASE(KILN_ERR_FORMAT, "tensor t1: data (offset 1048576", patch_u64(&b, L.t1_offset, 1u << 20));
    CASE(KILN_ERR_FORMAT, "past the end", patch_u64(&b, L.t1_offset, UINT64_MAX - 31));
    CASE(KILN_ERR_FORMAT, "tensor t0: data (offset 0, 4000 bytes) lies past the end",
         patch_u64(&b, L.t0_dim1, 125));
    CASE(KILN_ERR_FORMAT, "tensor t1: data (offset 64, 68 bytes) lies past the end", patch_u64(&b, L.t1_dim0, 64));
    CASE(KILN_ERR_FORMAT, "duplicate tensor name t0", b.p[L.t1_name + 1] = '0');
    CASE(KILN_ERR_FORMAT, "tensor name \"t\" contains a NUL byte", b.p[L.t1_name + 1] = 0);
}

// An array nested 10000 levels deep (each level one element) must stop at
// the depth limit, not recurse until the stack overflows.
static void test_nesting_bomb(void **state) {
    (void)state;
    buf b = {0};
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, 0);
    put_u64(&b, 1);
    put_str(&b, "bomb");
    put_u32(&b, KILN_GGUF_ARRAY);
    for (int i = 0; i < 10000; i++) {
        put_u32(&b, KILN_GGUF_ARRAY);
        put_u64(&b, 1);
    }
    put_u32(&b, KILN_GGUF_UINT8);
    put_u64(&b, 0);
    expect_fail(&b, KILN_ERR_FORMAT, "key bomb: arrays nested deeper than");
    free(b.p);

    // Nesting within the limit is fine: 4 levels, innermost empty.
    buf ok = {0};
    put_u32(&ok, 0x46554747u);
    put_u32(&ok, 2);
    put_u64(&ok, 0);
    put_u64(&ok, 1);
    put_str(&ok, "nest");
    put_u32(&ok, KILN_GGUF_ARRAY);
    for (int i = 0; i < 3; i++) {
        put_u32(&ok, KILN_GGUF_ARRAY);
        put_u64(&ok, 1);
    }
    put_u32(&ok, KILN_GGUF_UINT8);
    put_u64(&ok, 0);
    kiln_gguf *g;
    assert_int_equal(kiln_gguf_parse(ok.p, ok.len, NAME, &g), KILN_OK);
    const kiln_gguf_value *v = kiln_gguf_get(g, "nest");
    for (int i = 0; i < 3; i++) {
        assert_true(v->type == KILN_GGUF_ARRAY && v->arr.n == 1);
        v = &v->arr.items[0];
    }
    assert_true(v->type == KILN_GGUF_ARRAY && v->arr.elem_type == KILN_GGUF_UINT8 && v->arr.n == 0);
    kiln_gguf_close(g);
    free(ok.p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_base),
        cmocka_unit_test(test_truncated_at_every_length),
        cmocka_unit_test(test_header),
        cmocka_unit_test(test_metadata),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_tensor_infos),
        cmocka_unit_test(test_nesting_bomb),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
