#!/usr/bin/env python3
"""Writes tiny random-weight models of every architecture kiln runs, in both
formats, with transformers' logits as the reference (tests/fixtures/tiny/),
and hostile variants of a tiny model for the loader (tests/fixtures/corrupt_models/).

Run from the repository root: python3 tools/make_tiny_models.py
(and python3 tools/make_tiny_models.py --gpu-variants for tests/fixtures/tiny64/,
the same architectures with heads of 64 for the GPU tests)
Needs torch, transformers, safetensors, tokenizers, gguf, numpy. Deterministic
(fixed seeds), so rerunning rewrites the same bytes up to the library versions.

Models (2 layers, F32; tokenizers from tests/fixtures/tokenizer/synth_*):
  llama    Llama 2 style: theta 10000, untied output, multi-head attention
           (2 heads of 16), SentencePiece-style tokenizer (synth_spm_prepend).
  llama3   Llama 3.x style: theta 500000, rope_scaling "llama3" (factor 8,
           low 1, high 4, original_max_position_embeddings 64, so that one
           frequency band is interpolated, one kept, the rest divided), tied
           embeddings, GQA 4/2 with an explicit head_dim 16 (!= hidden/heads),
           byte-level BPE (synth_bpe_llama3, pre "llama-bpe"). Also
           llama3_v5.config.json: the same config as transformers 5 writes it
           (rope_parameters instead of rope_theta/rope_scaling), and
           llama3_q8_0.gguf (matrices in Q8_0) with its own reference
           llama3_q8_0.ref computed by transformers from the dequantized weights,
           and llama3_q8_0_fast.ref with, in addition, every matrix product's
           input rounded to Q8_0 as ggml does (the arithmetic of kiln's fast mode).
  mistral  model_type mistral: theta 1e6, untied, GQA 4/2 of head 8,
           Metaspace tokenizer (synth_spm_metaspace).
  qwen2    q/k/v biases, tied, theta 1e6, GQA 4/2 of head 8, embedding rows
           padded past the tokenizer (672 > 657, as Qwen pads), config.json
           as transformers 5 saves it; byte-level BPE (synth_bpe_smollm).

For each model M:
  M/            Hugging Face folder: config.json, model.safetensors (F32),
                tokenizer.json, tokenizer_config.json
  M.gguf        what llama.cpp's convert_hf_to_gguf.py writes for it: arch
                "llama" for llama/llama3/mistral with the Q and K rows permuted
                for interleaved RoPE, llama3's rope_freqs.weight divisors, arch
                "qwen2" unpermuted with blk.N.attn_{q,k,v}.bias; metadata
                <arch>.*, tokenizer.ggml.* from tokenizer.json. One deliberate
                difference: convert_hf_to_gguf.py reads
                original_max_position_embeddings from the top level of
                config.json (default 8192, which is what real Llama 3.x has
                inside rope_scaling); here it is read from rope_scaling, so that
                the tiny model's 64 is used on both sides.
  M.ref         transformers' float32 logits (eager attention, loaded from M/),
                little-endian:
                  char magic[8] = "KLNTINY1"
                  u32 n_prompts, u32 vocab, u32 n_probe
                  i32 probe_ids[n_probe]      fixed random token ids
                  per prompt:
                    u32 text_len, text bytes (UTF-8, no NUL)
                    u32 add_bos                1 when ids[0] is the BOS the
                                               tokenizer adds
                    u32 n_tokens, i32 ids[n_tokens]
                    f32 probe[n_tokens][n_probe]  logits of the probe ids at
                                                  every position
                    i32 argmax[n_tokens]          argmax over the whole vocab
                    f32 last[vocab]               all logits of the last position
                (probes instead of full rows keep the file small; a wrong RoPE
                pair, permutation or norm moves every logit.)

corrupt_models/: a 1-layer llama GGUF and HF folder (hidden 8), each broken in
one way; tests/model/test_load_errors.c says what each must produce.
"""
import json
import math
import os
import shutil
import struct

import numpy as np
import torch
from safetensors.torch import save_file
import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter
import gguf.quants

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TOK_DIR = os.path.join(ROOT, "tests", "fixtures", "tokenizer")
OUT = os.path.join(ROOT, "tests", "fixtures", "tiny")
CORRUPT = os.path.join(ROOT, "tests", "fixtures", "corrupt_models")

PROMPTS = [
    "The first time she made the new one, it was back in the years before we had all of them. "
    "Then he said that they would come over to our place after the man from the other side "
    "was done with what he could do about it, and we were so happy.",
    "Hello, world! 12345",
]
N_PROBE = 64

