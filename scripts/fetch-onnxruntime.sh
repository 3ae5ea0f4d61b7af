#!/usr/bin/env bash
# Puts ONNX Runtime's shared library where the onnx plugin looks for it:
#   .ort/libonnxruntime.so.<version>   (in the repository root; ignored by git)
#
# The plugin loads ONNX Runtime at run time (the `ort` crate's `load-dynamic` mode), so
# nothing is linked at build time. The library is taken from the official PyPI wheel
# `onnxruntime==<version>` (CPU build, includes the com.microsoft contrib ops), which pip
# downloads; Python is needed only here, never at run time.
#
# Idempotent: does nothing when the library is already present.
# Override the version with ORT_VERSION (the plugin needs 1.31 or newer: `ort` is built
# with `api-31`).
set -euo pipefail
cd "$(dirname "$0")/.."

version="${ORT_VERSION:-1.31.1}"
dest_dir=".ort"
lib="libonnxruntime.so.${version}"
dest="${dest_dir}/${lib}"

if [ -f "$dest" ]; then
  echo "fetch-onnxruntime: ${dest} already present" >&2
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64 | Linux-aarch64) ;;
  *)
    echo "fetch-onnxruntime: only Linux x86_64/aarch64 wheels are handled here; on $(uname -s)-$(uname -m)," \
      "get ONNX Runtime ${version} yourself and set ORT_DYLIB_PATH to its shared library" >&2
    exit 1
    ;;
esac

python=""
for candidate in python3 python; do
  if command -v "$candidate" >/dev/null 2>&1; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "fetch-onnxruntime: python3 not found. It is needed (with pip) to download the" \
    "onnxruntime==${version} wheel: install it (Debian: apt-get install -y python3 python3-pip)," \
    "or download ONNX Runtime ${version} yourself and set ORT_DYLIB_PATH to ${lib}" >&2
  exit 1
fi
if ! "$python" -m pip --version >/dev/null 2>&1; then
  echo "fetch-onnxruntime: ${python} has no pip. Install it (Debian: apt-get install -y python3-pip)," \
    "or download ONNX Runtime ${version} yourself and set ORT_DYLIB_PATH to ${lib}" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "fetch-onnxruntime: downloading the onnxruntime==${version} wheel with pip" >&2
# Any wheel of this version carries the same native library; fall back to naming a
# Python version explicitly when none matches the local interpreter.
if ! "$python" -m pip download --quiet --no-deps --only-binary=:all: \
  "onnxruntime==${version}" -d "$tmp" >&2; then
  echo "fetch-onnxruntime: no wheel for the local Python; trying a CPython 3.12 wheel" >&2
  "$python" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 "onnxruntime==${version}" -d "$tmp" >&2
fi

wheel="$(ls "$tmp"/onnxruntime-"${version}"-*.whl 2>/dev/null | head -1)"
if [ -z "$wheel" ]; then
  echo "fetch-onnxruntime: pip did not produce an onnxruntime-${version} wheel in $tmp" >&2
  exit 1
fi

mkdir -p "$dest_dir"
# Extract with Python's zipfile (unzip may be missing); write to a temporary name first
# so an interrupted run never leaves a truncated library behind.
"$python" - "$wheel" "onnxruntime/capi/${lib}" "${dest}.partial" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    try:
        src = z.open(member)
    except KeyError:
        libs = [n for n in z.namelist() if "libonnxruntime" in n]
        sys.exit(f"fetch-onnxruntime: {member} is not in {wheel} (it has: {libs})")
    with src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
mv "${dest}.partial" "$dest"
echo "fetch-onnxruntime: ok, ${dest} ($(du -h "$dest" | cut -f1))" >&2
