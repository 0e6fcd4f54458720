// The kiln binary as a user meets it: help, bad arguments, and each command
// on the default model (and on Gemma 3, an architecture kiln cannot run,
// whose tokenizer it reads).
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "test_util.h"

static char output[1 << 16];               // kiln(): stdout and stderr together
static char out_buf[1 << 18], err_buf[1 << 16]; // kiln_io(): each apart
static char tmp_dir[PATH_MAX];

// Runs `kiln ARGS` through the shell, stdout and stderr together; returns the exit code.
static int kiln(const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1 </dev/null", KILN_CLI_PATH, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(output, 1, sizeof output - 1, p);
    output[n] = '\0';
    int status = pclose(p);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void slurp(const char *path, char *buf, size_t cap) {
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, cap - 1, f) : 0;
    buf[n] = '\0';
    if (f) fclose(f);
}

static void write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
}

// Runs `kiln ARGS` with `in` on stdin (NULL: /dev/null), stdout into out_buf
// and stderr into err_buf; returns the exit code.
static int kiln_io(const char *in, const char *fmt, ...) {
    char args[6000], cmd[20000], in_path[PATH_MAX + 16], out_path[PATH_MAX + 16], err_path[PATH_MAX + 16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(in_path, sizeof in_path, "%s/stdin", tmp_dir);
    snprintf(out_path, sizeof out_path, "%s/stdout", tmp_dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    if (in) write_file(in_path, in);
    snprintf(cmd, sizeof cmd, "'%s' %s <'%s' >'%s' 2>'%s'", KILN_CLI_PATH, args, in ? in_path : "/dev/null",
             out_path, err_path);
    int status = system(cmd);
    slurp(out_path, out_buf, sizeof out_buf);
    slurp(err_path, err_buf, sizeof err_buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void expect_in(const char *buf, const char *needle, const char *what) {
    if (!strstr(buf, needle)) fail_msg("expected \"%s\" in %s:\n%s", needle, what, buf);
}
static void expect(const char *needle) { expect_in(output, needle, "the output"); }
static void expect_out(const char *needle) { expect_in(out_buf, needle, "stdout"); }
static void expect_err(const char *needle) { expect_in(err_buf, needle, "stderr"); }

// Single-quotes s for the shell.
static const char *sh_quote(const char *s) {
    static char buf[8192];
    size_t n = 0;
    buf[n++] = '\'';
    for (; *s && n < sizeof buf - 8; s++) {
        if (*s == '\'') {
            memcpy(buf + n, "'\\''", 4);
            n += 4;
        } else {
            buf[n++] = *s;
        }
    }
    buf[n++] = '\'';
    buf[n] = '\0';
    return buf;
}

static cJSON *parse_json(const char *text) {
    cJSON *j = cJSON_Parse(text);
    if (!j) fail_msg("not JSON:\n%s", text);
    return j;
}

static double json_number(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsNumber(v)) fail_msg("no number \"%s\"", key);
    return v->valuedouble;
}

static const char *json_string(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(v)) fail_msg("no string \"%s\"", key);
    return v->valuestring;
}

static const char *require_model(void) {
    const char *model = kiln_test_model_path();
    if (!model) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    return model;
}

static const char *gemma_path(void) {
    static char path[PATH_MAX];
    const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
    if (cache && *cache) snprintf(path, sizeof path, "%s/gemma-3-270m-q4_k_m.gguf", cache);
    else snprintf(path, sizeof path, "%s/.cache/kiln/gemma-3-270m-q4_k_m.gguf", home ? home : "");
    if (access(path, R_OK) != 0) {
        printf("SKIP: %s not found (scripts/fetch-gemma.sh)\n", path);
        skip();
    }
    return path;
}

// ---- A kiln process to signal -------------------------------------------------

typedef struct proc {
    pid_t pid;
    int in, out; // its stdin (ours to write) and stdout (ours to read)
    char got[1 << 16];
    size_t n_got;
} proc;

static void spawn(proc *p, const char *fmt, ...) {
    char args[4096], cmd[10000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "exec '%s' %s 2>'%s/stderr'", KILN_CLI_PATH, args, tmp_dir);
    char err_path[PATH_MAX + 16];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    unlink(err_path); // wait_stderr must not read an earlier process's
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    memset(p, 0, sizeof *p);
    p->pid = fork();
    assert_true(p->pid >= 0);
    if (p->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]), close(in[1]), close(out[0]), close(out[1]);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    p->in = in[1];
    p->out = out[0];
}

// Reads stdout until it holds at least `want` bytes (or ends); fails after a minute.
static void read_until(proc *p, size_t want) {
    while (p->n_got < want && p->n_got < sizeof p->got - 1) {
        struct pollfd pfd = {.fd = p->out, .events = POLLIN};
        int r = poll(&pfd, 1, 60000);
        if (r == 0) fail_msg("kiln printed nothing for a minute (got %zu bytes)", p->n_got);
        if (r < 0 && errno == EINTR) continue;
        ssize_t n = read(p->out, p->got + p->n_got, sizeof p->got - 1 - p->n_got);
        if (n <= 0) break;
        p->n_got += (size_t)n;
        p->got[p->n_got] = '\0';
    }
}

static void send_text(proc *p, const char *text) {
    assert_int_equal(write(p->in, text, strlen(text)), (ssize_t)strlen(text));
}

// Closes stdin, reads stdout to its end, and returns the exit code (-1 if by a signal).
static int finish(proc *p) {
    if (p->in >= 0) close(p->in);
    p->in = -1;
    read_until(p, sizeof p->got);
    close(p->out);
    int status;
    assert_int_equal(waitpid(p->pid, &status, 0), p->pid);
    char err_path[PATH_MAX + 16];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    slurp(err_path, err_buf, sizeof err_buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

// Waits (a minute at most) until the process's stderr holds needle.
static void wait_stderr(const char *needle) {
    char err_path[PATH_MAX + 16];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    for (int i = 0; i < 1200; i++) {
        slurp(err_path, err_buf, sizeof err_buf);
        if (strstr(err_buf, needle)) return;
        pause_ms(50);
    }
    fail_msg("no \"%s\" on stderr after a minute:\n%s", needle, err_buf);
}

// ---- Tests -----------------------------------------------------------------------

static void test_help_everywhere(void **state) {
    (void)state;
    assert_int_equal(kiln("--help"), 0);
    expect("usage: kiln COMMAND");
    const char *cmds[] = {"run", "chat", "tokenize", "inspect", "bench"};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        assert_int_equal(kiln("%s --help", cmds[i]), 0);
        expect("usage: kiln");
        expect(cmds[i]);
    }
}

static void test_bad_arguments(void **state) {
    (void)state;
    assert_int_equal(kiln(""), 2);
    expect("usage");
    assert_int_equal(kiln("frobnicate"), 2);
    expect("unknown command 'frobnicate'");
    assert_int_equal(kiln("run -p hi"), 2);
    expect("no model given");
    assert_int_equal(kiln("run -m /nonexistent/model.gguf -p hi"), 1);
    expect("/nonexistent/model.gguf");
    assert_int_equal(kiln("run -m x.gguf -p hi --temp warm"), 2);
    expect("--temp 'warm': expected the temperature, a number from 0 (greedy) to below 10000");
    assert_int_equal(kiln("run -m x.gguf -p hi --top-p 2"), 2);
    expect("--top-p '2': expected a probability mass above 0 and at most 1");
    assert_int_equal(kiln("run -m x.gguf -p hi --min-p -0.5"), 2);
    expect("--min-p '-0.5': expected a number from 0 to 1");
    // Each whole-number option names itself and its range.
    assert_int_equal(kiln("run -m x.gguf -p hi -n -5"), 2);
    expect("-n '-5': expected -1 (until end of generation or a full context) or a whole number of new tokens "
           "from 0 to 16777216");
    assert_int_equal(kiln("run -m x.gguf -p hi -c 0"), 2);
    expect("-c '0': expected the context length in tokens, a whole number from 1 to 4194304");
    assert_int_equal(kiln("run -m x.gguf -p hi -t 0"), 2);
    expect("-t '0': expected the number of CPU threads, a whole number from 1 to 1024");
    assert_int_equal(kiln("chat -m x.gguf -c 99999999999999999999"), 2);
    expect("-c '99999999999999999999': expected the context length in tokens, a whole number from 1 to 4194304");
    assert_int_equal(kiln("run -m x.gguf -p hi --top-k -1"), 2);
    expect("--top-k '-1': expected the number of tokens to keep (0 is off), a whole number from 0 to 16777216");
    assert_int_equal(kiln("run -m x.gguf -p hi --seed -2"), 2);
    expect("--seed '-2': expected -1 (a random seed) or a whole number from 0 to 18446744073709551615");
    assert_int_equal(kiln("run -m x.gguf -p hi --seed 12abc"), 2);
    expect("--seed '12abc'");
    assert_int_equal(kiln("inspect -c 0 x.gguf"), 2);
    expect("-c '0': expected the context length in tokens, a whole number from 1 to 4194304");
    assert_int_equal(kiln("bench -m x.gguf -r 0"), 2);
    expect("-r '0': expected the number of repetitions, a whole number from 1 to 1000");
    assert_int_equal(kiln("bench -m x.gguf -n -1"), 2);
    expect("-n '-1': expected the number of tokens to generate (0 skips decode), a whole number from 0 to 1048576");
    assert_int_equal(kiln("bench -m x.gguf -t 2000"), 2);
    expect("-t '2000': expected the number of CPU threads, a whole number from 1 to 1024");
    assert_int_equal(kiln("run -m x.gguf -p hi --bogus"), 2);
    assert_int_equal(kiln("run -m x.gguf"), 2);
    expect("no prompt given: pass -p TEXT or -f FILE");
    assert_int_equal(kiln("run -m x.gguf -p hi -f prompt.txt"), 2);
    expect("-p and -f both give the prompt");
    assert_int_equal(kiln("run -m x.gguf -p hi --template vicuna"), 2);
    expect("unknown --template 'vicuna'");
    assert_int_equal(kiln("chat -m x.gguf --template vicuna"), 2);
    expect("unknown --template 'vicuna'");
    assert_int_equal(kiln("tokenize -m x.gguf"), 2);
    expect("exactly one TEXT");
    assert_int_equal(kiln("inspect"), 2);
    expect("no model given");
    assert_int_equal(kiln("inspect -m a.gguf b.gguf"), 2);
    expect("exactly one MODEL");
    assert_int_equal(kiln("bench -m x.gguf -p 12,abc"), 2);
    expect("bad --prefill list '12,abc': expected up to 8 prompt lengths from 1 to 1048576");
    assert_int_equal(kiln("bench -m x.gguf --gpu-suite --only decode512,warp9"), 2);
    expect("bad --only list 'decode512,warp9'");
    assert_int_equal(kiln("bench -m x.gguf --only batch8"), 2);
    expect("--only selects workloads of --gpu-suite");
    assert_int_equal(kiln("bench -m x.gguf --no-ceilings"), 2);
    expect("--no-ceilings belongs to --gpu-suite");
    assert_int_equal(kiln("bench -m x.gguf --gpu-suite --json"), 2);
    expect("--json is not available for --gpu-suite");
    assert_int_equal(kiln("run -m x.gguf -p hi --device tpu"), 2);
    expect("unknown device 'tpu': use cpu or cuda");
    assert_int_equal(kiln("inspect --device tpu x.gguf"), 2);
    expect("unknown device 'tpu'");
    assert_int_equal(kiln("run -m '' -p hi"), 1);
    expect("the model name is empty");
}

// --device cuda: a clear refusal where there is no GPU (or no CUDA in the
// build), the GPU's memory report where there is one.
static void test_device(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln("run -m '%s' -p hi -n 1 --device cpu", model), 0);
    setenv("KILN_DEVICE", "abacus", 1);
    assert_int_equal(kiln("run -m '%s' -p hi -n 1", model), 1);
    expect("KILN_DEVICE=abacus: expected cpu or cuda");
    setenv("KILN_DEVICE", "cpu", 1);
    if (kiln_cuda_device_count() == 0) {
        assert_int_equal(kiln("run -m '%s' -p hi -n 1 --device cuda", model), 1);
        expect("--device cpu"); // the message says what to do instead
        return;
    }
    assert_int_equal(kiln("inspect --no-tensors --device cuda '%s'", model), 0);
    expect("memory (cuda):");
    expect("weights (on the GPU)");
    expect("kv cache (f16)");
    expect("device total");
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 16 --temp 0 --device cuda", model), 0);
    expect("Paris");
}

static void test_with_model(void **state) {
    (void)state;
    const char *model = require_model();
    // Ids from SmolLM2's own tokenizer pipeline (tools/make_reference_fixtures.py's).
    assert_int_equal(kiln("tokenize -m '%s' 'Hello world, 2024!'", model), 0);
    expect("19556 905 28 216 34 32 34 36 17\n");
    assert_int_equal(kiln("tokenize -m '%s' '<|im_start|>user'", model), 0);
    expect("1 4093\n");

    assert_int_equal(kiln("inspect --no-tensors '%s'", model), 0);
    expect("layers:         30");
    expect("heads:          9 query, 3 key/value (head size 64)");
    expect("chat template:  chatml");
    assert_int_equal(kiln("inspect '%s'", model), 0);
    expect("blk.0.attn_q.weight");
    expect("Q4_1");
    assert_int_equal(kiln("inspect --no-tensors -m '%s'", model), 0); // -m, like every other command
    expect("layers:         30");

    static char first[sizeof output];
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 12 --seed 7", model), 0);
    expect("The capital of France is");
    snprintf(first, sizeof first, "%s", output);
    // Same seed, same text (the statistics line after it has timings).
    *strstr(first, "kiln run: prompt") = '\0';
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 12 --seed 7", model), 0);
    assert_true(strncmp(output, first, strlen(first)) == 0);

    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 16 --temp 0", model), 0);
    expect("Paris");
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 16 --temp 0 --stop Paris", model), 0);
    assert_null(strstr(output, "Paris"));

    // The table: a header, then one row per test, mean ± deviation.
    assert_int_equal(kiln_io(NULL, "bench -m '%s' -p 16 -n 4 -r 2 -t 1", model), 0);
    expect_out("| model ");
    expect_out(" t/s |");
    expect_out("pp16 |");
    expect_out("tg4 |");
    expect_out("\xc2\xb1");
    // Lengths are checked against the model's context before anything runs.
    assert_int_equal(kiln_io(NULL, "bench -m '%s' -p 9000 -n 4", model), 2);
    expect_err("-p 9000 is longer than the 8192 tokens the model was trained for");
    assert_int_equal(kiln_io(NULL, "bench -m '%s' -p 16 -n 8180", model), 2);
    expect_err("use -n up to 8176");
}

// The statistics of run: on stderr, always; --json makes them one object.
static void test_run_statistics(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p 'The capital of France is' -n 4 --temp 0", model), 0);
    expect_err("kiln run: prompt 5 tokens in ");
    expect_err("tok/s), generated 4 tokens in ");
    expect_err("stop: length");
    assert_null(strstr(out_buf, "kiln run:"));
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p 'The capital of France is' -n 4 --temp 0 --json --seed 42",
                             model),
                     0);
    cJSON *j = parse_json(err_buf);
    assert_int_equal((int)json_number(j, "n_prompt"), 5);
    assert_int_equal((int)json_number(j, "n_generated"), 4);
    assert_true(json_number(j, "prefill_tokens_per_second") > 0);
    assert_true(json_number(j, "decode_tokens_per_second") > 0);
    assert_true(json_number(j, "prefill_seconds") > 0);
    assert_string_equal(json_string(j, "stop"), "length");
    assert_string_equal(json_string(j, "seed"), "42");
    cJSON_Delete(j);
}

