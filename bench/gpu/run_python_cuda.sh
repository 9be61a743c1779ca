#!/usr/bin/env bash
# Runs the Python package's tests on a GPU machine (CUDA 13, PyTorch, no
# Rust, no network): the op tests then run on device="cuda" too (in place on
# PyTorch's memory and current stream), next to the CPU (emulator) cases.
#
# The extension is built elsewhere and shipped with the tree, either as
#   - a wheel in bench/gpu/wheels/ (`maturin build --release -m python/Cargo.toml
#     -o bench/gpu/wheels`), installed with pip --no-deps --no-index, or
#   - the built module python/jagged/_native.abi3.so (what `maturin develop`
#     leaves there), used in place through PYTHONPATH.
#
# Usage, from the repository root:
#   bash bench/gpu/run_python_cuda.sh [pytest args...]
# e.g. `bash bench/gpu/run_python_cuda.sh -k "cuda"` for the CUDA cases only.
# PYTHON names the interpreter (default python3); JAGGED_CHECK_OFFSETS=sync
# turns the device-side offsets checks into host checks (exceptions naming
# the argument instead of device asserts).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
python="${PYTHON:-python3}"
cd "$root/python"

if ! "$python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "run_python_cuda.sh: torch sees no CUDA device; the CUDA cases would all be skipped" >&2
    exit 2
fi
"$python" -c 'import pytest' 2>/dev/null || {
    echo "run_python_cuda.sh: pytest is not installed for $python" >&2
    exit 2
}

wheel="$(ls "$root"/bench/gpu/wheels/jagged-*.whl 2>/dev/null | head -n 1 || true)"
if [ -n "$wheel" ]; then
    venv="${TMPDIR:-/tmp}/jagged-cuda-venv"
    # The venv sees the system's torch and pytest; only the wheel goes in.
    [ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
    "$venv/bin/python" -m pip install --quiet --no-deps --no-index --force-reinstall "$wheel"
    python="$venv/bin/python"
    echo "jagged from $wheel"
elif [ -f "$root/python/jagged/_native.abi3.so" ]; then
    export PYTHONPATH="$root/python${PYTHONPATH:+:$PYTHONPATH}"
    echo "jagged from $root/python (prebuilt _native.abi3.so)"
else
    echo "run_python_cuda.sh: no wheel in bench/gpu/wheels/ and no python/jagged/_native.abi3.so" >&2
    exit 2
fi

# Kernels compile on first use (code generator in the extension) into a
# fresh cache, so that nothing stale from another build is loaded. Outputs
# are poisoned (0xFF bytes, NaN in floats) so that an element no kernel
# writes fails a test, as the runtime's own tests poison theirs.
export JAGGED_CACHE_DIR="${JAGGED_CACHE_DIR:-${TMPDIR:-/tmp}/jagged-cuda-cache}"
export JAGGED_POISON_OUTPUTS="${JAGGED_POISON_OUTPUTS:-1}"
"$python" -c 'import torch; print("torch", torch.__version__, "on", torch.cuda.get_device_name(0))'
exec "$python" -m pytest -q -rs tests "$@"
