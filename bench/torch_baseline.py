#!/usr/bin/env python3
"""PyTorch + transformers baseline for kiln's GPU benchmarks, on the same
Hugging Face folder (e.g. the one tools/make_random_llama.py writes).

usage: bench/torch_baseline.py --model DIR [--json PATH] [--budget-s 280]
           [--device cuda] [--decode-steps 128] [--batch-steps 64] [--no-compile]
           [--workloads decode,prefill,batch]

Model: AutoModelForCausalLM, bfloat16, attn_implementation "sdpa", a static KV
cache (transformers StaticCache, sized to what each workload needs: its
attention spans the whole cache, masked). Random token ids. Workloads:
  decode   batch 1, the cache first filled with a prompt of 512 / 4096 tokens,
           then 128 single-token steps (greedy next token), tokens/s from the
           median step time
  prefill  one sequence of 512 / 2048 tokens into an empty cache, tokens/s and
           TFLOP/s (formula at prefill_flops), median of the repetitions
  batch    8 / 32 / 64 sequences, each with 512 cached tokens, 64 steps of one
           token per sequence, total tokens/s
Each runs eager, then compiled: torch.compile(mode="reduce-overhead") (CUDA
graphs) for the decode steps, mode "default" for prefill. Compilation runs
under the time budget (--budget-s, counted from start, model load included):
a compile that fails, or would not fit, is reported as n/a with the reason.
Steps are timed with CUDA events after warm-up; every workload is wrapped so
that an error (e.g. a transformers API change) is reported, not fatal.
Prints a markdown table; --json writes every result.
"""
import argparse
import inspect
import json
import signal
import sys
import time
import traceback

import torch

T0 = time.time()


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--json", help="write the results here")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget-s", type=float, default=280.0, help="whole run, model load included")
    # kiln bench --gpu-suite's step counts (DECODE_STEPS, BATCH_STEPS)
    p.add_argument("--decode-steps", type=int, default=128, help="timed steps at batch 1")
    p.add_argument("--batch-steps", type=int, default=64, help="timed steps of the batched decode")
    p.add_argument("--prefill-reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--workloads", default="decode,prefill,batch")
    p.add_argument("--decode-contexts", default="512,4096")
    p.add_argument("--prefill-lengths", default="512,2048")
    p.add_argument("--batch-sizes", default="8,32,64")
    p.add_argument("--batch-context", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def ints(s):
    return [int(x) for x in s.split(",") if x]


def left(args):
    return args.budget_s - (time.time() - T0)


class Budget(BaseException):
    """Raised by SIGALRM; a BaseException so that library code catching
    Exception cannot swallow it."""


def _alarm(signum, frame):
    raise Budget("time budget exhausted")


class Timer:
    """CUDA events on a GPU (the GPU's own clock, no host syncs between steps);
    perf_counter with a synchronize elsewhere (CPU runs for testing)."""

    def __init__(self, device):
        self.cuda = device.startswith("cuda")

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def ms(self, a, b):
        if self.cuda:
            return a.elapsed_time(b)
        return (b - a) * 1e3

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def median(v):
    s = sorted(v)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


# ---- FLOPs -------------------------------------------------------------------

def matrix_params(cfg):
    """Weights of the per-layer matrix products (q, k, v, o, gate, up, down);
    the embedding lookup is no product and lm_head is counted separately."""
    h, L = cfg.hidden_size, cfg.num_hidden_layers
    hd = getattr(cfg, "head_dim", None) or h // cfg.num_attention_heads
    q = cfg.num_attention_heads * hd
    kv = cfg.num_key_value_heads * hd
    attn = h * q + 2 * h * kv + q * h
    mlp = 3 * h * cfg.intermediate_size
    return L * (attn + mlp)


def prefill_flops(cfg, tokens, past=0):
    """FLOPs of a prefill of `tokens` positions after `past` cached ones:
         2 * matrix_params * tokens                      (every layer's q k v o gate up down)
       + 2 * hidden * vocab                              (lm_head, last position only: both kiln
                                                          and this baseline compute just its logits)
       + 2 * 2 * layers * heads * head_dim * sum_i vis_i (Q K^T and P V; query i sees vis_i
                                                          = past + i + 1 positions)
    with sum_i vis_i = tokens * past + tokens * (tokens + 1) / 2. Norms, RoPE,
    softmax and SiLU are left out (a fraction of a percent)."""
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    visible = tokens * past + tokens * (tokens + 1) // 2
    return (2 * matrix_params(cfg) * tokens + 2 * cfg.hidden_size * cfg.vocab_size
            + 4 * cfg.num_hidden_layers * cfg.num_attention_heads * hd * visible)


# ---- model and cache (transformers 5.x names, with fallbacks) -----------------

def load_model(path, device):
    from transformers import AutoModelForCausalLM
    kw = dict(attn_implementation="sdpa", device_map=device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, **kw)
    except TypeError:  # transformers < 4.56 knows only torch_dtype
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.bfloat16, **kw)
    model.eval()
    return model


