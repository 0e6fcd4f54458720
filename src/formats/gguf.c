// GGUF v2/v3 reader. Layout (little-endian):
//   magic "GGUF", u32 version, u64 n_tensors, u64 n_kv,
//   n_kv x { string key, u32 type, value },
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset },
//   padding to `alignment`, tensor data (offsets relative to its start).
// A string is a u64 length and that many bytes. An array value is a u32
// element type, a u64 count and the elements (arrays of arrays nest).
//
// Every read goes through a bounds-checked cursor, and every count is bounded
// by the bytes left in the file before anything is allocated for it, so a
// hostile header can neither read out of bounds nor make us allocate more than
// a small multiple of the file size.
#include "formats/gguf.h"

#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"

#define GGUF_MAGIC 0x46554747u // "GGUF" read as a little-endian u32
#define GGUF_DEFAULT_ALIGNMENT 32
// Arrays of arrays are legal but nothing real nests deeply; the limit keeps
// recursion bounded on hostile input.
#define GGUF_MAX_ARRAY_DEPTH 8
// Upper bound on parsed metadata values (array elements included): a real
// vocabulary has a few hundred thousand; the cap bounds memory for a large
// hostile file (each value costs sizeof(kiln_gguf_value) of heap).
#define GGUF_MAX_VALUES (1u << 23)
// Names in error messages are cut to this many bytes.
#define NAME_SHOWN 64

typedef struct cursor {
    const uint8_t *data;
    uint64_t size, pos;
    const char *name;    // file name for messages
    uint64_t n_values;   // metadata values parsed so far
} cursor;

static uint64_t remaining(const cursor *c) { return c->size - c->pos; }

static kiln_status truncated(const cursor *c, const char *what) {
    return kiln_fail(KILN_ERR_FORMAT, "%s: truncated: %s at offset %llu runs past the end of the file (%llu bytes)",
                     c->name, what, (unsigned long long)c->pos, (unsigned long long)c->size);
}

static kiln_status read_bytes(cursor *c, void *dst, uint64_t n, const char *what) {
    if (n > remaining(c)) return truncated(c, what);
    memcpy(dst, c->data + c->pos, (size_t)n);
    c->pos += n;
    return KILN_OK;
}

static kiln_status read_u32(cursor *c, uint32_t *v, const char *what) { return read_bytes(c, v, 4, what); }
static kiln_status read_u64(cursor *c, uint64_t *v, const char *what) { return read_bytes(c, v, 8, what); }

static kiln_status read_str(cursor *c, kiln_gguf_str *s, const char *what) {
    uint64_t len = 0; // gcc -O2 cannot see that read_u64 sets it on success
    kiln_status st = read_u64(c, &len, what);
    if (st != KILN_OK) return st;
    if (len > remaining(c))
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s at offset %llu has length %llu, past the end of the file (%llu bytes)",
                         c->name, what, (unsigned long long)(c->pos - 8), (unsigned long long)len,
                         (unsigned long long)c->size);
    s->ptr = (const char *)c->data + c->pos;
    s->len = len;
    c->pos += len;
    return KILN_OK;
}

// A NUL-terminated copy of a key or tensor name; names with embedded NULs are
// refused because every lookup treats them as C strings.
static kiln_status copy_name(cursor *c, const kiln_gguf_str *s, const char *what, char **out) {
    if (memchr(s->ptr, '\0', (size_t)s->len))
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s \"%.*s\" contains a NUL byte", c->name, what, NAME_SHOWN,
                         s->ptr);
    char *p = malloc((size_t)s->len + 1);
    if (!p) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory for a %s", c->name, what);
    memcpy(p, s->ptr, (size_t)s->len);
    p[s->len] = '\0';
    *out = p;
    return KILN_OK;
}

