// kiln: one binary, one subcommand per job.
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *summary;
} commands[] = {
    {"run", cmd_run, "generate text from a prompt"},
    {"chat", cmd_chat, "interactive chat with the model's chat template"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"inspect", cmd_inspect, "print a model's architecture, tensors and memory needs"},
    {"bench", cmd_bench, "measure prefill and decode speed"},
};

static void usage(FILE *out) {
    fprintf(out, "kiln %s: LLM inference for GGUF files and Hugging Face folders\n\n"
                 "usage: kiln COMMAND [options]   (kiln COMMAND --help for its options)\n\ncommands:\n",
            kiln_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nexample: kiln run -m SmolLM2-135M-Instruct.Q4_1.gguf -p \"The capital of France is\" -n 32\n");
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("kiln %s\n", kiln_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "kiln: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    int rc = dispatch(argc, argv);
    // What was written to stdout must have arrived (> /dev/full, a full disk).
    if (!cli_stdout_ok(argc >= 2 ? argv[1] : "")) return rc ? rc : 1;
    return rc;
}
