// The public API's text side (include/kiln.h): what the model's files say
// about BOS, EOS and the chat template, template rendering, and the
// streaming detokenizer.
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "runtime/chat_template.h"
#include "runtime/session.h"

int32_t kiln_model_bos(const kiln_model *m) { return kiln_tokenizer_bos(m->llm->tok); }
int32_t kiln_model_eos(const kiln_model *m) { return kiln_tokenizer_eos(m->llm->tok); }
bool kiln_model_adds_bos(const kiln_model *m) { return kiln_tokenizer_add_bos_default(m->llm->tok); }
const char *kiln_model_chat_template(const kiln_model *m) { return kiln_tokenizer_chat_template(m->llm->tok); }

const char *kiln_chat_template_family(const kiln_model *m) {
    kiln_chat_format fmt = kiln_chat_detect(kiln_model_chat_template(m));
    return fmt == KILN_CHAT_UNKNOWN ? NULL : kiln_chat_format_name(fmt);
}

static kiln_chat_format format_by_name(const char *name) {
    for (int f = KILN_CHAT_CHATML; f <= KILN_CHAT_PHI3; f++)
        if (!strcasecmp(name, kiln_chat_format_name((kiln_chat_format)f))) return (kiln_chat_format)f;
    return KILN_CHAT_UNKNOWN;
}

kiln_status kiln_chat_apply_template(const kiln_model *m, const char *family, const kiln_chat_message *msgs,
                                     size_t n, bool add_assistant, char **out) {
    *out = NULL;
    if (n > (1u << 24) || (n && !msgs)) return kiln_fail(KILN_ERR_INVALID_ARG, "chat: %zu messages", n);
    for (size_t i = 0; i < n; i++)
        if (!msgs[i].role || !msgs[i].content)
            return kiln_fail(KILN_ERR_INVALID_ARG, "chat: message %zu has no role or no content", i);
    // The families that print bos_token take the model's own BOS text.
    const kiln_tokenizer *tok = m->llm->tok;
    char bos_text[64] = "";
    const char *bytes;
    size_t len;
    int32_t bos = kiln_tokenizer_bos(tok);
    if (bos >= 0 && kiln_tokenizer_token_bytes(tok, bos, &bytes, &len) && len < sizeof bos_text)
        memcpy(bos_text, bytes, len), bos_text[len] = '\0';
    const char *tmpl = kiln_tokenizer_chat_template(tok);
    if (!family) {
        if (!tmpl) return kiln_fail(KILN_ERR_UNSUPPORTED, "chat: the model has no chat template; name a family");
        return kiln_chat_render_template(tmpl, msgs, (int)n, add_assistant, bos_text, out);
    }
    kiln_chat_format fmt = format_by_name(family);
    if (fmt == KILN_CHAT_UNKNOWN)
        return kiln_fail(KILN_ERR_INVALID_ARG,
                         "chat: unknown template family '%s' (chatml, llama3, llama2, mistral, gemma, phi3)", family);
    // A named family that is the model's own keeps its default system prompt.
    if (tmpl && kiln_chat_detect(tmpl) == fmt)
        return kiln_chat_render_template(tmpl, msgs, (int)n, add_assistant, bos_text, out);
    return kiln_chat_render(fmt, msgs, (int)n, add_assistant, bos_text, out);
}

struct kiln_detokenizer {
    kiln_detok state;
    char *buf;
    size_t cap;
};

kiln_status kiln_detokenizer_create(const kiln_model *m, kiln_detokenizer **out) {
    *out = NULL;
    kiln_detokenizer *d = calloc(1, sizeof *d);
    // Worst case: every byte of the longest token invalid (3 bytes of U+FFFD
    // each), after a pending character's replacement.
    if (d) d->cap = 3 * kiln_tokenizer_max_token_bytes(m->llm->tok) + 64;
    if (!d || !(d->buf = malloc(d->cap))) {
        free(d);
        return kiln_fail(KILN_ERR_NOMEM, "detokenizer: out of memory");
    }
    kiln_detok_init(&d->state, m->llm->tok);
    *out = d;
    return KILN_OK;
}

void kiln_detokenizer_free(kiln_detokenizer *d) {
    if (!d) return;
    free(d->buf);
    free(d);
}

const char *kiln_detokenizer_push(kiln_detokenizer *d, int32_t id, size_t *len) {
    *len = kiln_detok_push(&d->state, id, d->buf, d->cap - 1);
    d->buf[*len] = '\0';
    return d->buf;
}

const char *kiln_detokenizer_flush(kiln_detokenizer *d, size_t *len) {
    *len = kiln_detok_flush(&d->state, d->buf, d->cap - 1);
    d->buf[*len] = '\0';
    return d->buf;
}
