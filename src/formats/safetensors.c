// Safetensors reader. Layout: u64 little-endian header length N, N bytes of
// JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the data section; offsets are relative to it.
//
// Alignment: the format does not pad the header to the dtype's size, so a
// tensor's data pointer may be unaligned. Nothing is rejected for that; kiln's
// readers load tensor data with memcpy / unaligned loads.
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_HEADER_BYTES (100u * 1024 * 1024) // the reference implementation's limit
#define MAX_INDEX_BYTES (100u * 1024 * 1024)
#define MAX_JSON_INT 9007199254740992.0 // 2^53: doubles are exact below this

// A tensor plus the shard (index into files[]) it came from, while merging.
typedef struct shard_tensor {
    kiln_tensor t;
    uint64_t shard;
} shard_tensor;

static void free_tensors(kiln_tensor *tensors, uint64_t n) {
    if (!tensors) return;
    for (uint64_t i = 0; i < n; i++) free((char *)tensors[i].name);
    free(tensors);
}

void kiln_safetensors_close(kiln_safetensors *st) {
    if (!st) return;
    free_tensors(st->tensors, st->n_tensors);
    for (uint64_t i = 0; i < st->n_files; i++) kiln_file_unmap(st->files[i]);
    free(st->files);
    free(st);
}

static int compare_tensor_names(const void *a, const void *b) {
    return strcmp(((const kiln_tensor *)a)->name, ((const kiln_tensor *)b)->name);
}

const kiln_tensor *kiln_safetensors_find(const kiln_safetensors *st, const char *name) {
    if (!st || !name || st->n_tensors == 0) return NULL;
    kiln_tensor key = {.name = name};
    // Tensors are kept sorted by name (see sort_and_check_unique).
    return bsearch(&key, st->tensors, st->n_tensors, sizeof key, compare_tensor_names);
}

// Reads a JSON number that must be a non-negative integer below 2^53.
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v >= MAX_JSON_INT || v != floor(v)) return false;
    *out = (uint64_t)v;
    return true;
}

// Maps a safetensors dtype string; *known tells an unsupported-but-valid dtype
// (KILN_ERR_UNSUPPORTED) from a string that is not a safetensors dtype at all.
static bool parse_dtype(const char *s, kiln_dtype *dtype, bool *known) {
    static const char *const other_dtypes[] = {
        "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64", "U64", "F64",
        "F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64"};
    *known = true;
    if (strcmp(s, "F32") == 0) { *dtype = KILN_F32; return true; }
    if (strcmp(s, "F16") == 0) { *dtype = KILN_F16; return true; }
    if (strcmp(s, "BF16") == 0) { *dtype = KILN_BF16; return true; }
    for (size_t i = 0; i < sizeof other_dtypes / sizeof *other_dtypes; i++)
        if (strcmp(s, other_dtypes[i]) == 0) return false;
    *known = false;
    return false;
}

