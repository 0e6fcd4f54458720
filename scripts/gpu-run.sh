#!/usr/bin/env bash
# Everything kiln does on the GPU machine, in one command (that machine has no
# network and runs one command of at most 10 minutes; only $OUT comes back).
#
# usage: scripts/gpu-run.sh [stage...]      (default: build test sanitize)
#   build      unpack .gpu-debs/*.deb (scripts/fetch-gpu-debs.sh, run where
#              there is network) into /tmp/kiln-deps, configure and build build-gpu
#   test       ctest, GPU tests included (KILN_CACHE=.gpu-cache for the model); the
#              GPU tests run the portable (pre-Hopper) path and both matrix-vector
#              forms themselves, so no stage reruns them with other settings
#   sanitize   compute-sanitizer memcheck and racecheck on every tests/cuda binary
#              (KILN_SANITIZE_TESTS: only these, e.g. "test_cuda_ops test_cuda_attention";
#              KILN_SANITIZE_TOOLS: default "memcheck racecheck"; racecheck runs
#              the cases racecheck_selection names unless KILN_TEST_ONLY or
#              KILN_TEST_EXCLUDE is given; KILN_SANITIZE_TIMEOUT_S: a binary, default 150)
#   model      tools/make_random_llama.py -> /tmp/llama8b-random (Llama 3 8B
#              geometry, random BF16; kept when already there)
#   bench      kiln bench --gpu-suite, then bench/torch_baseline.py
#   bench-kiln, bench-torch   one half of bench
#              (the variants and bench-ab stages went on 2026-12-04 with the
#              environment switches they compared; docs/perf.md keeps the
#              figures; a before/after of two trees: scripts/gpu-baseline.sh)
#   read-patterns   pure reads of the decode step's matrices (bench_read_patterns):
#              the matrix-vector kernel's access pattern against the ceiling's
#   profile    ncu: device time per kernel of a decode step at batch 1, 8 and 64
#              (KILN_PROFILE_RUNS: decode (16-token context), decode512, decode4096,
#              batch8, batch64, prefill; KILN_NCU_ARGS: more ncu arguments)
#
# Carry .gpu-debs (and .gpu-cache) in the run. Each stage appends a section to
# $OUT/summary.md and its whole output to $OUT/<stage>.log; a failing stage is
# recorded and the next one still runs. Every stage runs under a timeout so the
# whole command ends before KILN_GPU_DEADLINE_S (default 560) seconds and still
# prints the summary. A stage that finds too little time left is skipped.
# Env: OUT (default /tmp/kiln-gpu-out), KILN_COMMIT (the commit to record; the
# machine's copy of .git may be stale), KILN_GPU_DEADLINE_S, KILN_BENCH_ARGS
# (extra arguments of kiln bench), KILN_TORCH_ARGS (of torch_baseline.py),
# KILN_MODEL_DIR (default /tmp/llama8b-random), KILN_MODEL_ARGS (extra
# arguments of make_random_llama.py, e.g. "--layers 16"),
# KILN_CTEST_ARGS (of ctest, e.g. "-R cuda"), KILN_CTEST_J (parallel tests,
# default 4), KILN_BUILD_JOBS (default 16).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
self="$root/scripts/gpu-run.sh"

export OUT="${OUT:-/tmp/kiln-gpu-out}"
deps=/tmp/kiln-deps
build="build-gpu"
model_dir="${KILN_MODEL_DIR:-/tmp/llama8b-random}"
scratch=/tmp/kiln-gpu-run
deadline_s="${KILN_GPU_DEADLINE_S:-560}"
mkdir -p "$OUT" "$scratch"

