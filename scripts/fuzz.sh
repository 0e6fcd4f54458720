#!/usr/bin/env bash
# Runs the libFuzzer harnesses (fuzz/), one at a time, each seeded from the
# test fixtures; the corpora they grow live in fuzz/corpus-work/<harness>/
# (ignored by git), crashes in fuzz/corpus-work/<harness>-artifacts/.
#
#   scripts/fuzz.sh [RUNS [HARNESS...]]     default: 10000000 runs, every harness
#
# Builds build-fuzz/ with clang (ASan + UBSan + libFuzzer) first, unless
# KILN_FUZZ_NO_BUILD=1 (built already). KILN_FUZZ_TIME (seconds) caps each run
# (libFuzzer's -max_total_time; default: none). Each harness runs in one
# process under nice -n 19.
# Each run's log is fuzz/corpus-work/<harness>.log; its last lines say how
# many runs were done and how fast.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-10000000}"
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(fuzz_gguf fuzz_safetensors fuzz_tokenizer_json fuzz_hf_config fuzz_tokenizer_config)
F=tests/fixtures
work=fuzz/corpus-work

if [ "${KILN_FUZZ_NO_BUILD:-0}" != 1 ]; then
  CC=clang cmake -S . -B build-fuzz -DKILN_FUZZ=ON -DKILN_TESTS=OFF -DKILN_CUDA=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-fuzz -j"$(nproc)" --target "${harnesses[@]}" >/dev/null
fi

# Seeds: files copied into one directory per harness (libFuzzer reads them all).
seed() { # seed HARNESS FILE...
  local dir="$work/$1-seeds"
  shift
  mkdir -p "$dir"
  for f in "$@"; do [ -f "$f" ] && cp "$f" "$dir/$(echo "${f#$F/}" | tr / _)"; done
  return 0
}
rm -rf "$work"/*-seeds
shopt -s nullglob
seed fuzz_gguf $F/gguf/*.gguf $F/corrupt/gguf/*.gguf $F/corrupt/model/*.gguf $F/corrupt_models/*.gguf $F/tiny/*.gguf
seed fuzz_safetensors $F/safetensors/*.safetensors $F/corrupt/safetensors/*.safetensors \
  $F/corrupt_models/hf_*/model.safetensors $F/tiny/*/model.safetensors
seed fuzz_tokenizer_json $F/tokenizer/*.tokenizer.json $F/tiny/*/tokenizer.json $F/corrupt_models/hf_valid/tokenizer.json
seed fuzz_hf_config $F/tiny/*/config.json $F/tiny/*.config.json $F/tiny64/*/config.json $F/corrupt_models/hf_*/config.json \
  $F/corrupt/model/hf_*/config.json
seed fuzz_tokenizer_config $F/tokenizer/synth_config.json $F/tiny/*/tokenizer_config.json \
  $F/corrupt_models/hf_valid/tokenizer_config.json $F/corrupt/model/hf_*/tokenizer_config.json
# Every chat template of the chat fixtures as a tokenizer_config.json.
python3 - "$F/chat/chat_cases.json" "$work/fuzz_tokenizer_config-seeds" <<'PY'
import json, sys
for name, t in json.load(open(sys.argv[1]))["templates"].items():
    text = t["text"] if isinstance(t, dict) else t
    cfg = {"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": True, "chat_template": text}
    json.dump(cfg, open("%s/template_%s.json" % (sys.argv[2], name), "w"))
PY

for h in "${harnesses[@]}"; do
  mkdir -p "$work/$h" "$work/$h-artifacts"
  dict=()
  case "$h" in fuzz_tokenizer_json | fuzz_hf_config | fuzz_tokenizer_config) dict=(-dict=fuzz/json.dict) ;; esac
  limit=()
  [ -n "${KILN_FUZZ_TIME:-}" ] && limit=(-max_total_time="$KILN_FUZZ_TIME")
  echo "== $h: $runs runs ($(date -u +%FT%TZ), $(git rev-parse --short HEAD))"
  nice -n 19 "build-fuzz/fuzz/$h" -runs="$runs" -timeout=10 -print_final_stats=1 "${dict[@]}" "${limit[@]}" \
    -artifact_prefix="$work/$h-artifacts/" "$work/$h" "$work/$h-seeds" >"$work/$h.log" 2>&1 \
    || { echo "$h FAILED: see $work/$h.log"; tail -30 "$work/$h.log"; exit 1; }
  grep -E "^Done|stat::number_of_executed_units|stat::average_exec_per_sec" "$work/$h.log" || tail -3 "$work/$h.log"
done
