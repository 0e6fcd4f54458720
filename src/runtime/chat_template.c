// Chat template families rendered in C; each render_* function mirrors its
// reference Jinja template (quoted above it) statement by statement, including
// which conversations the template rejects.
#include "runtime/chat_template.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Growable output string; `failed` latches an allocation failure so that the
// renderers can append unconditionally and check once at the end.
typedef struct text_buffer {
    char *data;
    size_t len, cap;
    bool failed;
} text_buffer;

static void append_bytes(text_buffer *b, const char *s, size_t n) {
    if (b->failed) return;
    if (n > SIZE_MAX - b->len - 1) {
        b->failed = true;
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap = cap > SIZE_MAX / 2 ? b->len + n + 1 : cap * 2;
        char *grown = realloc(b->data, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void append(text_buffer *b, const char *s) { append_bytes(b, s, strlen(s)); }

// Length of the Python-whitespace character (str.isspace) starting at s, or 0.
static size_t whitespace_at(const unsigned char *s, size_t avail) {
    if (avail == 0) return 0;
    unsigned char c = s[0];
    if (c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f)) return 1;
    if (avail >= 2 && c == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (avail < 3) return 0;
    uint32_t cp = (uint32_t)(c & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
    if ((c & 0xf0) != 0xe0 || (s[1] & 0xc0) != 0x80 || (s[2] & 0xc0) != 0x80) return 0;
    if (cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f ||
        cp == 0x205f || cp == 0x3000)
        return 3;
    return 0;
}

// Appends s with leading and trailing whitespace removed (Jinja trim, str.strip).
static void append_stripped(text_buffer *b, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    size_t len = strlen(s), start = 0, end = len, w;
    while ((w = whitespace_at(p + start, len - start)) > 0) start += w;
    // Scan backwards: a whitespace char ends at `end` if one starts 1-3 bytes before.
    for (bool trimmed = true; trimmed && end > start;) {
        trimmed = false;
        for (size_t k = 1; k <= 3 && k <= end - start; k++) {
            if (whitespace_at(p + end - k, k) == k) {
                end -= k;
                trimmed = true;
                break;
            }
        }
    }
    append_bytes(b, s + start, end - start);
}

static bool role_is(const kiln_chat_message *m, const char *role) { return strcmp(m->role, role) == 0; }

static kiln_status alternation_error(void) {
    return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: conversation roles must alternate user/assistant/user/assistant/...");
}

// {% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ default system }}{% endif %}
// {{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}
// {% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}
static kiln_status render_chatml(text_buffer *b, const kiln_chat_message *m, int n, bool gen, const char *default_system) {
    for (int i = 0; i < n; i++) {
        if (i == 0 && default_system && !role_is(&m[0], "system")) {
            append(b, "<|im_start|>system\n");
            append(b, default_system);
            append(b, "<|im_end|>\n");
        }
        append(b, "<|im_start|>");
        append(b, m[i].role);
        append(b, "\n");
        append(b, m[i].content);
        append(b, "<|im_end|>\n");
    }
    if (gen) append(b, "<|im_start|>assistant\n");
    return KILN_OK;
}

// {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim
// + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}
// ... {% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
static kiln_status render_llama3(text_buffer *b, const kiln_chat_message *m, int n, bool gen, const char *bos) {
    for (int i = 0; i < n; i++) {
        if (i == 0) append(b, bos);
        append(b, "<|start_header_id|>");
        append(b, m[i].role);
        append(b, "<|end_header_id|>\n\n");
        append_stripped(b, m[i].content);
        append(b, "<|eot_id|>");
    }
    if (gen) append(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return KILN_OK;
}

// A leading system message becomes "<<SYS>>\n...\n<</SYS>>\n\n" in front of
// the first user turn; user: bos + '[INST] ' + content.strip() + ' [/INST]';
// assistant: ' ' + content.strip() + ' ' + eos. add_generation_prompt unused.
static kiln_status render_llama2(text_buffer *b, const kiln_chat_message *m, int n, const char *bos) {
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: the Llama 2 template needs at least one message");
    const char *system = NULL;
    if (role_is(&m[0], "system")) {
        system = m[0].content;
        m++;
        n--;
    }
    for (int i = 0; i < n; i++)
        if (role_is(&m[i], "user") != (i % 2 == 0)) return alternation_error();
    for (int i = 0; i < n; i++) {
        text_buffer content = {0};
        if (i == 0 && system) {
            append(&content, "<<SYS>>\n");
            append(&content, system);
            append(&content, "\n<</SYS>>\n\n");
        }
        append(&content, m[i].content);
        if (content.failed) {
            free(content.data);
            b->failed = true;
            break;
        }
        const char *text = content.data ? content.data : "";
        if (role_is(&m[i], "user")) {
            append(b, bos);
            append(b, "[INST] ");
            append_stripped(b, text);
            append(b, " [/INST]");
        } else if (role_is(&m[i], "assistant")) {
            append(b, " ");
            append_stripped(b, text);
            append(b, " </s>");
        }
        free(content.data);
    }
    return KILN_OK;
}

// {{ bos_token }}{% for message in messages %}(alternation check){% if message['role'] == 'user' %}
// {{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}
// {{ message['content'] + eos_token}}{% else %}{{ raise_exception(...) }}{% endif %}{% endfor %}
static kiln_status render_mistral(text_buffer *b, const kiln_chat_message *m, int n, const char *bos) {
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "user") != (i % 2 == 0)) return alternation_error();
        if (!role_is(&m[i], "user") && !role_is(&m[i], "assistant"))
            return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: the Mistral template supports only user and assistant roles");
    }
    append(b, bos);
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "user")) {
            append(b, "[INST] ");
            append(b, m[i].content);
            append(b, " [/INST]");
        } else {
            append(b, m[i].content);
            append(b, "</s>");
        }
    }
    return KILN_OK;
}

