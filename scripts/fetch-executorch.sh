#!/usr/bin/env bash
# Puts ExecuTorch's C++ runtime where the executorch plugin looks for it:
#   .executorch/lib/libexecutorch*.so          the runtime, kernels, XNNPACK backend, thread pool
#   .executorch/include/                        its headers (to build the shim)
#   .executorch/librunanywhere_executorch_shim.so    the plugin's C shim (plugins/executorch/shim/)
#
# The libraries come from the official PyPI wheel `executorch==1.5.1` (Linux x86_64,
# sha256 pinned below), downloaded with pip; neither torch nor Python is needed at run
# time. The shim is compiled here with the system's C++ compiler against the wheel's
# headers, with run path $ORIGIN/lib, so the plugin opens it (and through it the wheel's
# libraries) with no environment variables. See plugins/executorch/src/runtime.rs.
#
# Idempotent: does nothing when the libraries are present and the shim was built from
# the current source. Atomic: a failed run leaves no half-written .executorch/.
set -euo pipefail
cd "$(dirname "$0")/.."

version="1.5.1"
wheel="executorch-${version}-cp311-cp311-manylinux_2_28_x86_64.whl"
sha256="274c28c2fe2b76acb03f9fa381537425c40e0098dcf886baf6d97a1a55ffe300"
dest=".executorch"
shim_src="plugins/executorch/shim/runanywhere_executorch.cpp"
shim="librunanywhere_executorch_shim.so"
stamp="$dest/.shim.sha256"
want="$(sha256sum "$shim_src" | cut -d' ' -f1)-${version}"

libs_ok() {
  local d="$1"
  [ "$(cat "$d/.wheel.sha256" 2>/dev/null)" = "$sha256" ] && [ -d "$d/include/executorch" ] &&
    for lib in libexecutorch.so libexecutorch_kernels_optimized.so \
      libexecutorch_backend_xnnpack.so libexecutorch_threadpool.so; do
      [ -f "$d/lib/$lib" ] || return 1
    done
}
if libs_ok "$dest" && [ -f "$dest/$shim" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "fetch-executorch: $dest up to date (ExecuTorch $version)" >&2
  exit 0
fi

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) ;;
  *)
    echo "fetch-executorch: only the Linux x86_64 wheel is handled here (this is" \
      "$(uname -s)-$(uname -m)); build ExecuTorch $version yourself and set" \
      "RUNANYWHERE_EXECUTORCH_DIR to a directory with $shim and its lib/" >&2
    exit 1
    ;;
esac
cxx="${CXX:-}"
for candidate in c++ g++ clang++; do
  if [ -z "$cxx" ] && command -v "$candidate" >/dev/null 2>&1; then cxx="$candidate"; fi
done
if [ -z "$cxx" ]; then
  echo "fetch-executorch: no C++ compiler (c++, g++ or clang++) to build the shim;" \
    "install one (Debian: apt-get install -y g++)" >&2
  exit 1
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
  echo "fetch-executorch: python3 with pip is needed to download the executorch==$version" \
    "wheel (Debian: apt-get install -y python3-pip)" >&2
  exit 1
fi

# Staged next to $dest (same filesystem), so the final rename is atomic.
tmp="$(mktemp -d "$dest.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
if libs_ok "$dest"; then
  # Only the shim is out of date (the libraries are this wheel's).
  cp -a "$dest" "$tmp/stage"
else
  echo "fetch-executorch: downloading the executorch==$version wheel with pip" >&2
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux_2_28_x86_64 "executorch==$version" -d "$tmp" >&2
  if [ ! -f "$tmp/$wheel" ]; then
    echo "fetch-executorch: pip did not produce $wheel (got: $(ls "$tmp"))" >&2
    exit 1
  fi
  got="$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)"
  if [ "$got" != "$sha256" ]; then
    echo "fetch-executorch: $wheel has sha256 $got, expected $sha256; refusing it" >&2
    exit 1
  fi
  mkdir -p "$tmp/stage"
  python3 - "$tmp/$wheel" "$tmp/stage" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1:3]
libs = ["libexecutorch.so", "libexecutorch_kernels_optimized.so",
        "libexecutorch_backend_xnnpack.so", "libexecutorch_threadpool.so"]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    for lib in libs:
        z.extract(f"executorch/lib/{lib}", out)
    for n in names:
        if n.startswith("executorch/include/") and not n.endswith("/"):
            z.extract(n, out)
PY
  echo "$sha256" > "$tmp/stage/.wheel.sha256"
  mv "$tmp/stage/executorch/lib" "$tmp/stage/lib"
  mv "$tmp/stage/executorch/include" "$tmp/stage/include"
  rmdir "$tmp/stage/executorch"
fi

echo "fetch-executorch: building the shim with $cxx" >&2
inc="$tmp/stage/include"
"$cxx" -std=c++17 -O2 -fPIC -shared -fvisibility=hidden -fvisibility-inlines-hidden \
  -Wall -Wno-deprecated-declarations \
  -DC10_USING_CUSTOM_GENERATED_MACROS -DET_EVENT_TRACER_ENABLED -DET_USE_THREADPOOL \
  -I"$inc" -I"$inc/executorch/runtime/core/portable_type/c10" \
  "$shim_src" -o "$tmp/stage/$shim" \
  -L"$tmp/stage/lib" \
  -Wl,--push-state,--no-as-needed \
  -lexecutorch_kernels_optimized -lexecutorch_backend_xnnpack -lexecutorch_threadpool \
  -Wl,--pop-state -lexecutorch -Wl,-rpath,'$ORIGIN/lib' -Wl,--no-undefined
echo "$want" > "$tmp/stage/.shim.sha256"

rm -rf "$dest.old"
if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
mv "$tmp/stage" "$dest"
rm -rf "$dest.old"
echo "fetch-executorch: ok, $dest ($(du -sh "$dest" | cut -f1))" >&2
