// Runs every file of tests/fixtures/corrupt/<format>/ through the reader its
// extension names. Each must be refused with a message that names the file;
// where the directory's expected_errors.txt ("file<TAB>phrase" lines) lists
// the file, the message must also contain that phrase. To cover a new format,
// add a row to `readers`.
//
// corrupt/model/ holds GGUF files (and Hugging Face folders) that parse but
// whose model is wrong: each is loaded as a model (kiln_model_load), and when
// it loads, some text is tokenized, evaluated and sampled from (greedy and at
// a temperature); the first failure must name the file and contain the
// phrase. There the phrase may also be "(loads)" (a control: everything must
// succeed, without a warning) or "warning: ..." (must succeed, printing that
// warning, with %s standing for the path, on stderr each time it is loaded).
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "kiln.h"

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

// What the model-level checks of corrupt/model/ capture from stderr.
static char captured[1 << 14];

// Loads `path` as a model, tokenizes, evaluates and samples; returns the first
// failure (KILN_OK if none), with what loading and tokenizing printed on
// stderr in `captured` (only those: a crash report later stays visible).
static kiln_status use_model(const char *path) {
    fprintf(stderr, "  loading %s\n", path); // in case it crashes while stderr is captured
    fflush(stderr);
    int saved = dup(2);
    FILE *tmp = tmpfile();
    if (saved < 0 || !tmp || dup2(fileno(tmp), 2) < 0) fail_msg("cannot capture stderr");
    kiln_model_params mp = {.n_threads = 1};
    kiln_model *model = NULL;
    kiln_session *s = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kiln_status st = kiln_model_load(path, &mp, &model);
    if (st == KILN_OK) st = kiln_tokenize(model, "Hello world", 11, kiln_model_adds_bos(model), true, &ids, &n_ids);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(captured, 1, sizeof captured - 1, tmp);
    captured[n] = '\0';
    fclose(tmp);
    if (st == KILN_OK) st = kiln_session_create(model, 64, &s);
    if (st == KILN_OK) st = kiln_session_eval(s, ids, n_ids, NULL);
    for (int k = 0; k < 4 && st == KILN_OK; k++) {
        kiln_sampling_params sp = kiln_sampling_default();
        sp.temperature = k % 2 ? 0.8f : 0.0f;
        int32_t id = -1;
        st = kiln_session_sample(s, &sp, &id);
        if (st == KILN_OK && (id < 0 || id >= kiln_model_vocab_size(model)))
            st = kiln_fail(KILN_ERR_FORMAT, "the test: %s: sampled id %d is not a token", path, id);
        if (st == KILN_OK) st = kiln_session_eval(s, &id, 1, NULL);
    }
    kiln_session_free(s);
    free(ids);
    kiln_model_free(model);
    return st;
}

static int occurrences(const char *haystack, const char *needle) {
    int n = 0;
    for (const char *p = haystack; (p = strstr(p, needle)); p += strlen(needle)) n++;
    return n;
}

// Prints what is wrong and returns false if `path` does not do what its phrase says.
static bool check_model(const char *dir, const char *file, const char *path) {
    char phrase[512];
    if (!expected_phrase(dir, file, phrase, sizeof phrase)) fail_msg("%s: not in expected_errors.txt", path);
    kiln_status st = use_model(path);
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", kiln_last_error());
    fprintf(stderr, "    %s\n", st == KILN_OK ? "loads" : msg);
    if (strcmp(phrase, "(loads)") == 0) {
        if (st != KILN_OK) return fprintf(stderr, "FAIL: %s: the control fails\n", file), false;
        if (strstr(captured, "warning")) return fprintf(stderr, "FAIL: %s: the control warns: %s\n", file, captured), false;
    } else if (strncmp(phrase, "warning: ", 9) == 0) {
        if (st != KILN_OK) return fprintf(stderr, "FAIL: %s: should load (with a warning)\n", file), false;
        char want[1024];
        snprintf(want, sizeof want, phrase, path); // the phrase's %s is the path
        if (occurrences(captured, want) != 1)
            return fprintf(stderr, "FAIL: %s: stderr should say \"%s\" once, says: %s\n", file, want, captured), false;
        // Each load warns again (every command that tokenizes says it).
        if (use_model(path) != KILN_OK || occurrences(captured, want) != 1)
            return fprintf(stderr, "FAIL: %s: a second load should warn again, stderr: %s\n", file, captured), false;
    } else {
        if (st == KILN_OK) return fprintf(stderr, "FAIL: %s: loaded and sampled, should be refused\n", file), false;
        if (!strstr(msg, file)) return fprintf(stderr, "FAIL: %s: the message does not name the file\n", file), false;
        if (!strstr(msg, phrase)) return fprintf(stderr, "FAIL: %s: the message should mention \"%s\"\n", file, phrase), false;
    }
    return true;
}

// Checks one directory; returns how many files of each reader it ran.
static void check_dir(const char *dir, int *counts) {
    const char *base = strrchr(dir, '/');
    if (strcmp(base ? base + 1 : dir, "model") == 0) {
        DIR *d = opendir(dir);
        if (!d) fail_msg("cannot open %s", dir);
        struct dirent *e;
        int failures = 0;
        while ((e = readdir(d))) {
            char path[4096];
            struct stat sb;
            if (e->d_name[0] == '.') continue;
            if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) fail_msg("path too long");
            // GGUF files, and Hugging Face folders.
            if (!ends_with(e->d_name, ".gguf") && !(stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))) continue;
            failures += !check_model(dir, e->d_name, path);
            counts[sizeof readers / sizeof readers[0]]++;
        }
        closedir(d);
        if (failures) fail_msg("%d files of %s do not do what expected_errors.txt says", failures, dir);
        return;
    }
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
    int counts[sizeof readers / sizeof readers[0] + 1] = {0}; // the last: corrupt/model/
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
    fprintf(stderr, "%d model files checked\n", counts[sizeof readers / sizeof readers[0]]);
    assert_true(counts[0] >= 30); // the GGUF corpus (tools/make_corrupt_corpus.py) is present
    assert_true(counts[sizeof readers / sizeof readers[0]] >= 30); // and the model corpus
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_corrupt_files_are_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
