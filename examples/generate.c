// The smallest useful libkiln program: load a model, apply its chat
// template to one question, and stream the answer.
//
//   cc generate.c $(pkg-config --cflags --libs kiln) -o generate
//   ./generate MODEL "What is the capital of France?"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kiln.h>

static bool print_text(const char *text, size_t len, void *user) {
    (void)user;
    return fwrite(text, 1, len, stdout) == len && fflush(stdout) == 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL QUESTION\n", argv[0]);
        return 2;
    }
    kiln_model *model = NULL;
    kiln_session *session = NULL;
    char *prompt = NULL;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    int rc = 1;
    const kiln_model_params mp = {.device = KILN_DEVICE_AUTO};
    if (kiln_model_load(argv[1], &mp, &model) != KILN_OK) goto fail;
    // The model's own template where it has one kiln knows; plain text otherwise.
    const kiln_chat_message question = {"user", argv[2]};
    if (kiln_chat_template_family(model) &&
        kiln_chat_apply_template(model, NULL, &question, 1, true, &prompt) != KILN_OK)
        goto fail;
    const char *text = prompt ? prompt : argv[2];
    if (kiln_tokenize(model, text, strlen(text), kiln_model_adds_bos(model), true, &ids, &n_ids) != KILN_OK ||
        kiln_session_create(model, 1024, &session) != KILN_OK)
        goto fail;
    kiln_sampling_params sampling = kiln_sampling_default();
    sampling.temperature = 0; // greedy: the same answer every time
    const kiln_generate_params gp = {.max_new_tokens = 32};
    kiln_generate_stats stats;
    if (kiln_generate(session, ids, n_ids, &sampling, &gp, print_text, NULL, &stats) != KILN_OK) goto fail;
    fprintf(stderr, "\n%d prompt tokens, %d generated (stop: %s)\n", stats.n_prompt, stats.n_generated,
            stats.stop_reason);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "%s: %s\n", argv[0], kiln_last_error());
done:
    free(ids);
    free(prompt);
    kiln_session_free(session);
    kiln_model_free(model);
    return rc;
}
