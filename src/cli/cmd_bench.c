// kiln bench: prefill and decode throughput, median of several runs.
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_gpu.h"
#include "cli/cli.h"

#define BENCH_MAX_SIZES 8
#define BENCH_MAX_LENGTH (1 << 20)

static void bench_help(FILE *out) {
    fprintf(out, "usage: kiln bench -m MODEL [options]\n\n"
                 "Measures prompt processing (prefill) and generation (decode) speed in tokens\n"
                 "per second, as a table with one row per test (ppN: a prompt of N tokens, tgN: N tokens\n"
                 "generated after a 16-token prompt): the mean and standard deviation over the\n"
                 "repetitions, and the median. Each row is printed when it is done.\n\n"
                 "  -m, --model MODEL    a .gguf file, a Hugging Face folder, or a name in the cache folder\n"
                 "  -p, --prefill LIST   prompt lengths, comma-separated (default 128,512)\n"
                 "  -n, --decode N       tokens to generate after a 16-token prompt (default 128; 0: skip)\n"
                 "  -r, --repetitions R  runs per measurement (default 3)\n"
                 "      --device D       cpu or cuda (default: cuda when a GPU is present)\n"
                 "      --gpu-suite      the GPU workloads: the card's read bandwidth and GEMM rate, decode at\n"
                 "                       batch 1 (context 512, 4096), prefill (512, 2048), batched decode (8, 32,\n"
                 "                       64 sequences); each as a figure and a fraction of the ceiling\n"
                 "      --only LIST      with --gpu-suite: only these workloads (decode512, decode4096,\n"
                 "                       prefill512, prefill2048, batch8, batch32, batch64)\n"
                 "      --no-ceilings    with --gpu-suite: skip measuring the card's ceilings (profiling runs,\n"
                 "                       which count kernel launches); fractions then print as n/a\n"
                 "  -t, --threads N      CPU threads (default: all cores)\n"
                 "      --precise        float activations in matrix products (slower)\n"
                 "      --json           one JSON object with every figure and sample, instead of the table\n"
                 "  -h, --help           this help\n");
}

// One test's tokens per second over the repetitions.
typedef struct bench_row {
    char test[32];
    int n_prompt, n_gen;
    double mean, stddev, median, min, max;
} bench_row;

static void row_stats(bench_row *row, int tokens, const double *seconds, int reps, double *rates, double *scratch) {
    double sum = 0, sq = 0;
    row->min = INFINITY, row->max = 0;
    for (int r = 0; r < reps; r++) {
        rates[r] = tokens / seconds[r];
        sum += rates[r];
        row->min = rates[r] < row->min ? rates[r] : row->min;
        row->max = rates[r] > row->max ? rates[r] : row->max;
    }
    row->mean = sum / reps;
    for (int r = 0; r < reps; r++) sq += (rates[r] - row->mean) * (rates[r] - row->mean);
    row->stddev = reps > 1 ? sqrt(sq / (reps - 1)) : 0.0; // the sample deviation, as llama-bench
    memcpy(scratch, rates, sizeof *rates * (size_t)reps);
    row->median = cli_median(scratch, reps);
}

// The table, as llama-bench prints it: one header, then a row per test.
typedef struct bench_table {
    const char *model;
    int model_w;
    char size[32], params[32], backend[48];
    int threads;
} bench_table;

static void print_cell(const char *s, int width, bool right) {
    // "±" is two bytes and one column.
    int cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) cols += (*p & 0xc0) != 0x80;
    int pad = width > cols ? width - cols : 0;
    printf(" %*s%s%*s |", right ? pad : 0, "", s, right ? 0 : pad, "");
}

static void table_header(const bench_table *t) {
    printf("|");
    print_cell("model", t->model_w, false);
    print_cell("size", 10, true);
    print_cell("params", 9, true);
    print_cell("backend", 18, false);
    print_cell("threads", 7, true);
    print_cell("test", 7, true);
    print_cell("t/s", 18, true);
    print_cell("median", 9, true);
    printf("\n|");
    const int widths[] = {t->model_w, 10, 9, 18, 7, 7, 18, 9};
    const bool right[] = {false, true, true, false, true, true, true, true};
    for (size_t i = 0; i < sizeof widths / sizeof widths[0]; i++) {
        printf(" ");
        for (int k = 0; k < widths[i] - (right[i] ? 1 : 0); k++) putchar('-');
        printf("%s |", right[i] ? ":" : "");
    }
    printf("\n");
}

