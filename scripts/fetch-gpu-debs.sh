#!/usr/bin/env bash
# Downloads (here, with network) the .deb files that scripts/gpu-run.sh unpacks
# on the GPU machine, which has no network and lacks the headers, .pc files and
# some .so files of kiln's build dependencies. Idempotent: a package whose .deb
# is already in .gpu-debs/ is not fetched again.
#
# usage: scripts/fetch-gpu-debs.sh      (then carry .gpu-debs in the device run)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.gpu-debs

# libpcre2-dev's .so symlinks point into all four runtime packages; only
# libpcre2-8 is linked, but unpacking all keeps the symlinks whole.
# pkgconf-bin + libpkgconf3: a pkg-config for the case that the machine has none.
# libedit-dev is left out on purpose: it is optional (kiln chat's line editing),
# and its .so needs libbsd, which that machine may lack.
pkgs=(
  libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libcjson-dev libcjson1
  libcmocka-dev libcmocka0
  pkgconf-bin libpkgconf3
)

mkdir -p "$dest"
missing=()
for p in "${pkgs[@]}"; do
  compgen -G "$dest/${p}_*.deb" >/dev/null || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "fetch-gpu-debs: downloading ${missing[*]}" >&2
  if ! (cd "$dest" && apt-get download -q "${missing[@]}" >/dev/null); then
    echo "fetch-gpu-debs: apt-get download failed; run 'apt-get update' and retry" >&2
    exit 1
  fi
fi
for p in "${pkgs[@]}"; do
  compgen -G "$dest/${p}_*.deb" >/dev/null || { echo "fetch-gpu-debs: $p missing after download" >&2; exit 1; }
done
echo "fetch-gpu-debs: $(find "$dest" -name '*.deb' | wc -l) packages, $(du -sh "$dest" | cut -f1) in $dest" >&2
