// The kiln binary as a user meets it: help, bad arguments, and each command
// on the default model.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <cmocka.h>

#include "backend/backend.h"
#include "test_util.h"

static char output[1 << 16];

// Runs `kiln ARGS` through the shell, stdout and stderr together; returns the exit code.
static int kiln(const char *fmt, ...) {
    char args[2048], cmd[4096];
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

static void expect(const char *needle) {
    if (!strstr(output, needle)) fail_msg("expected \"%s\" in:\n%s", needle, output);
}

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
    expect("'warm' is not a number");
    assert_int_equal(kiln("run -m x.gguf -p hi --top-p 2"), 2);
    expect("top-p");
    assert_int_equal(kiln("run -m x.gguf -p hi -n -5"), 2);
    assert_int_equal(kiln("run -m x.gguf -p hi --bogus"), 2);
    assert_int_equal(kiln("tokenize -m x.gguf"), 2);
    expect("exactly one TEXT");
    assert_int_equal(kiln("bench -m x.gguf -p 12,abc"), 2);
    expect("bad --prefill");
    assert_int_equal(kiln("bench -m x.gguf --gpu-suite --only decode512,warp9"), 2);
    expect("bad --only list 'decode512,warp9'");
    assert_int_equal(kiln("bench -m x.gguf --only batch8"), 2);
    expect("--only selects workloads of --gpu-suite");
    assert_int_equal(kiln("bench -m x.gguf --no-ceilings"), 2);
    expect("--no-ceilings belongs to --gpu-suite");
    assert_int_equal(kiln("run -m x.gguf -p hi --device tpu"), 2);
    expect("unknown device 'tpu': use cpu or cuda");
    assert_int_equal(kiln("inspect --device tpu x.gguf"), 2);
    expect("unknown device 'tpu'");
}

// --device cuda: a clear refusal where there is no GPU (or no CUDA in the
// build), the GPU's memory report where there is one.
static void test_device(void **state) {
    (void)state;
    const char *model = kiln_test_model_path();
    if (!model) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
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
    const char *model = kiln_test_model_path();
    if (!model) {
        printf("SKIP: default model not found (run scripts/fetch-model.sh)\n");
        skip();
    }
    // Ids from SmolLM2's own tokenizer pipeline (tools/make_reference_fixtures.py's).
    assert_int_equal(kiln("tokenize -m '%s' 'Hello world, 2024!'", model), 0);
    expect("19556 905 28 216 34 32 34 36 17\n");
    assert_int_equal(kiln("tokenize -m '%s' '<|im_start|>user'", model), 0);
    expect("1 4093\n");

    assert_int_equal(kiln("inspect --no-tensors '%s'", model), 0);
    expect("layers:         30");
    expect("heads:          9 query, 3 key/value (head size 64)");
    assert_int_equal(kiln("inspect '%s'", model), 0);
    expect("blk.0.attn_q.weight");
    expect("Q4_1");

    static char first[sizeof output];
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 12 --seed 7", model), 0);
    expect("The capital of France is");
    snprintf(first, sizeof first, "%s", output);
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 12 --seed 7", model), 0);
    assert_string_equal(output, first); // same seed, same text

    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 16 --temp 0", model), 0);
    expect("Paris");
    assert_int_equal(kiln("run -m '%s' -p 'The capital of France is' -n 16 --temp 0 --stop Paris", model), 0);
    assert_null(strstr(output, "Paris"));

    assert_int_equal(kiln("bench -m '%s' -p 16 -n 4 -r 1", model), 0);
    expect("kiln prefill 16:");
    expect("kiln decode 4:");
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
