#!/usr/bin/env bash
# A lent GPU session's plan in two calls (each under the device tool's
# 600 s limit), most important first: correctness on hardware, then speed.
#
#   bash bench/gpu/run_gpu_session.sh check   # ~3-4 min: every fixture on the GPU
#                                             # vs the emulator (Triton sm_80 and
#                                             # sm_90a TMA/wgmma kernels), then
#                                             # the Python package's CUDA tests
#   bash bench/gpu/run_gpu_session.sh bench   # ~8-9 min: attention_bench (ours,
#                                             # ours-sm80, SDPA, Triton), then the
#                                             # event / quantize benchmarks
#   bash bench/gpu/run_gpu_session.sh --dry-run   # both parts on the emulator (here)
#
# Needs what prepare_gpu_session.sh builds (carried: bench/gpu/bin,
# python/jagged/_native.abi3.so, bench/gpu/side_events_prebuilt). Each step
# runs under its own timeout; its output is in $OUT/step-NAME.log (OUT else
# /tmp/gpu_session), next to the files the step writes there itself;
# a failing step is reported and the next one still runs. Exit status: 0
# when every step passed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
out="${OUT:-/tmp/gpu_session}"
mkdir -p "$out"
cd "$root"
failed=()

step() { # step NAME TIMEOUT_S COMMAND...
  local name="$1" limit="$2"; shift 2
  echo "== $name (timeout ${limit} s) $(date -u +%H:%M:%S)"
  timeout "$limit" "$@" 2>&1 | tee "$out/step-$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc"
  [ "$rc" = 0 ] || failed+=("$name ($rc)")
}

check() {
  # Every fixture with a recipe; the sm_90a ones (TMA, wgmma) need a Hopper
  # GPU, which both lent kinds are.
  step crosscheck 180 bash "$here/run_crosscheck.sh"
  step python_cuda 240 bash "$here/run_python_cuda.sh" -q -k cuda
}

bench() {
  step attention_bench 320 env BENCH_TIMEOUT=300 bash "$here/run_attention_bench.sh"
  step side_events 230 env EVENT_TIMEOUT=80 QUANT_TIMEOUT=140 bash "$here/run_side_events.sh" "$out/side_events"
}

dry_run() {
  step crosscheck_dry 300 bash "$here/run_crosscheck.sh" --dry-run
  step attention_bench_dry 300 bash "$here/run_attention_bench.sh" --dry-run --filter d64
  step side_events_dry 300 bash "$here/run_side_events.sh" --dry-run "$out/side_events_dry"
}

case "${1:-}" in
  check) check ;;
  bench) bench ;;
  --dry-run) dry_run ;;
  *) echo "usage: bash bench/gpu/run_gpu_session.sh check|bench|--dry-run" >&2; exit 2 ;;
esac
if [ ${#failed[@]} -gt 0 ]; then
  echo "run_gpu_session: FAILED: ${failed[*]}"
  exit 1
fi
echo "run_gpu_session: every step passed"
