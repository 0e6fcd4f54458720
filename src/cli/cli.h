// Shared pieces of the `kiln` subcommands: option parsing, model lookup and
// loading, Ctrl-C, JSON output. The CLI uses the public API (kiln.h) alone.
#ifndef KILN_CLI_CLI_H
#define KILN_CLI_CLI_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>

#include "kiln.h"

#define CLI_MAX_TOKENS (1 << 24)
#define CLI_MAX_CTX (1 << 22)
#define CLI_MAX_THREADS 1024

typedef struct cli_common {
    const char *model;            // as given
    char model_path[PATH_MAX];    // what it resolved to (a bare name: the file in the cache folder)
    int threads;
    int ctx;
    kiln_sampling_params sampling;
    bool seed_given;
    int max_tokens;               // -1: until end of generation or a full context
    const char *stop[16];
    int n_stop;
    bool ignore_eos;
    bool precise;
    bool vocab_only;              // metadata and tokenizer only (tokenize, inspect)
    kiln_device device;
} cli_common;

// Options every generating command takes (getopt_long ids >= 1000).
enum {
    OPT_TEMP = 1000, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_REPEAT_PENALTY, OPT_REPEAT_LAST_N, OPT_FREQ_PENALTY,
    OPT_PRESENCE_PENALTY, OPT_SEED, OPT_STOP, OPT_IGNORE_EOS, OPT_CTX, OPT_HELP, OPT_PRECISE, OPT_DEVICE, OPT_JSON,
};

#define CLI_SAMPLING_OPTIONS                                                                                       \
    {"temp", required_argument, 0, OPT_TEMP}, {"top-k", required_argument, 0, OPT_TOP_K},                          \
        {"top-p", required_argument, 0, OPT_TOP_P}, {"min-p", required_argument, 0, OPT_MIN_P},                    \
        {"repeat-penalty", required_argument, 0, OPT_REPEAT_PENALTY},                                              \
        {"repeat-last-n", required_argument, 0, OPT_REPEAT_LAST_N},                                                \
        {"frequency-penalty", required_argument, 0, OPT_FREQ_PENALTY},                                             \
        {"presence-penalty", required_argument, 0, OPT_PRESENCE_PENALTY}, {"seed", required_argument, 0, OPT_SEED}, \
        {"stop", required_argument, 0, OPT_STOP}, {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},                  \
        {"n-predict", required_argument, 0, 'n'}, {"ctx-size", required_argument, 0, 'c'},                         \
        {"threads", required_argument, 0, 't'}, {"model", required_argument, 0, 'm'},                              \
        {"precise", no_argument, 0, OPT_PRECISE}, {"device", required_argument, 0, OPT_DEVICE},                    \
        {"help", no_argument, 0, 'h'}

#define CLI_MODEL_HELP                                                                                             \
    "  -m, --model MODEL         a .gguf file, a Hugging Face folder, or the name of one in the cache\n"           \
    "                            folder ($KILN_CACHE, else ~/.cache/kiln; the .gguf may be left out)\n"

#define CLI_SAMPLING_HELP                                                                                          \
    CLI_MODEL_HELP                                                                                                 \
    "  -n, --n-predict N         maximum new tokens (default %d; -1: until end of generation or a full context)\n" \
    "  -c, --ctx-size N          context length in tokens (default: min(model's, 4096))\n"                         \
    "      --device D            cpu or cuda (default: cuda when a GPU is present; env KILN_DEVICE)\n"            \
    "  -t, --threads N           CPU threads (default: all cores)\n"                                               \
    "      --precise             float activations in matrix products (slower; matches float references)\n"       \
    "      --temp T              temperature; 0 is greedy (default 0.8)\n"                                         \
    "      --top-k K             keep the K most likely tokens; 0 is off (default 40)\n"                           \
    "      --top-p P             keep the smallest set with probability mass P; 1 is off (default 0.95)\n"         \
    "      --min-p P             drop tokens below P times the best one's probability (default 0.05)\n"            \
    "      --repeat-penalty R    penalise repeated tokens; 1 is off (default 1)\n"                                 \
    "      --repeat-last-n N     window of past tokens the penalties look at (default 64)\n"                       \
    "      --frequency-penalty F subtract F per earlier occurrence (default 0)\n"                                  \
    "      --presence-penalty P  subtract P once for any earlier occurrence (default 0)\n"                         \
    "      --seed S              random seed; same seed, same output (default and -1: a random one)\n"             \
    "      --stop TEXT           stop when TEXT is generated (repeatable)\n"                                       \
    "      --ignore-eos          keep generating past end-of-generation tokens\n"                                  \
    "  -h, --help                this help\n"

