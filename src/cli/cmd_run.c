// kiln run: stream a continuation of a prompt (or, with --system or
// --template, the model's reply to it through its chat template).
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli/cli.h"

#define RUN_DEFAULT_TOKENS 128
#define RUN_MAX_PROMPT_BYTES ((size_t)64 << 20)

static void run_help(FILE *out) {
    fprintf(out,
            "usage: kiln run -m MODEL (-p TEXT | -f FILE) [options]\n\n"
            "Generates a continuation of the prompt and streams it to standard output, after the\n"
            "prompt itself; then prints the statistics (tokens per second of prefill and decode)\n"
            "to standard error. Special tokens written in the prompt (e.g. <|im_start|>) are\n"
            "recognised. Ctrl-C stops the generation and prints the statistics; a second one exits.\n\n"
            "  -p, --prompt TEXT         the prompt\n"
            "  -f, --file FILE           read the prompt from FILE ('-': standard input); one final\n"
            "                            newline is dropped\n"
            "      --no-display-prompt   do not print the prompt before the continuation\n"
            "  -s, --system TEXT         answer the prompt as a chat turn, with this system prompt\n"
            "      --template NAME       answer the prompt as a chat turn through this template family:\n"
            "                            chatml, llama3, llama2, mistral, gemma, phi3 (default with\n"
            "                            --system: the model's own); the prompt is then not printed\n"
            "      --no-bos              do not add the model's beginning-of-sequence token\n"
            "      --json                the statistics as one JSON object (on standard error)\n"
            "  -v, --verbose             (the statistics are always printed; kept for old scripts)\n" CLI_SAMPLING_HELP,
            RUN_DEFAULT_TOKENS);
}

typedef struct run_output {
    bool failed;    // a write to stdout failed
    char last;      // the last byte written
    size_t written; // bytes of generated text
} run_output;

static bool emit(run_output *o, const char *text, size_t len) {
    if (len == 0) return true;
    if (fwrite(text, 1, len, stdout) != len || fflush(stdout) != 0) {
        cli_stdout_error("run", errno);
        o->failed = true;
        return false;
    }
    o->last = text[len - 1];
    return true;
}

static bool on_text(const char *text, size_t len, void *user) {
    run_output *o = user;
    if (cli_interrupted) return false;
    o->written += len;
    return emit(o, text, len) && !cli_interrupted;
}

static const char *const families[] = {"chatml", "llama3", "llama2", "mistral", "gemma", "phi3"};

static bool known_family(const char *name) {
    for (size_t i = 0; i < sizeof families / sizeof families[0]; i++)
        if (!strcasecmp(name, families[i])) return true;
    return false;
}

static double per_second(int n, double s) { return s > 0 ? n / s : 0.0; }

static void print_stats(const kiln_generate_stats *st, const cli_common *c, bool interrupted, bool json) {
    const char *stop = interrupted ? "interrupted" : st->stop_reason ? st->stop_reason : "error";
    if (json) {
        cli_json j;
        cli_json_begin(&j, stderr);
        cli_json_object(&j, NULL);
        cli_json_int(&j, "n_prompt", st->n_prompt);
        cli_json_num(&j, "prefill_seconds", st->prefill_seconds);
        cli_json_num(&j, "prefill_tokens_per_second", per_second(st->n_prompt, st->prefill_seconds));
        cli_json_int(&j, "n_generated", st->n_generated);
        cli_json_num(&j, "decode_seconds", st->decode_seconds);
        cli_json_num(&j, "decode_tokens_per_second", per_second(st->n_generated, st->decode_seconds));
        cli_json_str(&j, "stop", stop);
        char seed[32];
        snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->sampling.seed);
        cli_json_str(&j, "seed", seed); // a string: JSON numbers lose 64-bit integers
        cli_json_end(&j);
        return;
    }
    fprintf(stderr,
            "kiln run: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s), "
            "stop: %s\n",
            st->n_prompt, st->prefill_seconds, per_second(st->n_prompt, st->prefill_seconds), st->n_generated,
            st->decode_seconds, per_second(st->n_generated, st->decode_seconds), stop);
}

