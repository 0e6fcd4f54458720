#!/usr/bin/env python3
"""Writes the corrupted-file corpus (tests/fixtures/corrupt/), read by
tests/formats/test_corrupt_corpus.c; every file also serves as a fuzzing seed.

gguf/*.gguf: small GGUF files, each damaged in one way, that the GGUF reader
must refuse with an error naming the file. A valid base file is written with
the gguf package's GGUFWriter; its fields are located with a small walker
below and patched. The base file itself is not kept (it would not be corrupt).

model/*.gguf: GGUF files that parse, holding a tiny Llama model (2 layers,
hidden 32, Q8_0 matrices, random weights) that is wrong in one way the model
or tokenizer loader must see: a known key with the wrong type, an id outside
the vocabulary, a block_count that disagrees with the blk.N tensors,
SentencePiece byte tokens that name no byte, an all-empty vocabulary, NaN
output weights or scales (refused when sampling: the logits are not numbers).
Two controls (control_*.gguf) are the unbroken models and must load and
sample; pre_unknown.gguf must load with a warning. model/hf_*/ are Hugging
Face folders, copies of corrupt_models/hf_valid with one file changed. The
test reads what each must produce from model/expected_errors.txt.

Run from the repository root: python3 tools/make_corrupt_corpus.py
(needs numpy and gguf: pip install gguf)
"""
import json
import os
import shutil
import struct
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import GGUFWriter
from gguf.gguf_writer import GGUFValue
import gguf.quants

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corrupt", "gguf")
MODEL_OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corrupt", "model")


def base_file():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "base.gguf")
        w = GGUFWriter(path, "llama")
        w.add_key_value("a.str", "hello", VT.STRING)
        w.add_key_value("a.arr", [1, 2, 3], VT.ARRAY, VT.UINT32)
        w.add_key_value("a.bool", True, VT.BOOL)
        w.add_tensor("t0", np.arange(16, dtype=np.float32).reshape(2, 8))
        w.add_tensor("t1", np.zeros((1, 34), dtype=np.uint8), raw_dtype=QT.Q8_0)  # one Q8_0 block
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return bytearray(open(path, "rb").read())


def walk(data):
    """Offsets of the fields of a (valid) GGUF file, keyed by name."""
    off = {"version": 4, "n_tensors": 8, "n_kv": 16}
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    pos = 24

    def string(pos):
        n = struct.unpack_from("<Q", data, pos)[0]
        return data[pos + 8 : pos + 8 + n].decode(), pos + 8 + n

    sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    for _ in range(n_kv):
        off_key = pos
        key, pos = string(pos)
        off["kv:" + key] = off_key
        off["type:" + key] = pos
        t = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        off["value:" + key] = pos
        if t == 8:
            _, pos = string(pos)
        elif t == 9:
            et, n = struct.unpack_from("<IQ", data, pos)
            off["elem_type:" + key], off["count:" + key] = pos, pos + 4
            pos += 12
            for _ in range(n):
                if et == 8:
                    _, pos = string(pos)
                else:
                    pos += sizes[et]
        else:
            pos += sizes[t]
    for _ in range(n_tensors):
        off_name = pos
        name, pos = string(pos)
        off["name:" + name] = off_name + 8
        n_dims = struct.unpack_from("<I", data, pos)[0]
        off["n_dims:" + name] = pos
        pos += 4
        for d in range(n_dims):
            off["dim%d:%s" % (d, name)] = pos
            pos += 8
        off["type:" + name] = pos
        off["offset:" + name] = pos + 4
        pos += 12
    off["infos_end"] = pos
    return off


