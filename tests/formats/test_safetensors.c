// Safetensors reader: files written by the reference `safetensors` library,
// hostile headers built here, sharded folders, and the SmolLM2 Hugging Face
// folders made by tools/make_hf_folder.py (skipped when absent).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/file.h"
#include "formats/safetensors.h"
#include "test_util.h"

static cJSON *load_json(const char *path) {
    char *text;
    size_t len;
    if (kiln_file_read_all(path, 1 << 22, &text, &len) != KILN_OK) fail_msg("%s", kiln_last_error());
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(doc);
    return doc;
}

static float element_as_float(const kiln_tensor *t, int64_t i) {
    const uint8_t *p = (const uint8_t *)t->data;
    // Tensor data may be unaligned (see safetensors.c): read through memcpy.
    if (t->dtype == KILN_F32) {
        float f;
        memcpy(&f, p + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    return t->dtype == KILN_F16 ? kiln_f16_to_f32(h) : kiln_bf16_to_f32(h);
}

// Checks a tensor's dtype, shape (row-major, as JSON) and leading values.
static void check_tensor(const kiln_tensor *t, const char *dtype, const cJSON *shape, const cJSON *values,
                         int64_t first) {
    assert_non_null(t);
    assert_string_equal(kiln_dtype_name(t->dtype), dtype);
    int n = cJSON_GetArraySize(shape);
    assert_int_equal(t->n_dims, n > 0 ? n : 1);
    int64_t count = 1;
    for (int i = 0; i < n; i++) {
        int64_t d = (int64_t)cJSON_GetArrayItem(shape, i)->valuedouble;
        assert_int_equal(t->ne[n - 1 - i], d); // ne[] is the shape reversed
        count *= d;
    }
    assert_int_equal(kiln_tensor_nelements(t), count);
    assert_int_equal(t->nbytes, (uint64_t)count * (t->dtype == KILN_F32 ? 4 : 2));
    int i = 0;
    for (const cJSON *v = values->child; v; v = v->next, i++) {
        float want = (float)v->valuedouble, got = element_as_float(t, first + i);
        if (got != want) fail_msg("%s[%lld]: got %.9g want %.9g", t->name, (long long)(first + i), got, want);
    }
}

static void test_reads_reference_writer_file(void **state) {
    (void)state;
    kiln_safetensors *st;
    const char *path = KILN_FIXTURES "/safetensors/tiny.safetensors";
    if (kiln_safetensors_open_file(path, &st) != KILN_OK) fail_msg("%s", kiln_last_error());
    cJSON *doc = load_json(KILN_FIXTURES "/safetensors/tiny.json");
    cJSON *tensors = cJSON_GetObjectItem(doc, "tensors");
    assert_int_equal(st->n_tensors, cJSON_GetArraySize(tensors)); // __metadata__ is not a tensor
    assert_int_equal(st->n_files, 1);
    for (cJSON *e = tensors->child; e; e = e->next) {
        const kiln_tensor *t = kiln_safetensors_find(st, e->string);
        assert_non_null(t);
        assert_string_equal(t->name, e->string);
        check_tensor(t, cJSON_GetObjectItem(e, "dtype")->valuestring, cJSON_GetObjectItem(e, "shape"),
                     cJSON_GetObjectItem(e, "values"), 0);
        // Data lies inside the mapped file.
        const uint8_t *base = st->files[0]->data;
        assert_true((const uint8_t *)t->data >= base && (const uint8_t *)t->data + t->nbytes <= base + st->files[0]->size);
    }
    assert_null(kiln_safetensors_find(st, "missing"));
    assert_null(kiln_safetensors_find(st, "__metadata__"));
    const kiln_tensor *w = kiln_safetensors_find(st, "linear.weight");
    assert_int_equal(w->ne[0], 5); // [out=3, in=5] -> ne[0] = in
    assert_int_equal(w->ne[1], 3);
    cJSON_Delete(doc);
    kiln_safetensors_close(st);
}

// --- In-memory images --------------------------------------------------------

// Builds u64 length + header + data_size bytes of data (data[i] = i).
static uint8_t *make_image(const char *header, uint64_t data_size, uint64_t *size) {
    uint64_t n = strlen(header);
    *size = 8 + n + data_size;
    uint8_t *img = malloc(*size);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)(n >> (8 * i));
    memcpy(img + 8, header, n);
    for (uint64_t i = 0; i < data_size; i++) img[8 + n + i] = (uint8_t)i;
    return img;
}

static void test_parses_memory_image(void **state) {
    (void)state;
    // A 3-byte pad after the JSON keeps it odd: data pointers are unaligned, which is allowed.
    const char *header = "{\"__metadata__\":{\"format\":\"pt\"},"
                         "\"b\":{\"dtype\":\"BF16\",\"shape\":[1,2,1,2],\"data_offsets\":[16,24]},"
                         "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                         "\"h\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[24,26]}}   ";
    uint64_t size;
    uint8_t *img = make_image(header, 26, &size);
    kiln_safetensors *st;
    if (kiln_safetensors_parse(img, size, "mem", &st) != KILN_OK) fail_msg("%s", kiln_last_error());
    assert_int_equal(st->n_tensors, 3);
    assert_int_equal(st->n_files, 0);
    const uint8_t *data = img + 8 + strlen(header);
    const kiln_tensor *a = kiln_safetensors_find(st, "a"), *b = kiln_safetensors_find(st, "b"),
                      *h = kiln_safetensors_find(st, "h");
    assert_ptr_equal(a->data, data);
    assert_ptr_equal(b->data, data + 16);
    assert_int_equal(b->n_dims, 4);
    assert_int_equal(b->ne[0], 2);
    assert_int_equal(b->ne[1], 1);
    assert_int_equal(b->ne[2], 2);
    assert_int_equal(b->ne[3], 1);
    assert_int_equal(h->n_dims, 1);
    assert_int_equal(kiln_tensor_nelements(h), 1);
    assert_ptr_equal(h->data, data + 24);
    kiln_safetensors_close(st);
    free(img);
}

typedef struct hostile_case {
    const char *header;
    uint64_t data_size;
    kiln_status status;
    const char *message; // substring the error must contain
} hostile_case;

static void test_rejects_hostile_headers(void **state) {
    (void)state;
    static const hostile_case cases[] = {
        {"{\"a\":{\"dtype\":\"F32\"", 16, KILN_ERR_FORMAT, "not valid JSON"},
        {"[1,2,3]", 16, KILN_ERR_FORMAT, "not a JSON object"},
        {"{} trailing", 16, KILN_ERR_FORMAT, "trailing bytes"},
        {"{\"a\":[1]}", 16, KILN_ERR_FORMAT, "not a JSON object"},
        {"{\"a\":{\"dtype\":\"Q7\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "unknown dtype \"Q7\""},
        {"{\"a\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, KILN_ERR_UNSUPPORTED, "\"a\": dtype I64"},
        {"{\"w\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16, KILN_ERR_UNSUPPORTED, "\"w\": dtype F64"},
        {"{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]}}", 16, KILN_ERR_UNSUPPORTED, "dtype U8"},
        {"{\"a\":{\"dtype\":1,\"shape\":[4],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "\"dtype\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1,4],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4,1e30],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "shape[1]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 16, KILN_ERR_FORMAT, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[\"4\"],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "shape[0]"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1099511627776,1099511627776],\"data_offsets\":[0,16]}}", 16,
         KILN_ERR_FORMAT, "element count overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2147483648,2147483648],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT,
         "byte size overflows"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,32]}}", 16, KILN_ERR_FORMAT, "past the data section"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[16,0]}}", 16, KILN_ERR_FORMAT, "reversed"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[-16,0]}}", 16, KILN_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,16]}}", 32, KILN_ERR_FORMAT, "need 24"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4]}}", 16, KILN_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0]}}", 16, KILN_ERR_FORMAT, "data_offsets"},
        {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "\"shape\""},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,2,2,1],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "5 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
         "\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, KILN_ERR_FORMAT, "appears twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint64_t size;
        uint8_t *img = make_image(cases[i].header, cases[i].data_size, &size);
        kiln_safetensors *st = (kiln_safetensors *)1;
        kiln_status status = kiln_safetensors_parse(img, size, "hostile.safetensors", &st);
        if (status != cases[i].status || !strstr(kiln_last_error(), cases[i].message) ||
            strncmp(kiln_last_error(), "hostile.safetensors: ", 21) != 0)
            fail_msg("case %zu (%s): status %d, message [%s]", i, cases[i].header, status, kiln_last_error());
        assert_null(st);
        free(img);
    }
}

