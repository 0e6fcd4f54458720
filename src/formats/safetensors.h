// Safetensors reader: one file (model.safetensors) or a sharded checkpoint
// (model.safetensors.index.json naming several files). Files are mapped;
// tensors are views into the mappings. The JSON header is parsed with cJSON and
// every dtype, shape and data offset is checked against the file.
#ifndef KILN_FORMATS_SAFETENSORS_H
#define KILN_FORMATS_SAFETENSORS_H

#include <stdint.h>

#include "core/error.h"
#include "core/file.h"
#include "core/tensor.h"

typedef struct kiln_safetensors {
    uint64_t n_files;
    kiln_mapped_file **files;
    uint64_t n_tensors;
    kiln_tensor *tensors; // names are owned copies; shape converted to ne[] order
} kiln_safetensors;

// Opens "<dir>/model.safetensors" or "<dir>/model.safetensors.index.json".
kiln_status kiln_safetensors_open_dir(const char *dir, kiln_safetensors **out);
// Opens one .safetensors file.
kiln_status kiln_safetensors_open_file(const char *path, kiln_safetensors **out);
// Parses one file image held by the caller (fuzzing, tests).
kiln_status kiln_safetensors_parse(const void *data, uint64_t size, const char *name, kiln_safetensors **out);
void kiln_safetensors_close(kiln_safetensors *st);

const kiln_tensor *kiln_safetensors_find(const kiln_safetensors *st, const char *name);

#endif
