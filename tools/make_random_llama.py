#!/usr/bin/env python3
"""Writes a Hugging Face Llama folder with random BF16 weights, for benchmarks
at a real model's size without downloading one (the GPU machine has no network).

usage: tools/make_random_llama.py --out DIR [--device cuda|cpu] [--seed N]
           [--layers 32 --hidden 4096 --intermediate 14336 --heads 32
            --kv-heads 8 --vocab 128256]   (defaults: Llama 3 8B geometry)
           [--shard-gb 5] [--skip-existing] [--no-torch] [--no-check]

Writes config.json (LlamaForCausalLM), model-0000i-of-0000n.safetensors shards
of about --shard-gb GB each plus model.safetensors.index.json (written last:
its presence means the folder is complete), tokenizer.json (a small byte-level
BPE learned here from a fixed text; kiln accepts a tokenizer smaller than the
embedding table), tokenizer_config.json and generation_config.json.

Weights: matrices (embeddings and lm_head included) ~ N(0, 0.02), norms = 1,
drawn on --device with torch, one generator seed per tensor (seed, index), and
saved shard by shard straight from the device tensors. While the layers are
drawn, a few random tokens are run through them (float32, the same Llama
forward as transformers) to check that the hidden states stay finite.

Without torch (or with --no-torch) numpy draws the weights on the CPU and the
safetensors files are written by hand (u64 header length, JSON header, data);
float32 is rounded to bf16 (round to nearest even). No forward check then.
"""
import argparse
import json
import math
import os
import re
import struct
import sys
import time

import numpy as np

try:
    import torch
except ImportError:  # the numpy path below needs no torch
    torch = None

STD = 0.02
CHECK_TOKENS = 8
BOS, EOS = "<|begin_of_text|>", "<|end_of_text|>"

