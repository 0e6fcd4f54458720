// kiln tokenize: print the token ids of a text. Reads only the model's
// metadata and tokenizer, so it works for any architecture whose tokenizer
// kiln supports.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void tokenize_help(FILE *out) {
    fprintf(out, "usage: kiln tokenize -m MODEL [options] TEXT\n\n"
                 "Prints the token ids of TEXT, space-separated, on one line. Needs only the model's\n"
                 "tokenizer: works on any GGUF or Hugging Face folder whose tokenizer kiln reads, also of\n"
                 "architectures kiln cannot run.\n\n" CLI_MODEL_HELP
                 "      --bos                 add the beginning-of-sequence token even if the model does not\n"
                 "      --no-bos              never add it (default: as the model says)\n"
                 "      --no-special          treat special tokens written in TEXT as plain text\n"
                 "      --pieces              print one token per line: id and its text\n"
                 "      --json                one JSON object: {\"ids\": [...]} (with --pieces, also \"pieces\")\n"
                 "  -h, --help                this help\n");
}

static void print_piece(const char *bytes, size_t len) {
    putchar('\'');
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)bytes[i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch == '\\' || ch == '\'') printf("\\%c", ch);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    putchar('\'');
}

int cmd_tokenize(int argc, char **argv) {
    enum { OPT_BOS = 1, OPT_NO_BOS, OPT_NO_SPECIAL, OPT_PIECES };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"bos", no_argument, 0, OPT_BOS},
                                         {"no-bos", no_argument, 0, OPT_NO_BOS},
                                         {"no-special", no_argument, 0, OPT_NO_SPECIAL},
                                         {"pieces", no_argument, 0, OPT_PIECES}, {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, 0);
    int bos = -1, opt;
    bool special = true, pieces = false, json = false;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': c.model = optarg; break;
        case OPT_BOS: bos = 1; break;
        case OPT_NO_BOS: bos = 0; break;
        case OPT_NO_SPECIAL: special = false; break;
        case OPT_PIECES: pieces = true; break;
        case OPT_JSON: json = true; break;
        case 'h': tokenize_help(stdout); return 0;
        default: fprintf(stderr, "see 'kiln tokenize --help'\n"); return 2;
        }
    }
    if (!c.model) {
        cli_error("tokenize", "no model given: pass -m MODEL; see --help");
        return 2;
    }
    if (optind != argc - 1) {
        cli_error("tokenize", "give exactly one TEXT argument (quote it); see --help");
        return 2;
    }
    const char *text = argv[optind];
    c.vocab_only = true; // the tokenizer alone: no weights, any architecture
    kiln_model *model = cli_load_model(&c, "tokenize");
    if (!model) return 1;
    bool add_bos = bos >= 0 ? bos == 1 : kiln_model_adds_bos(model);
    if (bos == 1 && kiln_model_bos(model) < 0) {
        cli_error("tokenize", "the model has no beginning-of-sequence token; drop --bos");
        kiln_model_free(model);
        return 1;
    }
    int32_t *ids;
    size_t n;
    if (kiln_tokenize(model, text, strlen(text), add_bos, special, &ids, &n) != KILN_OK) {
        cli_error("tokenize", "%s", kiln_last_error());
        kiln_model_free(model);
        return 1;
    }
    if (json) {
        cli_json j;
        cli_json_begin(&j, stdout);
        cli_json_object(&j, NULL);
        cli_json_array(&j, "ids");
        for (size_t i = 0; i < n; i++) cli_json_int(&j, NULL, ids[i]);
        cli_json_close(&j);
        if (pieces) {
            cli_json_array(&j, "pieces");
            for (size_t i = 0; i < n; i++) {
                const char *bytes;
                size_t len;
                if (kiln_token_bytes(model, ids[i], &bytes, &len) == KILN_OK)
                    cli_json_strn(&j, NULL, bytes, len);
                else
                    cli_json_null(&j, NULL);
            }
            cli_json_close(&j);
        }
        cli_json_end(&j);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (pieces) {
                const char *bytes;
                size_t len;
                printf("%6d  ", ids[i]);
                if (kiln_token_bytes(model, ids[i], &bytes, &len) == KILN_OK) print_piece(bytes, len);
                putchar('\n');
            } else {
                printf(i ? " %d" : "%d", ids[i]);
            }
        }
        if (!pieces) putchar('\n');
    }
    free(ids);
    kiln_model_free(model);
    return 0;
}