static void test_rejects_bad_header_length(void **state) {
    (void)state;
    kiln_safetensors *st;
    uint8_t small[7] = {0};
    assert_int_equal(kiln_safetensors_parse(small, sizeof small, "small", &st), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "small: "));
    assert_int_equal(kiln_safetensors_parse(NULL, 0, "empty", &st), KILN_ERR_FORMAT);

    uint64_t size;
    uint8_t *img = make_image("{}", 0, &size);
    img[0] = 3; // header length 3 > 2 bytes available
    assert_int_equal(kiln_safetensors_parse(img, size, "past", &st), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "runs past the end"));
    memset(img, 0xff, 8); // 2^64 - 1
    assert_int_equal(kiln_safetensors_parse(img, size, "past", &st), KILN_ERR_FORMAT);
    free(img);

    // A header length within the file but over the 100 MB limit.
    uint64_t big = 100u * 1024 * 1024 + 1;
    uint8_t *huge = calloc(1, 8 + big);
    assert_non_null(huge);
    for (int i = 0; i < 8; i++) huge[i] = (uint8_t)(big >> (8 * i));
    assert_int_equal(kiln_safetensors_parse(huge, 8 + big, "huge", &st), KILN_ERR_FORMAT);
    assert_non_null(strstr(kiln_last_error(), "limit"));
    free(huge);

    // An empty header is a valid file with no tensors.
    img = make_image("{}", 0, &size);
    assert_int_equal(kiln_safetensors_parse(img, size, "none", &st), KILN_OK);
    assert_int_equal(st->n_tensors, 0);
    assert_null(kiln_safetensors_find(st, "a"));
    kiln_safetensors_close(st);
    free(img);
}