// {{ bos_token }}(no system first)(alternation check){{ '<start_of_turn>' + role + '\n' +
// message['content'] | trim + '<end_of_turn>\n' }} with assistant -> model;
// {% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}
static kiln_status render_gemma(text_buffer *b, const kiln_chat_message *m, int n, bool gen, const char *bos) {
    if (n == 0) return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: the Gemma template needs at least one message");
    if (role_is(&m[0], "system")) return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: the Gemma template has no system role");
    for (int i = 0; i < n; i++)
        if (role_is(&m[i], "user") != (i % 2 == 0)) return alternation_error();
    append(b, bos);
    for (int i = 0; i < n; i++) {
        append(b, "<start_of_turn>");
        append(b, role_is(&m[i], "assistant") ? "model" : m[i].role);
        append(b, "\n");
        append_stripped(b, m[i].content);
        append(b, "<end_of_turn>\n");
    }
    if (gen) append(b, "<start_of_turn>model\n");
    return KILN_OK;
}

// {{'<|' + role + '|>\n' + message['content'] + '<|end|>\n'}} per message;
// {% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}
static kiln_status render_phi3(text_buffer *b, const kiln_chat_message *m, int n, bool gen) {
    for (int i = 0; i < n; i++) {
        append(b, "<|");
        append(b, m[i].role);
        append(b, "|>\n");
        append(b, m[i].content);
        append(b, "<|end|>\n");
    }
    append(b, gen ? "<|assistant|>\n" : "<|endoftext|>");
    return KILN_OK;
}

static kiln_status render(kiln_chat_format fmt, const kiln_chat_message *msgs, int n, bool gen, const char *bos,
                          const char *default_system, char **out) {
    *out = NULL;
    if (n < 0 || (n > 0 && !msgs)) return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: bad message array");
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: message %d has no role or content", i);
        if (!role_is(&msgs[i], "system") && !role_is(&msgs[i], "user") && !role_is(&msgs[i], "assistant"))
            return kiln_fail(KILN_ERR_INVALID_ARG, "chat template: message %d has role \"%.40s\" (want system, user or assistant)",
                             i, msgs[i].role);
    }
    if (!bos) bos = "";
    text_buffer b = {0};
    kiln_status st;
    switch (fmt) {
    case KILN_CHAT_CHATML: st = render_chatml(&b, msgs, n, gen, default_system); break;
    case KILN_CHAT_LLAMA3: st = render_llama3(&b, msgs, n, gen, bos); break;
    case KILN_CHAT_LLAMA2: st = render_llama2(&b, msgs, n, bos); break;
    case KILN_CHAT_MISTRAL: st = render_mistral(&b, msgs, n, bos); break;
    case KILN_CHAT_GEMMA: st = render_gemma(&b, msgs, n, gen, bos); break;
    case KILN_CHAT_PHI3: st = render_phi3(&b, msgs, n, gen); break;
    default: st = kiln_fail(KILN_ERR_UNSUPPORTED, "chat template: unknown chat format %d", (int)fmt); break;
    }
    if (st == KILN_OK) append(&b, ""); // an empty rendering still yields a string
    if (st == KILN_OK && b.failed) st = kiln_fail(KILN_ERR_NOMEM, "chat template: out of memory");
    if (st != KILN_OK) {
        free(b.data);
        return st;
    }
    *out = b.data;
    return KILN_OK;
}

