// Chat templates: kiln's C renderers against transformers' Jinja rendering of
// the real templates (tests/fixtures/chat/chat_cases.json, made by
// tools/make_chat_fixtures.py), byte for byte.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/file.h"
#include "runtime/chat_template.h"
#include "test_util.h"

static cJSON *load_cases(void) {
    char *text;
    size_t len;
    kiln_status st = kiln_file_read_all(KILN_FIXTURES "/chat/chat_cases.json", 1 << 22, &text, &len);
    if (st != KILN_OK) fail_msg("%s", kiln_last_error());
    cJSON *doc = cJSON_ParseWithLength(text, len);
    free(text);
    assert_non_null(doc);
    return doc;
}

static kiln_chat_format format_by_name(const char *name) {
    for (int f = KILN_CHAT_UNKNOWN; f <= KILN_CHAT_PHI3; f++)
        if (strcmp(kiln_chat_format_name((kiln_chat_format)f), name) == 0) return (kiln_chat_format)f;
    fail_msg("unknown format name %s", name);
    return KILN_CHAT_UNKNOWN;
}

static void test_detects_every_reference_template(void **state) {
    (void)state;
    cJSON *doc = load_cases();
    int n = 0;
    for (cJSON *t = cJSON_GetObjectItem(doc, "templates")->child; t; t = t->next, n++) {
        const char *text = cJSON_GetObjectItem(t, "text")->valuestring;
        kiln_chat_format want = format_by_name(cJSON_GetObjectItem(t, "format")->valuestring);
        if (kiln_chat_detect(text) != want)
            fail_msg("template %s detected as %s, want %s", t->string, kiln_chat_format_name(kiln_chat_detect(text)),
                     kiln_chat_format_name(want));
    }
    assert_int_equal(n, 7);
    cJSON_Delete(doc);
}

static void test_detect_rejects_unknown_templates(void **state) {
    (void)state;
    assert_int_equal(kiln_chat_detect(NULL), KILN_CHAT_UNKNOWN);
    assert_int_equal(kiln_chat_detect(""), KILN_CHAT_UNKNOWN);
    assert_int_equal(kiln_chat_detect("{% for message in messages %}{{ message['content'] }}{% endfor %}"),
                     KILN_CHAT_UNKNOWN);
    // Zephyr uses <|user|> but ends turns with </s>, not Phi-3's <|end|>.
    assert_int_equal(kiln_chat_detect("{{ '<|user|>\\n' + message['content'] + eos_token }}"), KILN_CHAT_UNKNOWN);
}

// Every fixture case: render_template (detect + default system prompt) and,
// for templates without a default system prompt, the plain render API.
static void test_renders_match_transformers(void **state) {
    (void)state;
    cJSON *doc = load_cases();
    cJSON *templates = cJSON_GetObjectItem(doc, "templates");
    int n_cases = 0, n_errors = 0;
    for (cJSON *c = cJSON_GetObjectItem(doc, "cases")->child; c; c = c->next, n_cases++) {
        const char *tname = cJSON_GetObjectItem(c, "template")->valuestring;
        const char *cname = cJSON_GetObjectItem(c, "conversation")->valuestring;
        cJSON *t = cJSON_GetObjectItem(templates, tname);
        const char *text = cJSON_GetObjectItem(t, "text")->valuestring;
        const char *bos = cJSON_GetObjectItem(t, "bos")->valuestring;
        bool gen = cJSON_IsTrue(cJSON_GetObjectItem(c, "add_generation_prompt"));
        cJSON *jmsgs = cJSON_GetObjectItem(c, "messages");
        int n = cJSON_GetArraySize(jmsgs);
        kiln_chat_message msgs[16];
        assert_true(n <= 16);
        int i = 0;
        for (cJSON *m = jmsgs->child; m; m = m->next, i++)
            msgs[i] = (kiln_chat_message){cJSON_GetObjectItem(m, "role")->valuestring,
                                          cJSON_GetObjectItem(m, "content")->valuestring};
        cJSON *expected = cJSON_GetObjectItem(c, "expected");

        char *out = NULL;
        kiln_status st = kiln_chat_render_template(text, msgs, n, gen, bos, &out);
        if (expected) {
            if (st != KILN_OK) fail_msg("%s/%s gen=%d: %s", tname, cname, gen, kiln_last_error());
            if (strcmp(out, expected->valuestring) != 0)
                fail_msg("%s/%s gen=%d:\n got  [%s]\n want [%s]", tname, cname, gen, out, expected->valuestring);
        } else {
            n_errors++;
            if (st != KILN_ERR_INVALID_ARG)
                fail_msg("%s/%s gen=%d: template raises but kiln gave %d [%s]", tname, cname, gen, st, out ? out : "");
            assert_null(out);
            assert_non_null(strstr(kiln_last_error(), "chat template"));
        }
        free(out);

        if (strcmp(tname, "smollm2") == 0) continue; // needs the default system prompt
        out = NULL;
        st = kiln_chat_render(kiln_chat_detect(text), msgs, n, gen, bos, &out);
        assert_int_equal(st, expected ? KILN_OK : KILN_ERR_INVALID_ARG);
        if (expected) assert_string_equal(out, expected->valuestring);
        free(out);
    }
    assert_true(n_cases >= 100);
    assert_true(n_errors > 0);
    cJSON_Delete(doc);
}

