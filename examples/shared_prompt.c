// The engine API: one prompt evaluated once, its KV blocks shared by two
// sequences that continue it differently in one batch; each sequence's
// logits come from the same step.
//
//   cc shared_prompt.c $(pkg-config --cflags --libs kiln) -o shared_prompt
//   ./shared_prompt MODEL "Once upon a time"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiln.h>

static int argmax(const float *v, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL PROMPT\n", argv[0]);
        return 2;
    }
    kiln_model *model = NULL;
    kiln_engine *engine = NULL;
    int32_t *ids = NULL, *pos = NULL, *seq = NULL;
    size_t n = 0;
    int rc = 1;
    const kiln_model_params mp = {.device = KILN_DEVICE_AUTO};
    const kiln_engine_options options = {.max_seqs = 2, .max_seq_len = 256};
    if (kiln_model_load(argv[1], &mp, &model) != KILN_OK ||
        kiln_tokenize(model, argv[2], strlen(argv[2]), kiln_model_adds_bos(model), true, &ids, &n) != KILN_OK ||
        kiln_engine_create(model, &options, &engine) != KILN_OK)
        goto fail;
    if (n == 0 || n > 200) {
        fprintf(stderr, "%s: give a prompt of 1 to 200 tokens\n", argv[0]);
        goto done;
    }
    pos = malloc(sizeof *pos * n);
    seq = calloc(n, sizeof *seq);
    if (!pos || !seq) goto fail;
    for (size_t i = 0; i < n; i++) pos[i] = (int32_t)i;
    // The prompt into sequence 0, then shared with sequence 1: stored once.
    const kiln_batch prompt = {.n_tokens = (int)n, .tokens = ids, .pos = pos, .seq = seq};
    const float *logits;
    if (kiln_engine_step(engine, &prompt) != KILN_OK || kiln_engine_logits(engine, 0, &logits) != KILN_OK) goto fail;
    const int vocab = kiln_model_vocab_size(model);
    const int32_t first = argmax(logits, vocab);
    if (kiln_engine_seq_share(engine, 0, 1, (int)n) != KILN_OK) goto fail;
    // One step, two sequences: the greedy token and a fixed other one.
    const int32_t next[2] = {first, first == 13 ? 14 : 13}, next_pos[2] = {(int32_t)n, (int32_t)n}, next_seq[2] = {0, 1};
    const bool both[2] = {true, true};
    const kiln_batch step = {.n_tokens = 2, .tokens = next, .pos = next_pos, .seq = next_seq, .logits = both};
    if (kiln_engine_step(engine, &step) != KILN_OK) goto fail;
    for (int s = 0; s < 2; s++) {
        if (kiln_engine_logits(engine, s, &logits) != KILN_OK) goto fail;
        const char *bytes;
        size_t len;
        if (kiln_token_bytes(model, argmax(logits, vocab), &bytes, &len) != KILN_OK) goto fail;
        printf("sequence %d: after token %d comes '%.*s'\n", s, next[s], (int)len, bytes);
    }
    printf("free KV slots: %d\n", kiln_engine_free_slots(engine));
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", argv[0], kiln_last_error());
done:
    free(ids);
    free(pos);
    free(seq);
    kiln_engine_free(engine);
    kiln_model_free(model);
    return rc;
}