static const char *value_type_name(uint32_t t) {
    static const char *names[] = {"uint8", "int8",   "uint16", "int16", "uint32", "int32",  "float32",
                                  "bool",  "string", "array",  "uint64", "int64", "float64"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

// Smallest encoding of one value of type t (used to bound element counts).
static uint64_t min_value_bytes(kiln_gguf_type t) {
    switch (t) {
    case KILN_GGUF_UINT8: case KILN_GGUF_INT8: case KILN_GGUF_BOOL: return 1;
    case KILN_GGUF_UINT16: case KILN_GGUF_INT16: return 2;
    case KILN_GGUF_UINT32: case KILN_GGUF_INT32: case KILN_GGUF_FLOAT32: return 4;
    case KILN_GGUF_UINT64: case KILN_GGUF_INT64: case KILN_GGUF_FLOAT64: case KILN_GGUF_STRING: return 8;
    case KILN_GGUF_ARRAY: return 4 + 8;
    }
    return 1;
}

static void free_value(kiln_gguf_value *v) {
    if (v->type != KILN_GGUF_ARRAY || !v->arr.items) return;
    if (v->arr.elem_type == KILN_GGUF_ARRAY)
        for (uint64_t i = 0; i < v->arr.n; i++) free_value(&v->arr.items[i]);
    free(v->arr.items);
    v->arr.items = NULL;
}

static kiln_status read_value(cursor *c, uint32_t type, int depth, const char *key, kiln_gguf_value *v);

static kiln_status read_array(cursor *c, int depth, const char *key, kiln_gguf_value *v) {
    if (depth >= GGUF_MAX_ARRAY_DEPTH)
        return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: arrays nested deeper than %d levels", c->name, key,
                         GGUF_MAX_ARRAY_DEPTH);
    v->arr.n = 0;
    v->arr.items = NULL;
    uint32_t elem_type;
    uint64_t n;
    kiln_status st = read_u32(c, &elem_type, "array element type");
    if (st == KILN_OK) st = read_u64(c, &n, "array length");
    if (st != KILN_OK) return st;
    if (elem_type > KILN_GGUF_FLOAT64)
        return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: unknown array element type %u", c->name, key, elem_type);
    v->arr.elem_type = (kiln_gguf_type)elem_type;
    // Bound the count by the bytes left before allocating.
    if (n > remaining(c) / min_value_bytes((kiln_gguf_type)elem_type))
        return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: array of %llu %s values cannot fit in the %llu bytes left",
                         c->name, key, (unsigned long long)n, value_type_name(elem_type),
                         (unsigned long long)remaining(c));
    if (n > GGUF_MAX_VALUES - c->n_values)
        return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: more than %u metadata values in total", c->name, key,
                         GGUF_MAX_VALUES);
    c->n_values += n;
    if (n == 0) return KILN_OK;
    v->arr.items = calloc((size_t)n, sizeof *v->arr.items);
    if (!v->arr.items) return kiln_fail(KILN_ERR_NOMEM, "%s: key %.64s: out of memory for %llu values", c->name, key,
                                        (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        // Count what is filled in so that free_value frees exactly that on error.
        v->arr.n = i + 1;
        st = read_value(c, elem_type, depth + 1, key, &v->arr.items[i]);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

static kiln_status read_value(cursor *c, uint32_t type, int depth, const char *key, kiln_gguf_value *v) {
    v->type = (kiln_gguf_type)type;
    kiln_status st = KILN_OK;
    switch (type) {
    case KILN_GGUF_UINT8: { uint8_t x = 0; st = read_bytes(c, &x, 1, "uint8 value"); v->u64 = x; break; }
    case KILN_GGUF_INT8: { int8_t x = 0; st = read_bytes(c, &x, 1, "int8 value"); v->i64 = x; break; }
    case KILN_GGUF_UINT16: { uint16_t x = 0; st = read_bytes(c, &x, 2, "uint16 value"); v->u64 = x; break; }
    case KILN_GGUF_INT16: { int16_t x = 0; st = read_bytes(c, &x, 2, "int16 value"); v->i64 = x; break; }
    case KILN_GGUF_UINT32: { uint32_t x = 0; st = read_bytes(c, &x, 4, "uint32 value"); v->u64 = x; break; }
    case KILN_GGUF_INT32: { int32_t x = 0; st = read_bytes(c, &x, 4, "int32 value"); v->i64 = x; break; }
    case KILN_GGUF_UINT64: { uint64_t x = 0; st = read_bytes(c, &x, 8, "uint64 value"); v->u64 = x; break; }
    case KILN_GGUF_INT64: { int64_t x = 0; st = read_bytes(c, &x, 8, "int64 value"); v->i64 = x; break; }
    case KILN_GGUF_FLOAT32: { float x = 0; st = read_bytes(c, &x, 4, "float32 value"); v->f64 = x; break; }
    case KILN_GGUF_FLOAT64: { double x = 0; st = read_bytes(c, &x, 8, "float64 value"); v->f64 = x; break; }
    case KILN_GGUF_BOOL: {
        uint8_t x = 0;
        st = read_bytes(c, &x, 1, "bool value");
        if (st == KILN_OK && x > 1)
            return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: bool value %u at offset %llu is neither 0 nor 1",
                             c->name, key, x, (unsigned long long)(c->pos - 1));
        v->b = x != 0;
        break;
    }
    case KILN_GGUF_STRING: st = read_str(c, &v->str, "string value"); break;
    case KILN_GGUF_ARRAY: st = read_array(c, depth, key, v); break;
    default:
        return kiln_fail(KILN_ERR_FORMAT, "%s: key %.64s: unknown value type %u at offset %llu", c->name, key, type,
                         (unsigned long long)(c->pos - 4));
    }
    return st;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

// Finds a repeated string among n names in O(n log n); NULL if all differ.
static const char *find_duplicate(char **names, uint64_t n, kiln_status *st) {
    *st = KILN_OK;
    if (n < 2) return NULL;
    char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted) {
        *st = KILN_ERR_NOMEM;
        return NULL;
    }
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_strp);
    const char *dup = NULL;
    for (uint64_t i = 1; i < n && !dup; i++)
        if (strcmp(sorted[i - 1], sorted[i]) == 0) dup = sorted[i];
    free(sorted);
    return dup;
}

