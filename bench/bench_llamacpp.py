#!/usr/bin/env python3
"""llama.cpp speed on the same model and thread count as `kiln bench`.

prefill N: time to eval N fixed pseudo-random token ids into an empty KV cache
           (one batch, logits of the last position only), after one warm-up;
           median of --reps runs.
decode N:  after a 16-token prompt, N single-token evals, each feeding back the
           argmax of the previous logits (greedy); median of --reps runs.

Prints lines like `llama.cpp prefill 128: 1234.5 tok/s` / `llama.cpp decode 128: 56.7 tok/s`.
Usage: bench/bench_llamacpp.py MODEL --threads T --prefill 128,512 --decode 128
"""
import argparse
import statistics
import sys
import time

import numpy as np


def fixed_ids(n, vocab):
    # ids 0..16 are SmolLM2's control tokens; stay clear of them
    return np.random.default_rng(1).integers(17, vocab, size=n).tolist()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", "-t", type=int, default=2)
    ap.add_argument("--prefill", "-p", default="128,512")
    ap.add_argument("--decode", "-n", default="128")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    prefill = [int(x) for x in args.prefill.split(",") if x]
    decode = [int(x) for x in args.decode.split(",") if x]

    import llama_cpp
    longest = max(prefill + [16 + max(decode or [0])])
    llm = llama_cpp.Llama(model_path=args.model, n_ctx=max(512, longest + 16), n_batch=max(512, longest),
                          n_threads=args.threads, n_threads_batch=args.threads,
                          logits_all=False, verbose=False)
    vocab = llm.n_vocab()

    def run_prefill(n):
        llm.reset()
        ids = fixed_ids(n, vocab)
        t0 = time.perf_counter()
        llm.eval(ids)
        return time.perf_counter() - t0

    def run_decode(n):
        llm.reset()
        llm.eval(fixed_ids(16, vocab))
        t0 = time.perf_counter()
        for _ in range(n):
            tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            llm.eval([tok])
        return time.perf_counter() - t0

    run_prefill(min(prefill or [16]))  # warm-up: page in weights, spin up threads
    for n in prefill:
        t = statistics.median(run_prefill(n) for _ in range(args.reps))
        print(f"llama.cpp prefill {n}: {n / t:.1f} tok/s", flush=True)
    for n in decode:
        t = statistics.median(run_decode(n) for _ in range(args.reps))
        print(f"llama.cpp decode {n}: {n / t:.1f} tok/s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