static void test_default_system_prompt(void **state) {
    (void)state;
    cJSON *doc = load_cases();
    cJSON *templates = cJSON_GetObjectItem(doc, "templates");
    char *sys = NULL;
    const char *smol = cJSON_GetObjectItem(cJSON_GetObjectItem(templates, "smollm2"), "text")->valuestring;
    assert_int_equal(kiln_chat_default_system(smol, &sys), KILN_OK);
    assert_non_null(sys);
    assert_string_equal(sys, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    free(sys);
    // Plain ChatML builds its system turn from the message: no default.
    const char *chatml = cJSON_GetObjectItem(cJSON_GetObjectItem(templates, "chatml"), "text")->valuestring;
    assert_int_equal(kiln_chat_default_system(chatml, &sys), KILN_OK);
    assert_null(sys);
    // The same prompt written with Jinja escapes (as in a JSON-decoded template).
    assert_int_equal(kiln_chat_default_system("{{ '<|im_start|>system\\nBe \\\\brief.<|im_end|>\\n' }}", &sys), KILN_OK);
    assert_string_equal(sys, "Be \\brief.");
    free(sys);
    cJSON_Delete(doc);
}

static void test_rejects_bad_arguments(void **state) {
    (void)state;
    char *out = (char *)"untouched";
    kiln_chat_message bad_role[] = {{"tool", "x"}};
    assert_int_equal(kiln_chat_render(KILN_CHAT_CHATML, bad_role, 1, true, "", &out), KILN_ERR_INVALID_ARG);
    assert_null(out);
    assert_non_null(strstr(kiln_last_error(), "tool"));
    kiln_chat_message null_content[] = {{"user", NULL}};
    assert_int_equal(kiln_chat_render(KILN_CHAT_CHATML, null_content, 1, true, "", &out), KILN_ERR_INVALID_ARG);
    assert_int_equal(kiln_chat_render(KILN_CHAT_CHATML, NULL, -1, true, "", &out), KILN_ERR_INVALID_ARG);
    kiln_chat_message ok[] = {{"user", "hi"}};
    assert_int_equal(kiln_chat_render(KILN_CHAT_UNKNOWN, ok, 1, true, "", &out), KILN_ERR_UNSUPPORTED);
    assert_int_equal(kiln_chat_render_template("no template here", ok, 1, true, "", &out), KILN_ERR_UNSUPPORTED);
    // NULL bos is the empty string.
    assert_int_equal(kiln_chat_render(KILN_CHAT_LLAMA3, ok, 1, false, NULL, &out), KILN_OK);
    assert_string_equal(out, "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detects_every_reference_template),
        cmocka_unit_test(test_detect_rejects_unknown_templates),
        cmocka_unit_test(test_renders_match_transformers),
        cmocka_unit_test(test_default_system_prompt),
        cmocka_unit_test(test_rejects_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