static kiln_status read_kvs(cursor *c, kiln_gguf *g) {
    // A key-value pair takes at least 8 (key length) + 4 (type) + 1 bytes.
    if (g->n_kv > remaining(c) / 13)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %llu metadata entries cannot fit in a %llu-byte file", c->name,
                         (unsigned long long)g->n_kv, (unsigned long long)c->size);
    uint64_t n = g->n_kv;
    g->n_kv = 0; // counts entries filled in, for kiln_gguf_close on error
    if (n == 0) return KILN_OK;
    g->kv = calloc((size_t)n, sizeof *g->kv);
    if (!g->kv) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory for %llu metadata entries", c->name,
                                 (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        kiln_gguf_kv *kv = &g->kv[i];
        kiln_gguf_str key;
        uint32_t type;
        kiln_status st = read_str(c, &key, "metadata key");
        if (st == KILN_OK) st = copy_name(c, &key, "metadata key", &kv->key);
        if (st != KILN_OK) return st;
        g->n_kv = i + 1;
        kv->value.type = KILN_GGUF_UINT8; // nothing to free until read_value sets it
        st = read_u32(c, &type, "metadata value type");
        if (st == KILN_OK) st = read_value(c, type, 0, kv->key, &kv->value);
        if (st != KILN_OK) return st;
    }
    char **keys = malloc((size_t)n * sizeof *keys);
    if (!keys) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < n; i++) keys[i] = g->kv[i].key;
    kiln_status st;
    const char *dup = find_duplicate(keys, n, &st);
    kiln_status result = KILN_OK;
    if (st != KILN_OK) result = kiln_fail(st, "%s: out of memory", c->name);
    else if (dup) result = kiln_fail(KILN_ERR_FORMAT, "%s: duplicate metadata key %.*s", c->name, NAME_SHOWN, dup);
    free(keys);
    return result;
}

