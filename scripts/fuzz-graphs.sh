#!/usr/bin/env bash
# The longer run of the graph fuzzer (tests/graph_fuzz.rs): random valid
# graphs compiled, emulated and compared with the f64 reference. The test
# suite runs 500 graphs; this runs JAGGED_FUZZ_CASES (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
export JAGGED_FUZZ_CASES="${JAGGED_FUZZ_CASES:-20000}"
# New random graphs each run (the test suite uses a fixed seed); a number
# replays a run.
export JAGGED_FUZZ_SEED="${JAGGED_FUZZ_SEED:-random}"
cargo test --release --locked -p jagged --test graph_fuzz -- --nocapture