// -f FILE and -f - (one final newline dropped), --no-display-prompt, -n 0
// (no new tokens), and no newline the model did not write.
static void test_run_prompt_sources(void **state) {
    (void)state;
    const char *model = require_model();
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/prompt.txt", tmp_dir);
    write_file(path, "The capital of France is\n");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s' -n 0", model, path), 0);
    assert_string_equal(out_buf, "The capital of France is");
    expect_err("prompt 5 tokens");
    expect_err("generated 0 tokens");
    assert_int_equal(kiln_io("The capital of France is\n", "run -m '%s' -f - -n 0", model), 0);
    assert_string_equal(out_buf, "The capital of France is");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s' -n 0 --no-display-prompt", model, path), 0);
    assert_string_equal(out_buf, "");
    // The continuation alone, then with the prompt in front: the same bytes.
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s' -n 8 --temp 0 --no-display-prompt", model, path), 0);
    static char reply[sizeof out_buf];
    snprintf(reply, sizeof reply, "%s", out_buf);
    assert_true(strlen(reply) > 0);
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p 'The capital of France is' -n 8 --temp 0", model), 0);
    assert_true(strncmp(out_buf, "The capital of France is", 24) == 0);
    assert_string_equal(out_buf + 24, reply); // nothing added after what the model wrote
    // Several lines, and the errors.
    write_file(path, "Line one\nline two\n\n");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s' -n 0", model, path), 0);
    assert_string_equal(out_buf, "Line one\nline two\n");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s/absent.txt'", model, tmp_dir), 1);
    expect_err("cannot open");
    expect_err("absent.txt");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -f '%s'", model, tmp_dir), 1);
    expect_err("cannot read");
    assert_int_equal(kiln_io("", "run -m '%s' -f - --no-bos", model), 1);
    expect_err("the prompt is empty");
}

