"""jagged.op(graph_text): any graph in the canonical text form, on CPU tensors and (the `device`
fixture, where a GPU is present) CUDA tensors."""

import os

import pytest
import torch

import jagged
from conftest import GRAPHS, assert_close, offsets_of, on, rand

WEIGHTED_POOL = """
graph weighted_pool {
  attr max_len: index
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 8]
  %3 = input w : f32[%1]
  %4 = mul %2, %3 : f32[%1, 8]
  %5 = reduce sum %4, axis 0 : f32[B, 8]
  output pooled = %5
}
"""


def ref_pool(x, w, o, n):
    out = torch.zeros(o.numel() - 1, x.shape[1], dtype=torch.float64)
    for b in range(o.numel() - 1):
        s, e = int(o[b]), int(o[b + 1])
        k = min(e - s, n)
        out[b] = (x[s : s + k].double() * w[s : s + k, None].double()).sum(0)
    return out


def test_weighted_pool_text(device):
    op = jagged.op(WEIGHTED_POOL)
    assert op is jagged.op(WEIGHTED_POOL)  # cached by text
    assert [n for n, _, _ in op.inputs] == ["offsets", "x", "w"]
    assert [n for n, _, _ in op.outputs] == ["pooled"]
    for lengths in ([], [0, 0], [3, 0, 6, 1]):
        o = offsets_of(lengths, torch.int32)
        x, w = rand(int(o[-1]), 8), rand(int(o[-1]))
        got = op(*on(device, o, x, w), max_len=4)
        assert got.device == device
        assert_close(got, ref_pool(x, w, o, 4), 1e-5)
        do, dx, dw = on(device, o, x, w)
        assert_close(op(offsets=do, w=dw, x=dx, max_len=4), ref_pool(x, w, o, 4), 1e-5)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(GRAPHS) if f.endswith(".jir")))
def test_repository_graphs_run(name, device):
    with open(os.path.join(GRAPHS, name)) as f:
        op = jagged.op(f.read())
    o = offsets_of([3, 0, 5], torch.int32)
    args = []
    for input_name, dtype, dims in op.inputs:
        if input_name == "offsets":
            args.append(o.to(jagged._tensors.TORCH_DTYPES[dtype]))
            continue
        shape = [int(o[-1]) if d.startswith("%") else (3 if d == "B" else int(d)) for d in dims]
        args.append(rand(*shape, dtype=jagged._tensors.TORCH_DTYPES[dtype]))
    attrs = {"max_len": 4} if any(a[0] == "max_len" for a in op.attrs) else {}
    out = op(*on(device, *args), **attrs)
    for t in out if isinstance(out, tuple) else (out,):
        assert t.device == device
        assert not torch.isnan(t).any()


def test_graph_errors():
    with pytest.raises(ValueError, match=r"graph text:\d+:\d+"):
        jagged.op("graph broken { %0 = nonsense }")
    op = jagged.op(WEIGHTED_POOL)
    o = offsets_of([2], torch.int32)
    with pytest.raises(TypeError, match="missing input"):
        op(o, rand(2, 8))
    with pytest.raises(TypeError, match="unknown argument `eps`"):
        op(o, rand(2, 8), rand(2), eps=1.0)
    with pytest.raises(ValueError, match="'x'|`x`"):
        op(o, rand(2, 7), rand(2), max_len=4)


TWO_OUTPUTS = """
graph pool_and_norm {
  attr max_len: index
  attr eps: float = 0.5
  %0 = input offsets : i32[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 8]
  %3 = input w : f32[%1]
  %4 = mul %2, %3 : f32[%1, 8]
  %5 = reduce sum %4, axis 0 : f32[B, 8]
  %6 = mul %2, %2 : f32[%1, 8]
  %7 = reduce mean %6, axis 1 : f32[%1]
  %8 = attr eps : f32[]
  %9 = add %7, %8 : f32[%1]
  %10 = rsqrt %9 : f32[%1]
  %11 = mul %2, %10 : f32[%1, 8]
  output pooled = %5
  output normed = %11
}
"""


def ref_norm(x, o, n, eps):
    out = torch.zeros_like(x, dtype=torch.float64)
    for b in range(o.numel() - 1):
        s, e = int(o[b]), int(o[b + 1])
        k = min(e - s, n)
        r = x[s : s + k].double()
        out[s : s + k] = r * torch.rsqrt((r * r).mean(1, keepdim=True) + eps)
    return out


@pytest.mark.parametrize("lengths", [[], [0, 0], [3, 0, 6, 1]])
def test_graph_op_gradients_from_the_ir_autodiff(lengths, device):
    """jagged.op is differentiable: its backward graph (IR autodiff, compiled
    by the general path) against torch autograd of a float64 reference, with
    a loss on both outputs, on one, and on none of them."""
    op = jagged.op(TWO_OUTPUTS)
    o = offsets_of(lengths, torch.int32)
    t = int(o[-1])
    for weights in ((1.0, 1.0), (1.0, 0.0), (0.0, 1.0)):
        x, w = on(device, rand(t, 8), rand(t))
        x, w = x.requires_grad_(), w.requires_grad_()
        xr, wr = x.detach().cpu().double().requires_grad_(), w.detach().cpu().double().requires_grad_()
        pooled, normed = op(o.to(device), x, w, max_len=4, eps=0.25)
        g1, g2 = torch.randn(pooled.shape), torch.randn(normed.shape)
        loss = sum(
            c * (out * g.to(device)).sum() for c, out, g in zip(weights, (pooled, normed), (g1, g2)) if c
        )
        want = sum(
            c * (out * g.double()).sum()
            for c, out, g in zip(weights, (ref_pool(xr, wr, o, 4), ref_norm(xr, o, 4, 0.25)), (g1, g2))
            if c
        )
        loss.backward()
        if t == 0:  # the reference builds no graph over empty inputs
            assert x.grad.shape == (0, 8) and w.grad.shape == (0,)
            continue
        want.backward()
        assert_close(x.grad, xr.grad, 1e-4)
        if wr.grad is None:  # w reaches only the output without a loss
            assert w.grad is None or not w.grad.any()
        else:
            assert_close(w.grad, wr.grad, 1e-4)