void cli_common_init(cli_common *c, int default_max_tokens);
// Handles one option of CLI_SAMPLING_OPTIONS; returns 0 if handled, -1 on a
// bad value (message printed), 1 if the option is not a common one.
int cli_common_option(cli_common *c, int opt, const char *arg, const char *cmd);
// Finishes parsing: checks values, draws a random seed if none was given.
bool cli_common_finish(cli_common *c, const char *cmd);

bool cli_parse_int(const char *s, long min, long max, long *out);
bool cli_parse_float(const char *s, float *out);
// Parses a whole-number option in [min, max]; on a bad value prints
// "kiln CMD: OPT 'ARG': expected WHAT, a whole number from MIN to MAX".
bool cli_int_option(const char *cmd, const char *opt, const char *arg, long min, long max, const char *what,
                    long *out);
// Parses --device's value; prints an error and returns false on a bad one.
bool cli_parse_device(const char *s, const char *cmd, kiln_device *out);
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_warn(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Resolves c->model into c->model_path: an existing file or folder as it is,
// else a bare name looked up in the cache folder (NAME, then NAME.gguf).
bool cli_resolve_model(cli_common *c, const char *cmd);
// Resolves and loads c->model (vocab_only as c says).
kiln_model *cli_load_model(cli_common *c, const char *cmd);
// Warns when -c is above the context the model was trained for.
void cli_check_context(const cli_common *c, const kiln_model *model, const char *cmd);

// Reads a whole file ("-": standard input), at most max bytes; *out is
// malloc'd and NUL-terminated. Prints the error.
bool cli_read_file(const char *path, size_t max, char **out, size_t *len, const char *cmd);

// Ctrl-C: the first SIGINT sets cli_interrupted (generation checks it and
// stops), a second one before it is cleared exits at once with 130.
extern volatile sig_atomic_t cli_interrupted;
void cli_catch_interrupts(void);
#define CLI_EXIT_INTERRUPTED 130

// Whether stdout took everything written to it (a full disk, a closed pipe):
// flushes, and on failure prints the error once.
bool cli_stdout_ok(const char *cmd);
// Reports a failed write to stdout (errno err), once.
void cli_stdout_error(const char *cmd, int err);

// Benchmarks: the median of n timings (sorts v), and deterministic token ids
// away from the special tokens at the vocabulary's start.
double cli_median(double *v, int n);
void cli_fill_tokens(int32_t *ids, int n, int vocab);

// A small JSON writer (one value per document, compact, valid UTF-8: bytes
// that are not become U+FFFD).
typedef struct cli_json {
    FILE *f;
    int depth;
    bool has_item[32];
    char closer[32];
} cli_json;
void cli_json_begin(cli_json *j, FILE *f);
void cli_json_end(cli_json *j); // ends the document with a newline
void cli_json_object(cli_json *j, const char *key); // key NULL: inside an array or at the top
void cli_json_array(cli_json *j, const char *key);
void cli_json_close(cli_json *j);                   // closes the innermost object or array
void cli_json_str(cli_json *j, const char *key, const char *s);
void cli_json_strn(cli_json *j, const char *key, const char *s, size_t len);
void cli_json_int(cli_json *j, const char *key, long long v);
void cli_json_num(cli_json *j, const char *key, double v); // null when not finite
void cli_json_float(cli_json *j, const char *key, float v); // with a float's precision
void cli_json_bool(cli_json *j, const char *key, bool v);
void cli_json_null(cli_json *j, const char *key);
// Writes s as a JSON string literal.
void cli_json_write_string(FILE *f, const char *s, size_t len);

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

#endif