def cache_kwarg(model):
    """The name forward() takes the cache under: past_key_values (<= 5.2x) or cache."""
    params = inspect.signature(model.forward).parameters
    return "past_key_values" if "past_key_values" in params else "cache"


def new_cache(model, batch, max_len, device):
    from transformers import StaticCache
    try:
        return StaticCache(config=model.config, max_cache_len=max_len)  # 5.x: allocated on first use
    except TypeError:
        return StaticCache(config=model.config, max_batch_size=batch, max_cache_len=max_len, device=device,
                           dtype=torch.bfloat16)


class Runner:
    def __init__(self, args, model):
        self.args, self.model = args, model
        self.cfg = model.config
        self.device = args.device
        self.timer = Timer(args.device)
        self.kw = cache_kwarg(model)
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(args.seed)
        self.vocab = self.cfg.vocab_size

    def ids(self, batch, n):
        return torch.randint(0, self.vocab, (batch, n), generator=self.gen).to(self.device)

    @torch.no_grad()
    def forward(self, ids, cache):
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1, **{self.kw: cache})
        return out.logits[:, -1, :]

    def decode_step_fn(self, cache):
        model, kw = self.model, self.kw

        @torch.no_grad()
        def step(tok):
            out = model(input_ids=tok, use_cache=True, logits_to_keep=1, **{kw: cache})
            return out.logits[:, -1, :].argmax(-1, keepdim=True)
        return step

    # batch sequences with `context` cached tokens, then steps of one token each
    def decode(self, batch, context, compiled, steps):
        a = self.args
        # Compiled: the first call compiles, the next ones record the CUDA graph.
        warm = max(a.warmup, 3) if compiled else a.warmup
        extra = warm + steps
        cache = new_cache(self.model, batch, context + extra, self.device)
        try:
            with torch.no_grad():
                logits = self.forward(self.ids(batch, context), cache)  # eager prefill fills the cache
            tok = logits.argmax(-1, keepdim=True)
            step = self.decode_step_fn(cache)
            t_compile = None
            if compiled:
                # dynamic=None: the first shape compiles static, a changed one recompiles
                # with that dimension dynamic, so later workloads mostly reuse it.
                step = torch.compile(step, mode="reduce-overhead", fullgraph=True)
            times = []
            for i in range(extra):
                if compiled:
                    torch.compiler.cudagraph_mark_step_begin()
                t_a = self.timer.mark() if i >= warm else None
                if compiled and i == 0:
                    c0 = time.time()
                tok = step(tok).clone()  # a CUDA graph's output is overwritten by its next replay
                if compiled and i == 0:
                    self.timer.sync()
                    t_compile = time.time() - c0
                if t_a is not None:
                    times.append((t_a, self.timer.mark()))
            self.timer.sync()
            ms = median([self.timer.ms(x, y) for x, y in times])
            r = {"ms_per_step": ms, "tokens_per_s": batch * 1e3 / ms}
            if t_compile is not None:
                r["first_call_s"] = t_compile
            return r
        finally:
            del cache

    def prefill(self, tokens, compiled):
        a = self.args
        cache = new_cache(self.model, 1, tokens, self.device)
        try:
            fn = self.forward
            t_compile = None
            if compiled:
                fn = torch.compile(self.forward, mode="default")
            ids = self.ids(1, tokens)
            # An eager call allocates the cache (lazily, on first use) outside
            # any compiled region; a compiled call that did it would be
            # recompiled on the next call, which sees an allocated cache.
            self.forward(ids, cache)
            warm = 2 if compiled else 1
            times = []
            for i in range(warm + a.prefill_reps):
                cache.reset()
                self.timer.sync()
                c0 = time.time()
                t_a = self.timer.mark()
                fn(ids, cache)
                t_b = self.timer.mark()
                self.timer.sync()
                if i == 0 and compiled:
                    t_compile = time.time() - c0
                if i >= warm:
                    times.append(self.timer.ms(t_a, t_b))
            ms = median(times)
            flops = prefill_flops(self.cfg, tokens)
            r = {"ms": ms, "tokens_per_s": tokens * 1e3 / ms, "tflops": flops / (ms * 1e-3) / 1e12, "flops": flops}
            if t_compile is not None:
                r["first_call_s"] = t_compile
            return r
        finally:
            del cache


def workloads(args):
    w = []
    sel = set(args.workloads.split(","))
    if "decode" in sel:
        w += [{"workload": "decode", "batch": 1, "context": c} for c in ints(args.decode_contexts)]
    if "prefill" in sel:
        w += [{"workload": "prefill", "batch": 1, "tokens": t} for t in ints(args.prefill_lengths)]
    if "batch" in sel:
        w += [{"workload": "decode", "batch": b, "context": args.batch_context} for b in ints(args.batch_sizes)]
    return w