// -n -1: until end of generation or a full context.
static void test_run_unlimited(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p 'Once upon a time' -n -1 -c 40 --ignore-eos --temp 0 --json",
                             model),
                     0);
    cJSON *j = parse_json(err_buf);
    assert_string_equal(json_string(j, "stop"), "context");
    // The context holds 40 tokens; the last one generated needs no room.
    assert_int_equal((int)json_number(j, "n_prompt") + (int)json_number(j, "n_generated"), 41);
    cJSON_Delete(j);
}

// --seed -1 (and no --seed): a random seed each run, reported in the statistics.
static void test_random_seed(void **state) {
    (void)state;
    const char *model = require_model();
    static char seeds[2][32];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(kiln_io(NULL, "run -m '%s' -p hi -n 1 --seed -1 --json", model), 0);
        cJSON *j = parse_json(err_buf);
        snprintf(seeds[i], sizeof seeds[i], "%s", json_string(j, "seed"));
        cJSON_Delete(j);
    }
    assert_string_not_equal(seeds[0], seeds[1]);
}

// A bare name is looked up in the cache folder (KILN_CACHE), with or without .gguf.
static void test_model_names(void **state) {
    (void)state;
    const char *model = require_model();
    char cache[PATH_MAX + 16], link[PATH_MAX + 64];
    snprintf(cache, sizeof cache, "%s/cache", tmp_dir);
    mkdir(cache, 0755);
    snprintf(link, sizeof link, "%s/SmolLM2-135M-Instruct.Q4_1.gguf", cache);
    unlink(link);
    assert_int_equal(symlink(model, link), 0);
    const char *old = getenv("KILN_CACHE");
    char *saved = old ? strdup(old) : NULL;
    setenv("KILN_CACHE", cache, 1);
    assert_int_equal(kiln("tokenize -m SmolLM2-135M-Instruct.Q4_1 'Hello world, 2024!'"), 0);
    expect("19556 905 28 216 34 32 34 36 17\n");
    assert_int_equal(kiln("tokenize -m SmolLM2-135M-Instruct.Q4_1.gguf 'Hello world, 2024!'"), 0);
    expect("19556 905 28 216 34 32 34 36 17\n");
    assert_int_equal(kiln("run -m SmolLM2-135M-Instruct.Q4_1 -p 'The capital of France is' -n 4 --temp 0"), 0);
    expect("The capital of France is");
    assert_int_equal(kiln("inspect --no-tensors SmolLM2-135M-Instruct.Q4_1"), 0);
    expect("model:          SmolLM2-135M-Instruct.Q4_1 (GGUF)");
    assert_int_equal(kiln("run -m NoSuchModel-7B -p hi"), 1);
    expect("no model 'NoSuchModel-7B'");
    expect("neither NoSuchModel-7B nor NoSuchModel-7B.gguf is in the cache folder");
    expect(cache);
    assert_int_equal(kiln("inspect NoSuchModel-7B.gguf"), 1);
    expect("no model 'NoSuchModel-7B.gguf'");
    if (saved) setenv("KILN_CACHE", saved, 1);
    else unsetenv("KILN_CACHE");
    free(saved);
}

