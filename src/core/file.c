#include "core/file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

kiln_status kiln_file_map(const char *path, kiln_mapped_file **out) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return kiln_fail(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return kiln_fail(KILN_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return kiln_fail(KILN_ERR_IO, "%s: not a regular file", path);
    }
    kiln_mapped_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        close(fd);
        return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    }
    f->size = (size_t)st.st_size;
    if (f->size > 0) {
        void *p = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            close(fd);
            free(f->path);
            free(f);
            return kiln_fail(KILN_ERR_IO, "%s: cannot map: %s", path, strerror(e));
        }
        f->data = p;
    }
    close(fd);
    *out = f;
    return KILN_OK;
}

void kiln_file_unmap(kiln_mapped_file *f) {
    if (!f) return;
    if (f->data) munmap((void *)f->data, f->size);
    free(f->path);
    free(f);
}

kiln_status kiln_file_read_all(const char *path, size_t max_bytes, char **out, size_t *out_len) {
    *out = NULL;
    FILE *fp = fopen(path, "rb");
    if (!fp) return kiln_fail(KILN_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + len, 1, cap - len, fp);
        len += got;
        if (len < cap) break;
        if (cap >= max_bytes) {
            free(buf);
            fclose(fp);
            return kiln_fail(KILN_ERR_FORMAT, "%s: larger than the %zu-byte limit", path, max_bytes);
        }
        cap = cap * 2 > max_bytes ? max_bytes : cap * 2;
        char *grown = realloc(buf, cap + 1);
        if (!grown) free(buf);
        buf = grown;
    }
    int read_error = ferror(fp);
    fclose(fp);
    if (!buf) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    if (read_error) {
        free(buf);
        return kiln_fail(KILN_ERR_IO, "%s: read error", path);
    }
    buf[len] = '\0';
    *out = buf;
    if (out_len) *out_len = len;
    return KILN_OK;
}

kiln_status kiln_file_write_atomic(const char *path, const void *data, size_t len) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return kiln_fail(KILN_ERR_NOMEM, "%s: out of memory", path);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        kiln_status st = kiln_fail(KILN_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return st;
    }
    int ok = fwrite(data, 1, len, fp) == len;
    ok = (fflush(fp) == 0) && ok;
    ok = (fsync(fileno(fp)) == 0) && ok;
    ok = (fclose(fp) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        kiln_status st = kiln_fail(KILN_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return st;
    }
    free(tmp);
    return KILN_OK;
}
