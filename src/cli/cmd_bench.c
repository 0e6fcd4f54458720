// kiln bench: prefill and decode throughput, median of several runs.
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "cli/bench_gpu.h"
#include "cli/cli.h"
#include "runtime/generate.h"
#include "runtime/session.h"

#define BENCH_MAX_SIZES 8

static void bench_help(FILE *out) {
    fprintf(out, "usage: kiln bench -m MODEL [options]\n\n"
                 "Measures prompt processing (prefill) and generation (decode) speed in tokens\n"
                 "per second; prints the median of the repetitions.\n\n"
                 "  -m, --model PATH     GGUF file or Hugging Face folder (required)\n"
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
                 "  -h, --help           this help\n");
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
                                         {0, 0, 0, 0}};
    cli_common c;
    cli_common_init(&c, 0);
    int sizes[BENCH_MAX_SIZES] = {128, 512}, n_sizes = 2, n_decode = 128, reps = 3, opt;
    bool gpu_suite = false, ceilings = true;
    const char *only = NULL;
    long v;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "m:p:n:r:t:h", opts, NULL)) != -1) {
        switch (opt) {
        case 'm': c.model = optarg; break;
        case 'p': {
            n_sizes = 0;
            char *list = strdup(optarg), *save = NULL;
            for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
                if (n_sizes == BENCH_MAX_SIZES || !cli_parse_int(tok, 1, 1 << 20, &v)) {
                    cli_error("bench", "bad --prefill list '%s' (up to %d lengths, e.g. 128,512)", optarg,
                              BENCH_MAX_SIZES);
                    free(list);
                    return 2;
                }
                sizes[n_sizes++] = (int)v;
            }
            free(list);
            break;
        }
        case 'n':
            if (!cli_parse_int(optarg, 0, 1 << 20, &v)) goto bad;
            n_decode = (int)v;
            break;
        case 'r':
            if (!cli_parse_int(optarg, 1, 1000, &v)) goto bad;
            reps = (int)v;
            break;
        case 't':
            if (!cli_parse_int(optarg, 1, 1024, &v)) goto bad;
            c.threads = (int)v;
            break;
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
    int vocab = kiln_model_vocab_size(model), rc = 1;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)(max_prefill + n_decode + 16));
    double *times = malloc(sizeof(double) * (size_t)reps);
    kiln_session *s = NULL;
    if (!ids || !times || kiln_session_create(model, ctx, &s) != KILN_OK) {
        cli_error("bench", "%s", ids && times ? kiln_last_error() : "out of memory");
        goto done;
    }
    cli_fill_tokens(ids, max_prefill + n_decode + 16, vocab);
    if (strcmp(kiln_model_device(model), "cpu") == 0)
        printf("kiln bench: %s, %s%s, %d repetitions\n", c.model, kiln_model_device_info(model),
               c.precise ? " (precise)" : "", reps);
    else
        printf("kiln bench: %s on %s, %d repetitions\n", c.model, kiln_model_device(model), reps);
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
        printf("kiln prefill %d: %.1f tok/s\n", sizes[i], sizes[i] / cli_median(times, reps));
        fflush(stdout);
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
        printf("kiln decode %d: %.1f tok/s\n", n_decode, n_decode / cli_median(times, reps));
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
bad:
    cli_error("bench", "'%s' is not a valid number for this option", optarg);
    return 2;
}