// A failed write to stdout is an error, for every command.
static void test_stdout_full(void **state) {
    (void)state;
    const char *model = require_model();
    char cmd[PATH_MAX * 2 + 256], err_path[PATH_MAX + 16];
    snprintf(err_path, sizeof err_path, "%s/stderr", tmp_dir);
    const char *args[] = {"run -m '%s' -p 'The capital of France is' -n 4", "tokenize -m '%s' hello",
                          "inspect '%s'", "bench -m '%s' -p 8 -n 2 -r 1", "--help%.0s"};
    for (size_t i = 0; i < sizeof args / sizeof *args; i++) {
        char a[PATH_MAX + 128];
        snprintf(a, sizeof a, args[i], model);
        snprintf(cmd, sizeof cmd, "'%s' %s >/dev/full 2>'%s' </dev/null", KILN_CLI_PATH, a, err_path);
        int status = system(cmd);
        assert_true(WIFEXITED(status));
        if (WEXITSTATUS(status) != 1) fail_msg("'%s' > /dev/full exited %d", a, WEXITSTATUS(status));
        slurp(err_path, err_buf, sizeof err_buf);
        expect_err("cannot write to standard output: No space left on device");
    }
    // chat, too (printf 'hi' | kiln chat > /dev/full).
    snprintf(cmd, sizeof cmd, "printf 'hi\\n' | '%s' chat -m '%s' -n 4 >/dev/full 2>'%s'", KILN_CLI_PATH, model,
             err_path);
    int status = system(cmd);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 1);
    slurp(err_path, err_buf, sizeof err_buf);
    expect_err("cannot write to standard output");
}

