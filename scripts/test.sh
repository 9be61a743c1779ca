#!/usr/bin/env bash
# The whole test suite: installs the tools the tests need into .tools/ (ptxas,
# nvdisasm), then runs every test of the workspace.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PIP_ROOT_USER_ACTION=ignore
bash scripts/install-tools.sh
export PATH="$root/.tools/bin:$PATH"
export JAGGED_PTXAS="$root/.tools/bin/ptxas"
cargo test --workspace --locked
# The PyTorch package (python/, docs/python.md): installs torch into
# .tools/venv, builds the extension, runs pytest (7-9 min from scratch).
bash scripts/test-python.sh
# Fuzzing smoke test: builds the cargo-fuzz targets in fuzz/ (nightly;
# installs cargo-fuzz into .tools/) and runs each for 30 s on its seeds.
bash scripts/fuzz-smoke.sh
