#!/usr/bin/env python3
"""Makes tests/fixtures/tokenizer/*: the corpus of hard strings, expected ids
from independent reference tokenizers (Hugging Face `tokenizers`), and small
synthetic tokenizer.json files for the tokenizer.json loading paths.

References:
- SmolLM2 GGUF: a `tokenizers` Tokenizer built from the GGUF vocab + merges
  with the pre-tokenizer the model ships with (Digits(individual) + ByteLevel)
  and the CONTROL tokens as added special tokens. (transformers' GGUF
  conversion is not used: it ignores tokenizer.ggml.pre.)
- Gemma 3 270M GGUF (SentencePiece): transformers' GGUF tokenizer conversion.
- Synthetic tokenizers: trained here with `tokenizers`; their own encode().
Also writes, when the models are present, reference tokenizer.json copies to
~/.cache/kiln/ (too large to commit) that the tests use when present.

Usage: python3 tools/make_tokenizer_fixtures.py [smollm2.gguf] [gemma.gguf]
       python3 tools/make_tokenizer_fixtures.py --llama-cpp-check
The second form only compares the committed expected ids with llama.cpp
(llama-cpp-python, vocab_only) and prints the agreement.
"""
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer")
CACHE = os.path.expanduser(os.environ.get("KILN_CACHE", "~/.cache/kiln"))
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
SMOLLM2 = ARGS[0] if len(ARGS) > 0 else os.path.join(CACHE, "SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA = ARGS[1] if len(ARGS) > 1 else os.path.join(CACHE, "gemma-3-270m-q4_k_m.gguf")

CORPUS = [
    "",
    "Hello world",
    "Hello, world! How are you?",
    " leading space",
    "trailing space ",
    "   three leading spaces",
    "multiple   spaces    between words",
    "tabs\tand\t\ttabs",
    "new\nlines\n\nand\n\n\nmore",
    "\n\n\n",
    " \n \n  \n",
    "\r\nwindows\r\nline endings",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "Z\u00fcrich \u0141\u00f3d\u017a \u010cesk\u00e9 Bud\u011bjovice",
    "e\u0301 combining acute",
    "\u4f60\u597d\u4e16\u754c\uff0c\u8fd9\u662f\u4e00\u4e2a\u6d4b\u8bd5\u3002",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3068\u30ab\u30bf\u30ab\u30ca",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645 \u05e9\u05dc\u05d5\u05dd",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "emoji \U0001F600\U0001F680 and \u2764\ufe0f",
    "family \U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466 zwj",
    "flags \U0001F1FA\U0001F1F8\U0001F1EF\U0001F1F5 skin \U0001F44D\U0001F3FD",
    "mixed English\u4e2d\u6587\u0440\u0443\u0441\u0441\u043a\u0438\u0439\u65e5\u672c\u8a9e\U0001F600text",
    "1234567",
    "3.14159",
    "1,000,000 and 1.000.000",
    "phone: +1 (555) 123-4567",
    "x=12345678901234567890",
    "\u0661\u0662\u0663 \u00bd \u2163 \u00b2 fullwidth \uff11\uff12\uff13",
    "def f(x):\n    return x * 2\n\n\nclass A:\n\tpass\n",
    "int main(void) {\n    printf(\"%d\\n\", 42);\n    return 0;\n}\n",
    "    if (a && b || !c) { x += y >> 2; }",
    "for i in range(10):\n        print(i)  # comment\n",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|><|im_end|>",
    "text<|endoftext|>more text",
    "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad>",
    "<|im_start|",
    "<unused0> <unused12>",
    "I'm, you're, he's, we've, they'll, I'd, don't",
    "I'M YOU'RE HE'S WE'VE THEY'LL I'D DON'T",
    "It'S mIxEd'Ll cAsE'Ve",
    "'s 't 're 've 'm 'll 'd",
    "quotes \u2018single\u2019 \u201cdouble\u201d `back`",
    "punctuation!!! ??? ... --- *** ###",
    "email@example.com https://example.com/path?q=1&r=2#frag",
    "   ",
    " ",
    "a",
    "\t",
    "\u2581already has the meta space \u2581\u2581",
    "ends with newline\n",
    "a  b   c    d     e",
    "\u00a0non-breaking\u00a0space \u2003em space \u3000ideographic",
    "zero\u200bwidth\u200cjoiners\u200d",
    "CamelCaseWordsAndUPPERCASE lowercase",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "\U00010400\U0001D11E\U0001F9EA astral plane",
]

# Raw byte strings that are not valid UTF-8. kiln reads them as Python's
# decode("utf-8", errors="replace") does (maximal invalid subparts become
# U+FFFD), so the reference ids are those of the replaced text.
INVALID = [
    b"\xff",
    b"abc\xffdef",
    b"\xc3\x28 bad continuation",
    b"\xe2\x82 truncated",
    b"\xed\xa0\x80 surrogate",
    b"\xf0\x9f\x98 truncated emoji",
    b"\xc0\xaf overlong",
    b"ok \xf5\xf6\xf7 high bytes \x80\x81",
]


def hex_of(s):
    return s.encode("utf-8").hex()


def write_json(name, obj):
    path = os.path.join(OUT, name)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=True, indent=None, separators=(",", ":"))
        f.write("\n")
    print("wrote", path, os.path.getsize(path), "bytes")


