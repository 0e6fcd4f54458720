#!/usr/bin/env python3
"""llama.cpp's last-position logits for the reference prompts.

Runs the exact prompt ids stored in smollm2_f32.bin (made by
make_reference_fixtures.py) through llama.cpp (llama-cpp-python) and writes
smollm2_llamacpp_last.bin:
  magic "KLNLCP1\\0"; u32 n_prompts; u32 vocab;
  per prompt: u32 n_tokens; i32 ids[n_tokens]; f32 last_logits[vocab]
(all little-endian). Then prints how llama.cpp compares with transformers:
that gap is the yardstick for an engine that quantizes activations to Q8
for its matmuls, as llama.cpp does.

Usage: tools/llamacpp_reference.py [--model PATH] [--out DIR] [--check]
"""
import argparse
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_reference_fixtures as ref  # noqa: E402

MAGIC = b"KLNLCP1\0"


def run_llamacpp(model_path, prompts_ids, n_threads):
    import llama_cpp
    llm = llama_cpp.Llama(model_path=model_path, n_ctx=512, logits_all=True, n_threads=n_threads,
                          n_threads_batch=n_threads, verbose=False)
    lasts, alls, gens = [], [], []
    for ids in prompts_ids:
        llm.reset()
        llm.eval([int(i) for i in ids])
        alls.append(np.array(llm.scores[:len(ids)], dtype=np.float32))
        lasts.append(alls[-1][-1].copy())
        # greedy continuation, for the report only (not stored)
        gen = []
        for _ in range(ref.N_GEN):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            gen.append(tok)
            llm.eval([tok])
        gens.append(np.array(gen, dtype=np.int32))
    return llm.n_vocab(), lasts, alls, gens


def write(path, vocab, prompts_ids, lasts):
    with open(path, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<2I", len(prompts_ids), vocab))
        for ids, last in zip(prompts_ids, lasts):
            f.write(struct.pack("<I", len(ids)))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(np.asarray(last, dtype="<f4").tobytes())


def read(path):
    data = open(path, "rb").read()
    if data[:8] != MAGIC:
        raise ValueError(f"{path}: bad magic")
    n_prompts, vocab = struct.unpack_from("<2I", data, 8)
    off = 16
    prompts = []
    for _ in range(n_prompts):
        (n,) = struct.unpack_from("<I", data, off)
        off += 4
        ids = np.frombuffer(data, "<i4", n, off)
        off += 4 * n
        last = np.frombuffer(data, "<f4", vocab, off)
        off += 4 * vocab
        prompts.append((ids, last))
    if off != len(data):
        raise ValueError(f"{path}: {len(data) - off} trailing bytes")
    return vocab, prompts


def compare(lcp_path, ref_paths, alls=None, gens=None):
    """Prints llama.cpp vs transformers on the last position of each prompt
    (and, when given, on every position's probes and the greedy continuation)."""
    _, lcp = read(lcp_path)
    for rp in ref_paths:
        _, probes, refp = ref.read_fixture(rp)
        margins = ref.read_margins(ref.margins_path(rp))
        print(f"llama.cpp vs {os.path.basename(rp)}:")
        for i, ((ids, a), r) in enumerate(zip(lcp, refp)):
            assert np.array_equal(ids, r["ids"])
            b = r["last_logits"]
            d = np.abs(a - b)
            # logits are shift-invariant under softmax: also show the gap after centering
            dc = np.abs((a - a.mean()) - (b - b.mean()))
            top_a, top_b = np.argsort(-a, kind="stable"), np.argsort(-b, kind="stable")
            overlap = len(set(top_a[:10]) & set(top_b[:10]))
            # softmax KL(ref || llama.cpp): how far apart the distributions are
            pa = np.exp(a - a.max()); pa /= pa.sum()
            pb = np.exp(b - b.max()); pb /= pb.sum()
            kl = float(np.sum(pb * (np.log(pb + 1e-30) - np.log(pa + 1e-30))))
            print(f"  prompt {i} ({len(ids):3d} tok): max|d|={d.max():.4f} mean|d|={d.mean():.4f} "
                  f"rms(ref)={np.sqrt((b ** 2).mean()):.3f} top1 {top_a[0]} vs {top_b[0]} "
                  f"({'equal' if top_a[0] == top_b[0] else 'DIFFERENT'}) top10 overlap {overlap}/10 "
                  f"ref top1-top2 margin {b[top_b[0]] - b[top_b[1]]:.3f} KL={kl:.2e} centered max|d|={dc.max():.4f}")
            if alls is not None:
                pa_all = alls[i][:, probes]
                pd = np.abs(pa_all - r["probe_logits"])
                t1 = np.mean(np.argmax(alls[i], axis=1) == r["top_ids"][:, 0])
                g = gens[i]
                same = int(np.argmax(np.concatenate([g != r["gen_ids"], [True]])))
                print(f"      all positions: probe max|d|={pd.max():.4f} mean|d|={pd.mean():.4f} "
                      f"top1 agree {t1 * 100:.1f}%; greedy gen equal for first {same}/{len(g)} tokens" +
                      (f" (ref margin at the split {margins[i][same]:.3f})" if same < len(g) else ""))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=ref.DEFAULT_MODEL)
    ap.add_argument("--out", default=ref.DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="only re-read and compare")
    args = ap.parse_args()
    f32 = os.path.join(args.out, "smollm2_f32.bin")
    bf16 = os.path.join(args.out, "smollm2_bf16.bin")
    out = os.path.join(args.out, "smollm2_llamacpp_last.bin")
    alls = gens = None
    if not args.check:
        _, _, prompts = ref.read_fixture(f32)
        ids = [p["ids"] for p in prompts]
        vocab, lasts, alls, gens = run_llamacpp(args.model, ids, args.threads)
        write(out, vocab, ids, lasts)
        print(f"wrote {out} ({os.path.getsize(out)} bytes)")
    compare(out, [f32, bf16], alls, gens)


if __name__ == "__main__":
    main()
