#!/usr/bin/env bash
# The server's overhead: 64 concurrent streams through `serve` vs the same generations
# in-process through the runtime, in one run (server/examples/bench_serve.rs).
# Extra arguments are passed on (--model PATH, --streams N, --max-tokens N, --rounds N).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --locked
exec cargo run --release --locked -p runanywhere-server --example bench_serve -- "$@"
