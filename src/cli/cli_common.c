#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

void cli_warn(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: warning: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
}

bool cli_parse_int(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

bool cli_parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

bool cli_int_option(const char *cmd, const char *opt, const char *arg, long min, long max, const char *what,
                    long *out) {
    if (cli_parse_int(arg, min, max, out)) return true;
    cli_error(cmd, "%s '%s': expected %s, a whole number from %ld to %ld", opt, arg, what, min, max);
    return false;
}

void cli_common_init(cli_common *c, int default_max_tokens) {
    memset(c, 0, sizeof *c);
    c->sampling = kiln_sampling_default();
    c->max_tokens = default_max_tokens;
}

// A float option with its allowed range, said in words when the value is outside it.
static int float_option(const char *cmd, const char *opt, const char *arg, float lo, bool lo_open, float hi,
                        bool hi_open, const char *range, float *out) {
    float f;
    bool ok = cli_parse_float(arg, &f);
    if (ok && (lo_open ? !(f > lo) : !(f >= lo))) ok = false;
    if (ok && (hi_open ? !(f < hi) : !(f <= hi))) ok = false;
    if (!ok) {
        cli_error(cmd, "%s '%s': expected %s", opt, arg, range);
        return -1;
    }
    *out = f;
    return 0;
}

int cli_common_option(cli_common *c, int opt, const char *arg, const char *cmd) {
    long v;
    kiln_sampling_params *sp = &c->sampling;
    switch (opt) {
    case 'm': c->model = arg; return 0;
    case 'n':
        if (!cli_parse_int(arg, -1, CLI_MAX_TOKENS, &v)) {
            cli_error(cmd,
                      "-n '%s': expected -1 (until end of generation or a full context) or a whole number of new "
                      "tokens from 0 to %d",
                      arg, CLI_MAX_TOKENS);
            return -1;
        }
        c->max_tokens = (int)v;
        return 0;
    case 'c':
        if (!cli_int_option(cmd, "-c", arg, 1, CLI_MAX_CTX, "the context length in tokens", &v)) return -1;
        c->ctx = (int)v;
        return 0;
    case 't':
        if (!cli_int_option(cmd, "-t", arg, 1, CLI_MAX_THREADS, "the number of CPU threads", &v)) return -1;
        c->threads = (int)v;
        return 0;
    case OPT_TOP_K:
        if (!cli_int_option(cmd, "--top-k", arg, 0, CLI_MAX_TOKENS, "the number of tokens to keep (0 is off)", &v))
            return -1;
        sp->top_k = (int)v;
        return 0;
    case OPT_REPEAT_LAST_N:
        if (!cli_int_option(cmd, "--repeat-last-n", arg, 0, CLI_MAX_TOKENS, "the window of past tokens", &v))
            return -1;
        sp->penalty_last_n = (int)v;
        return 0;
    case OPT_SEED: {
        if (strcmp(arg, "-1") == 0) { // a random seed, as llama.cpp
            c->seed_given = false;
            return 0;
        }
        char *end;
        errno = 0;
        unsigned long long s = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-' || arg[0] == '+' || arg[0] == ' ') {
            cli_error(cmd, "--seed '%s': expected -1 (a random seed) or a whole number from 0 to %llu", arg,
                      (unsigned long long)UINT64_MAX);
            return -1;
        }
        sp->seed = s;
        c->seed_given = true;
        return 0;
    }
    case OPT_TEMP:
        return float_option(cmd, "--temp", arg, 0.0f, false, 1e4f, true,
                            "the temperature, a number from 0 (greedy) to below 10000", &sp->temperature);
    case OPT_TOP_P:
        return float_option(cmd, "--top-p", arg, 0.0f, true, 1.0f, false,
                            "a probability mass above 0 and at most 1 (1 is off)", &sp->top_p);
    case OPT_MIN_P:
        return float_option(cmd, "--min-p", arg, 0.0f, false, 1.0f, false, "a number from 0 to 1 (0 is off)",
                            &sp->min_p);
    case OPT_REPEAT_PENALTY:
        return float_option(cmd, "--repeat-penalty", arg, 0.0f, true, 1e4f, true,
                            "a number above 0 and below 10000 (1 is off)", &sp->repetition_penalty);
    case OPT_FREQ_PENALTY:
        return float_option(cmd, "--frequency-penalty", arg, -INFINITY, true, INFINITY, true,
                            "a number (0 is off)", &sp->frequency_penalty);
    case OPT_PRESENCE_PENALTY:
        return float_option(cmd, "--presence-penalty", arg, -INFINITY, true, INFINITY, true,
                            "a number (0 is off)", &sp->presence_penalty);
    case OPT_STOP:
        if (c->n_stop == (int)(sizeof c->stop / sizeof c->stop[0])) {
            cli_error(cmd, "at most %zu --stop strings", sizeof c->stop / sizeof c->stop[0]);
            return -1;
        }
        if (!arg[0]) {
            cli_error(cmd, "--stop needs a non-empty string");
            return -1;
        }
        c->stop[c->n_stop++] = arg;
        return 0;
    case OPT_IGNORE_EOS: c->ignore_eos = true; return 0;
    case OPT_PRECISE: c->precise = true; return 0;
    case OPT_DEVICE: return cli_parse_device(arg, cmd, &c->device) ? 0 : -1;
    default: return 1;
    }
}

