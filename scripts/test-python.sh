#!/usr/bin/env bash
# The Python package's tests (python/, see docs/python.md): creates the
# virtual environment .tools/venv (ignored), installs torch (the PyPI wheel,
# with its CUDA libraries: ~5 GB), pytest, maturin and numpy (which torch
# warns about when missing) and faiss-cpu (the reference of the quantization
# fixtures, scripts/gen-faiss-fixtures.py) into it, builds the
# package into it with `maturin develop --release` (Rust target dir
# python/target), runs pytest on python/tests (arguments go to pytest), then
# the GPU attention benchmark's --dry-run (bench/gpu/attention_bench.py).
# Idempotent: a second run only rebuilds what changed. pip's, Inductor's and
# the kernel cache's files stay in .tools/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
venv="$root/.tools/venv"
export PIP_CACHE_DIR="$root/.tools/pip-cache"
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
TORCH_VERSION=2.15.0
PYTEST_VERSION=9.2.0
MATURIN_VERSION=1.16.0
FAISS_VERSION=1.15.1
start=$(date +%s)
if [ ! -x "$venv/bin/python" ]; then
  echo "test-python: creating $venv"
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import torch, pytest, numpy, faiss" 2>/dev/null || [ ! -x "$venv/bin/maturin" ]; then
  echo "test-python: installing torch==$TORCH_VERSION, pytest, maturin, faiss-cpu into $venv"
  "$venv/bin/python" -m pip install --quiet \
    "torch==$TORCH_VERSION" "pytest==$PYTEST_VERSION" "maturin==$MATURIN_VERSION" numpy \
    "faiss-cpu==$FAISS_VERSION"
fi
echo "test-python: environment ready after $(( $(date +%s) - start )) s"
# The FAISS fixtures of tests/quantize_faiss.rs are what this FAISS computes.
"$venv/bin/python" scripts/gen-faiss-fixtures.py --check
# maturin develop installs into the active virtual environment.
export VIRTUAL_ENV="$venv"
export PATH="$venv/bin:$PATH"
export CARGO_TARGET_DIR="$root/python/target"
# torch.compile's and the kernel cache's files stay in .tools/ too.
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$root/.tools/torchinductor}"
export JAGGED_CACHE_DIR="${JAGGED_CACHE_DIR:-$root/.tools/jagged-cache}"
# Not --locked: python/Cargo.lock also pins the dependencies of the path
# crates (ir, codegen, runtime, emulator), which change with them.
maturin develop --release --manifest-path python/Cargo.toml
echo "test-python: package built after $(( $(date +%s) - start )) s"
(cd python && python -m pytest -q tests "$@")
echo "test-python: pytest done after $(( $(date +%s) - start )) s"
# The GPU attention benchmark's harness, on CPU tensors (the emulator) at tiny
# sizes: it checks our forward and backward against torch per sequence and
# exits non-zero on a mismatch, so bench/gpu/run_attention_bench.sh is known
# to run before a GPU sees it.
python bench/gpu/attention_bench.py --dry-run --filter d64 > "$root/.tools/attention-bench-dry-run.txt" ||
  { cat "$root/.tools/attention-bench-dry-run.txt"; exit 1; }
tail -n 1 "$root/.tools/attention-bench-dry-run.txt"
echo "test-python: done after $(( $(date +%s) - start )) s"