def expected_ids(tok, texts, bos=None):
    """ids with parse_special on and off (tokens' encode_special_tokens)."""
    cases = []
    for t in texts:
        tok.encode_special_tokens = False
        with_special = tok.encode(t, add_special_tokens=False).ids
        tok.encode_special_tokens = True
        plain = tok.encode(t, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        cases.append({"text": t, "hex": hex_of(t), "special": with_special, "plain": plain})
    for raw in INVALID:
        t = raw.decode("utf-8", errors="replace")
        tok.encode_special_tokens = False
        ids = tok.encode(t, add_special_tokens=False).ids
        cases.append({"text": t, "hex": raw.hex(), "special": ids, "plain": ids})
    return cases


def gguf_vocab(path):
    from gguf import GGUFReader

    r = GGUFReader(path)

    def strings(key):
        f = r.fields[key]
        return [bytes(f.parts[i]).decode("utf-8") for i in f.data]

    def scalar(key):
        f = r.fields.get(key)
        return None if f is None else f.parts[f.data[0]][0]

    types = [int(r.fields["tokenizer.ggml.token_type"].parts[i][0]) for i in r.fields["tokenizer.ggml.token_type"].data]
    merges = strings("tokenizer.ggml.merges") if "tokenizer.ggml.merges" in r.fields else None
    return strings("tokenizer.ggml.tokens"), types, merges, scalar


def smollm2_reference(path):
    tokens, types, merges, scalar = gguf_vocab(path)
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = [tuple(m.split(" ", 1)) for m in merges]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=pairs, ignore_merges=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == 3])
    return tok


def synth_training_text():
    base = [t for t in CORPUS if t]
    words = ("the of and to in is that for it with as was on be by this are from at or have an they which one "
             "you were her all she there would their we him been has when who will more no if out so said what up "
             "its about into than them can only other new some could time these two may then do first any my now "
             "such like our over man me even most made after also did many before must through back years where").split()
    lines = [" ".join(words[(i * 7 + k * 3) % len(words)] for k in range(12)) for i in range(200)]
    return base * 5 + lines + ["def f(x):\n    return x\n"] * 20 + ["12345 3.14 1,000"] * 20


def train_byte_level(string_merges):
    tok = Tokenizer(models.BPE())
    if string_merges:
        # SmolLM2 style: digits apart, then GPT-2's regex inside ByteLevel.
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        # Llama 3 style: explicit Split regex, ByteLevel without its own regex.
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(
                "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
                "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=256 + 400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"], show_progress=False)
    tok.train_from_iterator(synth_training_text(), trainer)
    tok.add_tokens([AddedToken("<custom>", special=False, normalized=False)])
    j = json.loads(tok.to_str())
    if string_merges:
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    else:
        j["model"]["merges"] = [m.split(" ", 1) if isinstance(m, str) else m for m in j["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(j)), j


def train_spm(metaspace):
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    if metaspace:
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    else:
        # Llama 2 style: normalizer prepends and replaces, no pre-tokenizer.
        tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=120,
                                  show_progress=False)
    tok.train_from_iterator(synth_training_text(), trainer)
    j = json.loads(tok.to_str())
    # Byte-fallback vocabularies carry <0x00>..<0xFF> right after the specials.
    old = sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1])
    specials = [t for t, _ in old[:3]]
    rest = [t for t, _ in old[3:]]
    new_tokens = specials + ["<0x%02X>" % b for b in range(256)] + rest
    j["model"]["vocab"] = {t: i for i, t in enumerate(new_tokens)}
    for a in j["added_tokens"]:
        a["id"] = j["model"]["vocab"][a["content"]]
    if not metaspace:
        j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in j["model"]["merges"]]
    out = Tokenizer.from_str(json.dumps(j))
    out.add_tokens([AddedToken("<start_of_turn>", special=True, normalized=False),
                    AddedToken("<end_of_turn>", special=True, normalized=False)])
    return out, json.loads(out.to_str())


