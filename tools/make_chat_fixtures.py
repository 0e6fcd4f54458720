#!/usr/bin/env python3
"""Renders reference chat templates with transformers' own Jinja renderer
(render_jinja_template, what apply_chat_template calls) and writes
tests/fixtures/chat/chat_cases.json for tests/runtime/test_chat_template.c.

SmolLM2's template comes from the default GGUF (tokenizer.chat_template); the
others are the public templates of the models named below, copied verbatim
(as the Jinja source, i.e. after JSON-decoding tokenizer_config.json).

usage: tools/make_chat_fixtures.py [GGUF_PATH] [OUT_JSON]
"""
import json
import os
import sys

import gguf
from transformers.utils.chat_template_utils import render_jinja_template

DEFAULT_GGUF = os.path.expanduser("~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf")

# teknium/OpenHermes-2.5-Mistral-7B: plain ChatML, no default system prompt.
CHATML = (r"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
          r"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (r"{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
          r"message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
          r"{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}"
          r"{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

# meta-llama/Llama-2-7b-chat-hf
LLAMA2 = (r"{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
          r"{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
          r"{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
          r"user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
          r"'<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
          r"{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
          r"{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")

# mistralai/Mixtral-8x7B-Instruct-v0.1 (also Mistral-7B-Instruct-v0.2's original template)
MISTRAL = (r"{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
           r"{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
           r"{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
           r"{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
           r"{% endif %}{% endfor %}")

# google/gemma-7b-it
GEMMA = (r"{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
         r"{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation "
         r"roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}"
         r"{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + "
         r"message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# microsoft/Phi-3-mini-4k-instruct
PHI3 = (r"{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
        r"{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}"
        r"{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}"
        r"{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

CONVERSATIONS = {
    "user_only": [("user", "Hello!")],
    "system_user": [("system", "You are terse."), ("user", "What is 2+2?")],
    "multi_turn": [("system", "You are a helpful assistant"), ("user", "Hello"), ("assistant", "Hi there"),
                   ("user", "Who are you"), ("assistant", "   I am an assistant   "), ("user", "Another question")],
    "no_system_multi_turn": [("user", " Tell me a joke.\n"), ("assistant", "Why did the chicken cross the road?"),
                             ("user", "Why?")],
    "unicode_whitespace": [("user", "\u00a0\u3000 Grüße, 世界 \u2003\n\t"), ("assistant", "\u2028ok\u0085")],
    "empty_content": [("user", ""), ("assistant", "")],
    "not_alternating": [("user", "a"), ("user", "b")],
    "system_only": [("system", "Only a system prompt.")],
    "empty": [],
}


def smollm2_template(gguf_path):
    reader = gguf.GGUFReader(gguf_path)
    return reader.fields["tokenizer.chat_template"].contents()


def render(template, messages, add_generation_prompt, bos, eos):
    conversation = [{"role": r, "content": c} for r, c in messages]
    try:
        rendered, _ = render_jinja_template(conversations=[conversation], chat_template=template,
                                            add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos)
        return rendered[0], None
    except Exception as e:  # raise_exception or an undefined messages[0]
        return None, f"{type(e).__name__}: {e}"


def main():
    gguf_path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_GGUF
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "tests", "fixtures", "chat", "chat_cases.json")
    templates = {
        # name: (text, expected kiln format, bos, eos)
        "smollm2": (smollm2_template(gguf_path), "chatml", "<|im_start|>", "<|im_end|>"),
        "chatml": (CHATML, "chatml", "<s>", "<|im_end|>"),
        "llama3": (LLAMA3, "llama3", "<|begin_of_text|>", "<|eot_id|>"),
        "llama2": (LLAMA2, "llama2", "<s>", "</s>"),
        "mistral": (MISTRAL, "mistral", "<s>", "</s>"),
        "gemma": (GEMMA, "gemma", "<bos>", "<eos>"),
        "phi3": (PHI3, "phi3", "<s>", "<|endoftext|>"),
    }
    cases = []
    for tname, (text, fmt, bos, eos) in templates.items():
        for cname, messages in CONVERSATIONS.items():
            for gen in (True, False):
                expected, error = render(text, messages, gen, bos, eos)
                case = {"template": tname, "conversation": cname, "add_generation_prompt": gen,
                        "messages": [{"role": r, "content": c} for r, c in messages]}
                if error is None:
                    case["expected"] = expected
                else:
                    case["error"] = error
                cases.append(case)
    doc = {
        "generator": "tools/make_chat_fixtures.py (transformers render_jinja_template)",
        "templates": {n: {"text": t, "format": f, "bos": b, "eos": e} for n, (t, f, b, e) in templates.items()},
        "cases": cases,
    }
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    n_err = sum(1 for c in cases if "error" in c)
    print(f"wrote {out_path}: {len(cases)} cases ({n_err} rejected by the template)")


if __name__ == "__main__":
    main()