# ---- environment (parent and every stage child) ----------------------------
setup_env() {
  [ -z "${KILN_GPU_ENV:-}" ] || return 0 # a stage child inherits the parent's
  export KILN_GPU_ENV=1
  local lib="$deps/usr/lib/x86_64-linux-gnu"
  export PKG_CONFIG_PATH="$lib/pkgconfig:$deps/usr/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  # The unpacked .so files (cjson, cmocka) are found at run time through this;
  # CMake also writes the directory into the build RPATH.
  export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export CPATH="$deps/usr/include${CPATH:+:$CPATH}"
  for d in /usr/local/cuda/bin /usr/local/cuda/compute-sanitizer; do
    if [ -d "$d" ] && [[ ":$PATH:" != *":$d:"* ]]; then PATH="$PATH:$d"; fi
  done
  export PATH
  export KILN_CACHE="$root/.gpu-cache"
  export PYTHONUNBUFFERED=1
}
setup_env

# The model in two carried halves (scripts/split-model-for-gpu.sh): keep the
# first outside the tree (it survives between calls on a warm machine), join
# them when the second arrives.
join_model_halves() {
  local parts=/tmp/kiln-model-parts
  mkdir -p "$parts"
  [ -f .gpu-model-a/smol.part00 ] && cp .gpu-model-a/smol.part00 "$parts/"
  if [ -f .gpu-model-b/smol.part01 ] && [ -f "$parts/smol.part00" ]; then
    mkdir -p "$KILN_CACHE"
    cat "$parts/smol.part00" .gpu-model-b/smol.part01 >"$KILN_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
    if [ -f .gpu-model-b/sha256 ] &&
      [ "$(sha256sum "$KILN_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" | cut -d' ' -f1)" != "$(cat .gpu-model-b/sha256)" ]; then
      echo "gpu-run: the joined model's checksum is wrong" >&2
      rm -f "$KILN_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
    fi
  fi
  return 0
}
[ "${1:-}" = "__body" ] || join_model_halves

now() { date +%s; }
# Seconds left before the deadline (the whole run's, or the running stage's:
# KILN_STAGE_END), less a reserve for writing the summary.
time_left() {
  local start end
  start=$(cat "$scratch/start")
  end=$((start + deadline_s - 10))
  if [ -n "${KILN_STAGE_END:-}" ] && [ "$KILN_STAGE_END" -lt "$end" ]; then end=$KILN_STAGE_END; fi
  echo $((end - $(now)))
}
# Timeout for a step: its cap, or what is left if that is less.
cap() {
  local left
  left=$(time_left)
  if [ "$left" -lt "$1" ]; then echo "$left"; else echo "$1"; fi
}
# A key line for the summary (the stage children write them; the parent copies).
key() { printf '%s\n' "$*" >>"$scratch/keys"; }