# The text the toy BPE is learned from: any English does; fixed so that the
# tokenizer (like the weights) is the same on every run.
CORPUS = """
The quick brown fox jumps over the lazy dog. A language model reads a prompt,
turns it into tokens, and predicts the next token again and again. The weights
of this model are random numbers, so what it writes means nothing; it exists to
measure how fast an inference engine moves data through a model of a real size.
Hello, hi, hey there! How are you today? I am fine, thank you. What is the
capital of France? The capital of France is Paris. The three primary colors are
red, yellow and blue. One, two, three, four, five, six, seven, eight, nine, ten.
Prefill processes the whole prompt at once; decode produces one token at a time
and reads every weight for each of them, which is why memory bandwidth matters.
In the beginning there was the word, and the word was split into pieces. These
pieces are merged by frequency: the most common pair of symbols becomes a new
symbol, then the next, until the vocabulary is as large as we want it to be.
def main(): return 0  # code, numbers 0123456789 and punctuation ()[]{}<>=+-*/
"""
# GPT-2's pre-tokenizer regex with ASCII classes (Python's re has no \p{L}).
PRETOK_RE = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--rope-theta", type=float, default=500000.0)
    p.add_argument("--max-positions", type=int, default=8192)
    p.add_argument("--shard-gb", type=float, default=5.0, help="shard size in GB (1e9 bytes)")
    p.add_argument("--tok-merges", type=int, default=1000, help="at most this many BPE merges")
    p.add_argument("--skip-existing", action="store_true", help="do nothing if the same folder is complete")
    p.add_argument("--no-torch", action="store_true", help="use the numpy writer even if torch is present")
    p.add_argument("--no-check", action="store_true", help="skip the forward check")
    a = p.parse_args()
    if a.hidden % a.heads or a.heads % a.kv_heads or (a.hidden // a.heads) % 2:
        p.error("hidden must be a multiple of heads, heads of kv-heads, and head_dim even")
    return a


# ---- tensors and shards ------------------------------------------------------

def tensor_specs(a):
    """(name, shape, kind) in file order; kind 'normal' or 'ones'."""
    hd = a.hidden // a.heads
    specs = [("model.embed_tokens.weight", (a.vocab, a.hidden), "normal")]
    for i in range(a.layers):
        p = f"model.layers.{i}."
        specs += [
            (p + "input_layernorm.weight", (a.hidden,), "ones"),
            (p + "self_attn.q_proj.weight", (a.heads * hd, a.hidden), "normal"),
            (p + "self_attn.k_proj.weight", (a.kv_heads * hd, a.hidden), "normal"),
            (p + "self_attn.v_proj.weight", (a.kv_heads * hd, a.hidden), "normal"),
            (p + "self_attn.o_proj.weight", (a.hidden, a.heads * hd), "normal"),
            (p + "post_attention_layernorm.weight", (a.hidden,), "ones"),
            (p + "mlp.gate_proj.weight", (a.intermediate, a.hidden), "normal"),
            (p + "mlp.up_proj.weight", (a.intermediate, a.hidden), "normal"),
            (p + "mlp.down_proj.weight", (a.hidden, a.intermediate), "normal"),
        ]
    specs += [("model.norm.weight", (a.hidden,), "ones"), ("lm_head.weight", (a.vocab, a.hidden), "normal")]
    return specs


def nbytes(shape):
    return 2 * math.prod(shape)  # bf16


def plan_shards(specs, shard_bytes):
    """Greedy packing in file order: a shard closes before the tensor that would overflow it."""
    shards, cur, size = [], [], 0
    for i, (name, shape, kind) in enumerate(specs):
        b = nbytes(shape)
        if cur and size + b > shard_bytes:
            shards.append(cur)
            cur, size = [], 0
        cur.append(i)
        size += b
    if cur:
        shards.append(cur)
    return shards


def shard_name(i, n):
    return f"model-{i + 1:05d}-of-{n:05d}.safetensors"


# ---- config and tokenizer ----------------------------------------------------

def bytes_to_unicode():
    """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def learn_bpe(max_merges):
    """Byte-level BPE on CORPUS: most frequent pair first (ties: smallest pair)."""
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    words = {}
    for piece in PRETOK_RE.findall(CORPUS):
        w = tuple(b2u[b] for b in piece.encode("utf-8"))
        words[w] = words.get(w, 0) + 1
    merges = []
    while len(merges) < max_merges:
        pairs = {}
        for w, c in words.items():
            for p in zip(w, w[1:]):
                pairs[p] = pairs.get(p, 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        if pairs[best] < 2:
            break
        merged = best[0] + best[1]
        merges.append(list(best))
        vocab[merged] = len(vocab)
        new_words = {}
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(merged)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return vocab, merges


def tokenizer_json(vocab_limit, max_merges):
    """tokenizer.json (Hugging Face tokenizers format) and the BOS/EOS ids."""
    vocab, merges = learn_bpe(min(max_merges, max(0, vocab_limit - 256 - 2)))
    bos_id, eos_id = len(vocab), len(vocab) + 1
    special = lambda i, s: {"id": i, "content": s, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [special(bos_id, BOS), special(eos_id, EOS)],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {BOS: {"id": BOS, "ids": [bos_id], "tokens": [BOS]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    return tok, bos_id, eos_id


def config_json(a, bos_id, eos_id):
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "head_dim": a.hidden // a.heads,
        "hidden_act": "silu",
        "hidden_size": a.hidden,
        "initializer_range": STD,
        "intermediate_size": a.intermediate,
        "max_position_embeddings": a.max_positions,
        "mlp_bias": False,
        "num_attention_heads": a.heads,
        "num_hidden_layers": a.layers,
        "num_key_value_heads": a.kv_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "rope_theta": a.rope_theta,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": a.vocab,
    }


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, path)


def folder_complete(out, config, index):
    """True when out holds this config and index and every shard at its full size."""
    try:
        with open(os.path.join(out, "config.json"), encoding="utf-8") as f:
            if json.load(f) != config:
                return False
        with open(os.path.join(out, "model.safetensors.index.json"), encoding="utf-8") as f:
            if json.load(f) != index:
                return False
        for need in ("tokenizer.json", "tokenizer_config.json"):
            if not os.path.isfile(os.path.join(out, need)):
                return False
        for shard in set(index["weight_map"].values()):
            with open(os.path.join(out, shard), "rb") as f:
                header_len = struct.unpack("<Q", f.read(8))[0]
                header = json.loads(f.read(header_len))
            end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
            if os.path.getsize(os.path.join(out, shard)) != 8 + header_len + end:
                return False
        return True
    except (OSError, ValueError, KeyError):
        return False


# ---- numpy writer (no torch) -------------------------------------------------

def f32_to_bf16_bits(x):
    """Round float32 to the nearest bf16 (ties to even); returns uint16 bits."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = u + (np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
    return (rounded >> np.uint32(16)).astype(np.uint16)


def write_safetensors_numpy(path, items):
    """items: list of (name, shape, uint16 array). Header padded to 8 bytes."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, arr in items:
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + arr.nbytes]}
        off += arr.nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-len(hbytes) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for _, _, arr in items:
            f.write(arr.astype("<u2", copy=False).tobytes())


def draw_numpy(seed, idx, shape, kind):
    if kind == "ones":
        return f32_to_bf16_bits(np.ones(shape, dtype=np.float32))
    rng = np.random.default_rng([seed, idx])
    return f32_to_bf16_bits(rng.standard_normal(shape, dtype=np.float32) * np.float32(STD))


# ---- torch: drawing and the forward check -----------------------------------

def draw_torch(seed, idx, shape, kind, device):
    if kind == "ones":
        return torch.ones(shape, dtype=torch.bfloat16, device=device)
    g = torch.Generator(device=device)
    g.manual_seed(seed * 1_000_003 + idx)
    return torch.empty(shape, dtype=torch.bfloat16, device=device).normal_(0.0, STD, generator=g)


class ForwardCheck:
    """Runs CHECK_TOKENS tokens through the layers as their weights are drawn
    (Hugging Face Llama: RMSNorm, RoPE on split halves, GQA causal attention,
    SwiGLU), in float32, and records whether the hidden states stay finite."""

    def __init__(self, a, device):
        self.a, self.device = a, device
        self.hd = a.hidden // a.heads
        self.eps = 1e-5
        g = torch.Generator(device="cpu")
        g.manual_seed(1234)
        self.ids = torch.randint(0, a.vocab, (CHECK_TOKENS,), generator=g).to(device)
        pos = torch.arange(CHECK_TOKENS, device=device, dtype=torch.float32)
        inv = 1.0 / (a.rope_theta ** (torch.arange(0, self.hd, 2, device=device, dtype=torch.float32) / self.hd))
        freqs = torch.outer(pos, inv)
        emb = torch.cat([freqs, freqs], dim=-1)
        self.cos, self.sin = emb.cos()[:, None, :], emb.sin()[:, None, :]
        self.h = None
        self.layer = {}
        self.rms = []  # hidden-state RMS after each layer
        self.logits = None

    def norm(self, x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * w

    def rope(self, x):
        x1, x2 = x[..., : self.hd // 2], x[..., self.hd // 2:]
        return x * self.cos + torch.cat([-x2, x1], dim=-1) * self.sin

    def run_layer(self, w):
        a, T, hd = self.a, CHECK_TOKENS, self.hd
        x = self.norm(self.h, w["input_layernorm.weight"])
        q = (x @ w["self_attn.q_proj.weight"].T).view(T, a.heads, hd)
        k = (x @ w["self_attn.k_proj.weight"].T).view(T, a.kv_heads, hd)
        v = (x @ w["self_attn.v_proj.weight"].T).view(T, a.kv_heads, hd)
        q, k = self.rope(q), self.rope(k)
        rep = a.heads // a.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        scores = torch.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
        mask = torch.ones(T, T, dtype=torch.bool, device=self.device).tril()
        p = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        attn = torch.einsum("hts,shd->thd", p, v).reshape(T, a.heads * hd)
        self.h = self.h + attn @ w["self_attn.o_proj.weight"].T
        x = self.norm(self.h, w["post_attention_layernorm.weight"])
        gate, up = x @ w["mlp.gate_proj.weight"].T, x @ w["mlp.up_proj.weight"].T
        self.h = self.h + (torch.nn.functional.silu(gate) * up) @ w["mlp.down_proj.weight"].T
        self.rms.append(self.h.pow(2).mean().sqrt().item())

    def see(self, name, t):
        t = t.float()
        if name == "model.embed_tokens.weight":
            self.h = t[self.ids].clone()
        elif name == "model.norm.weight":
            self.final_norm = t
        elif name == "lm_head.weight":
            self.logits = self.norm(self.h, self.final_norm) @ t.T
        else:
            m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
            self.layer[m.group(2)] = t
            if len(self.layer) == 9:  # all of this layer's tensors
                self.run_layer(self.layer)
                self.layer = {}

    def report(self):
        finite = all(math.isfinite(r) for r in self.rms) and self.logits is not None and \
            bool(torch.isfinite(self.logits).all())
        first, last = (self.rms[0], self.rms[-1]) if self.rms else (float("nan"), float("nan"))
        std = self.logits.std().item() if self.logits is not None else float("nan")
        print(f"forward check ({CHECK_TOKENS} tokens): hidden RMS after layer 1 {first:.4g}, after layer "
              f"{len(self.rms)} {last:.4g}; logits std {std:.4g}: {'finite' if finite else 'NOT FINITE'}")
        return finite


def main():
    a = parse_args()
    use_torch = torch is not None and not a.no_torch
    if not use_torch and a.device != "cpu":
        sys.exit("make_random_llama: without torch only --device cpu works")
    if use_torch and a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("make_random_llama: no CUDA device (use --device cpu)")

    specs = tensor_specs(a)
    shards = plan_shards(specs, int(a.shard_gb * 1e9))
    n = len(shards)
    weight_map = {specs[i][0]: shard_name(s, n) for s, members in enumerate(shards) for i in members}
    total = sum(nbytes(shape) for _, shape, _ in specs)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    tok, bos_id, eos_id = tokenizer_json(a.vocab, a.tok_merges)
    config = config_json(a, bos_id, eos_id)

    if a.skip_existing and folder_complete(a.out, config, index):
        print(f"make_random_llama: {a.out} is complete already ({total / 1e9:.2f} GB); nothing to do")
        return 0
    os.makedirs(a.out, exist_ok=True)
    # The index goes last: a folder with one is complete.
    try:
        os.remove(os.path.join(a.out, "model.safetensors.index.json"))
    except FileNotFoundError:
        pass
    write_json(os.path.join(a.out, "config.json"), config)
    write_json(os.path.join(a.out, "tokenizer.json"), tok)
    write_json(os.path.join(a.out, "tokenizer_config.json"), {
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
        "clean_up_tokenization_spaces": True, "model_max_length": a.max_positions})
    write_json(os.path.join(a.out, "generation_config.json"),
               {"bos_token_id": bos_id, "eos_token_id": eos_id, "do_sample": False})

    t0 = time.time()
    check = ForwardCheck(a, a.device) if use_torch and not a.no_check else None
    if use_torch:
        from safetensors.torch import save_file
    for s, members in enumerate(shards):
        path = os.path.join(a.out, shard_name(s, n))
        if use_torch:
            tensors = {}
            for i in members:
                name, shape, kind = specs[i]
                tensors[name] = draw_torch(a.seed, i, shape, kind, a.device)
                if check:
                    check.see(name, tensors[name])
            save_file(tensors, path + ".tmp", metadata={"format": "pt"})
            os.chmod(path + ".tmp", 0o644)  # safetensors creates it 0600
            del tensors
        else:
            items = [(specs[i][0], specs[i][1], draw_numpy(a.seed, i, *specs[i][1:])) for i in members]
            write_safetensors_numpy(path + ".tmp", items)
        os.replace(path + ".tmp", path)
        print(f"  {shard_name(s, n)}: {len(members)} tensors, "
              f"{sum(nbytes(specs[i][1]) for i in members) / 1e9:.2f} GB ({time.time() - t0:.1f}s)", flush=True)
    write_json(os.path.join(a.out, "model.safetensors.index.json"), index)
    print(f"make_random_llama: {a.out}: {a.layers} layers, hidden {a.hidden}, {total / 1e9:.2f} GB in {n} shards, "
          f"tokenizer {len(tok['model']['vocab']) + 2} tokens; {time.time() - t0:.1f}s")
    if check and not check.report():
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
