#!/usr/bin/env bash
# Installs what a fresh Debian/Ubuntu machine lacks to build and run RunAnywhere:
#   cmake, clang, libclang-dev  (llama.cpp's build and bindgen, for the llama-cpp plugin)
#   python3-pip                 (only to download the ONNX Runtime wheel)
#   python3-venv                (the server tests' Python clients)
#   chromium, chromium-driver, fonts-dejavu-core  (the web app's browser test)
#   ONNX Runtime's shared library, from its PyPI wheel, into .ort/ (the onnx plugin)
#   the official openai, ollama and selenium Python clients, pinned, into .venv-clients/
# Idempotent: installs nothing when everything is present.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null || compgen -G "/usr/lib/x86_64-linux-gnu/libclang*.so*" >/dev/null || need+=(libclang-dev)
if ! command -v python3 >/dev/null 2>&1; then need+=(python3 python3-pip)
elif ! python3 -m pip --version >/dev/null 2>&1; then need+=(python3-pip); fi
# Debian ships `venv` without ensurepip's wheels unless python3-venv is installed: probe.
probe="$(mktemp -d)"
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv "$probe/venv" >/dev/null 2>&1; then
  need+=(python3-venv)
fi
rm -rf "$probe"
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} with apt-get" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
bash "$(dirname "$0")/fetch-onnxruntime.sh"
bash "$(dirname "$0")/fetch-executorch.sh"
bash "$(dirname "$0")/fetch-litert.sh"
bash "$(dirname "$0")/setup-clients.sh"

echo "setup: ok ($(cargo --version), $(cmake --version | head -1))" >&2
