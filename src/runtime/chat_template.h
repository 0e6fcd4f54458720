// Chat prompt formatting without a Jinja engine: the model's chat template
// text is recognised as one of a few well-known families, and the family's
// output is produced by C code that matches, byte for byte, what transformers'
// apply_chat_template renders with that template (tests/fixtures/chat/, made by
// tools/make_chat_fixtures.py).
//
// The reference templates per family (see tools/make_chat_fixtures.py):
//   CHATML  : <|im_start|>role\ncontent<|im_end|>\n (SmolLM2, Qwen, OpenHermes);
//             an optional default system prompt comes from the template text.
//   LLAMA3  : Meta-Llama-3-*-Instruct (3.0; 3.1's dated system block is not
//             reproduced).
//   LLAMA2  : Llama-2-*-chat-hf ([INST] with <<SYS>>), eos "</s>".
//   MISTRAL : Mistral-7B-Instruct-v0.2 / Mixtral-8x7B-Instruct-v0.1 (no system
//             role), eos "</s>".
//   GEMMA   : gemma-*-it (no system role; assistant is "model").
//   PHI3    : Phi-3-mini-4k-instruct, eos "<|endoftext|>".
// Whitespace trimming (Jinja's trim / str.strip) follows Python's definition
// of whitespace, Unicode included.
#ifndef KILN_RUNTIME_CHAT_TEMPLATE_H
#define KILN_RUNTIME_CHAT_TEMPLATE_H

#include <stdbool.h>

#include "core/error.h"

typedef enum kiln_chat_format {
    KILN_CHAT_UNKNOWN = 0,
    KILN_CHAT_CHATML,
    KILN_CHAT_LLAMA3,
    KILN_CHAT_LLAMA2,
    KILN_CHAT_MISTRAL,
    KILN_CHAT_GEMMA,
    KILN_CHAT_PHI3,
} kiln_chat_format;

// kiln_chat_message is in kiln.h (the public API renders through these).

// Recognises the family of a chat template (tokenizer.chat_template text);
// KILN_CHAT_UNKNOWN for NULL or an unrecognised template.
kiln_chat_format kiln_chat_detect(const char *template_text);
const char *kiln_chat_format_name(kiln_chat_format fmt);

// Renders a conversation into *out (malloc'd, NUL-terminated; caller frees).
// bos_text is the BOS token's text for the families whose template prints
// bos_token (LLAMA3, LLAMA2, MISTRAL, GEMMA); NULL means "". A conversation
// the template would reject (raise_exception: roles not alternating, a system
// role the family lacks) gives KILN_ERR_INVALID_ARG.
kiln_status kiln_chat_render(kiln_chat_format fmt, const kiln_chat_message *msgs, int n, bool add_generation_prompt,
                             const char *bos_text, char **out);

// The default system prompt a ChatML template inserts when the conversation
// does not start with a system message (SmolLM2: "You are a helpful AI
// assistant named SmolLM, trained by Hugging Face"). *out is NULL when the
// template has none; otherwise malloc'd.
kiln_status kiln_chat_default_system(const char *template_text, char **out);

// Detects the family of template_text and renders with it, including the
// template's default system prompt. KILN_ERR_UNSUPPORTED for an unknown family.
kiln_status kiln_chat_render_template(const char *template_text, const kiln_chat_message *msgs, int n,
                                      bool add_generation_prompt, const char *bos_text, char **out);

#endif
