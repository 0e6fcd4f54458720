// kiln inspect: what a model file holds and what running it costs. A model
// of an architecture kiln cannot run still shows its metadata, tokenizer and
// tensors, with the reason it cannot run.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

static void inspect_help(FILE *out) {
    fprintf(out, "usage: kiln inspect [options] -m MODEL   (or: kiln inspect [options] MODEL)\n\n"
                 "Prints a model's architecture, hyperparameters, tokenizer, tensors (type and\n"
                 "shape) and the memory needed to run it. A model whose architecture kiln cannot run\n"
                 "shows what its files say, and why.\n\n" CLI_MODEL_HELP
                 "  -c, --ctx-size N          context to size the KV cache for (default: min(model's, 4096))\n"
                 "      --device D            cpu or cuda: load the weights there and report its memory (default cpu)\n"
                 "      --no-tensors          omit the tensor list\n"
                 "      --json                one JSON object instead of the text\n"
                 "  -h, --help                this help\n");
}

static double mib(uint64_t bytes) { return (double)bytes / (1024.0 * 1024.0); }

static void print_bytes(const char *label, uint64_t bytes) { printf("  %-22s %10.2f MiB\n", label, mib(bytes)); }

// Text from the model's files, with control characters (terminal escapes)
// shown as '?'.
static const char *safe(const char *s, char *buf, size_t cap) {
    size_t n = 0;
    for (; s && *s && n + 1 < cap; s++, n++) buf[n] = (unsigned char)*s < 0x20 || *s == 0x7f ? '?' : *s;
    buf[n] = '\0';
    return buf;
}

static void print_tensor(const kiln_tensor_info *t) {
    char shape[96];
    int n = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->n_dims && d < 4 && n < (int)sizeof shape; d++)
        n += snprintf(shape + n, sizeof shape - (size_t)n, d ? ", %lld" : "%lld", (long long)t->ne[d]);
    if (n < (int)sizeof shape) snprintf(shape + n, sizeof shape - (size_t)n, "]");
    char name[256];
    printf("  %-48s %-5s %-20s %10.2f MiB\n", safe(t->name, name, sizeof name), t->dtype, shape, mib(t->bytes));
}

// The reason without the path in front (the model line names the file).
static const char *reason_text(const kiln_model_info *info) {
    const char *r = info->unsupported ? info->unsupported : "";
    size_t n = strlen(info->path);
    if (strncmp(r, info->path, n) == 0 && r[n] == ':' && r[n + 1] == ' ') r += n + 2;
    else if (strncmp(r, info->path, n) == 0 && r[n] == '/') r += n + 1; // "config.json: ..." in a folder
    return r;
}

static void print_int(const char *label, int v) {
    if (v > 0) printf("%-16s%d\n", label, v);
    else printf("%-16snot in the metadata\n", label);
}

static void print_text(const char *name, const kiln_model_info *info, int ctx, const kiln_memory_info *mem,
                       bool tensors, const kiln_model *model) {
    printf("model:          %s (%s)\n", name, !strcmp(info->format, "gguf") ? "GGUF" : "Hugging Face safetensors");
    if (info->gguf_version)
        printf("gguf version:   %u, %llu tensors, %llu metadata keys\n", info->gguf_version,
               (unsigned long long)info->n_tensors, (unsigned long long)info->n_metadata);
    printf("architecture:   %s\n", info->arch[0] ? info->arch : "not in the metadata");
    if (!info->supported) printf("runs in kiln:   no: %s\n", reason_text(info));
    print_int("layers:", info->n_layers);
    print_int("hidden size:", info->dim);
    print_int("ffn size:", info->ffn_dim);
    if (info->n_heads > 0)
        printf("heads:          %d query, %d key/value (head size %d)\n", info->n_heads, info->n_kv_heads,
               info->head_dim);
    else
        printf("heads:          not in the metadata\n");
    print_int("vocabulary:", info->vocab);
    if (info->supported)
        printf("context:        %d trained, %d for this run\n", info->ctx_train, ctx);
    else
        print_int("context:", info->ctx_train);
    if (info->sliding_window > 0) printf("sliding window: %d\n", info->sliding_window);
    if (info->supported)
        printf("rope:           base %g, %d dims, %s%s\n", (double)info->rope_theta, info->rope_dims,
               info->rope_interleaved ? "interleaved pairs" : "split halves",
               info->rope_llama3 ? ", llama3 frequency scaling" : "");
    else if (info->rope_theta > 0)
        printf("rope:           base %g, %d dims\n", (double)info->rope_theta, info->rope_dims);
    if (info->norm_eps > 0) printf("rms norm eps:   %g\n", (double)info->norm_eps);
    if (info->supported) {
        printf("qkv bias:       %s\n", info->qkv_bias ? "yes" : "no");
        printf("embeddings:     %s\n",
               info->tied_embeddings ? "tied (output uses the token embedding)" : "separate output");
    }
    printf("tokenizer:      %s, %d tokens", info->tokenizer, info->tokenizer_vocab);
    char pre[128];
    if (info->pre_tokenizer)
        printf(", pre-tokenizer %s%s", safe(info->pre_tokenizer, pre, sizeof pre),
               info->pre_tokenizer_known ? "" : " (not one kiln knows: the GPT-2 rule is used)");
    else
        printf(", pre-tokenizer none");
    printf(", bos %d, eos %d\n", info->bos, info->eos);
    if (!info->has_chat_template) printf("chat template:  none\n");
    else if (info->chat_template_family) printf("chat template:  %s\n", info->chat_template_family);
    else printf("chat template:  present (not a family kiln recognises: chat needs --template or --raw)\n");
    if (mem) {
        const bool on_gpu = mem->weights > 0;
        uint64_t weights = on_gpu ? mem->weights : info->weight_bytes;
        printf("memory (%s):\n", info->device);
        print_bytes(on_gpu ? "weights (on the GPU)" : "weights (mapped)", weights);
        char kv[32];
        snprintf(kv, sizeof kv, "kv cache (%s)", info->kv_dtype);
        print_bytes(kv, mem->kv_cache);
        print_bytes("workspace", mem->workspace);
        print_bytes("total", weights + mem->kv_cache + mem->workspace);
        if (mem->device_total && strcmp(info->device, "cpu") != 0) { // a GPU's own memory
            print_bytes("device free now", mem->device_free);
            print_bytes("device total", mem->device_total);
        }
    } else {
        printf("memory:         not estimated (kiln cannot run this model); weights %.2f MiB in the files\n",
               mib(info->weight_bytes));
    }
    if (tensors) {
        printf("tensors:\n");
        kiln_tensor_info t;
        for (uint64_t i = 0; i < info->n_tensors; i++)
            if (kiln_model_tensor_info(model, i, &t) == KILN_OK) print_tensor(&t);
    }
}

