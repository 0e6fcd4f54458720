#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

#include "cli/cli.h"
#include "runtime/sampler.h"

void cli_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "kiln %s: ", cmd);
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

void cli_common_init(cli_common *c, int default_max_tokens) {
    memset(c, 0, sizeof *c);
    c->sampling = kiln_sampling_default();
    c->max_tokens = default_max_tokens;
}

int cli_common_option(cli_common *c, int opt, const char *arg, const char *cmd) {
    long v;
    float f;
    switch (opt) {
    case 'm': c->model = arg; return 0;
    case 'n':
        if (!cli_parse_int(arg, 0, 1 << 24, &v)) goto bad_int;
        c->max_tokens = (int)v;
        return 0;
    case 'c':
        if (!cli_parse_int(arg, 1, 1 << 22, &v)) goto bad_int;
        c->ctx = (int)v;
        return 0;
    case 't':
        if (!cli_parse_int(arg, 1, 1024, &v)) goto bad_int;
        c->threads = (int)v;
        return 0;
    case OPT_TOP_K:
        if (!cli_parse_int(arg, 0, 1 << 24, &v)) goto bad_int;
        c->sampling.top_k = (int)v;
        return 0;
    case OPT_REPEAT_LAST_N:
        if (!cli_parse_int(arg, 0, 1 << 24, &v)) goto bad_int;
        c->sampling.penalty_last_n = (int)v;
        return 0;
    case OPT_SEED: {
        char *end;
        errno = 0;
        unsigned long long s = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || arg[0] == '-') goto bad_int;
        c->sampling.seed = s;
        c->seed_given = true;
        return 0;
    }
    case OPT_TEMP: case OPT_TOP_P: case OPT_MIN_P: case OPT_REPEAT_PENALTY: case OPT_FREQ_PENALTY:
    case OPT_PRESENCE_PENALTY:
        if (!cli_parse_float(arg, &f)) {
            cli_error(cmd, "'%s' is not a number", arg);
            return -1;
        }
        if (opt == OPT_TEMP) c->sampling.temperature = f;
        if (opt == OPT_TOP_P) c->sampling.top_p = f;
        if (opt == OPT_MIN_P) c->sampling.min_p = f;
        if (opt == OPT_REPEAT_PENALTY) c->sampling.repetition_penalty = f;
        if (opt == OPT_FREQ_PENALTY) c->sampling.frequency_penalty = f;
        if (opt == OPT_PRESENCE_PENALTY) c->sampling.presence_penalty = f;
        return 0;
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
bad_int:
    cli_error(cmd, "'%s' is not a valid whole number for this option", arg);
    return -1;
}

bool cli_common_finish(cli_common *c, const char *cmd) {
    if (!c->model) {
        cli_error(cmd, "no model given: pass -m MODEL (a .gguf file or a Hugging Face folder); see --help");
        return false;
    }
    if (kiln_sampling_params_check(&c->sampling) != KILN_OK) {
        cli_error(cmd, "%s", kiln_last_error());
        return false;
    }
    if (!c->seed_given) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        c->sampling.seed = (uint64_t)ts.tv_sec * 1000000007ull ^ (uint64_t)ts.tv_nsec;
    }
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

kiln_model *cli_load_model(const cli_common *c, const char *cmd) {
    int last_pct = -1;
    kiln_model_params mp = {.n_threads = c->threads, .precise = c->precise, .device = c->device,
                            .progress = isatty(STDERR_FILENO) ? draw_progress : NULL, .progress_user = &last_pct};
    kiln_model *model;
    if (kiln_model_load(c->model, &mp, &model) != KILN_OK) {
        cli_error(cmd, "cannot load model: %s", kiln_last_error());
        return NULL;
    }
    return model;
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
