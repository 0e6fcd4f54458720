#!/usr/bin/env bash
# libkiln as users install it: `cmake --install` into a fresh prefix, then
#  - libkiln.so has a versioned SONAME and exports exactly kiln.h's functions;
#  - it needs no CUDA library at load (the CUDA backend loads cuBLASLt itself);
#  - the examples compile with -Werror against the installed copy through
#    pkg-config and through the CMake package, and run on a tiny model;
#  - the installed command runs.
# usage: test_install.sh BUILD_DIR SOURCE_DIR MODEL
set -euo pipefail
build=$1 src=$2 model=$3
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$build" --prefix "$prefix" >/dev/null
lib=$(find "$prefix" -name 'libkiln.so' | head -1)
[ -n "$lib" ] || fail "no libkiln.so installed"
libdir=$(dirname "$lib")
for f in "$prefix/include/kiln.h" "$prefix/bin/kiln" "$libdir/pkgconfig/kiln.pc" "$libdir/cmake/kiln/kilnConfig.cmake"; do
  [ -e "$f" ] || fail "not installed: ${f#"$prefix"/}"
done

soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
[[ "$soname" =~ ^libkiln\.so\.[0-9]+$ ]] || fail "SONAME is '$soname', not libkiln.so.N"
[ -e "$libdir/$soname" ] || fail "$soname is not installed"
echo "SONAME $soname"

# Exported functions = the functions kiln.h declares.
grep -oE '[ *]kiln_[a-z0-9_]+\(' "$src/include/kiln.h" | sed -E 's/^[ *]//; s/\($//' | sort -u >"$prefix/want"
nm -D --defined-only "$lib" | awk '$2 ~ /^[TWDBR]$/ {print $3}' | sed 's/@.*//' | sort -u >"$prefix/got"
if ! diff -u "$prefix/want" "$prefix/got"; then fail "exported symbols differ from kiln.h (- header only, + library only)"; fi
echo "exports: $(wc -l <"$prefix/got") functions, exactly kiln.h's"

needed=$(readelf -d "$lib" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
if grep -qiE 'cublas|cudart|libcuda|nccl' <<<"$needed"; then fail "libkiln.so needs CUDA libraries at load: $needed"; fi
echo "needs: $needed"

# The examples through pkg-config, as the README shows.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
flags=$(pkg-config --cflags --libs kiln)
for ex in generate shared_prompt; do
  cc -std=c17 -Wall -Wextra -Werror "$src/examples/$ex.c" $flags -Wl,-rpath,"$libdir" -o "$prefix/$ex" ||
    fail "examples/$ex.c does not build against the installed kiln"
done
out=$("$prefix/generate" "$model" "Hello") || fail "examples/generate failed"
[ -n "$out" ] || fail "examples/generate printed nothing"
echo "generate: ${out:0:60}"
out=$("$prefix/shared_prompt" "$model" "Once upon a time") || fail "examples/shared_prompt failed"
grep -q '^sequence 1: ' <<<"$out" || fail "examples/shared_prompt: $out"
echo "$out"

# The same examples through the CMake package.
cmake -S "$src/examples" -B "$prefix/examples-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null ||
  fail "find_package(kiln) failed"
cmake --build "$prefix/examples-build" >/dev/null || fail "the examples do not build through find_package(kiln)"
"$prefix/examples-build/generate" "$model" "Hello" >/dev/null || fail "the CMake-built example failed"

"$prefix/bin/kiln" --version | grep -q '^kiln ' || fail "the installed kiln does not run"
echo "1 passed, 0 failed"
