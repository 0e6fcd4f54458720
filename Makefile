# The two commands of the README:
#   make run    install what is missing, build, fetch the default model, generate text
#   make test   the same set-up, then the whole test suite (normal and ASan/UBSan builds)
BUILD      ?= build
BUILD_ASAN ?= build-asan
JOBS       ?= $(shell nproc)
PROMPT     ?= The three primary colors are
CACHE      := $(if $(KILN_CACHE),$(KILN_CACHE),$(HOME)/.cache/kiln)
MODEL      ?= $(CACHE)/SmolLM2-135M-Instruct.Q4_1.gguf
MAKEFLAGS  += --no-print-directory

.PHONY: all deps build build-asan model fixtures run test test-fast clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The sanitizer build is CPU-only: ASan cannot watch GPU memory (the GPU tests
# run under compute-sanitizer on the GPU machine: scripts/gpu-run.sh sanitize).
build-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKILN_SANITIZE=ON -DKILN_CUDA=OFF >/dev/null
	@cmake --build $(BUILD_ASAN) -j $(JOBS)

model:
	@bash scripts/fetch-model.sh >/dev/null

# Hugging Face folders made from the default model (F32, BF16, sharded F32),
# used by the reference tests, and Gemma 3 270M for the SentencePiece tests.
fixtures: model
	@bash scripts/make-hf-folders.sh
	@bash scripts/fetch-gemma.sh >/dev/null

run: build model
	./$(BUILD)/kiln run -m $(MODEL) -p "$(PROMPT)" -n 64 --temp 0

test-fast: build fixtures
	ctest --test-dir $(BUILD) --output-on-failure

test: build build-asan fixtures
	ctest --test-dir $(BUILD) --output-on-failure
	ASAN_OPTIONS=detect_leaks=1 KILN_REFERENCE_PROMPTS=2 ctest --test-dir $(BUILD_ASAN) --output-on-failure

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
