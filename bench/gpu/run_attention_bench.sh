#!/usr/bin/env bash
# The GPU session's one command for the attention benchmark (issue 12 item 5,
# issue 13 item 7): attention_bench.py through the Python package on CUDA
# tensors (our kernels compiled by the extension for the device, launched on
# torch's current stream), next to torch SDPA and Triton's tutorial forward.
# The GPU machine needs no Rust: the extension is built here and carried
# (python/jagged/_native.abi3.so, ignored by git).
#
# usage, from the repository root:
#   bash bench/gpu/run_attention_bench.sh [--dry-run] [attention_bench.py args...]
#   e.g. bash bench/gpu/run_attention_bench.sh --filter d128 --reps 20
# Output: printed, and under $OUT when set (the device machine's return
# folder), else /tmp/attention_bench: env.txt, attention_bench.txt (the
# table, appended by the script) and attention_bench.log (everything).
# env: PYTHON (default python3; .tools/venv/bin/python for --dry-run when
#      present), BENCH_TIMEOUT (default 540 s; rows are printed as they are
#      measured, so a timeout keeps the ones done),
#      REPS / WARMUP (defaults 20 / 5 on the GPU: the device time is short;
#      --reps / --warmup in the arguments win).
# Exit status: attention_bench.py's (0: every check passed), 124 on timeout,
# 2 when something is missing.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
dry=0
for a in "$@"; do [ "$a" = --dry-run ] && dry=1; done
out="${OUT:-/tmp/attention_bench}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ $dry -eq 1 ] && [ -z "${PYTHON:-}" ] && [ -x "$root/.tools/venv/bin/python" ]; then
  py="$root/.tools/venv/bin/python"
fi
so="$root/python/jagged/_native.abi3.so"
if [ ! -f "$so" ]; then
  echo "run_attention_bench.sh: no $so: build it (bench/gpu/README.md) and carry it" >&2
  exit 2
fi
export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
# Kernels compile on first use into a fresh cache (nothing stale from
# another build); the warm-up runs absorb the compile.
export JAGGED_CACHE_DIR="${JAGGED_CACHE_DIR:-${TMPDIR:-/tmp}/jagged-attention-cache}"
{
  echo "== run_attention_bench $* $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
  echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --short 2>/dev/null | wc -l) changed paths"
  echo "extension: $so ($(stat -c '%s bytes, modified %y' "$so" 2>/dev/null))"
  echo "extension sha256: $(sha256sum "$so" 2>/dev/null | cut -d' ' -f1)"
  command -v nvidia-smi >/dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  "$py" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
  "$py" -c "import triton; print('triton', triton.__version__)" 2>/dev/null || echo "triton not importable (its column says n/a)"
  "$py" -c "import jagged; print('jagged', jagged.__file__)"
} 2>&1 | tee "$out/env.txt"
args=()
if [ $dry -eq 0 ]; then
  # Defaults for a short device session; later arguments override them.
  args+=(--reps "${REPS:-20}" --warmup "${WARMUP:-5}")
fi
rm -f "$out/attention_bench.txt"
echo "== attention_bench.py ${args[*]} $* (timeout ${BENCH_TIMEOUT:-540} s)"
timeout "${BENCH_TIMEOUT:-540}" "$py" "$here/attention_bench.py" "${args[@]}" "$@" \
  --out "$out/attention_bench.txt" 2>&1 | tee "$out/attention_bench.log"
rc=${PIPESTATUS[0]}
echo "== run_attention_bench: exit $rc; files in $out"
exit $rc
