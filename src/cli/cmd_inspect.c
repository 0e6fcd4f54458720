// kiln inspect: what a model file holds and what running it costs.
#include <getopt.h>
#include <string.h>

#include "cli/cli.h"
#include "model/forward.h"
#include "runtime/engine.h"
#include "runtime/session.h"

static void inspect_help(FILE *out) {
    fprintf(out, "usage: kiln inspect [options] MODEL\n\n"
                 "Prints a model's architecture, hyperparameters, tokenizer, tensors (type and\n"
                 "shape) and the memory needed to run it.\n\n"
                 "  -c, --ctx-size N   context to size the KV cache for (default: min(model's, 4096))\n"
                 "      --device D     cpu or cuda: load the weights there and report its memory (default cpu)\n"
                 "      --no-tensors   omit the tensor list\n"
                 "  -h, --help         this help\n");
}

static void print_bytes(const char *label, uint64_t bytes) {
    printf("  %-22s %10.2f MiB\n", label, (double)bytes / (1024.0 * 1024.0));
}

static void print_tensor(const kiln_tensor *t) {
    char shape[96];
    int n = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->n_dims && n < (int)sizeof shape; d++)
        n += snprintf(shape + n, sizeof shape - (size_t)n, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (n < (int)sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
    printf("  %-48s %-5s %-20s %10.2f MiB\n", t->name, kiln_dtype_name(t->dtype), shape,
           (double)t->nbytes / (1024.0 * 1024.0));
}

int cmd_inspect(int argc, char **argv) {
    enum { OPT_NO_TENSORS = 1 };
    static const struct option opts[] = {{"ctx-size", required_argument, 0, 'c'},
                                         {"no-tensors", no_argument, 0, OPT_NO_TENSORS},
                                         {"device", required_argument, 0, OPT_DEVICE},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, 0);
    c.device = KILN_DEVICE_CPU;
    bool tensors = true;
    int opt;
    long v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            inspect_help(stdout);
            return 0;
        } else if (opt == 'c') {
            if (!cli_parse_int(optarg, 1, 1 << 22, &v)) {
                cli_error("inspect", "'%s' is not a valid context length", optarg);
                return 2;
            }
            c.ctx = (int)v;
        } else if (opt == OPT_DEVICE) {
            if (!cli_parse_device(optarg, "inspect", &c.device)) return 2;
        } else if (opt == OPT_NO_TENSORS) {
            tensors = false;
        } else {
            fprintf(stderr, "see 'kiln inspect --help'\n");
            return 2;
        }
    }
    if (optind != argc - 1) {
        cli_error("inspect", "give exactly one MODEL (a .gguf file or a Hugging Face folder); see --help");
        return 2;
    }
    c.model = argv[optind];
    kiln_model *model = cli_load_model(&c, "inspect");
    if (!model) return 1;
    const kiln_llm *m = model->llm;
    const kiln_hparams *hp = &m->hp;
    int ctx = c.ctx ? c.ctx : (hp->ctx_train < 4096 ? hp->ctx_train : 4096);
    printf("model:          %s (%s)\n", m->path, m->format == KILN_FORMAT_GGUF ? "GGUF" : "Hugging Face safetensors");
    if (m->gguf) printf("gguf version:   %u, %llu tensors, %llu metadata keys\n", m->gguf->version,
                        (unsigned long long)m->gguf->n_tensors, (unsigned long long)m->gguf->n_kv);
    printf("architecture:   %s\n", hp->arch);
    printf("layers:         %d\n", hp->n_layers);
    printf("hidden size:    %d\n", hp->dim);
    printf("ffn size:       %d\n", hp->ffn_dim);
    printf("heads:          %d query, %d key/value (head size %d)\n", hp->n_heads, hp->n_kv_heads, hp->head_dim);
    printf("vocabulary:     %d\n", hp->vocab);
    printf("context:        %d trained, %d for this run\n", hp->ctx_train, ctx);
    printf("rope:           base %g, %d dims, %s%s\n", (double)hp->rope.theta, hp->rope.rot_dim,
           hp->rope.interleaved ? "interleaved pairs" : "split halves",
           hp->rope.freq_factors ? ", llama3 frequency scaling" : "");
    printf("rms norm eps:   %g\n", (double)hp->norm_eps);
    printf("qkv bias:       %s\n", hp->qkv_bias ? "yes" : "no");
    printf("embeddings:     %s\n", hp->tied_embeddings ? "tied (output uses the token embedding)" : "separate output");
    const kiln_tokenizer *tok = m->tok;
    printf("tokenizer:      %s, %d tokens, pre-tokenizer %s, bos %d, eos %d\n",
           kiln_tokenizer_get_kind(tok) == KILN_TOKENIZER_BYTE_BPE ? "byte-level BPE" : "SentencePiece BPE",
           kiln_tokenizer_vocab_size(tok), kiln_tokenizer_pre_name(tok) ? kiln_tokenizer_pre_name(tok) : "none", kiln_tokenizer_bos(tok),
           kiln_tokenizer_eos(tok));
    const char *tmpl = kiln_tokenizer_chat_template(tok);
    printf("chat template:  %s\n", tmpl ? "present" : "none");
    kiln_memory_info mem;
    kiln_model_memory(model, ctx, &mem);
    const bool on_gpu = mem.weights > 0;
    uint64_t weights = on_gpu ? mem.weights : kiln_llm_weight_bytes(m);
    printf("memory (%s):\n", kiln_model_device(model));
    print_bytes(on_gpu ? "weights (on the GPU)" : "weights (mapped)", weights);
    print_bytes(model->be->kv_dtype == KILN_F16 ? "kv cache (f16)" : "kv cache (f32)", mem.kv_cache);
    print_bytes("workspace", mem.workspace);
    print_bytes("total", weights + mem.kv_cache + mem.workspace);
    if (mem.device_total) {
        print_bytes("device free now", mem.device_free);
        print_bytes("device total", mem.device_total);
    }
    if (tensors) {
        printf("tensors:\n");
        if (m->gguf)
            for (uint64_t i = 0; i < m->gguf->n_tensors; i++) print_tensor(&m->gguf->tensors[i].t);
        if (m->st)
            for (uint64_t i = 0; i < m->st->n_tensors; i++) print_tensor(&m->st->tensors[i]);
    }
    kiln_model_free(model);
    return 0;
}
