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
python=python3
if ! $python -c "import numpy, gguf, tokenizers" 2>/dev/null; then
  # A virtual environment in the cache: works where the system Python is
  # "externally managed" (Debian 12) and leaves it untouched.
  python="$cache/venv/bin/python3"
  if ! [ -x "$python" ] || ! $python -c "import numpy, gguf, tokenizers" 2>/dev/null; then
    echo "kiln: installing numpy, gguf and tokenizers into $cache/venv" >&2
    python3 -m venv "$cache/venv"
    "$python" -m pip install -q numpy gguf tokenizers
  fi
fi
make_folder() { # name dtype shards
  local out="$cache/$1"
  [ -f "$out/config.json" ] && return 0
  echo "kiln: writing $out" >&2
  rm -rf "$out.tmp"
  "$python" tools/make_hf_folder.py "$model" "$out.tmp" --dtype "$2" --shards "$3" --no-verify >/dev/null
  rm -rf "$out" && mv "$out.tmp" "$out"
}
make_folder smollm2-hf-f32 f32 1
make_folder smollm2-hf-f32-sharded f32 3
make_folder smollm2-hf-bf16 bf16 1
