#!/usr/bin/env bash
# The GPU session's one command for issues 10 and 11 (Semantic IDs, event
# streams): event_bench.py then quantize_bench.py on the plans that
# prepare_side_events.sh built (bench/gpu/side_events_prebuilt, carried),
# each under its own timeout, everything printed and saved under OUT_DIR.
#
# usage: bash bench/gpu/run_side_events.sh [--dry-run] [OUT_DIR]
#   OUT_DIR  default $OUT (the device machine's return folder), else /tmp/side_events
#   --dry-run  no GPU: the same scripts with --dry-run (emulator + torch on the CPU)
# env: PYTHON (default python3; .tools/venv/bin/python for --dry-run when present),
#      EVENT_TIMEOUT (default 120 s), QUANT_TIMEOUT (default 240 s)
# Exit status: 0 when both scripts ran and every check passed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dry=()
if [ "${1:-}" = --dry-run ]; then dry=(--dry-run); shift; fi
out="${1:-${OUT:-/tmp/side_events}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ ${#dry[@]} -gt 0 ] && [ -z "${PYTHON:-}" ] && [ -x "$root/.tools/venv/bin/python" ]; then
  py="$root/.tools/venv/bin/python"
fi
cd "$root"
{
  echo "== run_side_events ${dry[*]} $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --short 2>/dev/null | wc -l) changed paths"
  cat "$here/side_events_prebuilt/BUILD.txt" 2>/dev/null || echo "no bench/gpu/side_events_prebuilt/BUILD.txt: run bench/gpu/prepare_side_events.sh (and carry the folder)"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$py" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
  "$py" -c "import cupy; print('cupy', cupy.__version__)" 2>/dev/null ||
    echo "cupy not importable (a GPU run then launches through libcuda with ctypes; --dry-run uses neither)"
} 2>&1 | tee "$out/env.txt"
status=0
echo "== event_bench.py ${dry[*]} (timeout ${EVENT_TIMEOUT:-120} s)"
timeout "${EVENT_TIMEOUT:-120}" "$py" "$here/event_bench.py" "${dry[@]}" --out "$out/event_bench.txt" \
  >"$out/event_bench.log" 2>&1
rc=$?; cat "$out/event_bench.log"; echo "event_bench exit $rc"; [ $rc -eq 0 ] || status=1
echo "== quantize_bench.py ${dry[*]} (timeout ${QUANT_TIMEOUT:-240} s)"
timeout "${QUANT_TIMEOUT:-240}" "$py" "$here/quantize_bench.py" "${dry[@]}" --out "$out/quantize_bench.txt" \
  >"$out/quantize_bench.log" 2>&1
rc=$?; cat "$out/quantize_bench.log"; echo "quantize_bench exit $rc"; [ $rc -eq 0 ] || status=1
echo "== run_side_events: exit $status; files in $out"
exit $status