int cmd_run(int argc, char **argv) {
    enum { OPT_NO_BOS = 2000, OPT_NO_DISPLAY, OPT_TEMPLATE };
    static const struct option opts[] = {CLI_SAMPLING_OPTIONS,
                                         {"prompt", required_argument, 0, 'p'},
                                         {"file", required_argument, 0, 'f'},
                                         {"no-display-prompt", no_argument, 0, OPT_NO_DISPLAY},
                                         {"system", required_argument, 0, 's'},
                                         {"template", required_argument, 0, OPT_TEMPLATE},
                                         {"no-bos", no_argument, 0, OPT_NO_BOS},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"verbose", no_argument, 0, 'v'},
                                         {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, RUN_DEFAULT_TOKENS);
    const char *prompt_arg = NULL, *file = NULL, *system = NULL, *family = NULL;
    bool no_bos = false, display = true, json = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:p:f:s:n:c:t:hv", opts, NULL)) != -1) {
        if (opt == 'h') {
            run_help(stdout);
            return 0;
        }
        if (opt == 'p') prompt_arg = optarg;
        else if (opt == 'f') file = optarg;
        else if (opt == 's') system = optarg;
        else if (opt == OPT_TEMPLATE) family = optarg;
        else if (opt == OPT_NO_BOS) no_bos = true;
        else if (opt == OPT_NO_DISPLAY) display = false;
        else if (opt == OPT_JSON) json = true;
        else if (opt == 'v') continue;
        else if (opt == '?') {
            fprintf(stderr, "see 'kiln run --help'\n");
            return 2;
        } else if (cli_common_option(&c, opt, optarg, "run") != 0) return 2;
    }
    if (optind < argc) {
        cli_error("run", "unexpected argument '%s' (quote the prompt and pass it with -p)", argv[optind]);
        return 2;
    }
    if (!cli_common_finish(&c, "run")) return 2;
    if (!prompt_arg && !file) {
        cli_error("run", "no prompt given: pass -p TEXT or -f FILE ('-f -' reads standard input); see --help");
        return 2;
    }
    if (prompt_arg && file) {
        cli_error("run", "-p and -f both give the prompt: pass one of them");
        return 2;
    }
    if (family && !known_family(family)) {
        cli_error("run", "unknown --template '%s' (chatml, llama3, llama2, mistral, gemma, phi3)", family);
        return 2;
    }
    const bool chat = system || family;
    if (chat && no_bos) {
        cli_error("run", "--no-bos does not go with --system or --template: the template places BOS itself");
        return 2;
    }
    char *file_text = NULL;
    size_t prompt_len = 0;
    if (file) {
        if (!cli_read_file(file, RUN_MAX_PROMPT_BYTES, &file_text, &prompt_len, "run")) return 1;
        if (memchr(file_text, '\0', prompt_len)) {
            cli_error("run", "%s contains a NUL byte: a prompt must be text",
                      strcmp(file, "-") ? file : "standard input");
            free(file_text);
            return 1;
        }
        // As llama.cpp: the newline that ends the file's last line is not part of the prompt.
        if (prompt_len && file_text[prompt_len - 1] == '\n') file_text[--prompt_len] = '\0';
        if (prompt_len && file_text[prompt_len - 1] == '\r') file_text[--prompt_len] = '\0';
    } else {
        prompt_len = strlen(prompt_arg);
    }
    const char *prompt = file ? file_text : prompt_arg;

    kiln_model *model = cli_load_model(&c, "run");
    if (!model) {
        free(file_text);
        return 1;
    }
    cli_check_context(&c, model, "run");
    int rc = 1;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    char *rendered = NULL;
    kiln_session *s = NULL;
    kiln_status st;
    if (chat) {
        if (!family && !kiln_chat_template_family(model)) {
            cli_error("run", "%s; pass --template NAME (chatml, llama3, llama2, mistral, gemma, phi3)",
                      kiln_model_chat_template(model) ? "the model's chat template is not one kiln recognises"
                                                      : "the model has no chat template");
            goto done;
        }
        kiln_chat_message msgs[2];
        size_t n = 0;
        if (system) msgs[n++] = (kiln_chat_message){"system", system};
        msgs[n++] = (kiln_chat_message){"user", prompt};
        if (kiln_chat_apply_template(model, family, msgs, n, true, &rendered) != KILN_OK) {
            cli_error("run", "%s", kiln_last_error());
            goto done;
        }
        st = kiln_tokenize(model, rendered, strlen(rendered), false, true, &ids, &n_ids);
    } else {
        st = kiln_tokenize(model, prompt, prompt_len, !no_bos && kiln_model_adds_bos(model), true, &ids, &n_ids);
    }
    if (st != KILN_OK) {
        cli_error("run", "cannot tokenize the prompt: %s", kiln_last_error());
        goto done;
    }
    if (n_ids == 0) {
        cli_error("run", "the prompt is empty; give some text or drop --no-bos");
        goto done;
    }
    if (kiln_session_create(model, c.ctx, &s) != KILN_OK) {
        cli_error("run", "%s", kiln_last_error());
        goto done;
    }
    if (n_ids > (size_t)kiln_session_context(s)) {
        cli_error("run", "the prompt is %zu tokens, more than the context of %d; pass a larger -c (the model was "
                         "trained for %d)",
                  n_ids, kiln_session_context(s), kiln_model_context_length(model));
        goto done;
    }
    run_output out = {0};
    if (display && !chat && !emit(&out, prompt, prompt_len)) {
        rc = 1;
        goto done;
    }
    kiln_generate_params gp = {.max_new_tokens = c.max_tokens, .stop = c.stop, .n_stop = c.n_stop,
                               .ignore_eos = c.ignore_eos};
    kiln_generate_stats stats;
    cli_catch_interrupts();
    st = kiln_generate(s, ids, n_ids, &c.sampling, &gp, on_text, &out, &stats);
    const bool interrupted = cli_interrupted;
    if (out.failed) goto done; // main() says why
    // The statistics start on a line of their own when both streams are on the terminal.
    if (out.last && out.last != '\n' && isatty(STDOUT_FILENO) && isatty(STDERR_FILENO)) fputc('\n', stderr);
    if (st != KILN_OK) {
        cli_error("run", "%s", kiln_last_error());
        goto done;
    }
    print_stats(&stats, &c, interrupted, json);
    rc = interrupted ? CLI_EXIT_INTERRUPTED : 0;
done:
    free(ids);
    free(rendered);
    free(file_text);
    kiln_session_free(s);
    kiln_model_free(model);
    return rc;
}