static bool table_row(const bench_table *t, const bench_row *row) {
    char threads[16], rate[48], median[24];
    snprintf(threads, sizeof threads, "%d", t->threads);
    snprintf(rate, sizeof rate, "%.2f \xc2\xb1 %.2f", row->mean, row->stddev);
    snprintf(median, sizeof median, "%.2f", row->median);
    printf("|");
    print_cell(t->model, t->model_w, false);
    print_cell(t->size, 10, true);
    print_cell(t->params, 9, true);
    print_cell(t->backend, 18, false);
    print_cell(threads, 7, true);
    print_cell(row->test, 7, true);
    print_cell(rate, 18, true);
    print_cell(median, 9, true);
    printf("\n");
    if (fflush(stdout) == 0) return true;
    cli_stdout_error("bench", errno); // no use measuring on
    return false;
}

static void json_row(cli_json *j, const bench_row *row, const double *rates, int reps) {
    cli_json_object(j, NULL);
    cli_json_str(j, "test", row->test);
    cli_json_int(j, "n_prompt", row->n_prompt);
    cli_json_int(j, "n_gen", row->n_gen);
    cli_json_object(j, "tokens_per_second");
    cli_json_num(j, "mean", row->mean);
    cli_json_num(j, "stddev", row->stddev);
    cli_json_num(j, "median", row->median);
    cli_json_num(j, "min", row->min);
    cli_json_num(j, "max", row->max);
    cli_json_close(j);
    cli_json_array(j, "samples");
    for (int r = 0; r < reps; r++) cli_json_num(j, NULL, rates[r]);
    cli_json_close(j);
    cli_json_close(j);
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {{"model", required_argument, 0, 'm'}, {"prefill", required_argument, 0, 'p'},
                                         {"decode", required_argument, 0, 'n'},
                                         {"repetitions", required_argument, 0, 'r'},
                                         {"threads", required_argument, 0, 't'}, {"help", no_argument, 0, 'h'},
                                         {"precise", no_argument, 0, 'P'},
                                         {"device", required_argument, 0, OPT_DEVICE},
                                         {"gpu-suite", no_argument, 0, 'G'},
                                         {"only", required_argument, 0, 'O'},
                                         {"no-ceilings", no_argument, 0, 'C'},
                                         {"json", no_argument, 0, OPT_JSON},
                                         {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, 0);
    int sizes[BENCH_MAX_SIZES] = {128, 512}, n_sizes = 2, n_decode = 128, reps = 3, opt;
    bool gpu_suite = false, ceilings = true, json = false;
    const char *only = NULL;
    long v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:p:n:r:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': c.model = optarg; break;
        case 'p': {
            n_sizes = 0;
            char *list = strdup(optarg), *save = NULL;
            if (!list) {
                cli_error("bench", "out of memory");
                return 1;
            }
            for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (n_sizes == BENCH_MAX_SIZES || !cli_parse_int(tok, 1, BENCH_MAX_LENGTH, &v)) {
                    n_sizes = 0;
                    break;
                }
                sizes[n_sizes++] = (int)v;
            }
            free(list);
            if (n_sizes == 0) {
                cli_error("bench", "bad --prefill list '%s': expected up to %d prompt lengths from 1 to %d, "
                                   "comma-separated (e.g. 128,512)",
                          optarg, BENCH_MAX_SIZES, BENCH_MAX_LENGTH);
                return 2;
            }
            break;
        }
        case 'n':
            if (!cli_int_option("bench", "-n", optarg, 0, BENCH_MAX_LENGTH,
                                "the number of tokens to generate (0 skips decode)", &v))
                return 2;
            n_decode = (int)v;
            break;
        case 'r':
            if (!cli_int_option("bench", "-r", optarg, 1, 1000, "the number of repetitions", &v)) return 2;
            reps = (int)v;
            break;
        case 't':
            if (!cli_int_option("bench", "-t", optarg, 1, CLI_MAX_THREADS, "the number of CPU threads", &v)) return 2;
            c.threads = (int)v;
            break;
        case OPT_JSON: json = true; break;
        case 'P': c.precise = true; break;
        case 'G': gpu_suite = true; break;
        case 'C': ceilings = false; break;
        case 'O':
            if (!bench_gpu_workload_known(optarg)) {
                cli_error("bench", "bad --only list '%s': workloads are decode512, decode4096, prefill512, "
                                   "prefill2048, batch8, batch32, batch64",
                          optarg);
                return 2;
            }
            only = optarg;
            break;
        case OPT_DEVICE:
            if (!cli_parse_device(optarg, "bench", &c.device)) return 2;
            break;
        case 'h': bench_help(stdout); return 0;
        default: fprintf(stderr, "see 'kiln bench --help'\n"); return 2;
        }
    }
    if (!c.model) {
        cli_error("bench", "no model given: pass -m MODEL; see --help");
        return 2;
    }
    if (only && !gpu_suite) {
        cli_error("bench", "--only selects workloads of --gpu-suite: pass both");
        return 2;
    }
    if (!ceilings && !gpu_suite) {
        cli_error("bench", "--no-ceilings belongs to --gpu-suite: pass both");
        return 2;
    }
    if (json && gpu_suite) {
        cli_error("bench", "--json is not available for --gpu-suite yet: drop one of them");
        return 2;
    }
    if (optind < argc) {
        cli_error("bench", "unexpected argument '%s'; see --help", argv[optind]);
        return 2;
    }
    if (gpu_suite) c.device = KILN_DEVICE_CUDA;
    kiln_model *model = cli_load_model(&c, "bench");
    if (!model) return 1;
    if (gpu_suite) {
        int suite_rc = bench_gpu_suite(model, c.model, reps, only, ceilings);
        kiln_model_free(model);
        return suite_rc;
    }
    int max_prefill = 16;
    for (int i = 0; i < n_sizes; i++) max_prefill = sizes[i] > max_prefill ? sizes[i] : max_prefill;
    int ctx = max_prefill > 16 + n_decode ? max_prefill : 16 + n_decode;
    // The lengths must fit the context the model was trained for.
    const int trained = kiln_model_context_length(model);
    if (ctx > trained) {
        if (max_prefill > trained)
            cli_error("bench", "-p %d is longer than the %d tokens the model was trained for; use lengths up to %d",
                      max_prefill, trained, trained);
        else
            cli_error("bench", "-n %d after the 16-token prompt needs %d tokens, more than the %d the model was "
                               "trained for; use -n up to %d",
                      n_decode, 16 + n_decode, trained, trained - 16);
        kiln_model_free(model);
        return 2;
    }
    int vocab = kiln_model_vocab_size(model), rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(max_prefill + n_decode + 16));
    // times, scratch, and the rates of every row
    double *times = malloc(sizeof(double) * (size_t)reps * (BENCH_MAX_SIZES + 3));
    kiln_session *s = NULL;
    if (!ids || !times || kiln_session_create(model, ctx, &s) != KILN_OK) {
        cli_error("bench", "%s", ids && times ? kiln_last_error() : "out of memory");
        goto done;
    }
    double *scratch = times + reps, *rates = times + 2 * reps;
    bench_row rows[BENCH_MAX_SIZES + 1];
    int n_rows = 0;
    cli_fill_tokens(ids, max_prefill + n_decode + 16, vocab);

    kiln_model_info info;
    kiln_model_get_info(model, &info);
    uint64_t n_params = 0;
    for (uint64_t i = 0; i < info.n_tensors; i++) {
        kiln_tensor_info t;
        if (kiln_model_tensor_info(model, i, &t) != KILN_OK) continue;
        uint64_t n = 1;
        for (int d = 0; d < 4; d++) n *= (uint64_t)t.ne[d];
        n_params += n;
    }
    const bool on_cpu = strcmp(kiln_model_device(model), "cpu") == 0;
    bench_table table = {.model = c.model, .threads = kiln_model_threads(model)};
    table.model_w = (int)strlen(c.model) > 5 ? (int)strlen(c.model) : 5;
    snprintf(table.size, sizeof table.size, "%.2f MiB", (double)info.weight_bytes / (1024.0 * 1024.0));
    snprintf(table.params, sizeof table.params, n_params >= 1000000000 ? "%.2f B" : "%.2f M",
             n_params >= 1000000000 ? n_params / 1e9 : n_params / 1e6);
    if (on_cpu)
        snprintf(table.backend, sizeof table.backend, "cpu %s%s", kiln_cpu_kernels(), c.precise ? " precise" : "");
    else
        snprintf(table.backend, sizeof table.backend, "%s", kiln_model_device(model));
    if (!json) {
        printf("kiln bench: %s, %d repetitions (t/s: mean \xc2\xb1 standard deviation)\n", c.model, reps);
        table_header(&table);
        if (fflush(stdout) != 0) {
            cli_stdout_error("bench", errno);
            goto done;
        }
    }
    // One untimed pass warms caches and the page mapping of the weights.
    kiln_session_eval(s, ids, 16, NULL);
    for (int i = 0; i < n_sizes; i++) {
        for (int r = 0; r < reps; r++) {
            kiln_session_reset(s);
            double t0 = kiln_now_seconds();
            // eval only queues the work on a GPU: wait for it inside the timing.
            if (kiln_session_eval(s, ids, (size_t)sizes[i], NULL) != KILN_OK || kiln_session_sync(s))
                goto fail;
            times[r] = kiln_now_seconds() - t0;
        }
        bench_row *row = &rows[n_rows];
        *row = (bench_row){.n_prompt = sizes[i]};
        snprintf(row->test, sizeof row->test, "pp%d", sizes[i]);
        row_stats(row, sizes[i], times, reps, rates + (size_t)n_rows * reps, scratch);
        if (!json && !table_row(&table, row)) goto done;
        n_rows++;
    }
    if (n_decode > 0) {
        for (int r = 0; r < reps; r++) {
            kiln_session_reset(s);
            if (kiln_session_eval(s, ids, 16, NULL) != KILN_OK || kiln_session_sync(s)) goto fail;
            double t0 = kiln_now_seconds();
            for (int k = 0; k < n_decode; k++)
                if (kiln_session_eval(s, &ids[16 + k], 1, NULL) != KILN_OK) goto fail;
            if (kiln_session_sync(s) != KILN_OK) goto fail;
            times[r] = kiln_now_seconds() - t0;
        }
        bench_row *row = &rows[n_rows];
        *row = (bench_row){.n_gen = n_decode};
        snprintf(row->test, sizeof row->test, "tg%d", n_decode);
        row_stats(row, n_decode, times, reps, rates + (size_t)n_rows * reps, scratch);
        if (!json && !table_row(&table, row)) goto done;
        n_rows++;
    }
    if (json) {
        cli_json j;
        cli_json_begin(&j, stdout);
        cli_json_object(&j, NULL);
        cli_json_str(&j, "model", c.model);
        cli_json_str(&j, "path", c.model_path);
        cli_json_int(&j, "size_bytes", (long long)info.weight_bytes);
        cli_json_int(&j, "n_params", (long long)n_params);
        cli_json_str(&j, "device", kiln_model_device(model));
        if (on_cpu) {
            cli_json_int(&j, "threads", table.threads);
            cli_json_str(&j, "kernels", kiln_cpu_kernels());
        }
        cli_json_bool(&j, "precise", c.precise);
        cli_json_int(&j, "repetitions", reps);
        cli_json_array(&j, "results");
        for (int i = 0; i < n_rows; i++) json_row(&j, &rows[i], rates + (size_t)i * reps, reps);
        cli_json_end(&j);
    }
    rc = 0;
    goto done;
fail:
    cli_error("bench", "%s", kiln_last_error());
done:
    free(ids);
    free(times);
    kiln_session_free(s);
    kiln_model_free(model);
    return rc;
}