def label(w):
    if w["workload"] == "prefill":
        return f"prefill {w['tokens']}"
    return f"decode b={w['batch']} ctx {w['context']}"


def run_one(runner, w, compiled):
    if w["workload"] == "prefill":
        return runner.prefill(w["tokens"], compiled)
    steps = runner.args.decode_steps if w["batch"] == 1 else runner.args.batch_steps
    return runner.decode(w["batch"], w["context"], compiled, steps)


def cleanup(device):
    import gc
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def main():
    args = parse_args()
    info = {"torch": torch.__version__, "model": args.model, "device": args.device}
    try:
        import transformers
        info["transformers"] = transformers.__version__
    except ImportError as e:
        print(f"torch_baseline: {e}", file=sys.stderr)
        return 1
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("torch_baseline: no CUDA device", file=sys.stderr)
            return 1
        info["gpu"] = torch.cuda.get_device_name()
    results = []
    t = time.time()
    try:
        model = load_model(args.model, args.device)
    except Exception as e:  # report, don't die: the JSON still says why
        traceback.print_exc()
        info["error"] = f"model load failed: {type(e).__name__}: {e}"
        finish(args, info, results)
        return 1
    info["load_s"] = time.time() - t
    cfg = model.config
    info["config"] = {k: getattr(cfg, k, None) for k in ("num_hidden_layers", "hidden_size", "intermediate_size",
                                                        "num_attention_heads", "num_key_value_heads", "vocab_size")}
    info["matrix_params"] = matrix_params(cfg)
    info["flops_formula"] = ("2*matrix_params*tokens + 2*hidden*vocab (lm_head, last position) + "
                             "4*layers*heads*head_dim*sum_i(visible_i); matrix_params = per-layer q,k,v,o,gate,up,down")
    print(f"torch_baseline: {info.get('gpu', args.device)}, torch {info['torch']}, transformers "
          f"{info['transformers']}; model loaded in {info['load_s']:.1f}s", flush=True)
    runner = Runner(args, model)
    todo = workloads(args)

    eager_failed = set()
    for w in todo:  # eager first: these numbers must exist whatever compile does
        r = dict(w, mode="eager")
        try:
            r.update(run_one(runner, w, False))
        except Exception as e:
            r["error"] = f"{type(e).__name__}: {e}"
            eager_failed.add(label(w))
            traceback.print_exc()
        cleanup(args.device)
        results.append(r)
        print(f"  eager    {label(w)}: {fmt(r)}", flush=True)

    compile_broken = None
    try:  # one recompile per workload (new cache object, new shapes)
        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    except AttributeError:
        pass
    old = signal.signal(signal.SIGALRM, _alarm)
    # Decode steps first (batch 1, then the batches: one compiled function whose
    # later shapes mostly reuse the first compile), prefill last.
    for w in sorted(todo, key=lambda w: w["workload"] == "prefill"):
        r = dict(w, mode="compiled")
        remaining = left(args)
        if args.no_compile:
            r["error"] = "n/a: --no-compile"
        elif label(w) in eager_failed:
            r["error"] = "n/a: eager failed"
        elif compile_broken:
            r["error"] = f"n/a: {compile_broken}"
        elif remaining < 45:
            r["error"] = f"n/a: time budget ({remaining:.0f}s left)"
        else:
            signal.alarm(max(1, int(remaining - 5)))
            try:
                r.update(run_one(runner, w, True))
            except Budget:
                r["error"] = f"n/a: compile/run did not finish within the budget ({remaining:.0f}s left)"
                compile_broken = "an earlier compile was interrupted"
            except Exception as e:
                r["error"] = f"n/a: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                traceback.print_exc()
            finally:
                signal.alarm(0)
        cleanup(args.device)
        results.append(r)
        print(f"  compiled {label(w)}: {fmt(r)}", flush=True)
    signal.signal(signal.SIGALRM, old)
    finish(args, info, results)
    return 0


def fmt(r):
    if "error" in r:
        return r["error"]
    s = f"{r['tokens_per_s']:.1f} tok/s"
    if "tflops" in r:
        s += f", {r['tflops']:.1f} TFLOP/s"
    if "first_call_s" in r:
        s += f" (first call {r['first_call_s']:.1f}s)"
    return s


def finish(args, info, results):
    info["elapsed_s"] = time.time() - T0
    print()
    print("| workload | eager | compiled |")
    print("| --- | --- | --- |")
    rows = {}
    for r in results:
        rows.setdefault(label(r), {})[r["mode"]] = r
    for name, modes in rows.items():
        cells = []
        for m in ("eager", "compiled"):
            r = modes.get(m)
            cells.append("" if r is None else fmt(r))
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    print(f"\n{info.get('gpu', args.device)}; torch {info['torch']}, transformers {info.get('transformers')}; "
          f"{info['elapsed_s']:.0f}s in all" + (f"; {info['error']}" if "error" in info else ""))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"info": info, "results": results}, f, indent=2, default=str)
            f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
