#!/usr/bin/env bash
# Puts the TFLite runtime where the litert plugin looks for it:
#   .litert/liblitert-lm.so   (the TFLite 2.23 C API; ignored by git)
#
# Taken from the official PyPI wheel `litert-lm-api==0.18.1` (py3-none
# manylinux_2_27_x86_64, sha256 pinned below), downloaded with pip; Python is needed
# only here. The plugin opens the library at run time (plugins/litert/src/runtime.rs).
# Idempotent (nothing to do when the library is present) and atomic (written under a
# temporary name, then renamed).
set -euo pipefail
cd "$(dirname "$0")/.."

version="0.18.1"
wheel="litert_lm_api-${version}-py3-none-manylinux_2_27_x86_64.whl"
sha256="b2fe9b9a87afe991a7b0d29615b0bfc3d41c7a0ac28e9c54436676482bca2e5b"
dest=".litert/liblitert-lm.so"

if [ -f "$dest" ]; then
  echo "fetch-litert: $dest already present" >&2
  exit 0
fi
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    echo "fetch-litert: only the Linux x86_64 wheel is handled here (this is" \
      "$(uname -s)-$(uname -m)); set RUNANYWHERE_LITERT_LIB to a library exporting the TFLite C API" >&2
    exit 1
    ;;
esac
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch-litert: python3 with pip is needed to download the litert-lm-api==$version wheel" \
    "(Debian: apt-get install -y python3-pip)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetch-litert: downloading the litert-lm-api==$version wheel with pip" >&2
python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  --python-version 3.11 --platform manylinux_2_27_x86_64 "litert-lm-api==$version" -d "$tmp" >&2
if [ ! -f "$tmp/$wheel" ]; then
  echo "fetch-litert: pip did not produce $wheel (got: $(ls "$tmp"))" >&2
  exit 1
fi
got="$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)"
if [ "$got" != "$sha256" ]; then
  echo "fetch-litert: $wheel has sha256 $got, expected $sha256; refusing it" >&2
  exit 1
fi
mkdir -p .litert
python3 - "$tmp/$wheel" "$dest.partial" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1:3]
with zipfile.ZipFile(wheel) as z, z.open("litert_lm/liblitert-lm.so") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
mv "$dest.partial" "$dest"
echo "fetch-litert: ok, $dest ($(du -h "$dest" | cut -f1))" >&2