// --- Folders -----------------------------------------------------------------

static void write_file(const char *dir, const char *name, const void *data, size_t len) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_shard(const char *dir, const char *name, const char *header, uint64_t data_size) {
    uint64_t size;
    uint8_t *img = make_image(header, data_size, &size);
    write_file(dir, name, img, size);
    free(img);
}

static void write_index(const char *dir, const char *weight_map) {
    char text[1024];
    snprintf(text, sizeof text, "{\"metadata\":{\"total_size\":48},\"weight_map\":%s}", weight_map);
    write_file(dir, "model.safetensors.index.json", text, strlen(text));
}

static void remove_dir(const char *dir) {
    const char *names[] = {"model.safetensors.index.json", "s1.safetensors", "s2.safetensors", "model.safetensors"};
    char path[PATH_MAX];
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void expect_dir_error(const char *dir, kiln_status want, const char *message) {
    kiln_safetensors *st = (kiln_safetensors *)1;
    kiln_status status = kiln_safetensors_open_dir(dir, &st);
    if (status != want || !strstr(kiln_last_error(), message))
        fail_msg("want status %d with [%s], got %d [%s]", want, message, status, kiln_last_error());
    assert_null(st);
}

static void test_sharded_folders(void **state) {
    (void)state;
    char dir[] = "/tmp/kiln_st_XXXXXX";
    assert_non_null(mkdtemp(dir));
    expect_dir_error(dir, KILN_ERR_IO, "neither model.safetensors");

    const char *s1 = "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"y\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[8,16]}}";
    const char *s2 = "{\"z\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}";
    write_shard(dir, "s1.safetensors", s1, 16);
    write_shard(dir, "s2.safetensors", s2, 8);
    write_index(dir, "{\"x\":\"s1.safetensors\",\"z\":\"s2.safetensors\",\"y\":\"s1.safetensors\"}");
    kiln_safetensors *st;
    if (kiln_safetensors_open_dir(dir, &st) != KILN_OK) fail_msg("%s", kiln_last_error());
    assert_int_equal(st->n_files, 2); // each distinct shard mapped once
    assert_int_equal(st->n_tensors, 3);
    const kiln_tensor *z = kiln_safetensors_find(st, "z");
    assert_non_null(z);
    assert_int_equal(z->dtype, KILN_BF16);
    bool in_second = false;
    for (uint64_t f = 0; f < st->n_files; f++) {
        const uint8_t *base = st->files[f]->data;
        if ((const uint8_t *)z->data >= base && (const uint8_t *)z->data < base + st->files[f]->size)
            in_second = strstr(st->files[f]->path, "s2.safetensors") != NULL;
    }
    assert_true(in_second);
    assert_int_equal(kiln_safetensors_find(st, "y")->ne[1], 2);
    kiln_safetensors_close(st);

    write_index(dir, "{\"x\":\"../s1.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "not a plain file name");
    write_index(dir, "{\"x\":\"sub/s1.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "not a plain file name");
    write_index(dir, "{\"x\":\"/etc/passwd\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "not a plain file name");
    write_index(dir, "{\"x\":\"..\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "not a plain file name");
    write_index(dir, "{\"x\":\"s2.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "\"x\" is mapped to s2.safetensors but that shard does not hold it");
    write_index(dir, "{\"w\":\"s1.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "\"w\" is mapped to s1.safetensors");
    write_index(dir, "{\"x\":\"s3.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_IO, "s3.safetensors");
    write_index(dir, "{\"x\":7}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "not a file name string");
    write_index(dir, "{}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "weight_map is empty");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\":", 14);
    expect_dir_error(dir, KILN_ERR_FORMAT, "model.safetensors.index.json: not valid JSON");
    write_file(dir, "model.safetensors.index.json", "{\"files\":{}}", 12);
    expect_dir_error(dir, KILN_ERR_FORMAT, "missing \"weight_map\"");

    // The same tensor in two shards.
    write_shard(dir, "s2.safetensors", "{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
    write_index(dir, "{\"x\":\"s1.safetensors\",\"y\":\"s2.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "\"x\" appears in both s1.safetensors and s2.safetensors");
    // A hostile shard: the error names the shard file.
    write_shard(dir, "s2.safetensors", "{\"z\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,8]}}", 8);
    write_index(dir, "{\"z\":\"s2.safetensors\"}");
    expect_dir_error(dir, KILN_ERR_FORMAT, "s2.safetensors: tensor \"z\": data_offsets span 8 bytes but shape and dtype need 16");

    // Without an index, model.safetensors is used.
    char index_path[PATH_MAX];
    snprintf(index_path, sizeof index_path, "%s/model.safetensors.index.json", dir);
    unlink(index_path);
    write_shard(dir, "model.safetensors", s2, 8);
    if (kiln_safetensors_open_dir(dir, &st) != KILN_OK) fail_msg("%s", kiln_last_error());
    assert_int_equal(st->n_tensors, 1);
    kiln_safetensors_close(st);
    remove_dir(dir);
}

// Every file of the corrupt corpus is rejected with a message naming it.
static void test_corrupt_corpus_rejected(void **state) {
    (void)state;
    static const char *names[] = {
        "truncated_length", "header_len_past_end", "header_not_json", "header_not_object", "header_trailing_garbage",
        "unknown_dtype", "unsupported_dtype_i64", "unsupported_dtype_f64", "dtype_not_string", "negative_dim",
        "huge_dim", "fractional_dim", "string_dim", "product_overflow", "bytes_overflow", "offsets_past_end",
        "offsets_reversed", "offsets_negative", "size_mismatch", "missing_data_offsets", "missing_shape",
        "one_offset", "five_dims", "entry_not_object", "duplicate_tensor"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/corrupt/safetensors/%s.safetensors", KILN_FIXTURES, names[i]);
        kiln_safetensors *st = (kiln_safetensors *)1;
        kiln_status status = kiln_safetensors_open_file(path, &st);
        if (status == KILN_OK || status == KILN_ERR_IO || strncmp(kiln_last_error(), path, strlen(path)) != 0)
            fail_msg("%s: status %d [%s]", names[i], status, kiln_last_error());
        assert_null(st);
    }
}

// --- SmolLM2 folders from tools/make_hf_folder.py ---------------------------

static bool hf_folder_path(const char *name, char *out, size_t cap) {
    const char *cache = getenv("KILN_CACHE");
    const char *home = getenv("HOME");
    if (cache && *cache) snprintf(out, cap, "%s/%s", cache, name);
    else snprintf(out, cap, "%s/.cache/kiln/%s", home ? home : "", name);
    return access(out, R_OK) == 0;
}

static void check_hf_folder(const char *name, const char *dtype, uint64_t n_files) {
    char dir[PATH_MAX];
    if (!hf_folder_path(name, dir, sizeof dir)) {
        fprintf(stderr, "SKIP: %s not found (run tools/make_hf_folder.py)\n", dir);
        skip();
    }
    kiln_safetensors *st;
    if (kiln_safetensors_open_dir(dir, &st) != KILN_OK) fail_msg("%s", kiln_last_error());
    cJSON *probe = load_json(KILN_FIXTURES "/safetensors/smollm2_hf_probe.json");
    assert_int_equal(st->n_tensors, (uint64_t)cJSON_GetObjectItem(probe, "n_tensors")->valuedouble);
    assert_int_equal(st->n_files, n_files);
    for (uint64_t i = 0; i < st->n_tensors; i++) assert_string_equal(kiln_dtype_name(st->tensors[i].dtype), dtype);
    bool is_f32 = strcmp(dtype, "F32") == 0;
    for (cJSON *e = cJSON_GetObjectItem(probe, "tensors")->child; e; e = e->next) {
        const kiln_tensor *t = kiln_safetensors_find(st, e->string);
        if (!t) fail_msg("%s: tensor %s missing", dir, e->string);
        cJSON *shape = cJSON_GetObjectItem(e, "shape");
        check_tensor(t, dtype, shape, cJSON_GetObjectItem(e, is_f32 ? "f32_first8" : "bf16_first8"), 0);
        int64_t row = cJSON_GetArraySize(shape) > 1 ? t->ne[0] : 8;
        check_tensor(t, dtype, shape, cJSON_GetObjectItem(e, is_f32 ? "f32_row1_first8" : "bf16_row1_first8"), row);
    }
    // Llama names: 30 layers x 9 tensors + embeddings + final norm, tied (no lm_head).
    const kiln_tensor *q = kiln_safetensors_find(st, "model.layers.29.self_attn.q_proj.weight");
    assert_non_null(q);
    assert_int_equal(q->ne[0], 576);
    assert_int_equal(q->ne[1], 576);
    const kiln_tensor *k = kiln_safetensors_find(st, "model.layers.29.self_attn.k_proj.weight");
    assert_int_equal(k->ne[0], 576);
    assert_int_equal(k->ne[1], 192);
    const kiln_tensor *down = kiln_safetensors_find(st, "model.layers.0.mlp.down_proj.weight");
    assert_int_equal(down->ne[0], 1536);
    assert_int_equal(down->ne[1], 576);
    assert_null(kiln_safetensors_find(st, "lm_head.weight"));
    cJSON_Delete(probe);
    kiln_safetensors_close(st);
}

static void test_smollm2_hf_f32(void **state) {
    (void)state;
    check_hf_folder("smollm2-hf-f32", "F32", 1);
}

static void test_smollm2_hf_bf16(void **state) {
    (void)state;
    check_hf_folder("smollm2-hf-bf16", "BF16", 1);
}

static void test_smollm2_hf_f32_sharded(void **state) {
    (void)state;
    check_hf_folder("smollm2-hf-f32-sharded", "F32", 3);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_reference_writer_file),
        cmocka_unit_test(test_parses_memory_image),
        cmocka_unit_test(test_rejects_hostile_headers),
        cmocka_unit_test(test_rejects_bad_header_length),
        cmocka_unit_test(test_sharded_folders),
        cmocka_unit_test(test_corrupt_corpus_rejected),
        cmocka_unit_test(test_smollm2_hf_f32),
        cmocka_unit_test(test_smollm2_hf_bf16),
        cmocka_unit_test(test_smollm2_hf_f32_sharded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
