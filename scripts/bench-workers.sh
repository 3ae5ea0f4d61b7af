#!/usr/bin/env bash
# Engines in worker processes vs in-process, in one bench run per model: stories260K on
# llama.cpp and candle (per-token overhead shows most), a random-weight TinyLlama-shape
# 1B model (Q8_0, written once to target/bench/ by tests/examples/random_gguf.rs) on
# llama.cpp, and the mock engine (the boundary's own token rate).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${RUNANYWHERE_TEST_DATA:-../shared/data}"
cargo build --release --workspace --locked
cargo build --release --locked -p runanywhere-tests --example random_gguf
big=target/bench/tinyllama-shape-q8.gguf
if [ ! -f "$big" ]; then
  mkdir -p target/bench
  ./target/release/examples/random_gguf "$big.part" "$data/tinystories/stories260K.gguf"
  mv "$big.part" "$big"
fi
bench=(./target/release/runanywhere bench --compare-isolation)
"${bench[@]}" -m "$data/tinystories/stories260K.gguf" -e llama-cpp -e candle -c 256 --max-tokens 200 --runs 5
"${bench[@]}" -m "$big" -e llama-cpp --max-tokens 32 --runs 3
"${bench[@]}" -m mock -e mock --max-tokens 100000 --runs 3