kiln_status kiln_chat_render(kiln_chat_format fmt, const kiln_chat_message *msgs, int n, bool add_generation_prompt,
                             const char *bos_text, char **out) {
    return render(fmt, msgs, n, add_generation_prompt, bos_text, NULL, out);
}

kiln_chat_format kiln_chat_detect(const char *t) {
    if (!t) return KILN_CHAT_UNKNOWN;
    if (strstr(t, "<|im_start|>")) return KILN_CHAT_CHATML;
    if (strstr(t, "<|start_header_id|>")) return KILN_CHAT_LLAMA3;
    if (strstr(t, "<start_of_turn>")) return KILN_CHAT_GEMMA;
    if (strstr(t, "<|user|>") && strstr(t, "<|end|>")) return KILN_CHAT_PHI3;
    if (strstr(t, "[INST]")) return strstr(t, "<<SYS>>") ? KILN_CHAT_LLAMA2 : KILN_CHAT_MISTRAL;
    return KILN_CHAT_UNKNOWN;
}

const char *kiln_chat_format_name(kiln_chat_format fmt) {
    switch (fmt) {
    case KILN_CHAT_CHATML: return "chatml";
    case KILN_CHAT_LLAMA3: return "llama3";
    case KILN_CHAT_LLAMA2: return "llama2";
    case KILN_CHAT_MISTRAL: return "mistral";
    case KILN_CHAT_GEMMA: return "gemma";
    case KILN_CHAT_PHI3: return "phi3";
    default: return "unknown";
    }
}

// Decodes the Jinja string-literal escapes a prompt may use (\n, \t, \\, \', \").
static char *unescape_literal(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            out[k++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = '\0';
    return out;
}

// Looks for a string literal '<|im_start|>system\n<constant text><|im_end|>':
// a system turn whose text is constant (no quote or brace, i.e. not built from
// messages[0]['content']) is the template's default system prompt.
kiln_status kiln_chat_default_system(const char *template_text, char **out) {
    *out = NULL;
    if (!template_text) return KILN_OK;
    static const char marker[] = "<|im_start|>system";
    for (const char *p = strstr(template_text, marker); p; p = strstr(p + 1, marker)) {
        const char *text = p + sizeof marker - 1;
        if (*text == '\n') {
            text += 1;
        } else if (text[0] == '\\' && text[1] == 'n') {
            text += 2;
        } else {
            continue;
        }
        const char *end = strstr(text, "<|im_end|>");
        if (!end) continue;
        size_t n = (size_t)(end - text);
        if (n == 0 || memchr(text, '\'', n) || memchr(text, '"', n) || memchr(text, '{', n) || memchr(text, '}', n))
            continue;
        if (!(*out = unescape_literal(text, n))) return kiln_fail(KILN_ERR_NOMEM, "chat template: out of memory");
        return KILN_OK;
    }
    return KILN_OK;
}

kiln_status kiln_chat_render_template(const char *template_text, const kiln_chat_message *msgs, int n,
                                      bool add_generation_prompt, const char *bos_text, char **out) {
    *out = NULL;
    kiln_chat_format fmt = kiln_chat_detect(template_text);
    if (fmt == KILN_CHAT_UNKNOWN)
        return kiln_fail(KILN_ERR_UNSUPPORTED, "chat template: unrecognised template (not ChatML, Llama 2/3, Mistral, Gemma or Phi-3)");
    char *default_system = NULL;
    if (fmt == KILN_CHAT_CHATML) {
        kiln_status st = kiln_chat_default_system(template_text, &default_system);
        if (st != KILN_OK) return st;
    }
    kiln_status st = render(fmt, msgs, n, add_generation_prompt, bos_text, default_system, out);
    free(default_system);
    return st;
}