static uint64_t random_seed(void) {
    uint64_t s;
    if (getentropy(&s, sizeof s) == 0) return s;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec ^ (uint64_t)getpid() << 32;
}

bool cli_common_finish(cli_common *c, const char *cmd) {
    if (!c->model) {
        cli_error(cmd, "no model given: pass -m MODEL (a .gguf file, a Hugging Face folder, or a model's name in "
                       "the cache folder); see --help");
        return false;
    }
    if (kiln_sampling_params_check(&c->sampling) != KILN_OK) {
        cli_error(cmd, "%s", kiln_last_error());
        return false;
    }
    if (!c->seed_given) c->sampling.seed = random_seed();
    return true;
}

bool cli_parse_device(const char *s, const char *cmd, kiln_device *out) {
    if (strcmp(s, "cpu") == 0)
        *out = KILN_DEVICE_CPU;
    else if (strcmp(s, "cuda") == 0 || strcmp(s, "gpu") == 0)
        *out = KILN_DEVICE_CUDA;
    else {
        cli_error(cmd, "unknown device '%s': use cpu or cuda", s);
        return false;
    }
    return true;
}

// $KILN_CACHE, else ~/.cache/kiln (as scripts/fetch-model.sh).
static bool cache_dir(char *out, size_t cap) {
    const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
    int n = cache && *cache ? snprintf(out, cap, "%s", cache) : snprintf(out, cap, "%s/.cache/kiln", home ? home : "");
    return n > 0 && (size_t)n < cap;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

bool cli_resolve_model(cli_common *c, const char *cmd) {
    const char *name = c->model;
    size_t len = strlen(name);
    if (len == 0) {
        cli_error(cmd, "the model name is empty: pass -m MODEL (a .gguf file, a Hugging Face folder, or a name)");
        return false;
    }
    if (len >= sizeof c->model_path) {
        cli_error(cmd, "the model path is longer than %zu bytes", sizeof c->model_path - 1);
        return false;
    }
    memcpy(c->model_path, name, len + 1);
    struct stat sb;
    if (stat(name, &sb) == 0 || errno != ENOENT || strchr(name, '/')) return true; // the loader says what is wrong
    char dir[PATH_MAX], path[PATH_MAX];
    if (!cache_dir(dir, sizeof dir)) return true;
    const bool has_ext = len > 5 && strcmp(name + len - 5, ".gguf") == 0;
    for (int ext = 0; ext < (has_ext ? 1 : 2); ext++) {
        int n = snprintf(path, sizeof path, "%s/%s%s", dir, name, ext ? ".gguf" : "");
        if (n > 0 && (size_t)n < sizeof path && exists(path)) {
            memcpy(c->model_path, path, (size_t)n + 1);
            return true;
        }
    }
    if (has_ext)
        cli_error(cmd, "no model '%s': it is not a file here, nor in the cache folder %s (set KILN_CACHE to look "
                       "elsewhere, or give the path)",
                  name, dir);
    else
        cli_error(cmd, "no model '%s': it is not a file or folder here, and neither %s nor %s.gguf is in the cache "
                       "folder %s (set KILN_CACHE to look elsewhere, or give the path)",
                  name, name, name, dir);
    return false;
}

// A bar on the terminal while the weights go to the device; nothing when
// stderr is not a terminal (logs, tests).
static void draw_progress(double fraction, void *user) {
    int *last = user;
    int pct = (int)(fraction * 100.0 + 0.5);
    if (pct == *last) return;
    *last = pct;
    char bar[41];
    int filled = pct * 40 / 100;
    for (int i = 0; i < 40; i++) bar[i] = i < filled ? '#' : '.';
    bar[40] = 0;
    fprintf(stderr, "\rloading weights [%s] %3d%%%s", bar, pct, pct >= 100 ? "\n" : "");
    fflush(stderr);
}

kiln_model *cli_load_model(cli_common *c, const char *cmd) {
    if (!cli_resolve_model(c, cmd)) return NULL;
    int last_pct = -1;
    kiln_model_params mp = {.n_threads = c->threads, .precise = c->precise, .device = c->device,
                            .progress = isatty(STDERR_FILENO) ? draw_progress : NULL, .progress_user = &last_pct,
                            .vocab_only = c->vocab_only};
    kiln_model *model;
    if (kiln_model_load(c->model_path, &mp, &model) != KILN_OK) {
        cli_error(cmd, "cannot load model: %s", kiln_last_error());
        return NULL;
    }
    return model;
}

void cli_check_context(const cli_common *c, const kiln_model *model, const char *cmd) {
    int trained = kiln_model_context_length(model);
    if (c->ctx > 0 && trained > 0 && c->ctx > trained)
        cli_warn(cmd, "-c %d is above the %d tokens the model was trained for; past %d its output may degrade",
                 c->ctx, trained, trained);
}

bool cli_read_file(const char *path, size_t max, char **out, size_t *len, const char *cmd) {
    *out = NULL;
    *len = 0;
    const bool is_stdin = strcmp(path, "-") == 0;
    const char *name = is_stdin ? "standard input" : path;
    FILE *f = is_stdin ? stdin : fopen(path, "rb");
    if (!f) {
        cli_error(cmd, "cannot open %s: %s", path, strerror(errno));
        return false;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    bool ok = buf != NULL;
    while (ok) {
        if (n == cap) {
            if (cap > max) break;
            cap *= 2;
            char *grown = realloc(buf, cap + 1);
            if (!grown) {
                ok = false;
                break;
            }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    if (!ok) {
        cli_error(cmd, "%s: out of memory", name);
    } else if (ferror(f)) {
        cli_error(cmd, "cannot read %s: %s", name, strerror(errno));
        ok = false;
    } else if (n > max) {
        cli_error(cmd, "%s is larger than %zu MiB, more than a prompt can be", name, max >> 20);
        ok = false;
    }
    if (!is_stdin) fclose(f);
    if (!ok) {
        free(buf);
        return false;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return true;
}

volatile sig_atomic_t cli_interrupted;

static void on_sigint(int sig) {
    (void)sig;
    if (cli_interrupted) _exit(CLI_EXIT_INTERRUPTED);
    cli_interrupted = 1;
}

void cli_catch_interrupts(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: a read waiting for input returns
    sigaction(SIGINT, &sa, NULL);
}

static bool stdout_reported;

void cli_stdout_error(const char *cmd, int err) {
    if (!stdout_reported) cli_error(cmd, "cannot write to standard output: %s", err ? strerror(err) : "a write failed");
    stdout_reported = true;
}

bool cli_stdout_ok(const char *cmd) {
    errno = 0;
    if (fflush(stdout) == 0 && !ferror(stdout)) return true;
    cli_stdout_error(cmd, errno);
    return false;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double cli_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

void cli_fill_tokens(int32_t *ids, int n, int vocab) {
    uint64_t x = 0x2545f4914f6cdd1dull;
    for (int i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        ids[i] = (int32_t)(256 + x % (uint64_t)(vocab > 512 ? vocab - 512 : 1));
    }
}

// ---- JSON ---------------------------------------------------------------------

// Length of the valid UTF-8 sequence at s (1-4), or 0 if the bytes there are not one.
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    size_t len = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; // overlong
    if (c == 0xed && s[1] > 0x9f) return 0; // surrogates
    if (c == 0xf0 && s[1] < 0x90) return 0; // overlong
    if (c == 0xf4 && s[1] > 0x8f) return 0; // above U+10FFFF
    return len;
}

void cli_json_write_string(FILE *f, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        size_t n = utf8_len(p + i, len - i);
        if (n == 0) {
            fputs("\\ufffd", f);
            i++;
            continue;
        }
        if (n > 1) {
            fwrite(p + i, 1, n, f);
        } else if (c == '"' || c == '\\') {
            fputc('\\', f), fputc(c, f);
        } else if (c == '\n') {
            fputs("\\n", f);
        } else if (c == '\t') {
            fputs("\\t", f);
        } else if (c == '\r') {
            fputs("\\r", f);
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(f, "\\u%04x", c);
        } else {
            fputc(c, f);
        }
        i += n;
    }
    fputc('"', f);
}

void cli_json_begin(cli_json *j, FILE *f) {
    memset(j, 0, sizeof *j);
    j->f = f;
}

void cli_json_end(cli_json *j) {
    while (j->depth > 0) cli_json_close(j);
    fputc('\n', j->f);
}

static void item(cli_json *j, const char *key) {
    if (j->has_item[j->depth]) fputc(',', j->f);
    j->has_item[j->depth] = true;
    if (key) {
        cli_json_write_string(j->f, key, strlen(key));
        fputc(':', j->f);
    }
}

static void open_container(cli_json *j, const char *key, char open, char close) {
    item(j, key);
    fputc(open, j->f);
    if (j->depth + 1 < (int)(sizeof j->has_item / sizeof j->has_item[0])) {
        j->closer[++j->depth] = close;
        j->has_item[j->depth] = false;
    }
}

void cli_json_object(cli_json *j, const char *key) { open_container(j, key, '{', '}'); }
void cli_json_array(cli_json *j, const char *key) { open_container(j, key, '[', ']'); }

void cli_json_close(cli_json *j) {
    if (j->depth == 0) return;
    fputc(j->closer[j->depth--], j->f);
}

void cli_json_strn(cli_json *j, const char *key, const char *s, size_t len) {
    item(j, key);
    cli_json_write_string(j->f, s, len);
}

void cli_json_str(cli_json *j, const char *key, const char *s) {
    if (!s) {
        cli_json_null(j, key);
        return;
    }
    cli_json_strn(j, key, s, strlen(s));
}

void cli_json_int(cli_json *j, const char *key, long long v) {
    item(j, key);
    fprintf(j->f, "%lld", v);
}

void cli_json_num(cli_json *j, const char *key, double v) {
    item(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.9g", v);
    else
        fputs("null", j->f);
}

void cli_json_float(cli_json *j, const char *key, float v) {
    item(j, key);
    if (isfinite(v))
        fprintf(j->f, "%.7g", (double)v); // a float's own digits, not its double expansion
    else
        fputs("null", j->f);
}

void cli_json_bool(cli_json *j, const char *key, bool v) {
    item(j, key);
    fputs(v ? "true" : "false", j->f);
}

void cli_json_null(cli_json *j, const char *key) {
    item(j, key);
    fputs("null", j->f);
}