// --json of inspect and tokenize parses, with the same facts as the text.
static void test_json(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln_io(NULL, "inspect --json '%s'", model), 0);
    cJSON *j = parse_json(out_buf);
    assert_string_equal(json_string(j, "architecture"), "llama");
    assert_string_equal(json_string(j, "format"), "gguf");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItem(j, "supported")));
    assert_int_equal((int)json_number(j, "n_layers"), 30);
    assert_int_equal((int)json_number(j, "n_heads"), 9);
    assert_int_equal((int)json_number(j, "context_trained"), 8192);
    assert_int_equal((int)json_number(j, "context"), 4096);
    assert_string_equal(json_string(j, "chat_template_family"), "chatml");
    const cJSON *tok = cJSON_GetObjectItem(j, "tokenizer");
    assert_string_equal(json_string(tok, "kind"), "byte-level BPE");
    assert_int_equal((int)json_number(tok, "bos"), 1);
    const cJSON *mem = cJSON_GetObjectItem(j, "memory");
    assert_string_equal(json_string(mem, "kv_dtype"), "f32");
    assert_true(json_number(mem, "kv_cache") > 0);
    const cJSON *tensors = cJSON_GetObjectItem(j, "tensors");
    assert_int_equal(cJSON_GetArraySize(tensors), 272);
    const cJSON *t0 = cJSON_GetArrayItem(tensors, 0);
    assert_true(json_number(t0, "bytes") > 0);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(t0, "shape")) >= 1);
    cJSON_Delete(j);
    assert_int_equal(kiln_io(NULL, "inspect --json --no-tensors '%s'", model), 0);
    j = parse_json(out_buf);
    assert_null(cJSON_GetObjectItem(j, "tensors"));
    cJSON_Delete(j);

    assert_int_equal(kiln_io(NULL, "tokenize --json --pieces -m '%s' '<|im_start|>user \xc3\xa9\n'", model), 0);
    j = parse_json(out_buf);
    const cJSON *ids = cJSON_GetObjectItem(j, "ids"), *pieces = cJSON_GetObjectItem(j, "pieces");
    assert_true(cJSON_GetArraySize(ids) >= 3);
    assert_int_equal(cJSON_GetArraySize(ids), cJSON_GetArraySize(pieces));
    assert_int_equal(cJSON_GetArrayItem(ids, 0)->valueint, 1);
    assert_string_equal(cJSON_GetArrayItem(pieces, 0)->valuestring, "<|im_start|>");
    cJSON_Delete(j);

    assert_int_equal(kiln_io(NULL, "bench --json -m '%s' -p 16 -n 4 -r 2 -t 1", model), 0);
    j = parse_json(out_buf);
    assert_int_equal((int)json_number(j, "repetitions"), 2);
    const cJSON *results = cJSON_GetObjectItem(j, "results");
    assert_int_equal(cJSON_GetArraySize(results), 2);
    const cJSON *pp = cJSON_GetArrayItem(results, 0), *tg = cJSON_GetArrayItem(results, 1);
    assert_string_equal(json_string(pp, "test"), "pp16");
    assert_string_equal(json_string(tg, "test"), "tg4");
    const cJSON *tps = cJSON_GetObjectItem(pp, "tokens_per_second");
    assert_true(json_number(tps, "mean") > 0);
    assert_true(json_number(tps, "min") <= json_number(tps, "max"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(pp, "samples")), 2);
    cJSON_Delete(j);
}

