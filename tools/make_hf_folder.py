#!/usr/bin/env python3
"""Writes a Hugging Face Llama checkpoint folder holding the same weights as a
GGUF file (dequantized with the gguf package), then proves it with transformers.

usage: tools/make_hf_folder.py GGUF_PATH OUT_DIR --dtype {f32,bf16} [--shards N]
                               [--probe tests/fixtures/safetensors/smollm2_hf_probe.json]
                               [--no-verify]

Writes config.json (LlamaForCausalLM), model.safetensors (or N shards plus
model.safetensors.index.json), tokenizer.json (byte-level BPE from the GGUF
vocab and merges, SmolLM2's pre-tokenizer), tokenizer_config.json and
generation_config.json.

GGUF stores Q and K rows permuted for interleaved RoPE (llama.cpp's convert
script: w.reshape(n_head, 2, dim // n_head // 2, *rest).swapaxes(1, 2)); this
script undoes it so that the folder is in Hugging Face's split-halves order.
Verification loads the folder and the GGUF (from_pretrained(..., gguf_file=))
with transformers and compares logits on a prompt; the maximum absolute
difference is printed (the f32 folder must match to float rounding).
"""
import argparse
import json
import os
import re
import sys

import numpy as np
import gguf

LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
PROBE_TENSORS = [
    "model.embed_tokens.weight",
    "model.layers.0.input_layernorm.weight",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.k_proj.weight",
    "model.layers.7.mlp.down_proj.weight",
    "model.norm.weight",
]


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return default if f is None else f.contents()


def hf_name(gguf_name):
    if gguf_name in GLOBAL_NAMES:
        return GLOBAL_NAMES[gguf_name]
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", gguf_name)
    if not m or m.group(2) not in LAYER_NAMES:
        sys.exit(f"{gguf_name}: no Hugging Face name for this tensor")
    return f"model.layers.{m.group(1)}.{LAYER_NAMES[m.group(2)]}.weight"


