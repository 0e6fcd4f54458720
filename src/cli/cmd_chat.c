// kiln chat: an interactive conversation through the model's chat template.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "core/strbuf.h"
#include "runtime/chat_template.h"
#include "runtime/generate.h"
#include "runtime/session.h"

#define CHAT_DEFAULT_TOKENS 512

static void chat_help(FILE *out) {
    fprintf(out,
            "usage: kiln chat -m MODEL [options]\n\n"
            "Reads your messages line by line from standard input and streams the model's\n"
            "replies. The model's chat template is recognised from its text (ChatML, Llama 3,\n"
            "Llama 2, Mistral, Gemma, Phi-3). Type /reset to start over, /exit or Ctrl-D to quit.\n\n"
            "  -s, --system TEXT         system prompt (default: the template's own, if any)\n"
            "      --template NAME       force a template family: chatml, llama3, llama2, mistral, gemma, phi3\n"
            "      --raw                 no template: each line goes to the model as it is\n" CLI_SAMPLING_HELP,
            CHAT_DEFAULT_TOKENS);
}

static bool stream_reply(const char *text, size_t len, void *user) {
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return kiln_strbuf_append(user, text, len);
}

static kiln_chat_format format_by_name(const char *name) {
    for (int f = KILN_CHAT_CHATML; f <= KILN_CHAT_PHI3; f++)
        if (!strcasecmp(name, kiln_chat_format_name((kiln_chat_format)f))) return (kiln_chat_format)f;
    return KILN_CHAT_UNKNOWN;
}

typedef struct conversation {
    kiln_chat_message *msgs;
    int n, cap;
} conversation;

static bool add_message(conversation *c, const char *role, const char *content) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        kiln_chat_message *grown = realloc(c->msgs, sizeof *grown * (size_t)cap);
        if (!grown) return false;
        c->msgs = grown;
        c->cap = cap;
    }
    char *copy = strdup(content);
    if (!copy) return false;
    c->msgs[c->n++] = (kiln_chat_message){role, copy};
    return true;
}

static void clear_conversation(conversation *c, int keep) {
    while (c->n > keep) free((char *)c->msgs[--c->n].content);
}

// Feeds the new part of the conversation: the longest prefix the session has
// already seen stays cached.
static kiln_status sync_prefix(kiln_session *s, const int32_t *ids, size_t n, size_t *start) {
    size_t common = 0, have = (size_t)s->n_history;
    while (common < have && common < n && s->history[common] == ids[common]) common++;
    if (common == n) common = n - 1; // something must be evaluated to get logits
    *start = common;
    return kiln_session_truncate(s, (int)common);
}

