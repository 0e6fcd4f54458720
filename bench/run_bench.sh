#!/usr/bin/env bash
# Side-by-side speed of kiln and llama.cpp on one model, same thread count,
# printed as a markdown table. Usage: bench/run_bench.sh [MODEL]
# Env: THREADS (default 2), PREFILL (128,512), DECODE (128), KILN (build/kiln).
set -euo pipefail
cd "$(dirname "$0")/.."

model="${1:-${KILN_MODEL:-$HOME/.cache/kiln/SmolLM2-135M-Instruct.Q4_1.gguf}}"
threads="${THREADS:-2}"
prefill="${PREFILL:-128,512}"
decode="${DECODE:-128}"
kiln="${KILN:-build/kiln}"

if [ ! -f "$model" ]; then
  echo "run_bench: model not found: $model" >&2
  exit 1
fi
if ! python3 -c 'import llama_cpp' 2>/dev/null; then
  echo "run_bench: installing llama-cpp-python (compiles llama.cpp; takes minutes)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=ON}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
    python3 -m pip install -q llama-cpp-python >&2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# One after the other, never together: they would fight over the same cores.
if [ -x "$kiln" ]; then
  # kiln bench --json: the median of each test, as lines like llama.cpp's below.
  if "$kiln" bench -m "$model" -t "$threads" -p "$prefill" -n "$decode" --json >"$tmp/kiln.json"; then
    python3 -c '
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    phase, n = ("prefill", r["n_prompt"]) if r["n_gen"] == 0 else ("decode", r["n_gen"])
    print("kiln %s %d: %.1f tok/s" % (phase, n, r["tokens_per_second"]["median"]))
' "$tmp/kiln.json" | tee "$tmp/kiln.txt" >&2
  else
    echo "run_bench: kiln bench failed" >&2
    : >"$tmp/kiln.txt"
  fi
else
  echo "run_bench: $kiln not built; kiln column will be empty" >&2
  : >"$tmp/kiln.txt"
fi
python3 bench/bench_llamacpp.py "$model" --threads "$threads" --prefill "$prefill" --decode "$decode" \
  | tee "$tmp/llamacpp.txt" >&2

# Value of a line "<engine> <phase> <n>: <x> tok/s", or "n/a".
rate() {
  local v
  v=$(sed -n "s/^$2 $3 $4: \([0-9.]*\) tok\/s$/\1/p" "$1" | tail -n 1)
  echo "${v:-n/a}"
}

cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -n 1)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD 2>/dev/null; then commit="$commit+dirty"; fi

echo "## kiln vs llama.cpp"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- cpu: ${cpu:-unknown} ($(nproc) cores), threads: $threads"
echo "- commit: $commit"
echo "- model: $(basename "$model")"
echo "- llama.cpp: llama-cpp-python $(python3 -c 'import llama_cpp; print(llama_cpp.__version__)')"
echo
echo "| test | kiln tok/s | llama.cpp tok/s | kiln / llama.cpp |"
echo "|---|---:|---:|---:|"
row() {
  local k l ratio
  k=$(rate "$tmp/kiln.txt" kiln "$1" "$2")
  l=$(rate "$tmp/llamacpp.txt" llama.cpp "$1" "$2")
  ratio=n/a
  if [ "$k" != n/a ] && [ "$l" != n/a ]; then
    ratio=$(awk -v a="$k" -v b="$l" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
  fi
  echo "| $1 $2 | $k | $l | $ratio |"
}
IFS=, read -ra ps <<<"$prefill"
for n in "${ps[@]}"; do row prefill "$n"; done
IFS=, read -ra ds <<<"$decode"
for n in "${ds[@]}"; do row decode "$n"; done