def unpermute(w, n_head):
    """Inverse of llama.cpp's permute(): interleaved-RoPE rows -> split halves."""
    rest = w.shape[1:]
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def read_weights(reader, n_head, n_head_kv):
    weights = {}
    for t in reader.tensors:
        # numpy shape is GGUF's ne[] reversed: [out, in] for a matrix, as HF stores it.
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        a = a.reshape([int(d) for d in reversed(t.shape.tolist())])
        name = hf_name(t.name)
        if name.endswith("self_attn.q_proj.weight"):
            a = unpermute(a, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            a = unpermute(a, n_head_kv)
        weights[name] = np.ascontiguousarray(a)
    return weights


def make_config(reader, weights, torch_dtype):
    arch = field(reader, "general.architecture")
    if arch != "llama":
        sys.exit(f"general.architecture is {arch!r}; only llama is supported")
    hidden = int(field(reader, "llama.embedding_length"))
    heads = int(field(reader, "llama.attention.head_count"))
    vocab = weights["model.embed_tokens.weight"].shape[0]
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": int(field(reader, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(reader, "llama.block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(field(reader, "llama.attention.head_count_kv", heads)),
        "head_dim": int(field(reader, "llama.rope.dimension_count", hidden // heads)),
        "vocab_size": int(vocab),
        "max_position_embeddings": int(field(reader, "llama.context_length")),
        "rms_norm_eps": float(field(reader, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(reader, "llama.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "tie_word_embeddings": "lm_head.weight" not in weights,
        "bos_token_id": int(field(reader, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(reader, "tokenizer.ggml.eos_token_id")),
        "pad_token_id": field(reader, "tokenizer.ggml.padding_token_id"),
        "torch_dtype": torch_dtype,
    }


def to_bf16_bits(a):
    """float32 -> bfloat16 bit patterns, round to nearest even (as torch does)."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def encode(a, dtype):
    """(safetensors dtype, raw little-endian bytes) of one tensor."""
    if dtype == "bf16":
        return "BF16", to_bf16_bits(a).tobytes()
    return "F32", np.ascontiguousarray(a, dtype="<f4").tobytes()


def save_file(arrays, path, dtype, metadata):
    """Writes one .safetensors file (8-byte header length, JSON header, data).
    Written by hand so that the script needs numpy alone, not torch."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name in sorted(arrays):
        st_dtype, blob = encode(arrays[name], dtype)
        header[name] = {"dtype": st_dtype, "shape": list(arrays[name].shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keep the data section 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for blob in blobs:
            f.write(blob)
    os.replace(tmp, path)


def write_weights(weights, out_dir, dtype, n_shards):
    meta = {"format": "pt"}
    elem = 2 if dtype == "bf16" else 4
    if n_shards <= 1:
        save_file(weights, os.path.join(out_dir, "model.safetensors"), dtype, meta)
        return
    names = list(weights)
    total = sum(a.size * elem for a in weights.values())
    target = total / n_shards
    groups, acc = [[] for _ in range(n_shards)], 0
    for name in names:
        idx = min(int(acc / target), n_shards - 1)
        groups[idx].append(name)
        acc += weights[name].size * elem
    weight_map = {}
    for i, group in enumerate(groups):
        if not group:
            sys.exit(f"shard {i + 1} would be empty; use fewer shards")
        fname = f"model-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        save_file({n: weights[n] for n in group}, os.path.join(out_dir, fname), dtype, meta)
        weight_map.update({n: fname for n in group})
    with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def write_tokenizer(reader, out_dir):
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

    if field(reader, "tokenizer.ggml.model") != "gpt2":
        sys.exit("tokenizer.ggml.model is not gpt2 (byte-level BPE)")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(reader, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        sys.exit("GGUF vocabulary has duplicate tokens")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    # SmolLM2's tokenizer.json: digits split one by one, then GPT-2 byte level.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    special = [tokens[i] for i, ty in enumerate(types)
               if ty in (gguf.TokenType.CONTROL, gguf.TokenType.USER_DEFINED)]
    tok.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in special])
    for s in special:  # added tokens must keep their GGUF ids
        assert tok.token_to_id(s) == vocab[s], s
    tok.save(os.path.join(out_dir, "tokenizer.json"))

    def token(key):
        i = field(reader, key)
        return None if i is None else tokens[int(i)]

    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(field(reader, "tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(field(reader, "llama.context_length")),
        "additional_special_tokens": [s for s in special if s not in (
            token("tokenizer.ggml.bos_token_id"), token("tokenizer.ggml.eos_token_id"),
            token("tokenizer.ggml.unknown_token_id"), token("tokenizer.ggml.padding_token_id"))],
        "chat_template": field(reader, "tokenizer.chat_template"),
    }
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
    return len(special)


def write_probe(path, weights, config):
    probe = {"generator": "tools/make_hf_folder.py", "n_tensors": len(weights), "config": {
        k: config[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                               "vocab_size", "tie_word_embeddings")}, "tensors": {}}
    for name in PROBE_TENSORS:
        a = weights[name]
        flat = a.reshape(-1)
        row = a.shape[-1]
        second_row = flat[row:row + 8] if a.ndim > 1 else flat[8:16]
        bf16 = lambda v: (to_bf16_bits(np.array(v, dtype=np.float32)).astype(np.uint32) << 16).view(np.float32).tolist()
        probe["tensors"][name] = {
            "shape": list(a.shape),  # safetensors (row-major) order
            "f32_first8": [float(x) for x in flat[:8]],
            "f32_row1_first8": [float(x) for x in second_row],
            "bf16_first8": bf16(flat[:8]),
            "bf16_row1_first8": bf16(second_row),
        }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(probe, f, indent=1)
        f.write("\n")
    print(f"wrote probe {path}")


def verify(gguf_path, out_dir, dtype):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prompt = "The capital of France is Paris. 12345 apples, <|im_start|>user\nHi!<|im_end|>"
    tok_dir = AutoTokenizer.from_pretrained(out_dir)
    tok_gguf = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                             gguf_file=os.path.basename(gguf_path))
    ids = tok_dir(prompt, return_tensors="pt").input_ids
    ids_gguf = tok_gguf(prompt, return_tensors="pt").input_ids
    print(f"token ids (folder) {ids[0].tolist()}")
    if ids.tolist() != ids_gguf.tolist():
        sys.exit(f"tokenizer mismatch: folder {ids[0].tolist()} vs gguf {ids_gguf[0].tolist()}")

    m_dir = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).eval()
    m_gguf = AutoModelForCausalLM.from_pretrained(os.path.dirname(os.path.abspath(gguf_path)),
                                                  gguf_file=os.path.basename(gguf_path), dtype=torch.float32).eval()
    with torch.no_grad():
        a = m_dir(ids).logits
        b = m_gguf(ids).logits
    diff = (a - b).abs().max().item()
    scale = b.abs().max().item()
    print(f"max |logits(folder, {dtype}) - logits(gguf)| = {diff:.3g} (max |logit| {scale:.3g})")
    print(f"argmax agree on {(a.argmax(-1) == b.argmax(-1)).float().mean().item() * 100:.1f}% of positions")
    limit = 1e-3 if dtype == "f32" else 0.05 * scale
    if not diff <= limit:
        sys.exit(f"logits differ by {diff} > {limit}: the folder does not hold the GGUF's model")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf_path")
    ap.add_argument("out_dir")
    ap.add_argument("--dtype", choices=["f32", "bf16"], required=True)
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--probe", help="write first values of a few tensors (JSON) here")
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()

    reader = gguf.GGUFReader(args.gguf_path)
    n_head = int(field(reader, "llama.attention.head_count"))
    n_head_kv = int(field(reader, "llama.attention.head_count_kv", n_head))
    weights = read_weights(reader, n_head, n_head_kv)
    config = make_config(reader, weights, "float32" if args.dtype == "f32" else "bfloat16")

    os.makedirs(args.out_dir, exist_ok=True)
    for stale in os.listdir(args.out_dir):  # a previous run with another shard count
        if stale.endswith(".safetensors") or stale == "model.safetensors.index.json":
            os.remove(os.path.join(args.out_dir, stale))
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(args.out_dir, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
                   "pad_token_id": config["pad_token_id"]}, f, indent=2)
    write_weights(weights, args.out_dir, args.dtype, args.shards)
    n_special = write_tokenizer(reader, args.out_dir)
    print(f"wrote {args.out_dir}: {len(weights)} tensors ({args.dtype}, {max(args.shards, 1)} file(s)), "
          f"tied embeddings: {config['tie_word_embeddings']}, {n_special} special tokens")
    if args.probe:
        write_probe(args.probe, weights, config)
    if not args.no_verify:
        verify(args.gguf_path, args.out_dir, args.dtype)


if __name__ == "__main__":
    main()