// Validates one header entry and fills *t (name not set). data_size is the
// size of the data section, data its start.
static kiln_status parse_entry(const cJSON *entry, const char *file, const uint8_t *data,
                               uint64_t data_size, kiln_tensor *t) {
    const char *tname = entry->string;
    if (!cJSON_IsObject(entry))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": entry is not a JSON object", file, tname);

    const cJSON *dtype_item = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    if (!cJSON_IsString(dtype_item))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": missing or non-string \"dtype\"", file, tname);
    bool known;
    if (!parse_dtype(dtype_item->valuestring, &t->dtype, &known)) {
        if (known)
            return kiln_fail(KILN_ERR_UNSUPPORTED, "%s: tensor \"%.200s\": dtype %s is not supported (F32, F16, BF16 are)",
                             file, tname, dtype_item->valuestring);
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": unknown dtype \"%.50s\"", file, tname,
                         dtype_item->valuestring);
    }

    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    if (!cJSON_IsArray(shape))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": missing or non-array \"shape\"", file, tname);
    int n_dims = cJSON_GetArraySize(shape);
    if (n_dims > KILN_MAX_DIMS)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": %d dimensions, at most %d are supported", file,
                         tname, n_dims, KILN_MAX_DIMS);
    for (int i = 0; i < KILN_MAX_DIMS; i++) t->ne[i] = 1;
    // Row-major [d0, ..., dk] is ne[] reversed: the last dim varies fastest.
    uint64_t count = 1;
    int i = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, i++) {
        uint64_t d;
        if (!json_uint(dim, &d))
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": shape[%d] is not a non-negative integer below 2^53",
                             file, tname, i);
        if (__builtin_mul_overflow(count, d, &count) || count > (uint64_t)INT64_MAX)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": element count overflows", file, tname);
        t->ne[n_dims - 1 - i] = (int64_t)d;
    }
    // A scalar (shape []) is a one-element vector.
    t->n_dims = n_dims > 0 ? n_dims : 1;
    uint64_t nbytes;
    if (!kiln_dtype_row_bytes(t->dtype, count, &nbytes))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": byte size overflows", file, tname);

    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": missing or malformed \"data_offsets\" (want [begin, end])",
                         file, tname);
    uint64_t begin, end;
    if (!json_uint(offsets->child, &begin) || !json_uint(offsets->child->next, &end))
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets are not non-negative integers", file,
                         tname);
    if (begin > end)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets reversed [%llu, %llu]", file, tname,
                         (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets end %llu is past the data section (%llu bytes)",
                         file, tname, (unsigned long long)end, (unsigned long long)data_size);
    if (end - begin != nbytes)
        return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\": data_offsets span %llu bytes but shape and dtype need %llu",
                         file, tname, (unsigned long long)(end - begin), (unsigned long long)nbytes);
    t->data = data + begin;
    t->nbytes = nbytes;
    return KILN_OK;
}

// Parses one file image into a heap array of tensors (unsorted).
static kiln_status parse_image(const uint8_t *image, uint64_t size, const char *file, kiln_tensor **out,
                               uint64_t *n_out) {
    *out = NULL;
    *n_out = 0;
    if (size < 8) return kiln_fail(KILN_ERR_FORMAT, "%s: %llu bytes, too small for the 8-byte header length", file,
                                   (unsigned long long)size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--) header_len = header_len << 8 | image[i];
    if (header_len > size - 8)
        return kiln_fail(KILN_ERR_FORMAT, "%s: header length %llu runs past the end of the file (%llu bytes)", file,
                         (unsigned long long)header_len, (unsigned long long)size);
    if (header_len > MAX_HEADER_BYTES)
        return kiln_fail(KILN_ERR_FORMAT, "%s: header length %llu exceeds the %u-byte limit", file,
                         (unsigned long long)header_len, MAX_HEADER_BYTES);

    const char *header = (const char *)image + 8;
    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)header_len, &parse_end, false);
    if (!root) return kiln_fail(KILN_ERR_FORMAT, "%s: header is not valid JSON (near byte %lld)", file,
                                parse_end ? (long long)(parse_end - header) + 8 : -1LL);
    // Only padding may follow the JSON value (writers pad with spaces).
    for (const char *p = parse_end; p < header + header_len; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            cJSON_Delete(root);
            return kiln_fail(KILN_ERR_FORMAT, "%s: trailing bytes after the JSON header", file);
        }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return kiln_fail(KILN_ERR_FORMAT, "%s: header is not a JSON object", file);
    }

    uint64_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) n++;
    kiln_tensor *tensors = calloc(n ? n : 1, sizeof *tensors);
    if (!tensors) {
        cJSON_Delete(root);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory for %llu tensors", file, (unsigned long long)n);
    }
    const uint8_t *data = image + 8 + header_len;
    uint64_t data_size = size - 8 - header_len;
    uint64_t count = 0;
    kiln_status status = KILN_OK;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        kiln_tensor *t = &tensors[count];
        status = parse_entry(e, file, data, data_size, t);
        if (status != KILN_OK) break;
        if (!(t->name = strdup(e->string))) {
            status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", file);
            break;
        }
        count++;
    }
    cJSON_Delete(root);
    if (status != KILN_OK) {
        free_tensors(tensors, count);
        return status;
    }
    *out = tensors;
    *n_out = count;
    return KILN_OK;
}

// Sorts by name (so find can bisect) and rejects a name that appears twice.
static kiln_status sort_and_check_unique(kiln_tensor *tensors, uint64_t n, const char *file) {
    if (n == 0) return KILN_OK;
    qsort(tensors, n, sizeof *tensors, compare_tensor_names);
    for (uint64_t i = 1; i < n; i++)
        if (strcmp(tensors[i - 1].name, tensors[i].name) == 0)
            return kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\" appears twice", file, tensors[i].name);
    return KILN_OK;
}