static kiln_status read_alignment(cursor *c, kiln_gguf *g) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const kiln_gguf_value *v = kiln_gguf_get(g, "general.alignment");
    if (!v) return KILN_OK;
    uint64_t a;
    if (v->type == KILN_GGUF_UINT8 || v->type == KILN_GGUF_UINT16 || v->type == KILN_GGUF_UINT32 ||
        v->type == KILN_GGUF_UINT64)
        a = v->u64;
    else if ((v->type == KILN_GGUF_INT8 || v->type == KILN_GGUF_INT16 || v->type == KILN_GGUF_INT32 ||
              v->type == KILN_GGUF_INT64) && v->i64 >= 0)
        a = (uint64_t)v->i64;
    else
        return kiln_fail(KILN_ERR_FORMAT, "%s: general.alignment has type %s, not an unsigned integer", c->name,
                         value_type_name(v->type));
    if (a == 0 || (a & (a - 1)) != 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: general.alignment %llu is not a nonzero power of two", c->name,
                         (unsigned long long)a);
    g->alignment = a;
    return KILN_OK;
}

static kiln_status read_tensor_info(cursor *c, kiln_gguf *g, kiln_gguf_tensor_info *ti) {
    kiln_gguf_str name;
    uint32_t n_dims, type;
    kiln_status st = read_str(c, &name, "tensor name");
    if (st == KILN_OK) st = copy_name(c, &name, "tensor name", &ti->name);
    if (st != KILN_OK) return st;
    ti->t.name = ti->name;
    const char *tn = ti->name;
    if ((st = read_u32(c, &n_dims, "tensor dimension count")) != KILN_OK) return st;
    if (n_dims > KILN_MAX_DIMS)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s has %u dimensions (at most %d supported)", c->name,
                         NAME_SHOWN, tn, n_dims, KILN_MAX_DIMS);
    ti->t.n_dims = (int)n_dims;
    uint64_t n_elems = 1;
    for (int d = 0; d < KILN_MAX_DIMS; d++) ti->t.ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        uint64_t ne;
        if ((st = read_u64(c, &ne, "tensor dimension")) != KILN_OK) return st;
        if (ne == 0 || ne > (uint64_t)INT64_MAX)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: dimension %u has invalid size %llu", c->name,
                             NAME_SHOWN, tn, d, (unsigned long long)ne);
        if (n_elems > (uint64_t)INT64_MAX / ne)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: element count overflows", c->name, NAME_SHOWN, tn);
        n_elems *= ne;
        ti->t.ne[d] = (int64_t)ne;
    }
    if ((st = read_u32(c, &type, "tensor type")) != KILN_OK) return st;
    const kiln_dtype_traits *dt = kiln_dtype_info(type);
    if (!dt)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tensor %.*s has unknown or unsupported type %u", c->name,
                         NAME_SHOWN, tn, type);
    ti->t.dtype = (kiln_dtype)type;
    uint64_t row_bytes;
    if (!kiln_dtype_row_bytes(ti->t.dtype, (uint64_t)ti->t.ne[0], &row_bytes))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: row length %lld is not a multiple of the %s block size %u",
                         c->name, NAME_SHOWN, tn, (long long)ti->t.ne[0], dt->name, dt->block_elems);
    uint64_t n_rows = n_elems / (uint64_t)ti->t.ne[0];
    if (n_rows > UINT64_MAX / row_bytes)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: byte size overflows", c->name, NAME_SHOWN, tn);
    ti->t.nbytes = n_rows * row_bytes;
    if ((st = read_u64(c, &ti->offset, "tensor data offset")) != KILN_OK) return st;
    if (ti->offset % g->alignment != 0)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: data offset %llu is not a multiple of the alignment %llu",
                         c->name, NAME_SHOWN, tn, (unsigned long long)ti->offset, (unsigned long long)g->alignment);
    return KILN_OK;
}

