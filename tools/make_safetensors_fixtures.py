#!/usr/bin/env python3
"""Safetensors fixtures for tests/formats/test_safetensors.c.

tests/fixtures/safetensors/tiny.safetensors: written by the reference
`safetensors` library (an independent writer) with F32, F16 and BF16 tensors;
tiny.json records their shapes, dtypes and values as float32.

tests/fixtures/corrupt/safetensors/*.safetensors: hand-built hostile files,
each of which a reader must reject (tests/formats/test_corrupt_corpus.c).

usage: tools/make_safetensors_fixtures.py [REPO_ROOT]
"""
import json
import os
import struct
import sys

import numpy as np
import torch
from safetensors.torch import save_file


def write_tiny(out_dir):
    g = torch.Generator().manual_seed(1234)
    tensors = {
        "linear.weight": torch.randn(3, 5, generator=g, dtype=torch.float32),  # [out, in]
        "norm.weight": (torch.randn(7, generator=g) * 4).to(torch.float16),
        "embed.weight": (torch.randn(2, 3, 4, generator=g) * 100).to(torch.bfloat16),
        "scalar": torch.tensor(2.5, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float32),
    }
    path = os.path.join(out_dir, "tiny.safetensors")
    save_file(tensors, path, metadata={"format": "pt", "note": "kiln test fixture"})
    expected = {name: {"dtype": {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}[t.dtype],
                       "shape": list(t.shape), "values": [float(v) for v in t.float().reshape(-1).tolist()]}
                for name, t in tensors.items()}
    with open(os.path.join(out_dir, "tiny.json"), "w") as f:
        json.dump({"generator": "tools/make_safetensors_fixtures.py", "tensors": expected}, f, indent=1)
        f.write("\n")


def image(header, data_size=64, header_len=None):
    """A safetensors image: u64 header length, header bytes, zero-filled data."""
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(h) if header_len is None else header_len
    return struct.pack("<Q", n) + h + bytes(data_size)


def t(dtype="F32", shape=(2, 2), offsets=(0, 16)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


CORRUPT = {
    "truncated_length": b"\x10\x00\x00",
    "header_len_past_end": image({"a": t()}, data_size=0, header_len=1 << 40),
    "header_not_json": image(b"{\"a\": {\"dtype\": \"F32\", "),
    "header_not_object": image(b"[1, 2, 3]"),
    "header_trailing_garbage": image(b"{} garbage"),
    "unknown_dtype": image({"a": t(dtype="Q7")}),
    "unsupported_dtype_i64": image({"a": t(dtype="I64", shape=(2,))}),
    "unsupported_dtype_f64": image({"a": t(dtype="F64", shape=(2,))}),
    "dtype_not_string": image({"a": {"dtype": 0, "shape": [2], "data_offsets": [0, 8]}}),
    "negative_dim": image({"a": t(shape=(-1, 4))}),
    "huge_dim": image({"a": {"dtype": "F32", "shape": [1e30], "data_offsets": [0, 16]}}),
    "fractional_dim": image({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 10]}}),
    "string_dim": image({"a": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}}),
    "product_overflow": image({"a": t(shape=(1 << 40, 1 << 40, 1 << 40))}),
    "bytes_overflow": image({"a": t(shape=(1 << 31, 1 << 31))}),
    "offsets_past_end": image({"a": t(offsets=(64, 80))}),
    "offsets_reversed": image({"a": t(offsets=(16, 0))}),
    "offsets_negative": image({"a": t(offsets=(-16, 0))}),
    "size_mismatch": image({"a": t(shape=(2, 3), offsets=(0, 16))}),
    "missing_data_offsets": image({"a": {"dtype": "F32", "shape": [4]}}),
    "missing_shape": image({"a": {"dtype": "F32", "data_offsets": [0, 16]}}),
    "one_offset": image({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0]}}),
    "five_dims": image({"a": t(shape=(1, 1, 2, 2, 1))}),
    "entry_not_object": image({"a": [1, 2]}),
    "duplicate_tensor": image(b'{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, '
                              b'"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}}'),
}


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    good = os.path.join(root, "tests", "fixtures", "safetensors")
    bad = os.path.join(root, "tests", "fixtures", "corrupt", "safetensors")
    os.makedirs(good, exist_ok=True)
    os.makedirs(bad, exist_ok=True)
    write_tiny(good)
    for name, data in CORRUPT.items():
        with open(os.path.join(bad, name + ".safetensors"), "wb") as f:
            f.write(data)
    print(f"wrote {good}/tiny.safetensors and {len(CORRUPT)} corrupt files in {bad}")


if __name__ == "__main__":
    main()