kiln_status kiln_safetensors_parse(const void *data, uint64_t size, const char *name, kiln_safetensors **out) {
    *out = NULL;
    if (!name) name = "<memory>";
    if (!data && size > 0) return kiln_fail(KILN_ERR_INVALID_ARG, "%s: NULL data", name);
    kiln_safetensors *st = calloc(1, sizeof *st);
    if (!st) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", name);
    kiln_status status = parse_image(data, size, name, &st->tensors, &st->n_tensors);
    if (status == KILN_OK) status = sort_and_check_unique(st->tensors, st->n_tensors, name);
    if (status != KILN_OK) {
        kiln_safetensors_close(st);
        return status;
    }
    *out = st;
    return KILN_OK;
}

kiln_status kiln_safetensors_open_file(const char *path, kiln_safetensors **out) {
    *out = NULL;
    kiln_mapped_file *file;
    kiln_status status = kiln_file_map(path, &file);
    if (status != KILN_OK) return status;
    kiln_safetensors *st;
    status = kiln_safetensors_parse(file->data, file->size, path, &st);
    if (status != KILN_OK) {
        kiln_file_unmap(file);
        return status;
    }
    if (!(st->files = malloc(sizeof *st->files))) {
        kiln_file_unmap(file);
        kiln_safetensors_close(st);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    st->files[0] = file;
    st->n_files = 1;
    *out = st;
    return KILN_OK;
}

static char *join_path(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

// A shard name must be a plain file name inside the checkpoint folder.
static bool shard_name_is_safe(const char *s) {
    return s[0] != '\0' && !strchr(s, '/') && !strchr(s, '\\') && !strstr(s, "..");
}

static int compare_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int compare_shard_tensors(const void *a, const void *b) {
    return strcmp(((const shard_tensor *)a)->t.name, ((const shard_tensor *)b)->t.name);
}

static uint64_t find_shard(const char **shards, uint64_t n_shards, const char *name) {
    const char **hit = bsearch(&name, shards, n_shards, sizeof *shards, compare_strings);
    return hit ? (uint64_t)(hit - shards) : UINT64_MAX;
}

// Opens every distinct shard once and merges their tensors into st.
static kiln_status load_shards(const char *dir, const char *index_path, const char **shards, uint64_t n_shards,
                               const cJSON *weight_map, kiln_safetensors *st) {
    st->files = calloc(n_shards, sizeof *st->files);
    kiln_tensor **per_shard = calloc(n_shards, sizeof *per_shard);
    uint64_t *per_shard_n = calloc(n_shards, sizeof *per_shard_n);
    shard_tensor *all = NULL;
    uint64_t total = 0;
    kiln_status status = KILN_OK;
    if (!st->files || !per_shard || !per_shard_n) {
        status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (uint64_t s = 0; s < n_shards; s++) {
        char *path = join_path(dir, shards[s]);
        if (!path) {
            status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", index_path);
            goto done;
        }
        status = kiln_file_map(path, &st->files[s]);
        if (status == KILN_OK) {
            st->n_files = s + 1;
            status = parse_image(st->files[s]->data, st->files[s]->size, path, &per_shard[s], &per_shard_n[s]);
        }
        free(path);
        if (status != KILN_OK) {
            kiln_fail_context(status, "%s", index_path);
            goto done;
        }
        total += per_shard_n[s];
    }
    all = malloc((total ? total : 1) * sizeof *all);
    if (!all) {
        status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    // Names move from per_shard into all (then into st->tensors).
    uint64_t k = 0;
    for (uint64_t s = 0; s < n_shards; s++) {
        for (uint64_t i = 0; i < per_shard_n[s]; i++) all[k++] = (shard_tensor){per_shard[s][i], s};
        free(per_shard[s]);
        per_shard[s] = NULL;
        per_shard_n[s] = 0;
    }
    qsort(all, total, sizeof *all, compare_shard_tensors);
    for (uint64_t i = 1; i < total; i++) {
        if (strcmp(all[i - 1].t.name, all[i].t.name) == 0) {
            status = kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\" appears in both %s and %s", index_path,
                               all[i].t.name, shards[all[i - 1].shard], shards[all[i].shard]);
            goto done;
        }
    }
    for (const cJSON *e = weight_map->child; e; e = e->next) {
        uint64_t s = find_shard(shards, n_shards, e->valuestring);
        shard_tensor key = {.t.name = e->string};
        const shard_tensor *hit = bsearch(&key, all, total, sizeof *all, compare_shard_tensors);
        if (!hit || hit->shard != s) {
            status = kiln_fail(KILN_ERR_FORMAT, "%s: tensor \"%.200s\" is mapped to %s but that shard does not hold it",
                               index_path, e->string, e->valuestring);
            goto done;
        }
    }
    st->tensors = malloc((total ? total : 1) * sizeof *st->tensors);
    if (!st->tensors) {
        status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (uint64_t i = 0; i < total; i++) st->tensors[i] = all[i].t;
    st->n_tensors = total;
    free(all);
    all = NULL;
    total = 0;
done:
    if (all)
        for (uint64_t i = 0; i < total; i++) free((char *)all[i].t.name);
    free(all);
    if (per_shard)
        for (uint64_t s = 0; s < n_shards; s++) free_tensors(per_shard[s], per_shard_n[s]);
    free(per_shard);
    free(per_shard_n);
    return status;
}

static kiln_status open_index(const char *dir, const char *index_path, kiln_safetensors **out) {
    char *text;
    size_t len;
    kiln_status status = kiln_file_read_all(index_path, MAX_INDEX_BYTES, &text, &len);
    if (status != KILN_OK) return status;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return kiln_fail(KILN_ERR_FORMAT, "%s: not valid JSON", index_path);
    const cJSON *weight_map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const char **shards = NULL;
    uint64_t n_entries = 0, n_shards = 0;
    kiln_safetensors *st = NULL;
    if (!cJSON_IsObject(root) || !cJSON_IsObject(weight_map)) {
        status = kiln_fail(KILN_ERR_FORMAT, "%s: missing \"weight_map\" object", index_path);
        goto done;
    }
    for (const cJSON *e = weight_map->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            status = kiln_fail(KILN_ERR_FORMAT, "%s: weight_map[\"%.200s\"] is not a file name string", index_path,
                               e->string);
            goto done;
        }
        if (!shard_name_is_safe(e->valuestring)) {
            status = kiln_fail(KILN_ERR_FORMAT, "%s: weight_map[\"%.200s\"] = \"%.200s\" is not a plain file name in the folder",
                               index_path, e->string, e->valuestring);
            goto done;
        }
        n_entries++;
    }
    if (n_entries == 0) {
        status = kiln_fail(KILN_ERR_FORMAT, "%s: weight_map is empty", index_path);
        goto done;
    }
    // Distinct shard names, sorted: each file is mapped once.
    shards = malloc(n_entries * sizeof *shards);
    st = calloc(1, sizeof *st);
    if (!shards || !st) {
        status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", index_path);
        goto done;
    }
    for (const cJSON *e = weight_map->child; e; e = e->next) shards[n_shards++] = e->valuestring;
    qsort(shards, n_shards, sizeof *shards, compare_strings);
    uint64_t unique = 0;
    for (uint64_t i = 0; i < n_shards; i++)
        if (unique == 0 || strcmp(shards[unique - 1], shards[i]) != 0) shards[unique++] = shards[i];
    n_shards = unique;
    status = load_shards(dir, index_path, shards, n_shards, weight_map, st);
done:
    free(shards);
    cJSON_Delete(root);
    if (status != KILN_OK) {
        kiln_safetensors_close(st);
        return status;
    }
    *out = st;
    return KILN_OK;
}

kiln_status kiln_safetensors_open_dir(const char *dir, kiln_safetensors **out) {
    *out = NULL;
    char *index_path = join_path(dir, "model.safetensors.index.json");
    char *single_path = join_path(dir, "model.safetensors");
    kiln_status status;
    if (!index_path || !single_path) {
        status = kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", dir);
    } else if (access(index_path, F_OK) == 0) {
        status = open_index(dir, index_path, out);
    } else if (access(single_path, F_OK) == 0) {
        status = kiln_safetensors_open_file(single_path, out);
    } else {
        status = kiln_fail(KILN_ERR_IO, "%s: neither model.safetensors nor model.safetensors.index.json is there", dir);
    }
    free(index_path);
    free(single_path);
    return status;
}