static void print_json(const char *name, const kiln_model_info *info, int ctx, const kiln_memory_info *mem,
                       bool tensors, const kiln_model *model) {
    cli_json j;
    cli_json_begin(&j, stdout);
    cli_json_object(&j, NULL);
    cli_json_str(&j, "model", name);
    cli_json_str(&j, "path", info->path);
    cli_json_str(&j, "format", info->format);
    if (info->gguf_version) cli_json_int(&j, "gguf_version", info->gguf_version);
    cli_json_int(&j, "n_metadata", (long long)info->n_metadata);
    cli_json_int(&j, "n_tensors", (long long)info->n_tensors);
    cli_json_str(&j, "architecture", info->arch);
    cli_json_bool(&j, "supported", info->supported);
    cli_json_str(&j, "unsupported", info->supported ? NULL : reason_text(info));
    cli_json_int(&j, "n_layers", info->n_layers);
    cli_json_int(&j, "hidden_size", info->dim);
    cli_json_int(&j, "ffn_size", info->ffn_dim);
    cli_json_int(&j, "n_heads", info->n_heads);
    cli_json_int(&j, "n_kv_heads", info->n_kv_heads);
    cli_json_int(&j, "head_size", info->head_dim);
    cli_json_int(&j, "vocab_size", info->vocab);
    cli_json_int(&j, "context_trained", info->ctx_train);
    if (info->supported) cli_json_int(&j, "context", ctx);
    cli_json_int(&j, "sliding_window", info->sliding_window);
    cli_json_object(&j, "rope");
    cli_json_float(&j, "base", info->rope_theta);
    cli_json_int(&j, "dims", info->rope_dims);
    if (info->supported) {
        cli_json_str(&j, "layout", info->rope_interleaved ? "interleaved pairs" : "split halves");
        cli_json_bool(&j, "llama3_scaling", info->rope_llama3);
    }
    cli_json_close(&j);
    cli_json_float(&j, "rms_norm_eps", info->norm_eps);
    if (info->supported) {
        cli_json_bool(&j, "qkv_bias", info->qkv_bias);
        cli_json_bool(&j, "tied_embeddings", info->tied_embeddings);
    }
    cli_json_object(&j, "tokenizer");
    cli_json_str(&j, "kind", info->tokenizer);
    cli_json_int(&j, "n_tokens", info->tokenizer_vocab);
    cli_json_str(&j, "pre_tokenizer", info->pre_tokenizer);
    cli_json_bool(&j, "pre_tokenizer_known", info->pre_tokenizer_known);
    cli_json_int(&j, "bos", info->bos);
    cli_json_int(&j, "eos", info->eos);
    cli_json_bool(&j, "adds_bos", info->adds_bos);
    cli_json_close(&j);
    cli_json_bool(&j, "chat_template", info->has_chat_template);
    cli_json_str(&j, "chat_template_family", info->chat_template_family);
    cli_json_int(&j, "weight_bytes_in_files", (long long)info->weight_bytes);
    if (mem) {
        const bool on_gpu = mem->weights > 0;
        uint64_t weights = on_gpu ? mem->weights : info->weight_bytes;
        cli_json_object(&j, "memory");
        cli_json_str(&j, "device", info->device);
        cli_json_int(&j, "weights", (long long)weights);
        cli_json_bool(&j, "weights_mapped", !on_gpu);
        cli_json_str(&j, "kv_dtype", info->kv_dtype);
        cli_json_int(&j, "kv_cache", (long long)mem->kv_cache);
        cli_json_int(&j, "workspace", (long long)mem->workspace);
        cli_json_int(&j, "total", (long long)(weights + mem->kv_cache + mem->workspace));
        if (mem->device_total) {
            cli_json_int(&j, "device_free", (long long)mem->device_free);
            cli_json_int(&j, "device_total", (long long)mem->device_total);
        }
        cli_json_close(&j);
    } else {
        cli_json_null(&j, "memory");
    }
    if (tensors) {
        cli_json_array(&j, "tensors");
        kiln_tensor_info t;
        for (uint64_t i = 0; i < info->n_tensors; i++) {
            if (kiln_model_tensor_info(model, i, &t) != KILN_OK) continue;
            cli_json_object(&j, NULL);
            cli_json_str(&j, "name", t.name);
            cli_json_str(&j, "type", t.dtype);
            cli_json_array(&j, "shape");
            for (int d = 0; d < t.n_dims && d < 4; d++) cli_json_int(&j, NULL, t.ne[d]);
            cli_json_close(&j);
            cli_json_int(&j, "bytes", (long long)t.bytes);
            cli_json_close(&j);
        }
        cli_json_close(&j);
    }
    cli_json_end(&j);
}

