"""Checks the buffers that run_crosscheck.sh saved (JAGGED_CROSSCHECK_SAVE_DIR)
against an f64 NumPy reference of each fixture, with the shapes of the recipes
in run_crosscheck.sh. Independent of both backends: it tells which one is
right when they disagree.

usage: python3 bench/gpu/check_reference.py SAVE_DIR
Exit status 0 when every fixture found is within its tolerance.
"""

import sys
from pathlib import Path

import numpy as np


def bf16(a):
    """bf16 bits stored as <u2 to f64."""
    return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def rel(got, ref):
    return float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-300))


def vadd(d):
    a, b, c = (np.load(d / f"arg{i}.npy") for i in range(3))
    # An f32 add is correctly rounded: the f32 sum is the exact answer.
    return rel(c.astype(np.float64), (a + b).astype(np.float64)), 0.0


def sum_atomic(d):
    x, out = np.load(d / "arg0.npy"), np.load(d / "arg1.npy")
    return rel(out.astype(np.float64), np.array([x.astype(np.float64).sum()])), 1e-5


def softmax_rows(d):
    x = np.load(d / "arg0.npy").reshape(64, 256).astype(np.float64)[:, :200]
    y = np.load(d / "arg1.npy").reshape(64, 256)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    ref = e / e.sum(axis=1, keepdims=True)
    tail_zero = np.all(y[:, 200:] == 0)
    return rel(y[:, :200], ref) if tail_zero else float("inf"), 1e-5


def matmul_bf16(d):
    a = bf16(np.load(d / "arg0.npy")).reshape(100, 96)
    b = bf16(np.load(d / "arg1.npy")).reshape(96, 128)
    c = np.load(d / "arg2.npy").reshape(100, 128)
    return rel(c, a @ b), 1e-5


def attention_fwd(d):
    q, k, v = (bf16(np.load(d / f"arg{i}.npy")).reshape(128, 64) for i in range(3))
    o = np.load(d / "arg3.npy").reshape(128, 64)
    s = q @ k.T * 0.125
    p = np.exp(s - s.max(axis=1, keepdims=True))
    ref = (p / p.sum(axis=1, keepdims=True)) @ v
    # p is rounded to bf16 before the second product: bf16 tolerance.
    return rel(o, ref), 1e-2


def matmul_tf32(d):
    a = np.load(d / "arg0.npy").reshape(100, 64).astype(np.float64)
    b = np.load(d / "arg1.npy").reshape(64, 128).astype(np.float64)
    c = np.load(d / "arg2.npy").reshape(100, 128)
    # Products of tf32-rounded inputs (10 mantissa bits): tf32 tolerance.
    return rel(c, a @ b), 1e-3


def layernorm_f16(d):
    x = np.load(d / "arg0.npy").reshape(32, 500).astype(np.float64)
    w, b = (np.load(d / f"arg{i}.npy").astype(np.float64) for i in (1, 2))
    y = np.load(d / "arg3.npy").reshape(32, 500).astype(np.float64)
    xc = x - x.mean(axis=1, keepdims=True)
    ref = xc / np.sqrt((xc * xc).mean(axis=1, keepdims=True) + 1e-5) * w + b
    return rel(y, ref), 2e-3


def cumsum_i32(d):
    x, y = np.load(d / "arg0.npy"), np.load(d / "arg1.npy")
    return rel(y.astype(np.float64), np.cumsum(x.astype(np.float64))), 0.0


def histogram_atomic(d):
    x, bins = np.load(d / "arg0.npy"), np.load(d / "arg1.npy")
    return rel(bins.astype(np.float64), np.bincount(x, minlength=100).astype(np.float64)), 0.0


def jagged_sum(d):
    values = np.load(d / "arg0.npy").reshape(300, 64).astype(np.float64)
    offsets = np.load(d / "arg1.npy")
    out = np.load(d / "arg2.npy").reshape(8, 64)
    ref = np.zeros((8, 64))
    for b in range(8):
        n = min(offsets[b + 1] - offsets[b], 64)
        ref[b] = values[offsets[b]:offsets[b] + n].sum(axis=0)
    return rel(out, ref), 1e-5


CHECKS = {
    f.__name__: f
    for f in (vadd, sum_atomic, softmax_rows, matmul_bf16, attention_fwd, matmul_tf32,
              layernorm_f16, cumsum_i32, histogram_atomic, jagged_sum)
}


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    ok = True
    for name, check in CHECKS.items():
        if not (root / name).is_dir():
            print(f"{name}: not saved")
            continue
        err, tol = check(root / name)
        passed = np.isfinite(err) and err <= tol
        ok &= bool(passed)
        print(f"{name}: rel l2 vs f64 reference {err:.3e} (tolerance {tol:g}) {'PASS' if passed else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
