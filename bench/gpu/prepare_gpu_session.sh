#!/usr/bin/env bash
# Builds, here (Rust, no GPU), everything a lent GPU session runs through
# run_gpu_session.sh, so that the rare GPU minutes go to measuring:
#   - bench/gpu/bin/jagc (release; run_crosscheck.sh's binary),
#   - python/jagged/_native.abi3.so (the Python extension, release; built
#     from a clean worktree of HEAD so that uncommitted edits do not leak in),
#   - bench/gpu/side_events_prebuilt/ (prepare_side_events.sh's plans).
# All three are ignored by git; the run(...) calls in bench/gpu/README.md
# carry them. Then it runs every part's dry run (emulator, tiny sizes), so a
# recipe that cannot run fails here, not on the GPU.
#
# usage: bash bench/gpu/prepare_gpu_session.sh   (from anywhere; ~10 min on 2 cores)
# Replaces python/jagged/_native.abi3.so in this checkout (python/tests use it).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
venv="$root/.tools/venv"
[ -x "$venv/bin/maturin" ] || { echo "prepare_gpu_session: run scripts/test-python.sh once first (it creates $venv)" >&2; exit 2; }

cargo build --release --bin jagc
mkdir -p "$here/bin" && cp "${CARGO_TARGET_DIR:-target}/release/jagc" "$here/bin/jagc"

wt="$(mktemp -d "${TMPDIR:-/tmp}/jagged-gpu-prep.XXXXXX")"
trap 'git -C "$root" worktree remove --force "$wt" >/dev/null 2>&1 || true' EXIT
git worktree add --detach --force "$wt" HEAD >/dev/null
(cd "$wt" && VIRTUAL_ENV="$venv" PATH="$venv/bin:$PATH" \
  CARGO_TARGET_DIR="$root/python/target" \
  maturin build --release --manifest-path python/Cargo.toml -o "$wt/wheels" >/dev/null)
# The wheel holds the module; python/ is imported in place through PYTHONPATH.
"$venv/bin/python" - "$wt/wheels" "$root/python/jagged/_native.abi3.so" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/jagged-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("_native.abi3.so"))
    open(sys.argv[2], "wb").write(z.read(name))
PY

bash "$here/prepare_side_events.sh"

bash "$here/run_gpu_session.sh" --dry-run
echo "prepare_gpu_session: ready; HEAD $(git rev-parse --short HEAD); the run(...) calls are in bench/gpu/README.md"
