#!/usr/bin/env bash
# The "before" of a before/after GPU comparison, in the same call as
# scripts/gpu-run.sh's `build model bench-kiln` (the "after"): builds an
# older kiln from a source tree carried in $KILN_BASELINE_DIR (default
# .baseline: `git archive COMMIT | tar -x -C .baseline`, listed in
# .git/info/exclude, named in the call's carry) and runs its GPU suite on
# the same random model. Run it after gpu-run.sh's build stage, which
# unpacks the build dependencies into /tmp/kiln-deps.
#
# usage: scripts/gpu-baseline.sh [build] [bench]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
src="${KILN_BASELINE_DIR:-.baseline}"
build=/tmp/kiln-baseline-build
model_dir="${KILN_MODEL_DIR:-/tmp/llama8b-random}"
out="${OUT:-/tmp/kiln-gpu-out}"
deps=/tmp/kiln-deps
lib="$deps/usr/lib/x86_64-linux-gnu"
export PKG_CONFIG_PATH="$lib/pkgconfig:$deps/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CPATH="$deps/usr/include${CPATH:+:$CPATH}"
export PATH="$PATH:/usr/local/cuda/bin"
mkdir -p "$out"
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(build bench)
for stage in "${stages[@]}"; do
  case "$stage" in
  build)
    [ -f "$src/CMakeLists.txt" ] || { echo "gpu-baseline: no source tree in $src" >&2; exit 1; }
    cmake -S "$src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF >"$out/baseline-build.log" 2>&1
    cmake --build "$build" -j"${KILN_BUILD_JOBS:-16}" --target kiln_cli >>"$out/baseline-build.log" 2>&1
    echo "gpu-baseline: built $build/kiln from $src ($(cat "$src/COMMIT" 2>/dev/null || echo 'commit unknown'))"
    ;;
  bench)
    timeout -k 5 "${KILN_BASELINE_TIMEOUT_S:-300}" "$build/kiln" bench --device cuda -m "$model_dir" --gpu-suite \
      ${KILN_BENCH_ARGS:-} 2>&1 | tee "$out/baseline-bench.out"
    ;;
  *) echo "gpu-baseline: unknown stage $stage" >&2; exit 2 ;;
  esac
done
