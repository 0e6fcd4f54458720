#!/usr/bin/env python3
"""Writes the GGUF test fixtures in tests/fixtures/gguf/ with the `gguf` PyPI
package (the reference implementation of the format), so that the C reader and
the scalar dequantizers are checked against an independent implementation.

  metadata_v3.gguf  one key of every metadata type, arrays of every element
                    type, nested arrays, unicode strings (GGUFWriter, v3)
  metadata_v2.gguf  the same bytes with the version field patched to 2 (v2 and
                    v3 share the layout for little-endian files)
  tensors.gguf      for each tensor type a 4 x 256 tensor "t_<type>" plus its
                    dequantization by gguf.quants.dequantize, "t_<type>.expected"
                    (F32); "t_<type>.src" (F32) is the input that was quantized
                    where gguf-py can quantize the type. Also "quant_src" with
                    ggml-exact numpy references for Q8_1 and Q8_K quantization
                    (gguf-py has none) in metadata keys kiln.test.q8_1 and
                    kiln.test.q8_k (uint8 arrays: the raw blocks).

Run from the repository root: python3 tools/make_gguf_fixtures.py
"""
import os
import struct

import numpy as np
from gguf import GGUFValueType as VT
from gguf import GGMLQuantizationType as QT
from gguf import GGUFWriter
import gguf.quants

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "gguf")
ROWS, COLS = 4, 256


def write(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def make_metadata(path):
    w = GGUFWriter(path, "kilntest")
    kv = w.add_key_value
    kv("test.uint8", 200, VT.UINT8)
    kv("test.int8", -100, VT.INT8)
    kv("test.uint16", 60000, VT.UINT16)
    kv("test.int16", -30000, VT.INT16)
    kv("test.uint32", 4000000000, VT.UINT32)
    kv("test.int32", -2000000000, VT.INT32)
    kv("test.float32", 3.25, VT.FLOAT32)
    kv("test.bool", True, VT.BOOL)
    kv("test.string", "h\u00e9llo w\u00f6rld \u2713 \U0001f999", VT.STRING)
    kv("test.string_nul", b"a\x00b", VT.STRING)
    kv("test.uint64", 2**63 + 5, VT.UINT64)
    kv("test.int64", -(2**62) - 7, VT.INT64)
    kv("test.float64", -1.5e300, VT.FLOAT64)
    kv("test.array.uint8", [0, 1, 255], VT.ARRAY, VT.UINT8)
    kv("test.array.int8", [-128, 0, 127], VT.ARRAY, VT.INT8)
    kv("test.array.uint16", [0, 65535], VT.ARRAY, VT.UINT16)
    kv("test.array.int16", [-32768, 32767], VT.ARRAY, VT.INT16)
    kv("test.array.uint32", [4294967295, 7], VT.ARRAY, VT.UINT32)
    kv("test.array.int32", [-2147483648, 2147483647, -1], VT.ARRAY, VT.INT32)
    kv("test.array.uint64", [2**64 - 1], VT.ARRAY, VT.UINT64)
    kv("test.array.int64", [-(2**63), 2**63 - 1], VT.ARRAY, VT.INT64)
    kv("test.array.float32", [0.5, -1.25, 1024.0], VT.ARRAY, VT.FLOAT32)
    kv("test.array.float64", [1e-300, 2.5], VT.ARRAY, VT.FLOAT64)
    kv("test.array.bool", [True, False, True], VT.ARRAY, VT.BOOL)
    kv("test.array.string", ["a", "\u00fcn\u00efc\u00f6d\u00e9", "", "\U0001f999"], VT.ARRAY, VT.STRING)
    # Arrays of arrays: the inner element type is inferred (int -> INT32, str -> STRING).
    kv("test.array.nested", [[1, 2], [3], [4, 5, 6]], VT.ARRAY, VT.ARRAY)
    kv("test.array.nested3", [[["x", "yz"]], [["w"], ["", "q"]]], VT.ARRAY, VT.ARRAY)
    write(w)


def patch_version(src, dst, version):
    data = bytearray(open(src, "rb").read())
    assert data[:4] == b"GGUF" and struct.unpack_from("<I", data, 4)[0] == 3
    struct.pack_into("<I", data, 4, version)
    open(dst, "wb").write(bytes(data))


def special_floats():
    """Values that exercise the f16/bf16 conversions: subnormals, overflow to
    inf, ties of the round-to-nearest-even, signed zero, inf, nan."""
    f16_min_sub = 2.0**-24
    return np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 65504.0, 65520.0, 65519.99, -70000.0,
                     f16_min_sub, f16_min_sub / 2, f16_min_sub * 0.75, 3 * f16_min_sub / 2, -f16_min_sub * 5.5,
                     6.0e-5, 2.0**-14, 1.0 + 2.0**-11, 1.0 + 3 * 2.0**-11, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8,
                     1e-40, -1e-45, 3.4e38, 1.0e-8], dtype=np.float32)