TOKENIZERS = {
    # name: (fixture, kind, gguf pre, bos, eos, add_bos)
    "spm_prepend": ("synth_spm_prepend", "spm", None, "<s>", "</s>", True),
    "spm_metaspace": ("synth_spm_metaspace", "spm", None, "<s>", "</s>", True),
    "bpe_llama3": ("synth_bpe_llama3", "bpe", "llama-bpe", None, "<|endoftext|>", False),
    "bpe_smollm": ("synth_bpe_smollm", "bpe", "smollm", None, "<|endoftext|>", False),
}

MODELS = {
    "llama": dict(
        tokenizer="spm_prepend",
        config=dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, rms_norm_eps=1e-5,
                    rope_theta=10000.0, max_position_embeddings=256, tie_word_embeddings=False,
                    attention_bias=False, mlp_bias=False, hidden_act="silu", rope_scaling=None)),
    "llama3": dict(
        tokenizer="bpe_llama3",
        config=dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                    rms_norm_eps=1e-5, rope_theta=500000.0, max_position_embeddings=512, tie_word_embeddings=True,
                    attention_bias=False, mlp_bias=False, hidden_act="silu",
                    rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                      original_max_position_embeddings=64))),
    "mistral": dict(
        tokenizer="spm_metaspace",
        config=dict(architectures=["MistralForCausalLM"], model_type="mistral", hidden_size=32,
                    intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                    rms_norm_eps=1e-5, rope_theta=1000000.0, max_position_embeddings=512,
                    tie_word_embeddings=False, hidden_act="silu", sliding_window=None)),
    "qwen2": dict(
        tokenizer="bpe_smollm", vocab_pad=672, v5_config=True,
        config=dict(architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, max_position_embeddings=512, tie_word_embeddings=True,
                    hidden_act="silu", use_sliding_window=False)),
}


# --- tokenizers --------------------------------------------------------------

def load_tokenizer(key):
    fixture, kind, pre, bos, eos, add_bos = TOKENIZERS[key]
    with open(os.path.join(TOK_DIR, fixture + ".tokenizer.json"), encoding="utf-8") as f:
        tj = json.load(f)
    tokens = {}
    for t, i in tj["model"]["vocab"].items():
        tokens[i] = t
    added = {a["id"]: a for a in tj["added_tokens"]}
    for i, a in added.items():
        tokens[i] = a["content"]
    n = max(tokens) + 1
    assert sorted(tokens) == list(range(n))
    ids = {t: i for i, t in tokens.items()}
    return dict(json=tj, kind=kind, pre=pre, tokens=[tokens[i] for i in range(n)], added=added,
                bos=ids[bos] if bos else None, eos=ids[eos], add_bos=add_bos, bos_text=bos, eos_text=eos,
                unk=ids.get("<unk>"))


def merges_as_pairs(tj):
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in tj["model"]["merges"]]


def add_tokenizer_meta(w, tok, n_vocab):
    """tokenizer.ggml.* as llama.cpp's converter writes them; padded to the
    embedding rows with [PADi] UNUSED tokens as convert_hf_to_gguf.py does."""
    tokens = list(tok["tokens"])
    types = []
    for i, t in enumerate(tokens):
        if i in tok["added"]:
            a = tok["added"][i]
            if tok["kind"] == "spm" and t == "<unk>":
                types.append(gguf.TokenType.UNKNOWN)
            else:
                types.append(gguf.TokenType.CONTROL if a["special"] else gguf.TokenType.USER_DEFINED)
        elif tok["kind"] == "spm" and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    for i in range(len(tokens), n_vocab or 0):
        tokens.append("[PAD%d]" % i)
        types.append(gguf.TokenType.UNUSED)
    pairs = merges_as_pairs(tok["json"])
    if tok["kind"] == "spm":
        # SentencePiece BPE scores: a piece made by an earlier merge scores
        # higher, which is the order tokenizer.json lists the merges in.
        ids = {t: i for i, t in enumerate(tokens)}
        scores = [0.0] * len(tokens)
        for rank, (a, b) in enumerate(pairs):
            scores[ids[a + b]] = -float(rank + 1)
        w.add_tokenizer_model("llama")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types([int(t) for t in types])
        w.add_unk_token_id(tok["unk"])
        w.add_add_space_prefix(True)
    else:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre(tok["pre"])
        w.add_token_list(tokens)
        w.add_token_types([int(t) for t in types])
        w.add_token_merges([a + " " + b for a, b in pairs])
    if tok["bos"] is not None:
        w.add_bos_token_id(tok["bos"])
    w.add_eos_token_id(tok["eos"])
    w.add_add_bos_token(tok["add_bos"])