# A phrase kiln's error message must contain for each file (checked by
# tests/formats/test_corrupt_corpus.c via expected_errors.txt).
EXPECT = {
    "empty": "too short",
    "bad_magic": "bad magic",
    "version_1": "version 1",
    "version_4": "version 4",
    "big_endian": "big-endian",
    "n_tensors_huge": "tensor infos cannot fit",
    "n_kv_huge": "metadata entries cannot fit",
    "n_kv_max": "metadata entries cannot fit",
    "string_length_overflow": "length 18446744073709551615",
    "string_past_end": "past the end",
    "key_length_overflow": "metadata key at offset",
    "unknown_value_type": "unknown value type 13",
    "unknown_array_type": "unknown array element type 77",
    "array_count_huge": "cannot fit",
    "bool_not_0_or_1": "bool value 7",
    "duplicate_key": "duplicate metadata key a.str",
    "unknown_tensor_type": "unsupported type 16",
    "tensor_type_huge": "unsupported type 4294967295",
    "n_dims_5": "5 dimensions",
    "zero_dim": "invalid size 0",
    "dims_overflow": "element count overflows",
    "bytes_overflow": "byte size overflows",
    "row_not_whole_blocks": "block size",
    "offset_misaligned": "not a multiple of the alignment",
    "offset_past_end": "past the end",
    "offset_wraps": "past the end",
    "size_past_end": "past the end",
    "duplicate_tensor_name": "duplicate tensor name t0",
    "nul_in_tensor_name": "NUL byte",
    "alignment_zero": "not a nonzero power of two",
    "alignment_not_pow2": "not a nonzero power of two",
    "alignment_wrong_type": "general.alignment has type float32",
    "element_misaligned": "is not aligned to 4 bytes",
    "truncated_header": "truncated",
    "truncated_in_kv": "past the end",
    "truncated_in_tensor_info": "truncated",
    "truncated_in_data": "past the end",
    "nesting_bomb": "nested deeper",
}


def u32(v):
    return lambda d, o, f: struct.pack_into("<I", d, o[f], v)


def u64(v):
    return lambda d, o, f: struct.pack_into("<Q", d, o[f], v)


