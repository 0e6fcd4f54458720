// GGUF reader (versions 2 and 3). The file is memory-mapped; strings and tensor
// data point into the mapping. Every offset, count and size is checked against
// the file before use: a hostile file yields KILN_ERR_FORMAT with a message
// naming the file and the problem, never an out-of-bounds read.
#ifndef KILN_FORMATS_GGUF_H
#define KILN_FORMATS_GGUF_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/file.h"
#include "core/tensor.h"

typedef enum kiln_gguf_type {
    KILN_GGUF_UINT8 = 0,
    KILN_GGUF_INT8 = 1,
    KILN_GGUF_UINT16 = 2,
    KILN_GGUF_INT16 = 3,
    KILN_GGUF_UINT32 = 4,
    KILN_GGUF_INT32 = 5,
    KILN_GGUF_FLOAT32 = 6,
    KILN_GGUF_BOOL = 7,
    KILN_GGUF_STRING = 8,
    KILN_GGUF_ARRAY = 9,
    KILN_GGUF_UINT64 = 10,
    KILN_GGUF_INT64 = 11,
    KILN_GGUF_FLOAT64 = 12,
} kiln_gguf_type;

// A string inside the mapped file: not NUL-terminated, may contain any bytes.
typedef struct kiln_gguf_str {
    const char *ptr;
    uint64_t len;
} kiln_gguf_str;

typedef struct kiln_gguf_value {
    kiln_gguf_type type;
    union {
        uint64_t u64; // UINT8..UINT64 (zero-extended)
        int64_t i64;  // INT8..INT64 (sign-extended)
        double f64;   // FLOAT32, FLOAT64
        bool b;       // BOOL
        kiln_gguf_str str;
        struct {
            kiln_gguf_type elem_type;
            uint64_t n;
            struct kiln_gguf_value *items; // n parsed elements (nested arrays too)
        } arr;
    };
} kiln_gguf_value;

typedef struct kiln_gguf_kv {
    char *key; // NUL-terminated copy
    kiln_gguf_value value;
} kiln_gguf_kv;

typedef struct kiln_gguf_tensor_info {
    kiln_tensor t;   // t.name points at `name`, t.data into the mapping
    char *name;      // NUL-terminated copy
    uint64_t offset; // relative to the start of the data section
} kiln_gguf_tensor_info;

typedef struct kiln_gguf {
    kiln_mapped_file *file; // NULL when parsed from a caller's buffer
    const char *path;       // for messages
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset; // start of the tensor data section in the file
    uint64_t n_kv;
    kiln_gguf_kv *kv;
    uint64_t n_tensors;
    kiln_gguf_tensor_info *tensors;
} kiln_gguf;

kiln_status kiln_gguf_open(const char *path, kiln_gguf **out);
// Parses a buffer the caller keeps alive for the lifetime of the result (used
// by the fuzz harness and tests).
kiln_status kiln_gguf_parse(const void *data, uint64_t size, const char *name, kiln_gguf **out);
void kiln_gguf_close(kiln_gguf *gguf);

const kiln_gguf_value *kiln_gguf_get(const kiln_gguf *gguf, const char *key);
// Typed getters: false when the key is absent or has an incompatible type
// (any integer type converts to another if the value fits).
bool kiln_gguf_get_u32(const kiln_gguf *gguf, const char *key, uint32_t *out);
bool kiln_gguf_get_f32(const kiln_gguf *gguf, const char *key, float *out);
bool kiln_gguf_get_bool(const kiln_gguf *gguf, const char *key, bool *out);
bool kiln_gguf_get_str(const kiln_gguf *gguf, const char *key, kiln_gguf_str *out);
// An array value whose elements have type elem_type, or NULL.
const kiln_gguf_value *kiln_gguf_get_array(const kiln_gguf *gguf, const char *key, kiln_gguf_type elem_type);

// Reading a known key: absent is KILN_OK with *found = false (the caller's
// default applies, *out is untouched); present with a type that does not
// convert, or an integer that does not fit, is KILN_ERR_FORMAT naming the
// file, the key, its type and the one expected, so that a wrong-typed key is
// never taken for an absent one. u32 takes any integer type whose value fits;
// f32 takes float32, float64 or an integer; bool and str only their own type.
// found may be NULL.
kiln_status kiln_gguf_read_u32(const kiln_gguf *gguf, const char *key, uint32_t *out, bool *found);
kiln_status kiln_gguf_read_f32(const kiln_gguf *gguf, const char *key, float *out, bool *found);
kiln_status kiln_gguf_read_bool(const kiln_gguf *gguf, const char *key, bool *out, bool *found);
kiln_status kiln_gguf_read_str(const kiln_gguf *gguf, const char *key, kiln_gguf_str *out, bool *found);
// An array of elem_type elements: *out is NULL when the key is absent.
kiln_status kiln_gguf_read_array(const kiln_gguf *gguf, const char *key, kiln_gguf_type elem_type,
                                 const kiln_gguf_value **out);
// The name of a value type, as messages print it ("uint32", "array of int8").
const char *kiln_gguf_type_name(const kiln_gguf_value *v);

const kiln_gguf_tensor_info *kiln_gguf_find_tensor(const kiln_gguf *gguf, const char *name);

#endif