int cmd_inspect(int argc, char **argv) {
    enum { OPT_NO_TENSORS = 1 };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"ctx-size", required_argument, 0, 'c'},
                                         {"no-tensors", no_argument, 0, OPT_NO_TENSORS},
                                         {"device", required_argument, 0, OPT_DEVICE},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, 0);
    c.device = KILN_DEVICE_CPU;
    bool tensors = true, json = false;
    int opt;
    long v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:c:h", opts, NULL)) != -1) {
        if (opt == 'h') {
            inspect_help(stdout);
            return 0;
        } else if (opt == 'm') {
            c.model = optarg;
        } else if (opt == 'c') {
            if (!cli_int_option("inspect", "-c", optarg, 1, CLI_MAX_CTX, "the context length in tokens", &v))
                return 2;
            c.ctx = (int)v;
        } else if (opt == OPT_DEVICE) {
            if (!cli_parse_device(optarg, "inspect", &c.device)) return 2;
        } else if (opt == OPT_NO_TENSORS) {
            tensors = false;
        } else if (opt == OPT_JSON) {
            json = true;
        } else {
            fprintf(stderr, "see 'kiln inspect --help'\n");
            return 2;
        }
    }
    if (optind < argc - 1 || (c.model && optind < argc)) {
        cli_error("inspect", "give exactly one MODEL (with -m, or as the argument); see --help");
        return 2;
    }
    if (!c.model && optind == argc) {
        cli_error("inspect", "no model given: pass -m MODEL (a .gguf file, a Hugging Face folder, or a model's name "
                             "in the cache folder); see --help");
        return 2;
    }
    if (!c.model) c.model = argv[optind];
    if (!cli_resolve_model(&c, "inspect")) return 1;
    kiln_model_params mp = {.device = c.device};
    kiln_model *model = NULL;
    bool full = kiln_model_load(c.model_path, &mp, &model) == KILN_OK;
    if (!full) {
        // Whether its metadata and tokenizer load where its weights do not: an
        // architecture kiln cannot run is shown, with the reason.
        char *err = strdup(kiln_last_error());
        kiln_model_params vp = {.vocab_only = true};
        kiln_model_info vi;
        if (kiln_model_load(c.model_path, &vp, &model) == KILN_OK) kiln_model_get_info(model, &vi);
        if (!model || vi.supported) {
            cli_error("inspect", "cannot load model: %s", err ? err : "out of memory");
            free(err);
            kiln_model_free(model);
            return 1;
        }
        free(err);
    }
    kiln_model_info info;
    kiln_model_get_info(model, &info);
    int ctx = c.ctx ? c.ctx : (info.ctx_train < 4096 ? info.ctx_train : 4096);
    if (full) cli_check_context(&c, model, "inspect");
    kiln_memory_info mem;
    if (full) kiln_model_memory(model, ctx, &mem);
    if (json)
        print_json(c.model, &info, ctx, full ? &mem : NULL, tensors, model);
    else
        print_text(c.model, &info, ctx, full ? &mem : NULL, tensors, model);
    kiln_model_free(model);
    return 0;
}
