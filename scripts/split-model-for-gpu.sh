#!/usr/bin/env bash
# The GPU machine's calls carry at most 64 MiB, and SmolLM2's GGUF (94 MB)
# does not fit one: this splits it into .gpu-model-a/ and .gpu-model-b/ (both
# ignored by git). Carry .gpu-model-a in one call and .gpu-model-b in the next
# on the same warm machine; scripts/gpu-run.sh keeps the first half in /tmp
# and joins them into .gpu-cache/ when the second arrives.
set -euo pipefail
cd "$(dirname "$0")/.."
model="${KILN_CACHE:-$HOME/.cache/kiln}/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$model" ] || bash scripts/fetch-model.sh >/dev/null
rm -rf .gpu-model-a .gpu-model-b
mkdir -p .gpu-model-a .gpu-model-b
split -n 2 -d "$model" /tmp/kiln-model.part
mv /tmp/kiln-model.part00 .gpu-model-a/smol.part00
mv /tmp/kiln-model.part01 .gpu-model-b/smol.part01
sha256sum "$model" | cut -d' ' -f1 >.gpu-model-b/sha256
echo "split $model into .gpu-model-a and .gpu-model-b" >&2
