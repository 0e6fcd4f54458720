#include "runtime/generate.h"

#include "core/strbuf.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

// Longest suffix of text that is a proper prefix of some stop string.
static size_t held_suffix(const char *text, size_t len, const char *const *stop, int n_stop) {
    size_t best = 0;
    for (int i = 0; i < n_stop; i++) {
        size_t sl = strlen(stop[i]);
        for (size_t k = sl - 1 < len ? sl - 1 : len; k > best; k--)
            if (memcmp(text + len - k, stop[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

// Emits what is final; returns false when a stop string was found or the
// callback asked to stop.
static bool flush_pending(kiln_strbuf *p, const kiln_generate_params *gp, kiln_text_callback on_text, void *user,
                          bool *hit_stop) {
    size_t cut = p->len;
    *hit_stop = false;
    for (int i = 0; i < gp->n_stop; i++) {
        if (!gp->stop[i][0]) continue;
        const char *found = memmem(p->data, p->len, gp->stop[i], strlen(gp->stop[i]));
        if (found && (size_t)(found - p->data) < cut) {
            cut = (size_t)(found - p->data);
            *hit_stop = true;
        }
    }
    size_t emit = *hit_stop ? cut : p->len - held_suffix(p->data, p->len, gp->stop, gp->n_stop);
    bool go_on = true;
    if (emit > 0 && on_text) go_on = on_text(p->data, emit, user);
    kiln_strbuf_consume(p, emit);
    return go_on && !*hit_stop;
}

kiln_status kiln_generate(kiln_session *s, const int32_t *prompt, size_t n_prompt, const kiln_sampling_params *sp,
                          const kiln_generate_params *gp, kiln_text_callback on_text, void *user,
                          kiln_generate_stats *stats) {
    memset(stats, 0, sizeof *stats);
    stats->n_prompt = (int)n_prompt;
    const kiln_tokenizer *tok = s->model->llm->tok;
    double t0 = kiln_now_seconds();
    kiln_status st = kiln_session_eval(s, prompt, n_prompt, NULL);
    // The prompt's time includes its work on a GPU, which eval only queues.
    if (st == KILN_OK) st = s->model->be->stream->sync(s->model->be);
    if (st != KILN_OK) return st;
    double t1 = kiln_now_seconds();
    stats->prefill_seconds = t1 - t0;

    kiln_detok detok;
    kiln_detok_init(&detok, tok);
    kiln_strbuf pending = {0};
    char piece[4096];
    stats->stop_reason = "length";
    for (int i = 0; gp->max_new_tokens < 0 || i < gp->max_new_tokens; i++) {
        int32_t id;
        if ((st = kiln_session_sample(s, sp, &id)) != KILN_OK) break;
        if (!gp->ignore_eos && kiln_tokenizer_is_eog(tok, id)) {
            stats->stop_reason = "eog";
            break;
        }
        stats->n_generated++;
        size_t n = kiln_detok_push(&detok, id, piece, sizeof piece);
        bool hit_stop = false;
        if (!kiln_strbuf_append(&pending, piece, n)) {
            st = kiln_fail(KILN_ERR_NOMEM, "generate: out of memory");
            break;
        }
        if (!flush_pending(&pending, gp, on_text, user, &hit_stop)) {
            stats->stop_reason = hit_stop ? "stop string" : "callback";
            break;
        }
        if (s->n_history >= s->n_ctx) {
            stats->stop_reason = "context";
            break;
        }
        if (gp->max_new_tokens > 0 && i + 1 == gp->max_new_tokens) break; // no need to evaluate the last token
        if ((st = kiln_session_eval(s, &id, 1, NULL)) != KILN_OK) break;
    }
    if (st == KILN_OK && strcmp(stats->stop_reason, "stop string") != 0 && strcmp(stats->stop_reason, "callback") != 0) {
        size_t n = kiln_detok_flush(&detok, piece, sizeof piece);
        // What is still held back never completed a stop string: it is final.
        if (kiln_strbuf_append(&pending, piece, n) && pending.len && on_text) on_text(pending.data, pending.len, user);
    }
    kiln_strbuf_free(&pending);
    stats->decode_seconds = kiln_now_seconds() - t1;
    return st;
}
