// kiln chat: an interactive conversation through the model's chat template.
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifdef KILN_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#include "cli/cli.h"

#define CHAT_DEFAULT_TOKENS 512

static void chat_help(FILE *out) {
    fprintf(out,
            "usage: kiln chat -m MODEL [options]\n\n"
            "Reads your messages line by line from standard input and streams the model's\n"
            "replies. The model's chat template is recognised from its text (ChatML, Llama 3,\n"
            "Llama 2, Mistral, Gemma, Phi-3). On a terminal, lines can be edited and earlier ones\n"
            "recalled with the arrow keys.\n\n"
            "  \"\"\"                       a line starting with \"\"\" begins a message of several lines,\n"
            "                            one ending with \"\"\" ends it\n"
            "  /stats                    tokens per second of the last reply and of the conversation\n"
            "  /reset                    forget the conversation (asks first)\n"
            "  /exit, /quit, Ctrl-D      quit; Ctrl-C stops a reply, twice quits\n\n"
            "  -s, --system TEXT         system prompt (default: the template's own, if any)\n"
            "      --template NAME       force a template family: chatml, llama3, llama2, mistral, gemma, phi3\n"
            "      --raw                 no template: each line goes to the model as it is\n" CLI_SAMPLING_HELP,
            CHAT_DEFAULT_TOKENS);
}

static const char *const families[] = {"chatml", "llama3", "llama2", "mistral", "gemma", "phi3"};

// ---- Text buffer ------------------------------------------------------------

typedef struct text {
    char *data;
    size_t len, cap;
} text;

static bool text_append(text *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 256;
        while (cap < t->len + n + 1) cap *= 2;
        char *grown = realloc(t->data, cap);
        if (!grown) return false;
        t->data = grown;
        t->cap = cap;
    }
    memcpy(t->data + t->len, s, n);
    t->len += n;
    t->data[t->len] = '\0';
    return true;
}

// ---- Input ---------------------------------------------------------------------

typedef struct input {
    bool interactive; // standard input is a terminal
    char *line;       // getline's buffer
    size_t cap;
} input;

// One line without its newline (malloc'd), or NULL at the end of input or
// on Ctrl-C (cli_interrupted set).
static char *read_line(input *in, const char *prompt) {
#ifdef KILN_HAVE_LIBEDIT
    if (in->interactive) {
        rl_outstream = stderr; // prompts and echo beside the other messages, stdout keeps the replies
        char *l = readline(prompt);
        if (l && *l) add_history(l);
        return l;
    }
#endif
    if (in->interactive) {
        fputs(prompt, stderr);
        fflush(stderr);
    }
    errno = 0;
    ssize_t got = getline(&in->line, &in->cap, stdin);
    if (got < 0) {
        if (errno == EINTR) clearerr(stdin); // Ctrl-C: the caller decides
        return NULL;
    }
    while (got > 0 && (in->line[got - 1] == '\n' || in->line[got - 1] == '\r')) in->line[--got] = '\0';
    return strdup(in->line);
}

static bool ends_with_quotes(const char *s, size_t len) { return len >= 3 && memcmp(s + len - 3, "\"\"\"", 3) == 0; }

// One message: a line, or the lines between """ and """ joined by newlines.
// NULL at the end of input (*eof) or on Ctrl-C.
static char *read_message(input *in, bool *eof) {
    *eof = false;
    char *first = read_line(in, "> ");
    if (!first) {
        *eof = !cli_interrupted;
        return NULL;
    }
    if (strncmp(first, "\"\"\"", 3) != 0) return first;
    text t = {0};
    const char *rest = first + 3;
    size_t rest_len = strlen(rest);
    bool ok = true;
    if (ends_with_quotes(rest, rest_len)) { // """one line"""
        char *one = strndup(rest, rest_len - 3);
        free(first);
        return one ? one : strdup("");
    }
    if (rest_len) ok = text_append(&t, rest, rest_len) && text_append(&t, "\n", 1);
    free(first);
    for (;;) {
        char *l = read_line(in, "... ");
        if (!l) {
            if (cli_interrupted) {
                free(t.data);
                return NULL;
            }
            break; // end of input: what was typed is the message
        }
        size_t len = strlen(l);
        const bool last = ends_with_quotes(l, len);
        ok = ok && text_append(&t, l, last ? len - 3 : len);
        if (!last) ok = ok && text_append(&t, "\n", 1);
        free(l);
        if (last) break;
    }
    if (!ok) {
        free(t.data);
        fprintf(stderr, "kiln chat: out of memory\n");
        return strdup("");
    }
    if (t.len && t.data[t.len - 1] == '\n') t.data[--t.len] = '\0';
    if (!t.data) text_append(&t, "", 0);
    return t.data;
}

// ---- Conversation -------------------------------------------------------------

typedef struct conversation {
    kiln_chat_message *msgs;
    int n, cap;
} conversation;

