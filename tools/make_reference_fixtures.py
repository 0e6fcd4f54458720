#!/usr/bin/env python3
"""Independent forward-pass references for SmolLM2 (see docs/reference.md).

transformers dequantizes the GGUF (and un-permutes Q/K) itself and runs the
model in float32 on CPU with eager attention; none of kiln's code is involved.
Prompt ids come from a `tokenizers` pipeline rebuilt from the GGUF vocab and
merges with SmolLM2's own pre-tokenizer (digits split, then byte-level regex);
transformers' GGUF tokenizer conversion applies the GPT-2 regex, which differs.

Writes two files (format in docs/reference.md):
  smollm2_f32.bin   weights = dequantized F32 (reference for GGUF / F32 HF folder)
  smollm2_bf16.bin  weights rounded to BF16, computed in float32 (BF16 HF folder)

Usage:
  tools/make_reference_fixtures.py [--model PATH] [--out DIR]
  tools/make_reference_fixtures.py --check FILE...
"""
import argparse
import os
import struct
import sys

import numpy as np

DEFAULT_MODEL = os.path.expanduser("~/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf")
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "reference")

MAGIC = b"KLNREF1\0"
N_PROBE = 512
TOPK = 16
N_GEN = 64

# About 1, 9, 40 and 130 tokens; the third is a ChatML prompt with special tokens.
PROMPTS = [
    "Hello",
    "In 2024 the capital of",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWhat is the capital of France? Answer briefly.<|im_end|>\n<|im_start|>assistant\n",
    "The history of computing is full of surprising turns. In 1837, Charles Babbage described the "
    "Analytical Engine, a mechanical general-purpose computer that was never completed. About a century "
    "later, Alan Turing's 1936 paper defined what it means for a function to be computable, and during "
    "the Second World War machines such as Colossus and ENIAC showed that electronic computation was "
    "practical. Today a phone runs at more than 3,000,000,000 cycles per second. A tiny Python function:\n\ndef add(a, b):\n    return a + b\n\nIt",
]


def gguf_field(reader, key):
    f = reader.fields[key]
    return [f.parts[i] for i in f.data]


def build_tokenizer(gguf_path):
    """SmolLM2's tokenizer pipeline rebuilt from the GGUF's vocab and merges."""
    from gguf import GGUFReader
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    r = GGUFReader(gguf_path)
    tokens = [bytes(p).decode("utf-8") for p in gguf_field(r, "tokenizer.ggml.tokens")]
    types = [int(p[0]) for p in gguf_field(r, "tokenizer.ggml.token_type")]
    merges = [tuple(bytes(p).decode("utf-8").split(" ", 1)) for p in gguf_field(r, "tokenizer.ggml.merges")]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens in GGUF vocab"
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    CONTROL = 3
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t, ty in zip(tokens, types) if ty == CONTROL])
    return tok, len(tokens)


def load_model(gguf_path):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path),
        dtype=torch.float32, attn_implementation="eager")
    model.eval()
    return model


def probe_ids(vocab):
    return np.sort(np.random.default_rng(0).choice(vocab, size=N_PROBE, replace=False)).astype("<i4")


def compute(model, prompts_ids, probes):
    import torch
    results = []
    with torch.no_grad():
        for ids in prompts_ids:
            x = torch.tensor([ids], dtype=torch.long)
            logits = model(input_ids=x).logits[0].to(torch.float32).numpy()  # [n, vocab]
            # Plain greedy: argmax of the raw logits, fed back through the KV cache,
            # for exactly N_GEN steps (no EOS stop, no logits processors).
            out = model(input_ids=x, use_cache=True)
            past, step = out.past_key_values, out.logits[0, -1]
            gen, steps = [], []
            for _ in range(N_GEN):
                steps.append(step.to(torch.float32).numpy())
                tok = int(torch.argmax(step))
                gen.append(tok)
                out = model(input_ids=torch.tensor([[tok]]), past_key_values=past, use_cache=True)
                past, step = out.past_key_values, out.logits[0, -1]
            gen = np.array(gen, dtype=np.int32)
            # top1 - top2 logit at each greedy step: where it is tiny, an engine
            # within tolerance may rightly pick the other token and diverge from there
            top2 = np.sort(np.stack(steps), axis=1)[:, -2:]
            results.append((ids, logits, gen, (top2[:, 1] - top2[:, 0]).astype(np.float32)))
    return results


MARGIN_MAGIC = b"KLNGMG1\0"


def write_margins(path, results):
    """Sidecar: magic "KLNGMG1\\0"; u32 n_prompts; u32 n_gen; f32 margin[n_prompts][n_gen]."""
    with open(path, "wb") as f:
        f.write(MARGIN_MAGIC)
        f.write(struct.pack("<2I", len(results), N_GEN))
        for r in results:
            f.write(r[3].astype("<f4").tobytes())


def read_margins(path):
    data = open(path, "rb").read()
    if data[:8] != MARGIN_MAGIC:
        raise ValueError(f"{path}: bad magic")
    n_prompts, n_gen = struct.unpack_from("<2I", data, 8)
    if len(data) != 16 + 4 * n_prompts * n_gen:
        raise ValueError(f"{path}: wrong size")
    return np.frombuffer(data, "<f4", n_prompts * n_gen, 16).reshape(n_prompts, n_gen)