// -c above the trained context: a warning, and the run goes on.
static void test_context_warning(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p hi -n 1 -c 8200", model), 0);
    expect_err("warning: -c 8200 is above the 8192 tokens the model was trained for");
    assert_int_equal(kiln_io(NULL, "inspect --no-tensors -c 10000 '%s'", model), 0);
    expect_err("warning: -c 10000 is above the 8192 tokens");
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p hi -n 1 -c 8192", model), 0);
    assert_null(strstr(err_buf, "warning"));
}

// run --system / --template: the prompt answered as a chat turn, the same
// tokens as the rendered template given as a plain prompt.
static void test_run_chat_template(void **state) {
    (void)state;
    const char *model = require_model();
    static char reply[sizeof out_buf];
    const char *cases[][2] = {
        {"--system 'Answer in one sentence.'", "<|im_start|>system\nAnswer in one sentence.<|im_end|>\n"},
        // The model's own family keeps its default system prompt.
        {"--template chatml", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
                              "Face<|im_end|>\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        assert_int_equal(kiln_io(NULL, "run -m '%s' %s -p 'What is the capital of France?' -n 8 --temp 0 --json",
                                 model, cases[i][0]),
                         0);
        assert_null(strstr(out_buf, "What is the capital")); // the reply, not the prompt
        snprintf(reply, sizeof reply, "%s", out_buf);
        cJSON *j = parse_json(err_buf);
        int n_prompt = (int)json_number(j, "n_prompt");
        cJSON_Delete(j);
        char rendered[1024];
        snprintf(rendered, sizeof rendered,
                 "%s<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
                 cases[i][1]);
        assert_int_equal(kiln_io(NULL, "run -m '%s' -p %s -n 8 --temp 0 --no-display-prompt --json", model,
                                 sh_quote(rendered)),
                         0);
        assert_string_equal(out_buf, reply);
        j = parse_json(err_buf);
        assert_int_equal((int)json_number(j, "n_prompt"), n_prompt);
        cJSON_Delete(j);
    }
    assert_int_equal(kiln_io(NULL, "run -m '%s' --system hi --no-bos -p x", model), 2);
    expect_err("--no-bos does not go with --system or --template");
}