static kiln_status read_tensor_infos(cursor *c, kiln_gguf *g) {
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes.
    if (g->n_tensors > remaining(c) / 24)
        return kiln_fail(KILN_ERR_FORMAT, "%s: %llu tensor infos cannot fit in a %llu-byte file", c->name,
                         (unsigned long long)g->n_tensors, (unsigned long long)c->size);
    uint64_t n = g->n_tensors;
    g->n_tensors = 0; // counts infos filled in, for kiln_gguf_close on error
    if (n == 0) return KILN_OK;
    g->tensors = calloc((size_t)n, sizeof *g->tensors);
    if (!g->tensors) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory for %llu tensors", c->name,
                                      (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        g->n_tensors = i + 1;
        kiln_status st = read_tensor_info(c, g, &g->tensors[i]);
        if (st != KILN_OK) return st;
    }
    return KILN_OK;
}

// Places the data section and checks that each tensor's bytes lie inside the file.
static kiln_status place_tensor_data(cursor *c, kiln_gguf *g) {
    uint64_t pad = (g->alignment - c->pos % g->alignment) % g->alignment;
    if (pad > UINT64_MAX - c->pos)
        return kiln_fail(KILN_ERR_FORMAT, "%s: data section offset overflows", c->name);
    g->data_offset = c->pos + pad;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        kiln_gguf_tensor_info *ti = &g->tensors[i];
        uint64_t start = g->data_offset + ti->offset;
        if (ti->offset > c->size || g->data_offset > c->size || start > c->size ||
            ti->t.nbytes > c->size - start)
            return kiln_fail(KILN_ERR_FORMAT,
                             "%s: tensor %.*s: data (offset %llu, %llu bytes) lies past the end of the file "
                             "(data section at %llu, file %llu bytes)",
                             c->name, NAME_SHOWN, ti->name, (unsigned long long)ti->offset,
                             (unsigned long long)ti->t.nbytes, (unsigned long long)g->data_offset,
                             (unsigned long long)c->size);
        // Consumers read elements through typed pointers (float, uint16_t
        // block fields), so the data must sit at their natural alignment even
        // when general.alignment is 1 or 2.
        const unsigned need = (ti->t.dtype == KILN_F32 || ti->t.dtype == KILN_Q8_K) ? 4 : 2;
        if ((uintptr_t)(c->data + start) % need != 0)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor %.*s: data at file offset %llu is not aligned to %u bytes",
                             c->name, NAME_SHOWN, ti->name, (unsigned long long)start, need);
        ti->t.data = c->data + start;
    }
    char **names = malloc((size_t)(g->n_tensors ? g->n_tensors : 1) * sizeof *names);
    if (!names) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", c->name);
    for (uint64_t i = 0; i < g->n_tensors; i++) names[i] = g->tensors[i].name;
    kiln_status st;
    const char *dup = find_duplicate(names, g->n_tensors, &st);
    kiln_status result = KILN_OK;
    if (st != KILN_OK) result = kiln_fail(st, "%s: out of memory", c->name);
    else if (dup) result = kiln_fail(KILN_ERR_FORMAT, "%s: duplicate tensor name %.*s", c->name, NAME_SHOWN, dup);
    free(names);
    return result;
}

static kiln_status read_header(cursor *c, kiln_gguf *g) {
    uint32_t magic;
    kiln_status st = read_u32(c, &magic, "magic");
    if (st != KILN_OK) return kiln_fail(KILN_ERR_FORMAT, "%s: too short to be a GGUF file (%llu bytes)", c->name,
                                        (unsigned long long)c->size);
    if (magic != GGUF_MAGIC) return kiln_fail(KILN_ERR_FORMAT, "%s: bad magic (not a GGUF file)", c->name);
    if ((st = read_u32(c, &g->version, "version")) != KILN_OK) return st;
    if (g->version == 1)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: GGUF version 1 is not supported (re-convert the model)", c->name);
    if (g->version != 2 && g->version != 3) {
        // A big-endian file shows its small version number byte-swapped.
        if ((g->version & 0xffffu) == 0 && g->version != 0)
            return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: big-endian GGUF files are not supported (GGUF version %u)",
                             c->name, __builtin_bswap32(g->version));
        return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: unsupported GGUF version %u (2 and 3 are supported)", c->name,
                         g->version);
    }
    if ((st = read_u64(c, &g->n_tensors, "tensor count")) != KILN_OK) return st;
    return read_u64(c, &g->n_kv, "metadata count");
}