def write_tokenizer_files(folder, tok):
    with open(os.path.join(folder, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tok["json"], f, ensure_ascii=False)
    cfg = {"add_bos_token": tok["add_bos"], "add_eos_token": False, "bos_token": tok["bos_text"],
           "eos_token": tok["eos_text"], "model_max_length": 512, "clean_up_tokenization_spaces": False}
    if tok["kind"] == "spm":
        cfg["unk_token"] = "<unk>"
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)


def encode(tok, text):
    from tokenizers import Tokenizer
    t = Tokenizer.from_str(json.dumps(tok["json"]))
    ids = t.encode(text, add_special_tokens=False).ids
    return ([tok["bos"]] if tok["add_bos"] else []) + ids


# --- weights -----------------------------------------------------------------

def randomize(model, seed):
    """Weights of unit-scale activations, so that logits are O(1) and a wrong
    rotation or permutation shows (the default 0.02 init gives flat logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def classic_config(cfg, vocab, tok):
    c = dict(cfg)
    c.update(vocab_size=vocab, torch_dtype="float32", bos_token_id=tok["bos"], eos_token_id=tok["eos"],
             initializer_range=0.02)
    return c


def build_hf(folder, spec, tok, seed):
    from transformers import AutoConfig, AutoModelForCausalLM
    vocab = spec.get("vocab_pad", len(tok["tokens"]))
    cfg = classic_config(spec["config"], vocab, tok)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    config = AutoConfig.from_pretrained(folder)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    randomize(model, seed)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    if spec.get("v5_config"):
        # config.json exactly as transformers 5 writes it (rope_parameters).
        model.config.save_pretrained(folder)
    write_tokenizer_files(folder, tok)
    return cfg


def load_hf(folder):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    return m.eval()


# --- GGUF ----------------------------------------------------------------------

def permute(w, n_head, n_head_kv=None):
    """llama.cpp convert_hf_to_gguf.py LlamaModel.permute."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(cfg):
    """convert_hf_to_gguf.py LlamaModel.generate_extra_tensors (see the
    module docstring on original_max_position_embeddings)."""
    rs = cfg["rope_scaling"]
    base = cfg["rope_theta"]
    dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_MAP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}


def gguf_name(hf):
    if hf in GLOBAL_MAP:
        return GLOBAL_MAP[hf]
    parts = hf.split(".")
    assert parts[0] == "model" and parts[1] == "layers", hf
    return "blk.%s.%s" % (parts[2], LAYER_MAP[".".join(parts[3:])])


def gguf_tensors(state, cfg):
    """HF state dict -> [(gguf name, numpy array)] in the converter's layout."""
    arch = "qwen2" if cfg["model_type"] == "qwen2" else "llama"
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = []
    if arch == "llama" and cfg.get("rope_scaling"):
        out.append(("rope_freqs.weight", llama3_rope_factors(cfg)))
    for name in state:
        t = state[name].detach().to(torch.float32).numpy()
        if arch == "llama":
            if name.endswith(("q_proj.weight", "q_proj.bias")):
                t = permute(t, n_head, n_head)
            if name.endswith(("k_proj.weight", "k_proj.bias")):
                t = permute(t, n_head, n_kv)
        out.append((gguf_name(name), np.ascontiguousarray(t)))
    return arch, out


