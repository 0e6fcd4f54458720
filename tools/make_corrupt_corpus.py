#!/usr/bin/env python3
"""Writes tests/fixtures/corrupt/gguf/*.gguf: small GGUF files, each damaged in
one way, that kiln must refuse with an error naming the file.

A valid base file is written with the gguf package's GGUFWriter; its fields
are located with a small walker below and patched. The base file itself is
not kept (it would not be corrupt). Every file also serves as a fuzzing seed.

Run from the repository root: python3 tools/make_corrupt_corpus.py
"""
import os
import struct
import tempfile

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf import GGUFWriter

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "corrupt", "gguf")


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


if __name__ == "__main__":
    main()