def main():
    base = base_file()
    off = walk(base)
    cases = {
        "empty": None,
        "bad_magic": ("version", lambda d, o, f: d.__setitem__(slice(0, 4), b"GGML")),
        "version_1": ("version", u32(1)),
        "version_4": ("version", u32(4)),
        "big_endian": ("version", u32(0x03000000)),
        "n_tensors_huge": ("n_tensors", u64(1 << 60)),
        "n_kv_huge": ("n_kv", u64(1 << 60)),
        "n_kv_max": ("n_kv", u64(2**64 - 1)),
        "string_length_overflow": ("value:a.str", u64(2**64 - 1)),
        "string_past_end": ("value:a.str", u64(len(base))),
        "key_length_overflow": ("kv:a.arr", u64(2**64 - 8)),
        "unknown_value_type": ("type:a.str", u32(13)),
        "unknown_array_type": ("elem_type:a.arr", u32(77)),
        "array_count_huge": ("count:a.arr", u64(1 << 62)),
        "bool_not_0_or_1": ("value:a.bool", lambda d, o, f: d.__setitem__(o[f], 7)),
        "duplicate_key": ("kv:a.arr", lambda d, o, f: d.__setitem__(slice(o[f] + 8, o[f] + 13), b"a.str")),
        "unknown_tensor_type": ("type:t1", u32(16)),
        "tensor_type_huge": ("type:t1", u32(0xFFFFFFFF)),
        "n_dims_5": ("n_dims:t0", u32(5)),
        "zero_dim": ("dim1:t0", u64(0)),
        "dims_overflow": ("dim1:t0", u64(1 << 62)),
        "bytes_overflow": ("dim0:t0", lambda d, o, f: (u64(1 << 31)(d, o, "dim0:t0"), u64(1 << 31)(d, o, "dim1:t0"))),
        "row_not_whole_blocks": ("dim0:t1", u64(33)),
        "offset_misaligned": ("offset:t1", u64(65)),
        "offset_past_end": ("offset:t1", u64(1 << 20)),
        "offset_wraps": ("offset:t1", u64(2**64 - 32)),
        "size_past_end": ("dim1:t0", u64(1000)),
        "duplicate_tensor_name": ("name:t1", lambda d, o, f: d.__setitem__(o[f] + 1, ord("0"))),
        "nul_in_tensor_name": ("name:t1", lambda d, o, f: d.__setitem__(o[f] + 1, 0)),
        "alignment_zero": ("value:general.alignment", u32(0)),
        "alignment_not_pow2": ("value:general.alignment", u32(48)),
        "alignment_wrong_type": ("type:general.alignment", u32(6)),
        # general.alignment 1 with t0 (F32) at an odd address.
        "element_misaligned": ("value:general.alignment", lambda d, o, f: (
            u32(1)(d, o, f), u64((1 - o["infos_end"]) % 4)(d, o, "offset:t0"))),
        "truncated_header": ("n_kv", lambda d, o, f: d.__delitem__(slice(20, None))),
        "truncated_in_kv": ("value:a.str", lambda d, o, f: d.__delitem__(slice(o[f] + 10, None))),
        "truncated_in_tensor_info": ("dim0:t0", lambda d, o, f: d.__delitem__(slice(o[f] + 3, None))),
        # Cut inside t1's 34 bytes of data (GGUFWriter pads the file after it).
        "truncated_in_data": ("infos_end", lambda d, o, f: d.__delitem__(
            slice((o[f] + 31) // 32 * 32 + struct.unpack_from("<Q", d, o["offset:t1"])[0] + 33, None))),
    }
    # The base file has general.alignment only if we add it; use a patched copy
    # that carries one (GGUFWriter writes it only for custom alignments).
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".gguf"):
            os.remove(os.path.join(OUT, f))
    with_align = base_with_alignment()
    off_align = walk(with_align)
    for name, case in cases.items():
        if case is None:
            data = bytearray()
        else:
            field, damage = case
            src, o = (with_align, off_align) if field.endswith("general.alignment") else (base, off)
            o = dict(o)
            data = bytearray(src)
            damage(data, o, field)
        open(os.path.join(OUT, name + ".gguf"), "wb").write(bytes(data))
    # Arrays nested far deeper than any real file: a recursion bomb.
    bomb = bytearray(b"GGUF" + struct.pack("<IQQ", 3, 0, 1))
    bomb += struct.pack("<Q", 4) + b"bomb" + struct.pack("<I", 9)
    bomb += struct.pack("<IQ", 9, 1) * 5000 + struct.pack("<IQ", 0, 0)
    open(os.path.join(OUT, "nesting_bomb.gguf"), "wb").write(bytes(bomb))
    assert set(EXPECT) == set(cases) | {"nesting_bomb"}
    with open(os.path.join(OUT, "expected_errors.txt"), "w") as f:
        f.write("# file<TAB>phrase the error message must contain (tools/make_corrupt_corpus.py)\n")
        for name in sorted(EXPECT):
            f.write("%s.gguf\t%s\n" % (name, EXPECT[name]))
    print(len(os.listdir(OUT)), "files in", OUT)


def base_with_alignment():
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "aligned.gguf")
        w = GGUFWriter(path, "llama")
        w.add_custom_alignment(64)
        w.add_tensor("t0", np.arange(16, dtype=np.float32).reshape(2, 8))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        return bytearray(open(path, "rb").read())


# --- model/: files that parse, models that are wrong ---------------------------

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 32, 32, 2, 2, 1
GPT2_SPACE = "\u0120"  # the byte-level stand-in for " "


def gpt2_byte_chars():
    """GPT-2's byte -> printable character table."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(0x100 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def bpe_tokenizer():
    """A byte-level vocabulary: the 256 byte characters, a few merges, and
    <|endoftext|> (CONTROL) as EOS."""
    tokens = gpt2_byte_chars()
    merges = ["H e", "l l", "He ll", "Hell o", GPT2_SPACE + " w"]
    for m in merges:
        tokens.append(m.replace(" ", ""))
    tokens.append("<|endoftext|>")
    types = [1] * (len(tokens) - 1) + [3]
    eos = len(tokens) - 1
    return [
        ("tokenizer.ggml.model", "gpt2", VT.STRING, None),
        ("tokenizer.ggml.pre", "smollm", VT.STRING, None),
        ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.merges", merges, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.eos_token_id", eos, VT.UINT32, None),
        ("tokenizer.ggml.padding_token_id", eos, VT.UINT32, None),
        ("tokenizer.ggml.add_bos_token", False, VT.BOOL, None),
        ("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}", VT.STRING, None),
    ]


def spm_tokenizer():
    """A SentencePiece vocabulary (llama.cpp's layout): <unk>, <s>, </s>, the
    256 byte tokens <0x00>..<0xFF> (type BYTE), then a few pieces."""
    tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)]
    pieces = ["\u2581", "\u2581H", "el", "lo", "\u2581Hel", "\u2581Hello", "\u2581w", "or", "ld"]
    tokens += pieces
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i + 1) for i in range(len(pieces))]
    return [
        ("tokenizer.ggml.model", "llama", VT.STRING, None),
        ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.scores", scores, VT.ARRAY, VT.FLOAT32),
        ("tokenizer.ggml.token_type", types, VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.bos_token_id", 1, VT.UINT32, None),
        ("tokenizer.ggml.eos_token_id", 2, VT.UINT32, None),
        ("tokenizer.ggml.unknown_token_id", 0, VT.UINT32, None),
        ("tokenizer.ggml.add_bos_token", True, VT.BOOL, None),
        ("tokenizer.ggml.add_space_prefix", True, VT.BOOL, None),
    ]


def hparams(n_vocab):
    return [
        ("llama.context_length", 256, VT.UINT32, None),
        ("llama.embedding_length", HIDDEN, VT.UINT32, None),
        ("llama.block_count", LAYERS, VT.UINT32, None),
        ("llama.feed_forward_length", FFN, VT.UINT32, None),
        ("llama.attention.head_count", HEADS, VT.UINT32, None),
        ("llama.attention.head_count_kv", KV_HEADS, VT.UINT32, None),
        ("llama.rope.dimension_count", HIDDEN // HEADS, VT.UINT32, None),
        ("llama.vocab_size", n_vocab, VT.UINT32, None),
        ("llama.rope.freq_base", 10000.0, VT.FLOAT32, None),
        ("llama.attention.layer_norm_rms_epsilon", 1e-5, VT.FLOAT32, None),
    ]


def q8_0(t):
    return (gguf.quants.quantize(t, QT.Q8_0), QT.Q8_0)


def weights(n_vocab, seed):
    """[(name, array or (Q8_0 bytes, QT.Q8_0))] of a random 2-layer model,
    embeddings tied (no output.weight)."""
    rng = np.random.default_rng(seed)
    kv = HIDDEN // HEADS * KV_HEADS

    def mat(rows, cols):
        return q8_0((rng.standard_normal((rows, cols)) * 0.2).astype(np.float32))

    out = [("token_embd.weight", mat(n_vocab, HIDDEN)), ("output_norm.weight", np.ones(HIDDEN, np.float32))]
    for l in range(LAYERS):
        out += [
            ("blk.%d.attn_norm.weight" % l, np.ones(HIDDEN, np.float32)),
            ("blk.%d.attn_q.weight" % l, mat(HIDDEN, HIDDEN)),
            ("blk.%d.attn_k.weight" % l, mat(kv, HIDDEN)),
            ("blk.%d.attn_v.weight" % l, mat(kv, HIDDEN)),
            ("blk.%d.attn_output.weight" % l, mat(HIDDEN, HIDDEN)),
            ("blk.%d.ffn_norm.weight" % l, np.ones(HIDDEN, np.float32)),
            ("blk.%d.ffn_gate.weight" % l, mat(FFN, HIDDEN)),
            ("blk.%d.ffn_up.weight" % l, mat(FFN, HIDDEN)),
            ("blk.%d.ffn_down.weight" % l, mat(HIDDEN, FFN)),
        ]
    return out


def write_model(path, meta, tensors):
    """meta: [(key, value, type, element type)] in file order (the first may
    replace general.architecture); tensors as weights() gives them."""
    w = GGUFWriter(path, "llama")
    kv = w.kv_data[0]
    kv.clear()
    if not any(k == "general.architecture" for k, _, _, _ in meta):
        kv["general.architecture"] = GGUFValue(value="llama", type=VT.STRING)
    for key, value, vtype, sub in meta:
        kv[key] = GGUFValue(value=value, type=vtype, sub_type=sub)
    for name, t in tensors:
        if isinstance(t, tuple):
            w.add_tensor(name, t[0], raw_dtype=t[1])
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def set_meta(meta, key, value, vtype, sub=None):
    """A copy of meta with key's entry replaced (or appended, or dropped when
    vtype is None)."""
    out, done = [], False
    for entry in meta:
        if entry[0] == key:
            done = True
            if vtype is not None:
                out.append((key, value, vtype, sub))
        else:
            out.append(entry)
    if not done and vtype is not None:
        out.append((key, value, vtype, sub))
    return out


def with_tensor(tensors, name, t):
    out = [(n, x) for n, x in tensors if n != name]
    return out + [(name, t)] if t is not None else out


def drop_layer(tensors, layer):
    return [(n, t) for n, t in tensors if not n.startswith("blk.%d." % layer)]


def nan_scales(t):
    """Q8_0 blocks of t with every block's f16 scale set to NaN."""
    raw = bytearray(gguf.quants.quantize(t, QT.Q8_0).tobytes())
    for off in range(0, len(raw), 34):
        raw[off : off + 2] = struct.pack("<H", 0x7E00)
    rows = t.shape[0]
    return (np.frombuffer(bytes(raw), dtype=np.uint8).reshape(rows, -1), QT.Q8_0)


def model_cases():
    """name -> (meta, tensors, phrase): phrase is what kiln's message must
    contain, "(loads)" for a control, "warning: ..." for a file that must load
    and print that warning."""
    bpe, spm = bpe_tokenizer(), spm_tokenizer()
    n_bpe = len(bpe[2][1])
    n_spm = len(spm[1][1])
    bpe_meta = hparams(n_bpe) + bpe
    spm_meta = hparams(n_spm) + spm
    bpe_w, spm_w = weights(n_bpe, 11), weights(n_spm, 12)
    rng = np.random.default_rng(13)
    out_f32 = (rng.standard_normal((n_bpe, HIDDEN)) * 0.2).astype(np.float32)
    some_nan = out_f32.copy()
    some_nan[100:110] = np.nan
    out_spm = (rng.standard_normal((n_spm, HIDDEN)) * 0.2).astype(np.float32)
    byte_a = 3 + 0x41  # the id of <0x41>
    spm_tokens = spm[1][1]

    def bad_byte(text):
        toks = list(spm_tokens)
        toks[byte_a] = text
        return set_meta(spm_meta, "tokenizer.ggml.tokens", toks, VT.ARRAY, VT.STRING)

    b = lambda key, value, vtype, sub=None: (set_meta(bpe_meta, key, value, vtype, sub), bpe_w)
    sp = lambda key, value, vtype, sub=None: (set_meta(spm_meta, key, value, vtype, sub), spm_w)
    wrong = "has type %s, expected %s"
    cases = {
        "control_bpe": ((bpe_meta, bpe_w), "(loads)"),
        "control_spm": ((spm_meta, spm_w), "(loads)"),
        # Logits that are not numbers: refused when sampling, naming the file.
        "output_nan": ((bpe_meta, with_tensor(bpe_w, "output.weight", np.full((n_bpe, HIDDEN), np.nan, np.float32))),
                       "non-finite logits"),
        "output_some_nan": ((bpe_meta, with_tensor(bpe_w, "output.weight", some_nan)), "non-finite logits"),
        "output_scales_nan": ((spm_meta, with_tensor(spm_w, "output.weight", nan_scales(out_spm))),
                              "non-finite logits"),
        # A vocabulary of empty strings (once a NULL pointer passed to memcmp).
        "tokens_all_empty": (b("tokenizer.ggml.tokens", [""] * n_bpe, VT.ARRAY, VT.STRING),
                             "every token of tokenizer.ggml.tokens is an empty string"),
        # SentencePiece byte tokens that name no byte.
        "spm_byte_minus": ((bad_byte("<0x-1>"), spm_w), 'token %d ("<0x-1>") has type BYTE' % byte_a),
        "spm_byte_zz": ((bad_byte("<0xZZ>"), spm_w), 'token %d ("<0xZZ>") has type BYTE' % byte_a),
        "spm_byte_100": ((bad_byte("<0x100>"), spm_w), 'token %d ("<0x100>") has type BYTE' % byte_a),
        "spm_byte_cut": ((bad_byte("<0x"), spm_w), 'token %d ("<0x") has type BYTE' % byte_a),
        # Known keys with the wrong type: errors naming the key, not defaults.
        "token_type_uint8": (b("tokenizer.ggml.token_type", bpe[3][1], VT.ARRAY, VT.UINT8),
                             "tokenizer.ggml.token_type " + wrong % ("array of uint8", "array of int32")),
        "eos_id_string": (b("tokenizer.ggml.eos_token_id", "%d" % (n_bpe - 1), VT.STRING),
                          "tokenizer.ggml.eos_token_id " + wrong % ("string", "an unsigned integer")),
        "rms_eps_string": (b("llama.attention.layer_norm_rms_epsilon", "1e-5", VT.STRING),
                           "llama.attention.layer_norm_rms_epsilon " + wrong % ("string", "a number")),
        "arch_uint32": (b("general.architecture", 7, VT.UINT32),
                        "general.architecture " + wrong % ("uint32", "string")),
        "block_count_string": (b("llama.block_count", "2", VT.STRING),
                               "llama.block_count " + wrong % ("string", "an unsigned integer")),
        "block_count_negative": (b("llama.block_count", -2, VT.INT32), "llama.block_count = -2 is out of range"),
        "head_count_float": (b("llama.attention.head_count", 2.0, VT.FLOAT32),
                             "llama.attention.head_count " + wrong % ("float32", "an unsigned integer")),
        "context_length_bool": (b("llama.context_length", True, VT.BOOL),
                                "llama.context_length " + wrong % ("bool", "an unsigned integer")),
        "rope_base_string": (b("llama.rope.freq_base", "10000", VT.STRING),
                             "llama.rope.freq_base " + wrong % ("string", "a number")),
        "rope_scaling_uint32": (b("llama.rope.scaling.type", 1, VT.UINT32),
                                "llama.rope.scaling.type " + wrong % ("uint32", "string")),
        "tokenizer_model_array": (b("tokenizer.ggml.model", ["gpt2"], VT.ARRAY, VT.STRING),
                                  "tokenizer.ggml.model " + wrong % ("array of string", "string")),
        "tokens_uint32": (b("tokenizer.ggml.tokens", list(range(n_bpe)), VT.ARRAY, VT.UINT32),
                          "tokenizer.ggml.tokens " + wrong % ("array of uint32", "array of string")),
        "merges_string": (b("tokenizer.ggml.merges", "H e", VT.STRING),
                          "tokenizer.ggml.merges " + wrong % ("string", "array of string")),
        "pre_uint32": (b("tokenizer.ggml.pre", 3, VT.UINT32), "tokenizer.ggml.pre " + wrong % ("uint32", "string")),
        "add_bos_uint8": (b("tokenizer.ggml.add_bos_token", 1, VT.UINT8),
                          "tokenizer.ggml.add_bos_token " + wrong % ("uint8", "bool")),
        "chat_template_uint32": (b("tokenizer.chat_template", 0, VT.UINT32),
                                 "tokenizer.chat_template " + wrong % ("uint32", "string")),
        "scores_int32": (sp("tokenizer.ggml.scores", [0] * n_spm, VT.ARRAY, VT.INT32),
                         "tokenizer.ggml.scores " + wrong % ("array of int32", "array of float32")),
        "add_space_prefix_string": (sp("tokenizer.ggml.add_space_prefix", "true", VT.STRING),
                                    "tokenizer.ggml.add_space_prefix " + wrong % ("string", "bool")),
        "token_type_out_of_range": (b("tokenizer.ggml.token_type", [1] * (n_bpe - 1) + [9], VT.ARRAY, VT.INT32),
                                    "tokenizer.ggml.token_type[%d] = 9 is not a token type" % (n_bpe - 1)),
        "scores_nan": (sp("tokenizer.ggml.scores", [0.0] * 260 + [float("nan")] * (n_spm - 260), VT.ARRAY,
                          VT.FLOAT32), "tokenizer.ggml.scores[260] is NaN"),
        # Ids outside the vocabulary, used or not.
        "padding_id_out_of_range": (b("tokenizer.ggml.padding_token_id", n_bpe, VT.UINT32),
                                    "tokenizer.ggml.padding_token_id = %d is outside the vocabulary" % n_bpe),
        "separator_id_out_of_range": (b("tokenizer.ggml.seperator_token_id", 100000, VT.UINT32),
                                      "tokenizer.ggml.seperator_token_id = 100000 is outside the vocabulary"),
        "bos_id_int32_out_of_range": (b("tokenizer.ggml.bos_token_id", -7, VT.INT32),
                                      "tokenizer.ggml.bos_token_id = -7 is out of range"),
        # block_count against the blk.N tensors present.
        "block_count_short": ((set_meta(bpe_meta, "llama.block_count", 1, VT.UINT32), bpe_w),
                              "llama.block_count = 1 but the weights have tensors for 2 layers (blk.0 to blk.1)"),
        "block_count_long": ((set_meta(bpe_meta, "llama.block_count", 3, VT.UINT32), bpe_w),
                             "llama.block_count = 3 but the weights have tensors for 2 layers (blk.0 to blk.1)"),
        "layer_missing": ((set_meta(bpe_meta, "llama.block_count", 1, VT.UINT32), drop_layer(bpe_w, 0)),
                          "llama.block_count = 1 but the weights have tensors for 2 layers"),
        # An unknown pre-tokenizer: loads (GPT-2's regex), with a warning.
        "pre_unknown": (b("tokenizer.ggml.pre", "mystery-pre", VT.STRING),
                        'warning: %s: tokenizer.ggml.pre "mystery-pre" is not a pre-tokenizer kiln knows'),
    }
    return cases


HF_VALID = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corrupt_models", "hf_valid")


def hf_cases():
    """Hugging Face folders made from corrupt_models/hf_valid (1 layer, written
    by tools/make_tiny_models.py) with one file changed: name -> (file, change
    of its JSON, phrase)."""
    def cfg(**kw):
        return lambda j: dict(j, **kw)
    return {
        "hf_layers_long": ("config.json", cfg(num_hidden_layers=2),
                           "config.json num_hidden_layers = 2 but the weights have tensors for 1 layer (model.layers.0"),
        "hf_eos_not_a_token": ("tokenizer_config.json", cfg(eos_token="<|nope|>"),
                               '"eos_token" is "<|nope|>", which is not a token of'),
        "hf_add_bos_string": ("tokenizer_config.json", cfg(add_bos_token="false"),
                              '"add_bos_token" must be true or false'),
    }


def make_model_corpus():
    os.makedirs(MODEL_OUT, exist_ok=True)
    for f in os.listdir(MODEL_OUT):
        path = os.path.join(MODEL_OUT, f)
        if f.endswith(".gguf"):
            os.remove(path)
        elif f.startswith("hf_") and os.path.isdir(path):
            shutil.rmtree(path)
    cases = model_cases()
    for name, ((meta, tensors), _) in cases.items():
        write_model(os.path.join(MODEL_OUT, name + ".gguf"), meta, tensors)
    expected = {name + ".gguf": phrase for name, (_, phrase) in cases.items()}
    for name, (file, change, phrase) in hf_cases().items():
        folder = os.path.join(MODEL_OUT, name)
        shutil.copytree(HF_VALID, folder)
        with open(os.path.join(folder, file)) as f:
            j = json.load(f)
        with open(os.path.join(folder, file), "w") as f:
            json.dump(change(j), f, indent=1)
        expected[name] = phrase
    with open(os.path.join(MODEL_OUT, "expected_errors.txt"), "w") as f:
        f.write("# file<TAB>phrase the error message must contain (tools/make_corrupt_corpus.py);\n"
                "# (loads): a control that must load and sample; warning: ... (%s is the path):\n"
                "# must load, and print that warning each time it is loaded\n")
        for name in sorted(expected):
            f.write("%s\t%s\n" % (name, expected[name]))
    print(len(expected), "models in", MODEL_OUT)


if __name__ == "__main__":
    main()
    make_model_corpus()
