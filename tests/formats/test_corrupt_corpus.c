// Runs every file of tests/fixtures/corrupt/<format>/ through the reader its
// extension names. Each must be refused with a message that names the file;
// where the directory's expected_errors.txt ("file<TAB>phrase" lines) lists
// the file, the message must also contain that phrase. To cover a new format,
// add a row to `readers`.
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "formats/gguf.h"
#include "formats/safetensors.h"

static kiln_status open_gguf(const char *path) {
    kiln_gguf *g = NULL;
    kiln_status st = kiln_gguf_open(path, &g);
    kiln_gguf_close(g);
    return st;
}

static kiln_status open_safetensors(const char *path) {
    kiln_safetensors *s = NULL;
    kiln_status st = kiln_safetensors_open_file(path, &s);
    if (s) kiln_safetensors_close(s);
    return st;
}

static const struct {
    const char *extension;
    kiln_status (*open)(const char *path);
} readers[] = {
    {".gguf", open_gguf},
    {".safetensors", open_safetensors},
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

// The phrase expected_errors.txt gives for `file`, copied into `out`; false if none.
static bool expected_phrase(const char *dir, const char *file, char *out, size_t out_size) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/expected_errors.txt", dir) >= (int)sizeof path) fail_msg("path too long");
    FILE *fp = fopen(path, "r");
    if (!fp) return false;
    char line[1024];
    bool found = false;
    while (!found && fgets(line, sizeof line, fp)) {
        char *tab = strchr(line, '\t');
        if (line[0] == '#' || !tab) continue;
        *tab = '\0';
        if (strcmp(line, file) != 0) continue;
        tab[1 + strcspn(tab + 1, "\r\n")] = '\0';
        snprintf(out, out_size, "%s", tab + 1);
        found = true;
    }
    fclose(fp);
    return found;
}

// Checks one directory; returns how many files of each reader it ran.
static void check_dir(const char *dir, int *counts) {
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open %s", dir);
    struct dirent *e;
    while ((e = readdir(d))) {
        for (size_t r = 0; r < sizeof readers / sizeof readers[0]; r++) {
            if (!ends_with(e->d_name, readers[r].extension)) continue;
            char path[4096], phrase[512];
            if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) fail_msg("path too long");
            kiln_status st = readers[r].open(path);
            const char *msg = kiln_last_error();
            if (st == KILN_OK) fail_msg("%s: accepted, should be refused", path);
            if (!strstr(msg, e->d_name)) fail_msg("%s: message does not name the file: %s", path, msg);
            if (expected_phrase(dir, e->d_name, phrase, sizeof phrase) && !strstr(msg, phrase))
                fail_msg("%s: message \"%s\" should mention \"%s\"", path, msg, phrase);
            counts[r]++;
        }
    }
    closedir(d);
}

static void test_corrupt_files_are_refused(void **state) {
    (void)state;
    const char *root = KILN_FIXTURES "/corrupt";
    DIR *d = opendir(root);
    assert_non_null(d);
    int counts[sizeof readers / sizeof readers[0]] = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char sub[4096];
        struct stat st;
        if (snprintf(sub, sizeof sub, "%s/%s", root, e->d_name) >= (int)sizeof sub) fail_msg("path too long");
        if (stat(sub, &st) == 0 && S_ISDIR(st.st_mode)) check_dir(sub, counts);
    }
    closedir(d);
    for (size_t r = 0; r < sizeof readers / sizeof readers[0]; r++)
        fprintf(stderr, "%d corrupt %s files refused\n", counts[r], readers[r].extension);
    assert_true(counts[0] >= 30); // the GGUF corpus (tools/make_corrupt_corpus.py) is present
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corrupt_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
