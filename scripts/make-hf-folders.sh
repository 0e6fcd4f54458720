#!/usr/bin/env bash
# Makes the Hugging Face folders the reference tests load: the default model's
# weights dequantized to F32 (one file and three shards) and to BF16, with
# tokenizer.json and tokenizer_config.json, under $KILN_CACHE (default
# ~/.cache/kiln). Needs Python with numpy, gguf and tokenizers (installed here
# with pip when missing); the folders are made once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${KILN_CACHE:-$HOME/.cache/kiln}"
model=$(bash scripts/fetch-model.sh)
if ! python3 -c "import numpy, gguf, tokenizers" 2>/dev/null; then
  echo "kiln: installing the Python packages the fixture scripts use (numpy gguf tokenizers)" >&2
  python3 -m pip install -q numpy gguf tokenizers
fi
make_folder() { # name dtype shards
  local out="$cache/$1"
  [ -f "$out/config.json" ] && return 0
  echo "kiln: writing $out" >&2
  rm -rf "$out.tmp"
  python3 tools/make_hf_folder.py "$model" "$out.tmp" --dtype "$2" --shards "$3" --no-verify >/dev/null
  rm -rf "$out" && mv "$out.tmp" "$out"
}
make_folder smollm2-hf-f32 f32 1
make_folder smollm2-hf-f32-sharded f32 3
make_folder smollm2-hf-bf16 bf16 1