def random_k_blocks(rng, qtype, n_blocks):
    """Random bytes for a K-quant block with finite f16 scales (gguf-py cannot
    quantize K types, and random bits cover every scale/quant bit pattern)."""
    block_bytes = gguf.quants.GGML_QUANT_SIZES[qtype][1]
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    scales = rng.uniform(-0.05, 0.05, size=(n_blocks, 2)).astype(np.float16).view(np.uint8)
    if qtype in (QT.Q4_K, QT.Q5_K):  # d, dmin lead the block
        raw[:, 0:4] = scales
    elif qtype == QT.Q6_K:  # d ends the block
        raw[:, -2:] = scales[:, 0:2]
    return raw


def q8_1_reference(x):
    """quantize_row_q8_1_ref from ggml-quants.c, block by block in float32."""
    out = bytearray()
    for b in x.reshape(-1, 32):
        amax = np.max(np.abs(b))
        d = np.float32(amax / np.float32(127))
        inv = np.float32(1) / d if d != 0 else np.float32(0)
        qs = gguf.quants.np_roundf((b * inv).astype(np.float32)).astype(np.int8)  # C roundf, exact
        s = np.float32(np.float32(int(qs.astype(np.int32).sum())) * d)
        out += np.float16(d).tobytes() + np.float16(s).tobytes() + qs.tobytes()
    return bytes(out)


def q8_k_reference(x):
    """quantize_row_q8_K_ref from ggml-quants.c (iscale = -127 / max)."""
    out = bytearray()
    for b in x.reshape(-1, 256):
        idx = int(np.argmax(np.abs(b)))  # first occurrence, as ggml's strict '>'
        amax, mx = np.abs(b[idx]), b[idx]
        if amax == 0:
            out += bytes(292)
            continue
        iscale = np.float32(np.float32(-127) / mx)
        v = np.rint((iscale * b).astype(np.float32)).astype(np.int32)  # nearest_int: half to even
        qs = np.minimum(v, 127).astype(np.int8)
        bsums = qs.astype(np.int32).reshape(16, 16).sum(axis=1).astype(np.int16)
        d = np.float32(np.float32(1) / iscale)
        out += d.tobytes() + qs.tobytes() + bsums.tobytes()
    return bytes(out)


def make_tensors(path):
    rng = np.random.default_rng(20240601)
    w = GGUFWriter(path, "kilntest")
    w.add_custom_alignment(64)  # non-default alignment, read from general.alignment

    for qtype in (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q4_K, QT.Q5_K, QT.Q6_K):
        name = "t_" + qtype.name.lower()
        if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
            n_blocks = ROWS * COLS // 256
            q = random_k_blocks(rng, qtype, n_blocks).reshape(ROWS, -1)
        else:
            src = rng.standard_normal((ROWS, COLS)).astype(np.float32) * np.float32(3)
            if qtype in (QT.F16, QT.BF16):
                sp = special_floats()
                src[0, : len(sp)] = sp
            if qtype == QT.Q8_0:
                # One block whose scale is exactly 1, so x * id lands on halves:
                # checks roundf's away-from-zero ties.
                src[1, 0:32] = np.arange(32, dtype=np.float32) - np.float32(15.5)
                src[1, 0] = np.float32(127)
                src[2, 0:32] = 0  # all-zero block: d = 0
            q = gguf.quants.quantize(src, qtype)
            w.add_tensor(name + ".src", src)
        expected = gguf.quants.dequantize(q, qtype).astype(np.float32).reshape(ROWS, COLS)
        if qtype == QT.F16:
            w.add_tensor(name, q)
        elif qtype == QT.F32:
            w.add_tensor(name, q.astype(np.float32))
        else:
            w.add_tensor(name, q, raw_dtype=qtype)
        w.add_tensor(name + ".expected", expected)

    # Q8_1 / Q8_K activation quantization references.
    x = rng.standard_normal((2, 256)).astype(np.float32)
    x[1, :] = np.arange(256, dtype=np.float32) % 64 - np.float32(31.5)  # halves when scale is exact
    x[1, 0] = np.float32(127)
    x[1, 200:232] = 0
    w.add_tensor("quant_src", x)
    w.add_key_value("kiln.test.q8_1", list(q8_1_reference(x)), VT.ARRAY, VT.UINT8)
    w.add_key_value("kiln.test.q8_k", list(q8_k_reference(x)), VT.ARRAY, VT.UINT8)
    write(w)


def main():
    os.makedirs(OUT, exist_ok=True)
    v3 = os.path.join(OUT, "metadata_v3.gguf")
    make_metadata(v3)
    patch_version(v3, os.path.join(OUT, "metadata_v2.gguf"), 2)
    make_tensors(os.path.join(OUT, "tensors.gguf"))
    for f in sorted(os.listdir(OUT)):
        print(f, os.path.getsize(os.path.join(OUT, f)))


if __name__ == "__main__":
    main()
