#!/usr/bin/env bash
# Installs what the tests need into the project's ignored folder .tools/:
# ptxas (PyPI nvidia-cuda-nvcc-cu12) and nvdisasm (PyPI nvidia-cuda-nvdisasm).
# Idempotent: a second run only checks that the tools are there. Exits
# non-zero, saying which, when either tool cannot be installed or does not run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tools="$root/.tools"
nvcc="$tools/nvcc"
nvdis="$tools/nvdisasm"
NVCC_VERSION=12.9.86
NVDISASM_VERSION=13.5.37
if [ ! -x "$nvcc/nvidia/cuda_nvcc/bin/ptxas" ]; then
  echo "install-tools: installing ptxas (nvidia-cuda-nvcc-cu12==$NVCC_VERSION) into $nvcc"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$nvcc" \
    "nvidia-cuda-nvcc-cu12==$NVCC_VERSION"
fi
if ! find "$nvdis" -name nvdisasm -type f 2>/dev/null | grep -q .; then
  echo "install-tools: installing nvdisasm (nvidia-cuda-nvdisasm==$NVDISASM_VERSION) into $nvdis"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$nvdis" \
    "nvidia-cuda-nvdisasm==$NVDISASM_VERSION" || {
    echo "install-tools: error: could not install nvdisasm (nvidia-cuda-nvdisasm==$NVDISASM_VERSION); the SASS tests need it" >&2
    exit 1
  }
fi
mkdir -p "$tools/bin"
ln -sf "$nvcc/nvidia/cuda_nvcc/bin/ptxas" "$tools/bin/ptxas"
nvdisasm_bin="$(find "$nvdis" -name nvdisasm -type f 2>/dev/null | head -n 1)"
if [ -z "$nvdisasm_bin" ]; then
  echo "install-tools: error: nvidia-cuda-nvdisasm installed no nvdisasm binary under $nvdis" >&2
  exit 1
fi
chmod +x "$nvdisasm_bin"
ln -sf "$nvdisasm_bin" "$tools/bin/nvdisasm"
"$tools/bin/ptxas" --version | tail -1
if ! "$tools/bin/nvdisasm" --version >/dev/null 2>&1; then
  echo "install-tools: error: $tools/bin/nvdisasm does not run" >&2
  exit 1
fi
"$tools/bin/nvdisasm" --version | tail -1
