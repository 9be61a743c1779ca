"""Shared helpers: random jagged inputs (empty sequences, lengths above max_len) and torch references."""

import math
import os
import sys

import pytest
import torch

# The repository's graphs (tests/graphs/*.jir), for jagged.op.
GRAPHS = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "graphs")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# The devices the op tests run on: the CPU (the emulator) always, CUDA (in
# place on torch's memory and stream) where a GPU is present; elsewhere the
# CUDA cases are reported as skipped. bench/gpu/run_python_cuda.sh runs them
# on a GPU machine.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")),
]


@pytest.fixture(params=DEVICES)
def device(request):
    """Each op test once per device of DEVICES."""
    return torch.device(request.param)


@pytest.fixture(params=["sm_80", "sm_90a"])
def arch(request, device):
    """Each test once per arch the kernels are compiled for (jagged.set_arch, reset afterwards):
    the emulator runs both; a GPU runs sm_90a on compute capability 9.x only (else skipped)."""
    import jagged

    if request.param == "sm_90a" and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] != 9:
        pytest.skip("sm_90a kernels need a compute capability 9.x device")
    jagged.set_arch(request.param)
    yield request.param
    jagged.set_arch(None)


def on(device, *tensors):
    """`tensors` moved to `device` (one tensor: itself, not a tuple)."""
    moved = tuple(t.to(device) for t in tensors)
    return moved[0] if len(moved) == 1 else moved


def offsets_of(lengths, dtype=torch.int64):
    o = [0]
    for n in lengths:
        o.append(o[-1] + n)
    return torch.tensor(o, dtype=dtype)


# Layouts: an empty batch, only empty sequences, length 1, and lengths
# above the max_len the tests use (4).
LAYOUTS = [[], [0, 0], [1], [3, 0, 6, 1], [0, 5, 2, 9, 0]]


def rand(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=torch.float64).to(dtype)


def seqs(offsets):
    o = offsets.tolist()
    return [(o[b], o[b + 1]) for b in range(len(o) - 1)]


def ref_to_padded(values, offsets, max_len, pad=0.0):
    B = offsets.numel() - 1
    out = torch.full((B, max_len, *values.shape[1:]), pad, dtype=torch.float64)
    for b, (s, e) in enumerate(seqs(offsets)):
        n = min(e - s, max_len)
        out[b, :n] = values[s : s + n].double()
    return out


def ref_to_jagged(dense, offsets):
    T = int(offsets[-1])
    out = torch.zeros((T, *dense.shape[2:]), dtype=torch.float64)
    for b, (s, e) in enumerate(seqs(offsets)):
        n = min(e - s, dense.shape[1])
        out[s : s + n] = dense[b, :n].double()
    return out


def ref_jdem(values, offsets, dense, max_len):
    out = torch.zeros(values.shape, dtype=torch.float64)
    for b, (s, e) in enumerate(seqs(offsets)):
        n = min(e - s, max_len)
        out[s : s + n] = values[s : s + n].double() * dense[b, :n].double()
    return out


def ref_softmax(values, offsets, max_len):
    out = torch.zeros(values.shape, dtype=torch.float64)
    for s, e in seqs(offsets):
        n = min(e - s, max_len)
        if n:
            out[s : s + n] = torch.softmax(values[s : s + n].double(), 0)
    return out


def ref_reduce(values, offsets, max_len, reduce):
    B = offsets.numel() - 1
    out = torch.zeros((B, *values.shape[1:]), dtype=torch.float64)
    for b, (s, e) in enumerate(seqs(offsets)):
        n = min(e - s, max_len)
        if n == 0:
            continue
        x = values[s : s + n].double()
        out[b] = {"sum": x.sum(0), "mean": x.mean(0), "max": x.amax(0)}[reduce]
    return out


def ref_attention(q, k, v, offsets, max_len, scale=None, causal=False, activation="softmax"):
    q, k, v = q.double(), k.double(), v.double()
    T, H, D = q.shape
    scale = 1 / math.sqrt(D) if scale is None else scale
    out = torch.zeros((T, H, v.shape[2]), dtype=torch.float64)
    lse = torch.zeros((T, H), dtype=torch.float64)
    for s, e in seqs(offsets):
        n = min(e - s, max_len)
        if n == 0:
            continue
        sc = scale * torch.einsum("ihd,jhd->hij", q[s : s + n], k[s : s + n])
        allowed = torch.ones(n, n, dtype=torch.bool)
        if causal:
            allowed = allowed.tril()
        if activation == "softmax":
            sc = sc.masked_fill(~allowed, -math.inf)
            p = torch.softmax(sc, -1)
            lse[s : s + n] = torch.logsumexp(sc, -1).T
        else:
            p = torch.where(allowed, sc * torch.sigmoid(sc) / max_len, 0.0)
        out[s : s + n] = torch.einsum("hij,jhe->ihe", p, v[s : s + n])
    return out, lse


def ref_fbgemm(q, k, v, offsets, max_len, use_mask=False):
    q, k, v = q.double(), k.double(), v.double()
    out = torch.zeros(q.shape, dtype=torch.float64)
    for s, e in seqs(offsets):
        n = min(e - s, max_len)
        if n == 0:
            continue
        p = torch.softmax(q[s : s + n] @ k[s : s + n].T, -1) / max_len
        if use_mask:
            p = p * torch.ones(n, n).triu()
        out[s : s + n] = p @ v[s : s + n]
    return out


def assert_close(got, want, tol):
    got = got.double().cpu()
    want = want.double().cpu()
    assert got.shape == want.shape, (got.shape, want.shape)
    assert not torch.isnan(got).any()
    err = (got - want).norm() / max(want.norm(), 1e-30)
    assert err <= tol or (got - want).abs().max() <= tol, f"relative L2 error {err:.3e} > {tol}"


# f64: the code generator's general path computes f64 values in f32 today
# (ld.global.f64 then cvt.rn.f32.f64; found by these tests), so f64 results
# have f32 precision, not the f64 accumulation docs/ops.md states.
TOL = {torch.float64: 2e-6, torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

sys.path.insert(0, os.path.dirname(__file__))
