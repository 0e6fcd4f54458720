// Read-only memory-mapped files. Model files are mapped, never read into heap
// memory: tensor data is used in place.
#ifndef KILN_CORE_FILE_H
#define KILN_CORE_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

typedef struct kiln_mapped_file {
    char *path;          // owned copy, for error messages
    const uint8_t *data; // NULL when size == 0
    size_t size;
} kiln_mapped_file;

kiln_status kiln_file_map(const char *path, kiln_mapped_file **out);
void kiln_file_unmap(kiln_mapped_file *file);

// Reads a whole (small) file into a NUL-terminated heap buffer; refuses files
// larger than max_bytes so that a hostile path cannot exhaust memory.
kiln_status kiln_file_read_all(const char *path, size_t max_bytes, char **out, size_t *out_len);

// Writes to "<path>.tmp.<pid>" then renames over `path`, so that a reader never
// sees a half-written file.
kiln_status kiln_file_write_atomic(const char *path, const void *data, size_t len);

#endif