def write_gguf(path, cfg, tok, tensors, arch, quant=None, n_vocab=None, overrides=None):
    """overrides: metadata key suffix -> value (None drops the key), for the
    hostile variants."""
    overrides = overrides or {}
    w = GGUFWriter(path, overrides.get("general.architecture", arch))
    w.add_name("kiln tiny " + cfg["model_type"])
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    meta = {
        "context_length": cfg["max_position_embeddings"],
        "embedding_length": cfg["hidden_size"],
        "block_count": cfg["num_hidden_layers"],
        "feed_forward_length": cfg["intermediate_size"],
        "attention.head_count": cfg["num_attention_heads"],
        "attention.head_count_kv": cfg["num_key_value_heads"],
        "rope.dimension_count": hd,
        "vocab_size": n_vocab,
    }
    if "head_dim" in cfg:
        meta["attention.key_length"] = hd
        meta["attention.value_length"] = hd
    for k, v in overrides.items():
        if k.startswith("general."):
            continue
        meta[k] = v
    for k, v in meta.items():
        if isinstance(v, str):
            w.add_string("%s.%s" % (arch, k), v)
        elif v is not None:
            w.add_uint32("%s.%s" % (arch, k), v)
    w.add_float32("%s.rope.freq_base" % arch, cfg["rope_theta"])
    w.add_float32("%s.attention.layer_norm_rms_epsilon" % arch, cfg["rms_norm_eps"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant else gguf.LlamaFileType.ALL_F32)
    add_tokenizer_meta(w, tok, n_vocab)
    for name, t in tensors:
        if isinstance(t, tuple):  # (raw bytes, element shape, type)
            w.add_tensor(name, t[0], raw_shape=t[1], raw_dtype=t[2])
        elif quant and t.ndim == 2 and name != "rope_freqs.weight":
            w.add_tensor(name, gguf.quants.quantize(t, quant), raw_dtype=quant)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def dequantized_state(state, cfg, quant):
    """The HF state with every matrix replaced by its quantize->dequantize
    round trip (rows are quantized in GGUF layout; the row permutation of
    Q/K doesn't change which values share a block, since blocks run along
    the input dimension)."""
    out = {}
    for k, v in state.items():
        t = v.detach().numpy()
        if t.ndim == 2:
            t = gguf.quants.dequantize(gguf.quants.quantize(t, quant), quant).reshape(t.shape)
        out[k] = torch.from_numpy(np.ascontiguousarray(t, dtype=np.float32))
    return out


def q8_0_round_trip(x):
    """ggml's quantize_row_q8_0_ref then dequantization, in float32: groups of
    32 along the last axis, d = amax / 127, codes roundf(x * (1 / d)) (half
    away from zero), scale stored as f16. This is what kiln's fast mode (and
    llama.cpp) multiplies Q8_0 weights with."""
    shape = x.shape
    g = x.to(torch.float32).reshape(-1, 32)
    d = g.abs().amax(dim=1, keepdim=True) / 127.0
    inv = torch.where(d != 0, 1.0 / d, torch.zeros_like(d))
    v = g * inv
    q = torch.sign(v) * torch.floor(v.abs() + 0.5)
    return (q * d.to(torch.float16).to(torch.float32)).reshape(shape)


# --- reference -----------------------------------------------------------------

def write_ref(path, model, tok, vocab, seed):
    rng = np.random.default_rng(seed)
    probe = np.sort(rng.choice(vocab, size=N_PROBE, replace=False)).astype(np.int32)
    parts = [b"KLNTINY1", struct.pack("<III", len(PROMPTS), vocab, N_PROBE), probe.tobytes()]
    lens = []
    for text in PROMPTS:
        ids = encode(tok, text)
        lens.append(len(ids))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].to(torch.float32).numpy()
        assert logits.shape == (len(ids), vocab)
        raw = text.encode("utf-8")
        parts += [struct.pack("<I", len(raw)), raw, struct.pack("<I", 1 if tok["add_bos"] else 0),
                  struct.pack("<I", len(ids)), np.array(ids, dtype=np.int32).tobytes(),
                  np.ascontiguousarray(logits[:, probe]).tobytes(),
                  np.argmax(logits, axis=1).astype(np.int32).tobytes(), logits[-1].tobytes()]
    with open(path, "wb") as f:
        f.write(b"".join(parts))
    return lens


# --- models ------------------------------------------------------------------