// chat from a pipe: /stats, /reset with its confirmation, a """ message.
static void test_chat_commands(void **state) {
    (void)state;
    const char *model = require_model();
    assert_int_equal(kiln_io("What is the capital of France? Answer briefly.\n/stats\n/reset\nn\n/stats\n"
                             "/reset\ny\n/stats\n",
                             "chat -m '%s' --temp 0 -n 24", model),
                     0);
    expect_out("Paris");
    expect_err("last reply: prompt ");
    expect_err("tok/s), ");
    expect_err("conversation: 1 turn, ");
    expect_err("forget the conversation and start over? [y/N]");
    expect_err("conversation kept");
    expect_err("conversation reset");
    expect_err("conversation: 0 turns, 0 of 4096 context tokens");
    // The order: kept (the turn still counted), then reset.
    const char *kept = strstr(err_buf, "conversation kept"), *reset = strstr(err_buf, "conversation reset");
    assert_true(kept < reset);
    assert_non_null(strstr(kept, "conversation: 1 turn, "));
    // Several lines between """ and """ make one message, one turn.
    assert_int_equal(kiln_io("\"\"\"\nWhat is the capital\nof France? Answer briefly.\n\"\"\"\n/stats\n",
                             "chat -m '%s' --temp 0 -n 24", model),
                     0);
    expect_out("Paris");
    expect_err("conversation: 1 turn, ");
    // A chat message that just looks like a command is sent (only exact commands are).
    assert_int_equal(kiln_io("/stats please\n/stats\n", "chat -m '%s' --temp 0 -n 4", model), 0);
    expect_err("conversation: 1 turn, ");
    assert_int_equal(kiln_io(NULL, "chat -m '%s' stray", model), 2);
    expect_err("unexpected argument 'stray'");
}

// Ctrl-C in run: the generation stops, the statistics are printed, exit 130.
static void test_run_interrupt(void **state) {
    (void)state;
    const char *model = require_model();
    proc p;
    spawn(&p, "run -m '%s' -p 'Once upon a time' --no-display-prompt -n -1 -c 2048 --ignore-eos", model);
    read_until(&p, 1); // generating
    kill(p.pid, SIGINT);
    assert_int_equal(finish(&p), 130);
    expect_err("kiln run: prompt 4 tokens in ");
    expect_err("stop: interrupted");
    assert_null(strstr(err_buf, "generated 0 tokens"));
}

// Ctrl-C in chat: the reply stops, the conversation (with the reply so far)
// is kept; at the prompt, a second Ctrl-C quits.
static void test_chat_interrupt(void **state) {
    (void)state;
    const char *model = require_model();
    proc p;
    spawn(&p, "chat -m '%s' -n -1 --ignore-eos", model);
    send_text(&p, "Tell me a long story.\n");
    read_until(&p, 1); // replying
    kill(p.pid, SIGINT);
    send_text(&p, "/stats\n");
    assert_int_equal(finish(&p), 0);
    expect_err("(interrupted; the reply so far stays in the conversation)");
    expect_err("stop: interrupted");
    expect_err("conversation: 1 turn, ");

    spawn(&p, "chat -m '%s' -n 4 --temp 0", model);
    send_text(&p, "Hi\n/stats\n");
    wait_stderr("conversation: 1 turn, "); // the reply is done: at the prompt
    kill(p.pid, SIGINT);
    pause_ms(500);
    int status;
    pid_t w = waitpid(p.pid, &status, WNOHANG);
    if (w != 0) fail_msg("chat quit on one Ctrl-C at the prompt (status %d):\n%s", status, err_buf);
    kill(p.pid, SIGINT);
    assert_int_equal(finish(&p), 130);
}

