// kiln run: stream a continuation of a prompt.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "runtime/generate.h"
#include "runtime/session.h"

#define RUN_DEFAULT_TOKENS 128

static void run_help(FILE *out) {
    fprintf(out,
            "usage: kiln run -m MODEL -p TEXT [options]\n\n"
            "Generates a continuation of TEXT and streams it to standard output.\n"
            "Special tokens written in TEXT (e.g. <|im_start|>) are recognised.\n\n"
            "  -p, --prompt TEXT         the prompt (required)\n"
            "      --no-bos              do not add the model's beginning-of-sequence token\n"
            "  -v, --verbose             print timings to standard error at the end\n" CLI_SAMPLING_HELP,
            RUN_DEFAULT_TOKENS);
}

static bool write_text(const char *text, size_t len, void *user) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return true;
}

int cmd_run(int argc, char **argv) {
    static const struct option opts[] = {CLI_SAMPLING_OPTIONS, {"prompt", required_argument, 0, 'p'},
                                         {"no-bos", no_argument, 0, 'B'}, {"verbose", no_argument, 0, 'v'},
                                         {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, RUN_DEFAULT_TOKENS);
    const char *prompt = NULL;
    bool no_bos = false, verbose = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:p:n:c:t:hv", opts, NULL)) != -1) {
        if (opt == 'h') {
            run_help(stdout);
            return 0;
        }
        if (opt == 'p') prompt = optarg;
        else if (opt == 'B') no_bos = true;
        else if (opt == 'v') verbose = true;
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
    if (!prompt) {
        cli_error("run", "no prompt given: pass -p TEXT; see --help");
        return 2;
    }
    kiln_model *model = cli_load_model(&c, "run");
    if (!model) return 1;
    int rc = 1;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    kiln_session *s = NULL;
    bool add_bos = !no_bos && kiln_tokenizer_add_bos_default(model->llm->tok);
    if (kiln_tokenize(model, prompt, strlen(prompt), add_bos, true, &ids, &n_ids) != KILN_OK) {
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
    fwrite(prompt, 1, strlen(prompt), stdout);
    fflush(stdout);
    kiln_generate_params gp = {.max_new_tokens = c.max_tokens ? c.max_tokens : -1, .stop = c.stop, .n_stop = c.n_stop,
                               .ignore_eos = c.ignore_eos};
    kiln_generate_stats stats;
    if (kiln_generate(s, ids, n_ids, &c.sampling, &gp, write_text, NULL, &stats) != KILN_OK) {
        fprintf(stdout, "\n");
        cli_error("run", "%s", kiln_last_error());
        goto done;
    }
    fprintf(stdout, "\n");
    if (verbose)
        fprintf(stderr, "kiln run: prompt %d tokens in %.3f s (%.1f tok/s), generated %d tokens in %.3f s (%.1f tok/s), stop: %s\n",
                stats.n_prompt, stats.prefill_seconds, stats.n_prompt / stats.prefill_seconds, stats.n_generated,
                stats.decode_seconds, stats.n_generated / (stats.decode_seconds > 0 ? stats.decode_seconds : 1),
                stats.stop_reason);
    rc = 0;
done:
    free(ids);
    kiln_session_free(s);
    kiln_model_free(model);
    return rc;
}