def write_fixture(path, vocab, probes, results):
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<5I", len(results), vocab, N_PROBE, TOPK, N_GEN))
        f.write(probes.astype("<i4").tobytes())
        for ids, logits, gen, _ in results:
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            for row in logits:
                # stable sort so ties order by id, deterministically
                top = np.argsort(-row, kind="stable")[:TOPK]
                f.write(row[probes].astype("<f4").tobytes())
                f.write(top.astype("<i4").tobytes())
                f.write(row[top].astype("<f4").tobytes())
            f.write(logits[-1].astype("<f4").tobytes())
            f.write(np.asarray(gen, dtype="<i4").tobytes())


def read_fixture(path):
    """Re-reads a fixture; returns (header dict, probes, list of per-prompt dicts)."""
    data = open(path, "rb").read()
    off = 0

    def take(fmt_dtype, count):
        nonlocal off
        n = np.dtype(fmt_dtype).itemsize * count
        if off + n > len(data):
            raise ValueError(f"{path}: truncated at offset {off}")
        a = np.frombuffer(data, dtype=fmt_dtype, count=count, offset=off)
        off += n
        return a

    if data[:8] != MAGIC:
        raise ValueError(f"{path}: bad magic")
    off = 8
    n_prompts, vocab, n_probe, topk, n_gen = (int(v) for v in take("<u4", 5))
    probes = take("<i4", n_probe)
    prompts = []
    for _ in range(n_prompts):
        n = int(take("<u4", 1)[0])
        ids = take("<i4", n)
        probe_logits = np.empty((n, n_probe), np.float32)
        top_ids = np.empty((n, topk), np.int32)
        top_logits = np.empty((n, topk), np.float32)
        for p in range(n):
            probe_logits[p] = take("<f4", n_probe)
            top_ids[p] = take("<i4", topk)
            top_logits[p] = take("<f4", topk)
        last = take("<f4", vocab)
        gen = take("<i4", n_gen)
        prompts.append(dict(ids=ids, probe_logits=probe_logits, top_ids=top_ids,
                            top_logits=top_logits, last_logits=last, gen_ids=gen))
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} trailing bytes")
    hdr = dict(n_prompts=n_prompts, vocab=vocab, n_probe=n_probe, topk=topk, n_gen=n_gen)
    return hdr, probes, prompts


def margins_path(fixture_path):
    return fixture_path[:-len(".bin")] + "_gen_margins.bin"


def check(path, tok=None):
    hdr, probes, prompts = read_fixture(path)
    print(f"{path}: {os.path.getsize(path)} bytes, {hdr}")
    margins = read_margins(margins_path(path)) if os.path.exists(margins_path(path)) else None
    for i, pr in enumerate(prompts):
        last = pr["last_logits"]
        # internal consistency: the last position's top-k must match its full logits
        assert np.array_equal(pr["top_ids"][-1], np.argsort(-last, kind="stable")[:hdr["topk"]])
        assert np.array_equal(pr["probe_logits"][-1], last[probes])
        assert np.all(np.diff(pr["top_logits"], axis=1) <= 0)
        line = (f"  prompt {i}: {len(pr['ids'])} tokens, last top1={pr['top_ids'][-1][0]} "
                f"({pr['top_logits'][-1][0]:.4f}), gen[:8]={pr['gen_ids'][:8].tolist()}")
        print(line)
        if margins is not None:
            mg = margins[i]
            first = {t: int(np.argmax(np.concatenate([mg < t, [True]]))) for t in (0.05, 0.1, 0.25, 0.5)}
            print(f"    greedy margins: min {mg.min():.4f} at step {int(mg.argmin())}; "
                  "steps before the first margin below " +
                  ", ".join(f"{t}: {n}" for t, n in first.items()))
        if tok is not None:
            print("    text:", repr(tok.decode(pr["ids"].tolist(), skip_special_tokens=False))[:100])
            print("    gen: ", repr(tok.decode(pr["gen_ids"].tolist(), skip_special_tokens=False))[:100])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--check", nargs="*", metavar="FILE")
    args = ap.parse_args()

    tok = build_tokenizer(args.model)[0] if os.path.exists(args.model) else None
    if args.check is not None:
        files = args.check or [os.path.join(args.out, n) for n in ("smollm2_f32.bin", "smollm2_bf16.bin")]
        for f in files:
            check(f, tok)
        return

    import torch
    torch.manual_seed(0)
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    tok, vocab = build_tokenizer(args.model)
    prompts_ids = [tok.encode(p, add_special_tokens=False).ids for p in PROMPTS]
    for p, ids in zip(PROMPTS, prompts_ids):
        assert tok.decode(ids, skip_special_tokens=False) == p, "tokenizer round-trip failed"
        print(f"{len(ids):4d} tokens: {p[:60]!r}", file=sys.stderr)
    probes = probe_ids(vocab)
    os.makedirs(args.out, exist_ok=True)

    model = load_model(args.model)
    assert model.config.vocab_size == vocab
    out_f32 = os.path.join(args.out, "smollm2_f32.bin")
    res = compute(model, prompts_ids, probes)
    write_fixture(out_f32, vocab, probes, res)
    write_margins(margins_path(out_f32), res)

    for p in model.parameters():
        p.data = p.data.to(torch.bfloat16).to(torch.float32)
    out_bf16 = os.path.join(args.out, "smollm2_bf16.bin")
    res = compute(model, prompts_ids, probes)
    write_fixture(out_bf16, vocab, probes, res)
    write_margins(margins_path(out_bf16), res)

    for f in (out_f32, out_bf16):
        check(f, tok)


if __name__ == "__main__":
    main()