int cmd_chat(int argc, char **argv) {
    enum { OPT_RAW = 2000, OPT_TEMPLATE };
    static const struct option opts[] = {CLI_SAMPLING_OPTIONS, {"system", required_argument, 0, 's'},
                                         {"raw", no_argument, 0, OPT_RAW},
                                         {"template", required_argument, 0, OPT_TEMPLATE}, {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, CHAT_DEFAULT_TOKENS);
    const char *system = NULL, *forced = NULL;
    bool raw = false;
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:s:n:c:t:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            chat_help(stdout);
            return 0;
        }
        if (opt == 's') system = optarg;
        else if (opt == OPT_RAW) raw = true;
        else if (opt == OPT_TEMPLATE) forced = optarg;
        else if (opt == '?') {
            fprintf(stderr, "see 'kiln chat --help'\n");
            return 2;
        } else if (cli_common_option(&c, opt, optarg, "chat") != 0) return 2;
    }
    if (!cli_common_finish(&c, "chat")) return 2;
    kiln_chat_format fmt = KILN_CHAT_UNKNOWN;
    if (forced && (fmt = format_by_name(forced)) == KILN_CHAT_UNKNOWN) {
        cli_error("chat", "unknown --template '%s' (chatml, llama3, llama2, mistral, gemma, phi3)", forced);
        return 2;
    }
    kiln_model *model = cli_load_model(&c, "chat");
    if (!model) return 1;
    const kiln_tokenizer *tok = model->llm->tok;
    const char *tmpl = kiln_tokenizer_chat_template(tok);
    if (!raw && fmt == KILN_CHAT_UNKNOWN) fmt = kiln_chat_detect(tmpl);
    if (!raw && fmt == KILN_CHAT_UNKNOWN) {
        cli_error("chat", "%s; use --raw to send your lines to the model as they are, or --template NAME",
                  tmpl ? "the model's chat template is not one kiln recognises" : "the model has no chat template");
        kiln_model_free(model);
        return 2;
    }
    int rc = 1;
    kiln_session *s = NULL;
    conversation conv = {0};
    char *default_system = NULL, *line = NULL;
    size_t line_cap = 0;
    if (kiln_session_create(model, c.ctx, &s) != KILN_OK) {
        cli_error("chat", "%s", kiln_last_error());
        goto done;
    }
    if (!system && !raw && tmpl && fmt == kiln_chat_detect(tmpl)) kiln_chat_default_system(tmpl, &default_system);
    if (system || default_system) add_message(&conv, "system", system ? system : default_system);
    const int n_fixed = conv.n;
    int32_t bos = kiln_tokenizer_bos(tok);
    const char *bos_bytes = NULL;
    size_t bos_len = 0;
    char bos_text[64] = "";
    if (bos >= 0 && kiln_tokenizer_token_bytes(tok, bos, &bos_bytes, &bos_len) && bos_len < sizeof bos_text)
        memcpy(bos_text, bos_bytes, bos_len), bos_text[bos_len] = '\0';
    bool interactive = isatty(STDIN_FILENO);
    if (interactive)
        fprintf(stderr, "kiln chat: %s template; /reset starts over, /exit or Ctrl-D quits\n",
                raw ? "no" : kiln_chat_format_name(fmt));
    kiln_generate_params gp = {.max_new_tokens = c.max_tokens ? c.max_tokens : -1, .stop = c.stop, .n_stop = c.n_stop,
                               .ignore_eos = c.ignore_eos};
    for (;;) {
        if (interactive) fprintf(stderr, "> ");
        ssize_t got = getline(&line, &line_cap, stdin);
        if (got < 0) break;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) {
            clear_conversation(&conv, n_fixed);
            kiln_session_reset(s);
            continue;
        }
        if (got == 0) continue;
        char *prompt = NULL;
        if (raw) {
            prompt = strdup(line);
        } else {
            add_message(&conv, "user", line);
            if (kiln_chat_render(fmt, conv.msgs, conv.n, true, bos_text, &prompt) != KILN_OK) {
                cli_error("chat", "%s", kiln_last_error());
                clear_conversation(&conv, conv.n - 1);
                continue;
            }
        }
        int32_t *ids = NULL;
        size_t n_ids = 0, start = 0;
        bool add_bos = raw && s->n_history == 0 && kiln_tokenizer_add_bos_default(tok);
        kiln_status st = kiln_tokenize(model, prompt, strlen(prompt), add_bos, !raw, &ids, &n_ids);
        free(prompt);
        if (st == KILN_OK && n_ids == 0) st = kiln_fail(KILN_ERR_INVALID_ARG, "nothing to send");
        if (st == KILN_OK && !raw) st = sync_prefix(s, ids, n_ids, &start);
        kiln_strbuf r = {0};
        kiln_generate_stats stats;
        if (st == KILN_OK) st = kiln_generate(s, ids + start, n_ids - start, &c.sampling, &gp, stream_reply, &r, &stats);
        free(ids);
        printf("\n");
        if (st != KILN_OK) {
            cli_error("chat", "%s%s", kiln_last_error(),
                      st == KILN_ERR_CONTEXT_FULL ? " (type /reset to start over, or pass a larger -c)" : "");
            if (!raw) clear_conversation(&conv, conv.n - 1);
            kiln_strbuf_free(&r);
            continue;
        }
        if (!raw) add_message(&conv, "assistant", r.data ? r.data : "");
        kiln_strbuf_free(&r);
    }
    rc = 0;
done:
    clear_conversation(&conv, 0);
    free(conv.msgs);
    free(default_system);
    free(line);
    kiln_session_free(s);
    kiln_model_free(model);
    return rc;
}
