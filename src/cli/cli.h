// Shared pieces of the `kiln` subcommands: option parsing, model loading.
#ifndef KILN_CLI_CLI_H
#define KILN_CLI_CLI_H

#include <stdbool.h>
#include <stdio.h>

#include "kiln.h"

typedef struct cli_common {
    const char *model;
    int threads;
    int ctx;
    kiln_sampling_params sampling;
    bool seed_given;
    int max_tokens;
    const char *stop[16];
    int n_stop;
    bool ignore_eos;
    bool precise;
    kiln_device device;
} cli_common;

// Options every generating command takes (getopt_long ids >= 1000).
enum {
    OPT_TEMP = 1000, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P, OPT_REPEAT_PENALTY, OPT_REPEAT_LAST_N, OPT_FREQ_PENALTY,
    OPT_PRESENCE_PENALTY, OPT_SEED, OPT_STOP, OPT_IGNORE_EOS, OPT_CTX, OPT_HELP, OPT_PRECISE, OPT_DEVICE,
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

#define CLI_SAMPLING_HELP                                                                                          \
    "  -m, --model PATH          GGUF file or Hugging Face folder (required)\n"                                    \
    "  -n, --n-predict N         maximum new tokens (default %d; 0: until the context is full)\n"                  \
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
    "      --seed S              random seed; same seed, same output (default: from the clock)\n"                  \
    "      --stop TEXT           stop when TEXT is generated (repeatable)\n"                                       \
    "      --ignore-eos          keep generating past end-of-generation tokens\n"                                  \
    "  -h, --help                this help\n"

void cli_common_init(cli_common *c, int default_max_tokens);
// Handles one option of CLI_SAMPLING_OPTIONS; returns 0 if handled, -1 on a
// bad value (message printed), 1 if the option is not a common one.
int cli_common_option(cli_common *c, int opt, const char *arg, const char *cmd);
// Finishes parsing: checks values, sets a clock seed if none was given.
bool cli_common_finish(cli_common *c, const char *cmd);

bool cli_parse_int(const char *s, long min, long max, long *out);
// Parses --device's value; prints an error and returns false on a bad one.
bool cli_parse_device(const char *s, const char *cmd, kiln_device *out);
bool cli_parse_float(const char *s, float *out);
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

kiln_model *cli_load_model(const cli_common *c, const char *cmd);

// Benchmarks: the median of n timings (sorts v), and deterministic token ids
// away from the special tokens at the vocabulary's start.
double cli_median(double *v, int n);
void cli_fill_tokens(int32_t *ids, int n, int vocab);

int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

#endif