// Gemma 3: kiln cannot run its architecture, but tokenize and inspect work.
static void test_gemma(void **state) {
    (void)state;
    const char *gemma = gemma_path();
    assert_int_equal(kiln_io(NULL, "tokenize -m '%s' 'Hello world'", gemma), 0);
    assert_string_equal(out_buf, "2 9259 1902\n"); // BOS, as the model says, then the ids
    // The ids of tests/fixtures/tokenizer/gemma3.expected.json (transformers' GGUF tokenizer).
    char fixture[PATH_MAX], *text = NULL;
    snprintf(fixture, sizeof fixture, "%s/tokenizer/gemma3.expected.json", KILN_FIXTURES);
    FILE *f = fopen(fixture, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    text = malloc((size_t)size + 1);
    assert_int_equal(fread(text, 1, (size_t)size, f), (size_t)size);
    text[size] = '\0';
    fclose(f);
    cJSON *exp = parse_json(text);
    free(text);
    int checked = 0, i = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(exp, "cases")) {
        const char *hex = json_string(c, "hex");
        size_t n = strlen(hex) / 2;
        char *s = malloc(n + 1);
        bool has_nul = false;
        for (size_t k = 0; k < n; k++) {
            unsigned v;
            sscanf(hex + 2 * k, "%2x", &v);
            s[k] = (char)v;
            has_nul |= v == 0;
        }
        s[n] = '\0';
        for (int special = 1; special >= 0 && !has_nul; special--) {
            if (!special && i % 3) continue; // plain text for every third case
            assert_int_equal(kiln_io(NULL, "tokenize --no-bos %s -m '%s' %s", special ? "" : "--no-special", gemma,
                                     sh_quote(s)),
                             0);
            char want[1 << 14];
            size_t w = 0;
            const cJSON *id;
            want[0] = '\0';
            cJSON_ArrayForEach(id, cJSON_GetObjectItem(c, special ? "special" : "plain"))
                w += (size_t)snprintf(want + w, sizeof want - w, w ? " %d" : "%d", id->valueint);
            snprintf(want + w, sizeof want - w, "\n");
            if (strcmp(out_buf, want) != 0)
                fail_msg("gemma3 \"%s\" (special %d):\n  kiln: %s  want: %s", json_string(c, "text"), special,
                         out_buf, want);
            checked++;
        }
        free(s);
        i++;
    }
    cJSON_Delete(exp);
    assert_true(checked > 40);

    assert_int_equal(kiln_io(NULL, "inspect '%s'", gemma), 0);
    expect_out("architecture:   gemma3\n");
    expect_out("runs in kiln:   no: architecture 'gemma3' is not supported");
    expect_out("layers:         18\n");
    expect_out("tokenizer:      SentencePiece BPE, 262144 tokens");
    expect_out("memory:         not estimated (kiln cannot run this model)");
    expect_out("token_embd.weight");
    assert_int_equal(kiln_io(NULL, "inspect --json -m '%s'", gemma), 0);
    cJSON *j = parse_json(out_buf);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(j, "supported")));
    assert_string_equal(json_string(j, "architecture"), "gemma3");
    assert_non_null(strstr(json_string(j, "unsupported"), "gemma3"));
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(j, "memory")));
    assert_int_equal((int)json_number(j, "n_layers"), 18);
    cJSON_Delete(j);
    assert_int_equal(kiln_io(NULL, "run -m '%s' -p hi", gemma), 1);
    expect_err("architecture 'gemma3' is not supported");
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "%s/kiln-cli-test-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(tmp_dir) ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    return system(cmd) == 0 ? 0 : -1;
}

// Files of the corrupted-file corpus (tools/make_corrupt_corpus.py) as the
// commands meet them; they need no downloaded model.
static void test_hostile_files(void **state) {
    (void)state;
    const char *dir = KILN_FIXTURES "/corrupt/model";
    // SentencePiece without tokenizer.ggml.pre: no "(null)".
    assert_int_equal(kiln("inspect --no-tensors %s/control_spm.gguf", dir), 0);
    expect("SentencePiece BPE, 268 tokens, pre-tokenizer none,");
    assert_null(strstr(output, "(null)"));
    // An unknown pre-tokenizer: every command that tokenizes says so.
    const char *warning = "pre_unknown.gguf: tokenizer.ggml.pre \"mystery-pre\" is not a pre-tokenizer kiln knows";
    assert_int_equal(kiln("tokenize -m %s/pre_unknown.gguf 'Hello world'", dir), 0);
    expect(warning);
    assert_int_equal(kiln("run -m %s/pre_unknown.gguf -p 'Hello world' -n 2 --temp 0", dir), 0);
    expect(warning);
    assert_int_equal(kiln("chat --raw -m %s/pre_unknown.gguf", dir), 0);
    expect(warning);
    assert_int_equal(kiln("tokenize -m %s/control_bpe.gguf 'Hello world'", dir), 0);
    assert_null(strstr(output, "warning"));
    // NaN logits: an error naming the file, not a token.
    assert_int_equal(kiln("run -m %s/output_nan.gguf -p 'Hello world' -n 4", dir), 1);
    expect("output_nan.gguf: the model produced non-finite logits");
    assert_int_equal(kiln("run -m %s/output_scales_nan.gguf -p 'Hello world' -n 4 --temp 0", dir), 1);
    expect("output_scales_nan.gguf: the model produced non-finite logits");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_help_everywhere),
        cmocka_unit_test(test_device),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_with_model),
        cmocka_unit_test(test_run_statistics),
        cmocka_unit_test(test_run_prompt_sources),
        cmocka_unit_test(test_run_unlimited),
        cmocka_unit_test(test_random_seed),
        cmocka_unit_test(test_model_names),
        cmocka_unit_test(test_stdout_full),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_context_warning),
        cmocka_unit_test(test_run_chat_template),
        cmocka_unit_test(test_chat_commands),
        cmocka_unit_test(test_run_interrupt),
        cmocka_unit_test(test_chat_interrupt),
        cmocka_unit_test(test_gemma),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