def main():
    os.makedirs(OUT, exist_ok=True)
    write_json("corpus.json", {"valid": CORPUS, "invalid_hex": [b.hex() for b in INVALID]})

    for name, string_merges in (("synth_bpe_llama3", False), ("synth_bpe_smollm", True)):
        tok, j = train_byte_level(string_merges)
        write_json(name + ".tokenizer.json", j)
        write_json(name + ".expected.json", {"cases": expected_ids(tok, CORPUS)})
    for name, metaspace in (("synth_spm_metaspace", True), ("synth_spm_prepend", False)):
        tok, j = train_spm(metaspace)
        write_json(name + ".tokenizer.json", j)
        write_json(name + ".expected.json", {"cases": expected_ids(tok, CORPUS)})
    write_json("synth_config.json", {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": True,
                                     "chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"})

    if os.path.exists(SMOLLM2):
        tok = smollm2_reference(SMOLLM2)
        write_json("smollm2.expected.json", {"reference": "tokenizers " + "Digits+ByteLevel from GGUF vocab/merges",
                                            "cases": expected_ids(tok, CORPUS)})
        d = os.path.join(CACHE, "smollm2-ref")
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))
        # Throughput input: 100 KB+ of mixed text, and its reference ids.
        big = "".join(CORPUS) * 70
        write_json("smollm2_big.expected.json", {"ids": tok.encode(big, add_special_tokens=False).ids,
                                                "repeat": 70, "bytes": len(big.encode("utf-8"))})
    if os.path.exists(GEMMA):
        from transformers import AutoTokenizer

        t = AutoTokenizer.from_pretrained(os.path.dirname(GEMMA), gguf_file=os.path.basename(GEMMA))
        tok = t.backend_tokenizer
        write_json("gemma3.expected.json", {"reference": "transformers GGUF conversion (tokenizers)",
                                           "cases": expected_ids(tok, CORPUS)})
        d = os.path.join(CACHE, "gemma3-ref")
        os.makedirs(d, exist_ok=True)
        tok.save(os.path.join(d, "tokenizer.json"))


def llama_cpp_check():
    import llama_cpp

    for model, name in ((SMOLLM2, "smollm2"), (GEMMA, "gemma3")):
        if not os.path.exists(model):
            print(name, "model absent")
            continue
        llm = llama_cpp.Llama(model_path=model, vocab_only=True, verbose=False)
        with open(os.path.join(OUT, name + ".expected.json"), encoding="utf-8") as f:
            cases = json.load(f)["cases"]
        total = {"valid": [0, 0], "invalid": [0, 0]}
        for c in cases:
            raw = bytes.fromhex(c["hex"])
            kind = "invalid" if raw != c["text"].encode("utf-8") else "valid"
            for special, key in ((True, "special"), (False, "plain")):
                ids = llm.tokenize(raw, add_bos=False, special=special)
                total[kind][0] += ids == c[key]
                total[kind][1] += 1
                if ids != c[key]:
                    print("  differs:", name, repr(c["text"][:40]), "special" if special else "plain", ids, c[key])
        for kind, (eq, n) in total.items():
            print(f"{name}: llama.cpp equals the reference on {eq}/{n} {kind}-UTF-8 encodings")


if __name__ == "__main__":
    if sys.argv[1:] == ["--llama-cpp-check"]:
        llama_cpp_check()
    else:
        main()