kiln_status kiln_gguf_parse(const void *data, uint64_t size, const char *name, kiln_gguf **out) {
    *out = NULL;
    if (!name) name = "<buffer>";
    if (!data && size > 0) return kiln_fail(KILN_ERR_INVALID_ARG, "%s: no data", name);
    kiln_gguf *g = calloc(1, sizeof *g);
    char *path = strdup(name);
    if (!g || !path) {
        free(g);
        free(path);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", name);
    }
    g->path = path;
    cursor c = {.data = data, .size = size, .pos = 0, .name = path, .n_values = 0};
    kiln_status st = read_header(&c, g);
    if (st == KILN_OK) st = read_kvs(&c, g);
    if (st == KILN_OK) st = read_alignment(&c, g);
    if (st == KILN_OK) st = read_tensor_infos(&c, g);
    if (st == KILN_OK) st = place_tensor_data(&c, g);
    if (st != KILN_OK) {
        kiln_gguf_close(g);
        return st;
    }
    *out = g;
    return KILN_OK;
}

kiln_status kiln_gguf_open(const char *path, kiln_gguf **out) {
    *out = NULL;
    kiln_mapped_file *f;
    kiln_status st = kiln_file_map(path, &f);
    if (st != KILN_OK) return st;
    st = kiln_gguf_parse(f->data, f->size, path, out);
    if (st != KILN_OK) {
        kiln_file_unmap(f);
        return st;
    }
    (*out)->file = f;
    return KILN_OK;
}

void kiln_gguf_close(kiln_gguf *g) {
    if (!g) return;
    // Counts may still hold the header's values when parsing stopped before
    // the arrays were allocated.
    for (uint64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free_value(&g->kv[i].value);
    }
    free(g->kv);
    for (uint64_t i = 0; g->tensors && i < g->n_tensors; i++) free(g->tensors[i].name);
    free(g->tensors);
    kiln_file_unmap(g->file);
    free((char *)g->path);
    free(g);
}

const kiln_gguf_value *kiln_gguf_get(const kiln_gguf *g, const char *key) {
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (strcmp(g->kv[i].key, key) == 0) return &g->kv[i].value;
    return NULL;
}

static bool is_unsigned(kiln_gguf_type t) {
    return t == KILN_GGUF_UINT8 || t == KILN_GGUF_UINT16 || t == KILN_GGUF_UINT32 || t == KILN_GGUF_UINT64;
}

static bool is_signed(kiln_gguf_type t) {
    return t == KILN_GGUF_INT8 || t == KILN_GGUF_INT16 || t == KILN_GGUF_INT32 || t == KILN_GGUF_INT64;
}

bool kiln_gguf_get_u32(const kiln_gguf *g, const char *key, uint32_t *out) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v) return false;
    if (is_unsigned(v->type) && v->u64 <= UINT32_MAX) {
        *out = (uint32_t)v->u64;
        return true;
    }
    if (is_signed(v->type) && v->i64 >= 0 && v->i64 <= (int64_t)UINT32_MAX) {
        *out = (uint32_t)v->i64;
        return true;
    }
    return false;
}

bool kiln_gguf_get_f32(const kiln_gguf *g, const char *key, float *out) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v) return false;
    if (v->type == KILN_GGUF_FLOAT32 || v->type == KILN_GGUF_FLOAT64) *out = (float)v->f64;
    else if (is_unsigned(v->type)) *out = (float)v->u64;
    else if (is_signed(v->type)) *out = (float)v->i64;
    else return false;
    return true;
}

bool kiln_gguf_get_bool(const kiln_gguf *g, const char *key, bool *out) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v || v->type != KILN_GGUF_BOOL) return false;
    *out = v->b;
    return true;
}

bool kiln_gguf_get_str(const kiln_gguf *g, const char *key, kiln_gguf_str *out) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v || v->type != KILN_GGUF_STRING) return false;
    *out = v->str;
    return true;
}