# ---- stage bodies (run in a child bash: set -e applies, output -> log) ------
body_build() {
  rm -rf "$deps"
  mkdir -p "$deps"
  local n=0
  for f in .gpu-debs/*.deb; do
    [ -e "$f" ] || { key "no .gpu-debs/*.deb (run scripts/fetch-gpu-debs.sh here and carry .gpu-debs)"; break; }
    dpkg -x "$f" "$deps"
    n=$((n + 1))
  done
  # The .pc files name /usr (prefix=, libdir=, or -I/-L paths directly).
  local pc
  for pc in "$deps"/usr/lib/x86_64-linux-gnu/pkgconfig/*.pc "$deps"/usr/share/pkgconfig/*.pc; do
    [ -e "$pc" ] || continue
    sed -i -E "s#(=|-I|-L)/usr(/|\$)#\\1$deps/usr\\2#g" "$pc"
  done
  local cmake_args=(-S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=ON)
  if ! command -v pkg-config >/dev/null; then
    cmake_args+=(-DPKG_CONFIG_EXECUTABLE="$deps/usr/bin/pkgconf")
    key "no pkg-config on the machine: using the unpacked pkgconf"
  fi
  key "unpacked $n .deb files into $deps"
  local pkgconfig m
  pkgconfig=$(command -v pkg-config || echo "$deps/usr/bin/pkgconf")
  for m in libpcre2-8 libcjson cmocka; do
    key "pkg-config $m: $("$pkgconfig" --modversion "$m" 2>&1 || true) $("$pkgconfig" --cflags "$m" 2>&1 || true)"
  done
  cmake "${cmake_args[@]}"
  cmake --build "$build" -j"${KILN_BUILD_JOBS:-16}"
  key "nvcc: $(nvcc --version | grep -m 1 release || true)"
  key "built: $(find "$build" -maxdepth 1 -name kiln -type f -executable -print -quit)"
}

body_test() {
  [ -d "$build" ] || { key "no $build: run the build stage first"; return 1; }
  if [ -s "$KILN_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    key "model: $KILN_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf"
  else
    key "no SmolLM2 model in .gpu-cache: the tests that need it skip"
  fi
  local rc=0
  # shellcheck disable=SC2086  # KILN_CTEST_ARGS is a list of words
  ctest --test-dir "$build" --output-on-failure -j"${KILN_CTEST_J:-4}" --timeout 240 ${KILN_CTEST_ARGS:-} \
    >"$scratch/ctest.out" 2>&1 || rc=$?
  cat "$scratch/ctest.out"
  # ctest's closing lines: "N% tests passed...", the skipped and failed lists.
  sed -n '/tests passed/,$p' "$scratch/ctest.out" >>"$scratch/keys"
  return "$rc"
}

# The cases racecheck runs in each binary (memcheck runs them all). Racecheck
# instruments every shared-memory access, so its runs pick their cases:
# - test_cuda_ops: not test_linear_qkv (nor its _plain and _pipelined runs).
#   Its cuBLASLt bias-epilogue GEMMs (nvjet *_bias_* kernels, not ours) report
#   hazards when instrumented and raise "Internal Sanitizer Error ... hardware
#   exception" when excluded by --kernel-name-exclude, which then fails every
#   later test (H100, 2026-11-26). The other cuBLASLt kernels run clean. Nor
#   the _plain runs: the default runs take plain rounds on the cards measured
#   (docs/perf.md), and the _pipelined runs the other form.
# - test_cuda_sample: the vocabulary sweeps take minutes each; the sampling
#   kernels still run at vocab 128256 (greedy) and 32000 (graph replay). The
#   _portable runs launch the same kernels without the dependent launch.
# - test_cuda_model: the tiny fixture models only (KILN_MODEL points at one so
#   the program runs without SmolLM2); SmolLM2's 1,000-token teacher forcing
#   does not finish. The same kernels run in all of them.
racecheck_selection() {
  case "$1" in
    test_cuda_ops) echo "KILN_TEST_EXCLUDE=test_linear_qkv*,*_plain" ;;
    test_cuda_sample) echo "KILN_TEST_ONLY=test_invalid_arguments,test_greedy,test_graph_replay" ;;
    test_cuda_model) echo "KILN_TEST_ONLY=test_tiny_models KILN_MODEL=$root/tests/fixtures/tiny64/llama.gguf" ;;
  esac
}

body_sanitize() {
  local tool_bin
  tool_bin=$(command -v compute-sanitizer || true)
  [ -n "$tool_bin" ] || { key "compute-sanitizer not found"; return 1; }
  local bins=() src name bin
  for src in tests/cuda/test_*.c; do
    [ -e "$src" ] || continue
    name=$(basename "$src" .c)
    if [ -n "${KILN_SANITIZE_TESTS:-}" ] && [[ " $KILN_SANITIZE_TESTS " != *" $name "* ]]; then continue; fi
    bin=$(find "$build" -type f -executable -name "$name" -print -quit)
    if [ -n "$bin" ]; then bins+=("$bin"); else key "$name: binary not found under $build"; fi
  done
  [ ${#bins[@]} -gt 0 ] || { key "no tests/cuda binaries"; return 1; }
  local failed=0 tool t rc summary selection
  # Every binary under memcheck first: it matters more than racecheck if time runs short.
  for tool in ${KILN_SANITIZE_TOOLS:-memcheck racecheck}; do
    for bin in "${bins[@]}"; do
      t=$(cap "${KILN_SANITIZE_TIMEOUT_S:-150}")
      if [ "$t" -lt 15 ]; then
        key "$(basename "$bin") $tool: skipped (no time left)"
        failed=1
        continue
      fi
      selection=""
      [ "$tool" = racecheck ] && selection=$(racecheck_selection "$(basename "$bin")")
      # KILN_TEST_ONLY / KILN_TEST_EXCLUDE from the caller win over the selection.
      [ -n "${KILN_TEST_ONLY:-}${KILN_TEST_EXCLUDE:-}" ] && selection=""
      echo "===== $tool $bin ${selection:+($selection) }(timeout ${t}s)"
      rc=0
      # shellcheck disable=SC2086  # $selection: NAME=value words for env
      env $selection KILN_FIXTURES="$root/tests/fixtures" KILN_TEST_GENERATIONS=10 timeout -k 5 "$t" \
        "$tool_bin" --tool "$tool" --error-exitcode 99 "$bin" >"$scratch/san.out" 2>&1 || rc=$?
      cat "$scratch/san.out"
      summary=$(grep -E '========= (ERROR|RACECHECK) SUMMARY' "$scratch/san.out" | tail -n 1 | sed 's/^========= //' ||
        true)
      case "$rc" in
        0) ;;
        77) summary="skipped (exit 77: no GPU?)" ;;
        124|137) summary="TIMEOUT after ${t}s ${summary}"; failed=1 ;;
        99) failed=1 ;;
        *) summary="exit $rc ${summary}"; failed=1 ;;
      esac
      key "$(basename "$bin") $tool${selection:+ (${selection%% KILN_MODEL=*})}: ${summary:-no summary line}"
    done
  done
  return "$failed"
}

body_model() {
  local rc=0
  # shellcheck disable=SC2086  # KILN_MODEL_ARGS is a list of words
  python3 tools/make_random_llama.py --out "$model_dir" --skip-existing ${KILN_MODEL_ARGS:-} 2>&1 |
    tee "$scratch/model.out" || rc=$?
  tail -n 3 "$scratch/model.out" >>"$scratch/keys"
  [ "$rc" -eq 0 ] || return "$rc"
  key "$(du -sh "$model_dir" | cut -f1) in $model_dir: $(find "$model_dir" -name '*.safetensors' | wc -l) shards"
}

body_bench_kiln() {
  [ -x "$build/kiln" ] || { key "no $build/kiln: run the build stage first"; return 1; }
  [ -f "$model_dir/model.safetensors.index.json" ] || { key "no $model_dir: run the model stage first"; return 1; }
  local t rc=0
  t=$(cap 300)
  # shellcheck disable=SC2086  # KILN_BENCH_ARGS is a list of words
  timeout -k 5 "$t" "$build/kiln" bench --device cuda -m "$model_dir" --gpu-suite ${KILN_BENCH_ARGS:-} \
    2>&1 | tee "$scratch/kiln-bench.out" || rc=$?
  [ "$rc" -ne 124 ] || key "kiln bench: TIMEOUT after ${t}s"
  tail -n 40 "$scratch/kiln-bench.out" >>"$scratch/keys"
  return "$rc"
}

# Pure reads of the decode step's matrices, in the ceiling kernel's pattern and
# the matrix-vector kernel's (bench/cuda_read_patterns.cu): what decode could
# reach if its kernels did no arithmetic. Needs no model.
body_read_patterns() {
  local bin="$build/bench/bench_read_patterns" t rc=0
  [ -x "$bin" ] || { key "no $bin: run the build stage first"; return 1; }
  t=$(cap 120)
  timeout -k 5 "$t" "$bin" 2>&1 | tee "$scratch/read-patterns.out" || rc=$?
  cat "$scratch/read-patterns.out" >>"$scratch/keys"
  return "$rc"
}

body_bench_torch() {
  [ -f "$model_dir/model.safetensors.index.json" ] || { key "no $model_dir: run the model stage first"; return 1; }
  local t rc=0
  t=$(cap 330)
  # The script keeps its own time budget; the timeout is the backstop.
  # shellcheck disable=SC2086  # KILN_TORCH_ARGS is a list of words
  timeout -k 10 "$t" python3 bench/torch_baseline.py --model "$model_dir" --json "$OUT/torch.json" \
    --budget-s $((t - 20)) ${KILN_TORCH_ARGS:-} 2>&1 | tee "$scratch/torch.out" || rc=$?
  [ "$rc" -ne 124 ] || key "torch baseline: TIMEOUT after ${t}s"
  sed -n '/^| workload/,$p' "$scratch/torch.out" | head -n 40 >>"$scratch/keys" || true
  return "$rc"
}

# Per-kernel device time (ncu replays each kernel alone: durations are exact,
# the gaps between kernels are not measured) of three runs: decode at batch 1
# (a 16-token prompt, 3 steps), and one batched decode step of 8 and of 64
# sequences after their prompts (launches skipped unprofiled). Each summary
# ends with the last launches: the last decode step, in order.
# KILN_PROFILE_RUNS picks among decode (16-token context), decode512, decode4096, batch8, batch64, prefill (one prompt of 2048).
body_profile() {
  [ -x "$build/kiln" ] || { key "no $build/kiln: run the build stage first"; return 1; }
  [ -f "$model_dir/model.safetensors.index.json" ] || { key "no $model_dir: run the model stage first"; return 1; }
  local ncu_bin t rc=0 run skip count last
  ncu_bin=$(command -v ncu || find /opt/nvidia/nsight-compute -maxdepth 2 -name ncu -type f 2>/dev/null | head -n 1 || true)
  [ -n "$ncu_bin" ] || { key "ncu not found"; return 1; }
  for run in ${KILN_PROFILE_RUNS:-decode batch8 batch64}; do
    local args=()
    case "$run" in
      decode) skip=0 count=3000 last=300 args=(-p 16 -n 3 -r 1) ;;
      decode512) skip=0 count=3000 last=300 args=(--gpu-suite --no-ceilings --only decode512 -r 1) ;;
      decode4096) skip=0 count=3000 last=300 args=(--gpu-suite --no-ceilings --only decode4096 -r 1) ;;
      batch8) skip=4000 count=1000 last=300 args=(--gpu-suite --no-ceilings --only batch8 -r 1) ;;
      batch64) skip=27500 count=1000 last=300 args=(--gpu-suite --no-ceilings --only batch64 -r 1) ;;
      prefill) skip=0 count=2000 last=470 args=(--gpu-suite --no-ceilings --only prefill2048 -r 2) ;; # the second: no GEMM trials
      *) key "profile: unknown run $run"; continue ;;
    esac
    t=$(cap 150)
    [ "$t" -ge 20 ] || { key "profile $run: skipped (no time left)"; continue; }
    echo "===== profile $run (timeout ${t}s)"
    # shellcheck disable=SC2086  # KILN_NCU_ARGS: extra words, e.g. "--clock-control none"
    timeout -k 5 "$t" "$ncu_bin" --csv --metrics gpu__time_duration.sum --graph-profiling node ${KILN_NCU_ARGS:-} \
      --launch-skip "$skip" --launch-count "$count" \
      "$build/kiln" bench --device cuda -m "$model_dir" "${args[@]}" >"$OUT/profile-$run.csv" 2>"$scratch/ncu.err" || rc=$?
    tail -n 5 "$scratch/ncu.err"
    python3 tools/ncu_summary.py "$OUT/profile-$run.csv" --last "$last" | tee "$scratch/profile.out" || rc=$?
    key "== $run: $(head -n 1 "$scratch/profile.out")"
    sed -n '/by kernel:/,/in order:/p' "$scratch/profile.out" | head -n 24 >>"$scratch/keys"
  done
  return "$rc"
}

body_bench() {
  local rc=0
  body_bench_kiln || rc=$?
  body_bench_torch || rc=$?
  return "$rc"
}

# ---- child entry: `gpu-run.sh __body STAGE` ---------------------------------
if [ "${1:-}" = "__body" ]; then
  "body_${2//-/_}"
  exit 0
fi

# ---- parent: run the stages, write the summary ------------------------------
stages=("$@")
[ ${#stages[@]} -gt 0 ] || stages=(build test sanitize)
stage_cap() {
  case "$1" in
    build) echo 330 ;; test) echo 300 ;; sanitize) echo 540 ;; model) echo 150 ;;
    bench) echo 540 ;; bench-kiln) echo 300 ;; bench-torch) echo 330 ;; profile) echo 400 ;;
    read-patterns) echo 120 ;;
    *) echo 0 ;;
  esac
}
now >"$scratch/start"
summary="$OUT/summary.md"
{
  echo "# kiln gpu-run $(date -u +%Y-%m-%dT%H:%M:%SZ): ${stages[*]}"
  echo
  # The device tool's copy of .git can be stale: KILN_COMMIT (the caller's
  # `git rev-parse --short HEAD`, passed in the command) wins when given.
  if [ -n "${KILN_COMMIT:-}" ]; then
    commit="$KILN_COMMIT (given by the caller)"
  elif commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD 2>/dev/null || commit="$commit+dirty"
    commit="$commit (from this machine's .git, which may be stale)"
  else
    commit="unknown (no .git; pass KILN_COMMIT)"
  fi
  echo "- commit: $commit"
  if command -v nvidia-smi >/dev/null; then
    echo "- gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -n 1)"
  else
    echo "- gpu: no nvidia-smi"
  fi
  echo
} >"$summary"

for stage in "${stages[@]}"; do
  log="$OUT/$stage.log"
  c=$(stage_cap "$stage")
  if [ "$c" -eq 0 ]; then
    printf '## %s: UNKNOWN STAGE\n\n' "$stage" >>"$summary"
    continue
  fi
  t=$(cap "$c")
  if [ "$t" -lt 20 ]; then
    printf '## %s: SKIPPED (%ss left before the deadline)\n\n' "$stage" "$(time_left)" >>"$summary"
    continue
  fi
  : >"$scratch/keys"
  echo ">>> stage $stage (timeout ${t}s)" >&2
  t0=$(now)
  rc=0
  # A child bash so that set -e holds inside the stage and a timeout can kill it;
  # the child plans its own steps to end 5 s before the timeout does.
  KILN_STAGE_END=$(($(now) + t - 5)) timeout -k 10 "$t" bash "$self" __body "$stage" >>"$log" 2>&1 || rc=$?
  dt=$(($(now) - t0))
  case "$rc" in
    0) verdict=PASS ;;
    124|137) verdict="FAIL (timeout after ${t}s)" ;;
    *) verdict="FAIL (exit $rc)" ;;
  esac
  if [ "$rc" -ne 0 ] && [ "$stage" = build ]; then
    # The compiler's first errors and the end of the log.
    { grep -E 'error:|Error [0-9]|FAILED:|undefined reference|CMake Error' "$log" | head -n 20 || true; echo ...
      tail -n 15 "$log"; } >>"$scratch/keys"
  elif [ "$rc" -ne 0 ] && [ ! -s "$scratch/keys" ]; then
    tail -n 20 "$log" >>"$scratch/keys"
  fi
  {
    echo "## $stage: $verdict, ${dt}s"
    echo
    echo '```'
    cut -c1-300 "$scratch/keys"
    echo '```'
    echo
  } >>"$summary"
done

cat "$summary"