def make_model(name, spec, seed):
    tok = load_tokenizer(spec["tokenizer"])
    folder = os.path.join(OUT, name)
    cfg = build_hf(folder, spec, tok, seed)
    model = load_hf(folder)
    vocab = cfg["vocab_size"]
    lens = write_ref(os.path.join(OUT, name + ".ref"), model, tok, vocab, seed)
    state = {k: v for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    arch, tensors = gguf_tensors(state, cfg)
    write_gguf(os.path.join(OUT, name + ".gguf"), cfg, tok, tensors, arch, n_vocab=vocab)
    print("%s: prompts of %s tokens, vocab %d" % (name, lens, vocab))
    if name == "llama3":
        # The same config as transformers 5 saves it (rope_parameters).
        model.config.to_json_file(os.path.join(OUT, "llama3_v5.config.json"))
        # Q8_0 matrices; the reference runs transformers on the dequantized weights.
        arch, tensors = gguf_tensors(state, cfg)
        write_gguf(os.path.join(OUT, "llama3_q8_0.gguf"), cfg, tok, tensors, arch, quant=QT.Q8_0, n_vocab=vocab)
        dq = dequantized_state(state, cfg, QT.Q8_0)
        if cfg["tie_word_embeddings"]:
            dq["lm_head.weight"] = dq["model.embed_tokens.weight"]
        model.load_state_dict(dq)
        write_ref(os.path.join(OUT, "llama3_q8_0.ref"), model, tok, vocab, seed)
        # Fast mode's arithmetic: every matrix product's input rounded to Q8_0.
        hooks = [m.register_forward_pre_hook(lambda _m, args: (q8_0_round_trip(args[0]),))
                 for m in model.modules() if isinstance(m, torch.nn.Linear)]
        write_ref(os.path.join(OUT, "llama3_q8_0_fast.ref"), model, tok, vocab, seed)
        for h in hooks:
            h.remove()


# --- hostile variants ----------------------------------------------------------

CORRUPT_CFG = dict(architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=8, intermediate_size=32,
                   num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-5,
                   rope_theta=10000.0, max_position_embeddings=64, tie_word_embeddings=True, hidden_act="silu")


def make_corrupt():
    if os.path.isdir(CORRUPT):
        shutil.rmtree(CORRUPT)
    os.makedirs(CORRUPT)
    tok = load_tokenizer("bpe_smollm")
    vocab = len(tok["tokens"])
    from transformers import AutoModelForCausalLM, LlamaConfig
    cfg = classic_config(CORRUPT_CFG, vocab, tok)
    config = LlamaConfig(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    randomize(model, 7)
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    arch, tensors = gguf_tensors(state, cfg)

    def gguf_variant(fname, tensors=tensors, n_vocab=vocab, **overrides):
        write_gguf(os.path.join(CORRUPT, fname), cfg, tok, tensors, arch, n_vocab=n_vocab, overrides=overrides)

    gguf_variant("valid.gguf")  # the control: must load
    gguf_variant("missing_tensor.gguf", tensors=[(n, t) for n, t in tensors if n != "blk.0.ffn_down.weight"])
    gguf_variant("wrong_shape.gguf",
                 tensors=[(n, t[:, :4] if n == "blk.0.attn_k.weight" else t) for n, t in tensors])
    # 8 / 3 heads: no key_length, so the head size must come from a division.
    gguf_variant("heads_not_dividing.gguf", **{"attention.head_count": 3, "attention.head_count_kv": 3,
                                               "rope.dimension_count": None})
    gguf_variant("kv_heads_not_dividing.gguf", **{"attention.head_count_kv": 3})
    gguf_variant("arch_gpt2.gguf", **{"general.architecture": "gpt2"})
    # A matrix of a type kiln's GGUF reader does not know (I32).
    gguf_variant("matrix_type_i32.gguf", tensors=[
        (n, (t * 100).astype(np.int32) if n == "blk.0.ffn_down.weight" else t) for n, t in tensors])
    # Q8_K is a type kiln knows (for activations) but has no weight kernel for.
    # Its blocks hold 256 values, so this variant's feed-forward size is 256.
    rng = np.random.default_rng(3)
    ffn = 256
    wide = {"blk.0.ffn_gate.weight": (ffn, 8), "blk.0.ffn_up.weight": (ffn, 8), "blk.0.ffn_down.weight": (8, ffn)}
    q8k = []
    for n, t in tensors:
        if n == "blk.0.ffn_down.weight":
            blocks = []
            for r in rng.standard_normal(wide[n]).astype(np.float32):
                d = float(np.abs(r).max()) / 127
                q = np.round(r / d).astype(np.int8)
                bsums = q.astype(np.int16).reshape(16, 16).sum(axis=1).astype(np.int16)
                blocks.append(struct.pack("<f", d) + q.tobytes() + bsums.tobytes())
            raw = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(8, 292)
            q8k.append((n, (raw, raw.shape, QT.Q8_K)))
        elif n in wide:
            q8k.append((n, rng.standard_normal(wide[n]).astype(np.float32)))
        else:
            q8k.append((n, t))
    write_gguf(os.path.join(CORRUPT, "matrix_type_q8_k.gguf"), dict(cfg, intermediate_size=ffn), tok, q8k, arch,
               n_vocab=vocab)
    # Embedding rows fewer than the tokenizer's tokens.
    small = vocab - 57
    gguf_variant("vocab_too_big.gguf", n_vocab=None,
                 tensors=[(n, t[:small] if n == "token_embd.weight" else t) for n, t in tensors])
    # Linear RoPE scaling, which kiln does not implement.
    gguf_variant("rope_scaling_linear.gguf", **{"rope.scaling.type": "linear"})
    # rope_freqs.weight with a zero divisor (would give an infinite frequency).
    freqs = np.ones(2, dtype=np.float32)
    freqs[1] = 0.0
    gguf_variant("rope_freqs_zero.gguf", tensors=[("rope_freqs.weight", freqs)] + tensors)

    def hf_variant(dirname, config=cfg, drop=(), files=("config.json", "model.safetensors", "tokenizer.json")):
        folder = os.path.join(CORRUPT, dirname)
        os.makedirs(folder)
        if "config.json" in files:
            with open(os.path.join(folder, "config.json"), "w") as f:
                json.dump(config, f, indent=1)
        if "model.safetensors" in files:
            save_file({k: v for k, v in state.items() if k not in drop}, os.path.join(folder, "model.safetensors"))
        if "tokenizer.json" in files:
            write_tokenizer_files(folder, tok)

    hf_variant("hf_valid")
    hf_variant("hf_no_config", files=("model.safetensors", "tokenizer.json"))
    hf_variant("hf_no_tokenizer", files=("config.json", "model.safetensors"))
    hf_variant("hf_bad_config", config=dict(cfg, num_key_value_heads=3))
    hf_variant("hf_bad_config_size", config=dict(cfg, hidden_size=-16))
    hf_variant("hf_model_type_gpt2", config=dict(cfg, model_type="gpt2", architectures=["GPT2LMHeadModel"]))
    hf_variant("hf_missing_tensor", drop=("model.layers.0.mlp.down_proj.weight",))


# --- head size 64 variants for the GPU ---------------------------------------------
# The CUDA attention kernels take head sizes 64 and 128, so the models above
# (heads of 8 and 16) cannot run there. tests/fixtures/tiny64/ holds the same
# four architectures with heads of 64: Q8_0 GGUF files (interleaved RoPE,
# quantized weights converted at load) and BF16 Hugging Face folders for the
# two that rotate halves (llama3 with its frequency scaling, qwen2 with
# biases). tests/cuda/test_cuda_model.c compares the GPU with the CPU backend
# on them; the CPU side is the one checked against transformers above.
GPU_OUT = os.path.join(ROOT, "tests", "fixtures", "tiny64")
GPU_HF = ("llama3", "qwen2")


def gpu_spec(spec):
    spec = json.loads(json.dumps(spec))
    cfg = spec["config"]
    heads = cfg["num_attention_heads"]
    cfg.update(hidden_size=64, intermediate_size=128, head_dim=64)
    if heads == cfg["num_key_value_heads"]:
        cfg.update(num_attention_heads=2, num_key_value_heads=2)
    return spec


def make_gpu_variant(name, spec, seed):
    tok = load_tokenizer(spec["tokenizer"])
    folder = os.path.join(GPU_OUT, name)
    cfg = build_hf(folder, gpu_spec(spec), tok, seed)
    model = load_hf(folder)
    state = {k: v for k, v in model.state_dict().items()}
    if cfg["tie_word_embeddings"]:
        state.pop("lm_head.weight", None)
    arch, tensors = gguf_tensors(state, cfg)
    write_gguf(os.path.join(GPU_OUT, name + ".gguf"), cfg, tok, tensors, arch, quant=QT.Q8_0,
               n_vocab=cfg["vocab_size"])
    if name in GPU_HF:
        save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()},
                  os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        c["torch_dtype"] = "bfloat16"
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
    else:
        shutil.rmtree(folder)
    print("%s (head 64): vocab %d" % (name, cfg["vocab_size"]))


def main():
    import sys
    if sys.argv[1:] == ["--gpu-variants"]:
        os.makedirs(GPU_OUT, exist_ok=True)
        torch.set_num_threads(2)
        for i, (name, spec) in enumerate(MODELS.items()):
            make_gpu_variant(name, spec, 2000 + i)
        return
    os.makedirs(OUT, exist_ok=True)
    torch.set_num_threads(2)
    for i, (name, spec) in enumerate(MODELS.items()):
        make_model(name, spec, 1000 + i)
    make_corrupt()
    total = 0
    for d in (OUT, CORRUPT):
        for dirpath, _, files in os.walk(d):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print("fixtures: %.2f MB" % (total / 1e6))


if __name__ == "__main__":
    main()