static bool add_message(conversation *c, const char *role, const char *content, size_t len) {
    if (c->n == c->cap) {
        int cap = c->cap ? c->cap * 2 : 16;
        kiln_chat_message *grown = realloc(c->msgs, sizeof *grown * (size_t)cap);
        if (!grown) return false;
        c->msgs = grown;
        c->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return false;
    memcpy(copy, content, len);
    copy[len] = '\0';
    c->msgs[c->n++] = (kiln_chat_message){role, copy};
    return true;
}

static void clear_conversation(conversation *c, int keep) {
    while (c->n > keep) free((char *)c->msgs[--c->n].content);
}

// Feeds the new part of the conversation: the longest prefix the session has
// already seen stays cached.
static kiln_status sync_prefix(kiln_session *s, const int32_t *ids, size_t n, size_t *start) {
    const int32_t *have;
    size_t common = 0, n_have = (size_t)kiln_session_tokens(s, &have);
    while (common < n_have && common < n && have[common] == ids[common]) common++;
    if (common == n) common = n - 1; // something must be evaluated to get logits
    *start = common;
    return kiln_session_truncate(s, (int)common);
}

// ---- Replies and statistics ----------------------------------------------------

typedef struct reply {
    text t;
    bool write_failed;
} reply;

static bool stream_reply(const char *s, size_t len, void *user) {
    reply *r = user;
    if (cli_interrupted) return false;
    if (fwrite(s, 1, len, stdout) != len || fflush(stdout) != 0) {
        cli_stdout_error("chat", errno);
        r->write_failed = true;
        return false;
    }
    return text_append(&r->t, s, len) && !cli_interrupted;
}

typedef struct chat_stats {
    int turns;
    kiln_generate_stats last;
    bool have_last, last_interrupted;
    long long n_prompt, n_generated;
    double prefill_seconds, decode_seconds;
} chat_stats;

static double per_second(long long n, double s) { return s > 0 ? (double)n / s : 0.0; }

static void print_stats(const chat_stats *cs, kiln_session *s) {
    if (cs->have_last) {
        const kiln_generate_stats *l = &cs->last;
        fprintf(stderr,
                "last reply: prompt %d tokens in %.3f s (%.1f tok/s), %d tokens in %.3f s (%.1f tok/s), stop: %s\n",
                l->n_prompt, l->prefill_seconds, per_second(l->n_prompt, l->prefill_seconds), l->n_generated,
                l->decode_seconds, per_second(l->n_generated, l->decode_seconds),
                cs->last_interrupted ? "interrupted" : l->stop_reason);
    } else {
        fprintf(stderr, "last reply: none yet\n");
    }
    fprintf(stderr,
            "conversation: %d %s, %d of %d context tokens; prompts %lld tokens (%.1f tok/s), replies %lld tokens "
            "(%.1f tok/s)\n",
            cs->turns, cs->turns == 1 ? "turn" : "turns", kiln_session_position(s), kiln_session_context(s),
            cs->n_prompt, per_second(cs->n_prompt, cs->prefill_seconds), cs->n_generated,
            per_second(cs->n_generated, cs->decode_seconds));
}

static bool yes(const char *answer) {
    while (*answer == ' ') answer++;
    return !strcasecmp(answer, "y") || !strcasecmp(answer, "yes");
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
    if (optind < argc) {
        cli_error("chat", "unexpected argument '%s': chat reads its messages from standard input", argv[optind]);
        return 2;
    }
    if (!cli_common_finish(&c, "chat")) return 2;
    if (forced) {
        bool known = false;
        for (size_t i = 0; i < sizeof families / sizeof families[0]; i++) known |= !strcasecmp(forced, families[i]);
        if (!known) {
            cli_error("chat", "unknown --template '%s' (chatml, llama3, llama2, mistral, gemma, phi3)", forced);
            return 2;
        }
    }
    if (raw && (forced || system)) {
        cli_error("chat", "--raw sends lines as they are: it does not go with --template or --system");
        return 2;
    }
    kiln_model *model = cli_load_model(&c, "chat");
    if (!model) return 1;
    cli_check_context(&c, model, "chat");
    const char *own = kiln_chat_template_family(model);
    if (!raw && !forced && !own) {
        cli_error("chat", "%s; use --raw to send your lines to the model as they are, or --template NAME",
                  kiln_model_chat_template(model) ? "the model's chat template is not one kiln recognises"
                                                  : "the model has no chat template");
        kiln_model_free(model);
        return 2;
    }
    int rc = 1;
    kiln_session *s = NULL;
    conversation conv = {0};
    input in = {.interactive = isatty(STDIN_FILENO)};
    chat_stats cs = {0};
    if (kiln_session_create(model, c.ctx, &s) != KILN_OK) {
        cli_error("chat", "%s", kiln_last_error());
        goto done;
    }
    if (system && !add_message(&conv, "system", system, strlen(system))) goto oom;
    const int n_fixed = conv.n;
    if (in.interactive)
        fprintf(stderr, "kiln chat: %s template; \"\"\" for several lines, /stats, /reset, /exit or Ctrl-D quits\n",
                raw ? "no" : forced ? forced : own);
    kiln_generate_params gp = {.max_new_tokens = c.max_tokens, .stop = c.stop, .n_stop = c.n_stop,
                               .ignore_eos = c.ignore_eos};
    cli_catch_interrupts();
    for (;;) {
        bool eof;
        char *line = read_message(&in, &eof);
        if (!line) {
            if (eof) {
                if (in.interactive) fputc('\n', stderr); // the shell's prompt on a line of its own
                break;
            }
            // Ctrl-C at the prompt: a second one quits (the handler exits).
            fprintf(stderr, "\n(Ctrl-C again, Ctrl-D or /exit quits)\n");
            continue;
        }
        cli_interrupted = 0;
        if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) {
            free(line);
            break;
        }
        if (!strcmp(line, "/stats")) {
            free(line);
            print_stats(&cs, s);
            continue;
        }
        if (!strcmp(line, "/reset")) {
            free(line);
            const char *question = "forget the conversation and start over? [y/N] ";
            if (!in.interactive) fprintf(stderr, "%s\n", question);
            char *answer = read_line(&in, question);
            if (answer && yes(answer)) {
                clear_conversation(&conv, n_fixed);
                kiln_session_reset(s);
                cs.turns = 0, cs.n_prompt = cs.n_generated = 0, cs.prefill_seconds = cs.decode_seconds = 0;
                fprintf(stderr, "conversation reset\n");
            } else {
                fprintf(stderr, "conversation kept\n");
            }
            free(answer);
            cli_interrupted = 0;
            continue;
        }
        if (!line[0]) {
            free(line);
            continue;
        }
        char *prompt = NULL;
        kiln_status st = KILN_OK;
        if (raw) {
            prompt = line;
            line = NULL;
        } else {
            if (!add_message(&conv, "user", line, strlen(line))) st = KILN_ERR_NOMEM;
            free(line);
            if (st != KILN_OK) goto oom;
            if (kiln_chat_apply_template(model, forced, conv.msgs, (size_t)conv.n, true, &prompt) != KILN_OK) {
                cli_error("chat", "%s", kiln_last_error());
                clear_conversation(&conv, conv.n - 1);
                continue;
            }
        }
        int32_t *ids = NULL;
        size_t n_ids = 0, start = 0;
        bool add_bos = raw && kiln_session_position(s) == 0 && kiln_model_adds_bos(model);
        st = kiln_tokenize(model, prompt, strlen(prompt), add_bos, !raw, &ids, &n_ids);
        free(prompt);
        const char *err = NULL;
        if (st != KILN_OK) err = kiln_last_error();
        else if (n_ids == 0) err = "nothing to send";
        else if (!raw && (st = sync_prefix(s, ids, n_ids, &start)) != KILN_OK) err = kiln_last_error();
        reply r = {0};
        kiln_generate_stats stats;
        if (!err) {
            st = kiln_generate(s, ids + start, n_ids - start, &c.sampling, &gp, stream_reply, &r, &stats);
            if (st != KILN_OK) err = kiln_last_error();
        }
        free(ids);
        const bool interrupted = cli_interrupted;
        if (r.write_failed) {
            free(r.t.data);
            break; // main() reports it
        }
        if (putchar('\n') == EOF || fflush(stdout) != 0) {
            cli_stdout_error("chat", errno);
            free(r.t.data);
            break;
        }
        if (err) {
            cli_error("chat", "%s%s", err,
                      st == KILN_ERR_CONTEXT_FULL ? " (type /reset to start over, or pass a larger -c)" : "");
            if (!raw) clear_conversation(&conv, conv.n - 1);
            free(r.t.data);
            cli_interrupted = 0;
            continue;
        }
        if (interrupted) fprintf(stderr, "(interrupted; the reply so far stays in the conversation)\n");
        cli_interrupted = 0;
        cs.turns++;
        cs.last = stats;
        cs.have_last = true;
        cs.last_interrupted = interrupted;
        cs.n_prompt += stats.n_prompt;
        cs.n_generated += stats.n_generated;
        cs.prefill_seconds += stats.prefill_seconds;
        cs.decode_seconds += stats.decode_seconds;
        bool ok = raw || add_message(&conv, "assistant", r.t.data ? r.t.data : "", r.t.len);
        free(r.t.data);
        if (!ok) goto oom;
    }
    rc = 0;
    goto done;
oom:
    cli_error("chat", "out of memory");
done:
    clear_conversation(&conv, 0);
    free(conv.msgs);
    free(in.line);
    kiln_session_free(s);
    kiln_model_free(model);
    return rc;
}