const kiln_gguf_value *kiln_gguf_get_array(const kiln_gguf *g, const char *key, kiln_gguf_type elem_type) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (!v || v->type != KILN_GGUF_ARRAY || v->arr.elem_type != elem_type) return NULL;
    return v;
}

const char *kiln_gguf_type_name(const kiln_gguf_value *v) {
    static const char *arrays[] = {"array of uint8",  "array of int8",   "array of uint16", "array of int16",
                                   "array of uint32", "array of int32",  "array of float32", "array of bool",
                                   "array of string", "array of arrays", "array of uint64", "array of int64",
                                   "array of float64"};
    if (v->type != KILN_GGUF_ARRAY) return value_type_name(v->type);
    return (uint32_t)v->arr.elem_type < sizeof arrays / sizeof arrays[0] ? arrays[v->arr.elem_type] : "array";
}

static kiln_status wrong_type(const kiln_gguf *g, const char *key, const kiln_gguf_value *v, const char *expected) {
    return kiln_fail(KILN_ERR_FORMAT, "%s: %s has type %s, expected %s", g->path ? g->path : "gguf", key,
                     kiln_gguf_type_name(v), expected);
}

static const kiln_gguf_value *lookup(const kiln_gguf *g, const char *key, bool *found) {
    const kiln_gguf_value *v = kiln_gguf_get(g, key);
    if (found) *found = v != NULL;
    return v;
}

kiln_status kiln_gguf_read_u32(const kiln_gguf *g, const char *key, uint32_t *out, bool *found) {
    const kiln_gguf_value *v = lookup(g, key, found);
    if (!v) return KILN_OK;
    if (!is_unsigned(v->type) && !is_signed(v->type)) return wrong_type(g, key, v, "an unsigned integer");
    if (kiln_gguf_get_u32(g, key, out)) return KILN_OK;
    if (is_signed(v->type))
        return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %lld is out of range (expected 0 to %u)", g->path ? g->path : "gguf",
                         key, (long long)v->i64, UINT32_MAX);
    return kiln_fail(KILN_ERR_FORMAT, "%s: %s = %llu is out of range (expected 0 to %u)", g->path ? g->path : "gguf",
                     key, (unsigned long long)v->u64, UINT32_MAX);
}

kiln_status kiln_gguf_read_f32(const kiln_gguf *g, const char *key, float *out, bool *found) {
    const kiln_gguf_value *v = lookup(g, key, found);
    if (!v) return KILN_OK;
    return kiln_gguf_get_f32(g, key, out) ? KILN_OK : wrong_type(g, key, v, "a number (float32)");
}

kiln_status kiln_gguf_read_bool(const kiln_gguf *g, const char *key, bool *out, bool *found) {
    const kiln_gguf_value *v = lookup(g, key, found);
    if (!v) return KILN_OK;
    return kiln_gguf_get_bool(g, key, out) ? KILN_OK : wrong_type(g, key, v, "bool");
}

kiln_status kiln_gguf_read_str(const kiln_gguf *g, const char *key, kiln_gguf_str *out, bool *found) {
    const kiln_gguf_value *v = lookup(g, key, found);
    if (!v) return KILN_OK;
    return kiln_gguf_get_str(g, key, out) ? KILN_OK : wrong_type(g, key, v, "string");
}

kiln_status kiln_gguf_read_array(const kiln_gguf *g, const char *key, kiln_gguf_type elem_type,
                                 const kiln_gguf_value **out) {
    const kiln_gguf_value *v = lookup(g, key, NULL);
    *out = NULL;
    if (!v) return KILN_OK;
    if (!(*out = kiln_gguf_get_array(g, key, elem_type))) {
        const kiln_gguf_value want = {.type = KILN_GGUF_ARRAY, .arr = {.elem_type = elem_type}};
        return wrong_type(g, key, v, kiln_gguf_type_name(&want));
    }
    return KILN_OK;
}

const kiln_gguf_tensor_info *kiln_gguf_find_tensor(const kiln_gguf *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}
