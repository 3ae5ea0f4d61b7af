#!/usr/bin/env bash
# Builds the whole workspace (release) and runs every test: unit tests, and the
# integration tests that drive the real binary and plugins on ../shared/data.
# Also checks formatting and clippy. This is what CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

# One profile for build and tests, so llama.cpp is compiled once.
cargo build --release --workspace --locked
cargo test --release --workspace --locked
cargo fmt --all --check
cargo clippy --release --workspace --all-targets --locked -- -D warnings
