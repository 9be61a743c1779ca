#!/usr/bin/env bash
# The fuzzing smoke test (the last step of scripts/test.sh): builds the
# cargo-fuzz targets in fuzz/ and runs each for 30 s (FUZZ_SECONDS) on a
# temporary copy of its seed corpus; fails on any finding (a panic, an abort,
# a hang or an OOM; the input is kept in fuzz/artifacts/TARGET/). Installs
# cargo-fuzz into .tools/ when it is missing. Arguments: some of the targets
# (default: all). Longer runs: scripts/fuzz-long.sh, which does the work.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
FUZZ_LABEL=fuzz-smoke exec bash "$root/scripts/fuzz-long.sh" --runs 0 --seconds "${FUZZ_SECONDS:-30}" "$@"
