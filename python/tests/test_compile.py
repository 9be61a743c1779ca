"""A module of jagged ops under torch.compile(fullgraph=True), with symbolic T and B."""

import torch
import torch._dynamo

import jagged  # noqa: F401  (registers torch.ops.jagged)
from conftest import offsets_of, rand

ops = torch.ops.jagged
MAX_LEN = 4


class Block(torch.nn.Module):
    """Every builtin op, chained: data-dependent sizes (compaction) included."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4) * 0.5)

    def forward(self, x, lengths, dense, mask):
        offsets = ops.complete_cumsum(lengths)
        h = x @ self.w
        y = ops.jagged_softmax(h, offsets, MAX_LEN)
        z = ops.jagged_dense_elementwise_mul(y, offsets, dense, MAX_LEN)
        padded = ops.jagged_to_padded_dense(z, offsets, MAX_LEN, 0.0)
        back = ops.dense_to_jagged(padded * 2, offsets, x.shape[0])
        kept, kept_offsets = ops.masked_select_jagged(back, offsets, mask)
        pooled = ops.jagged_reduce(kept, kept_offsets, MAX_LEN, "mean")
        q = h.view(-1, 1, 4)
        att, lse = ops.jagged_flash_attention(q, q, q, offsets, MAX_LEN, None, True, "softmax")
        fb = ops.fbgemm_jagged_flash_attention_basic(h, h, h, offsets, MAX_LEN, False)
        top = ops.jagged_reduce(att.view(-1, 4) + fb, offsets, MAX_LEN, "max")
        return pooled + top, lse


def inputs(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    T, B = sum(lengths), len(lengths)
    x = torch.randn(T, 4, generator=g)
    dense = torch.randn(B, MAX_LEN, 4, generator=g)
    mask = torch.rand(T, generator=g) < 0.6
    return x, torch.tensor(lengths, dtype=torch.int64), dense, mask


def test_compile_fullgraph_dynamic_forward_and_backward():
    """Every op in one module: Dynamo (fullgraph), the fake implementations
    with symbolic T and B, and AOTAutograd's forward and backward graphs.
    The aot_eager backend runs those graphs as they are; Inductor's own
    code generation (minutes on 2 busy cores for this module) is tested on
    a smaller function below."""
    torch._dynamo.reset()
    model = Block()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for k, lengths in enumerate([[3, 0, 6, 1], [2, 7, 0, 0, 5, 1], [1, 1]]):
        args = inputs(lengths, k)
        want, want_lse = model(*args)
        got, got_lse = compiled(*args)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got_lse, want_lse, rtol=1e-5, atol=1e-5)
        # Backward through the compiled graph (AOTAutograd traces the
        # backward formulas with fake tensors too).
        model.zero_grad()
        model(*args)[0].sum().backward()
        want_grad = model.w.grad.clone()
        model.zero_grad()
        compiled(*args)[0].sum().backward()
        torch.testing.assert_close(model.w.grad, want_grad, rtol=1e-4, atol=1e-5)


def test_inductor_fullgraph_dynamic():
    """The default backend (Inductor) around the ops, forward and backward."""
    torch._dynamo.reset()
    w = torch.randn(3, 3, requires_grad=True)

    def f(values, offsets):
        y = ops.jagged_softmax(torch.tanh(values @ w), offsets, MAX_LEN)
        return ops.jagged_reduce(y * values + 1, offsets, MAX_LEN, "mean")

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for lengths in ([3, 0, 6, 1], [2, 5]):
        o = offsets_of(lengths)
        v = rand(int(o[-1]), 3)
        torch.testing.assert_close(compiled(v, o), f(v, o))
        w.grad = None
        f(v, o).sum().backward()
        want = w.grad.clone()
        w.grad = None
        compiled(v, o).sum().backward()
        torch.testing.assert_close(w.grad, want, rtol=1e-4, atol=1e-5)


def test_compile_does_not_recompile_for_new_sizes():
    torch._dynamo.reset()

    def f(values, offsets):
        y = ops.jagged_softmax(values, offsets, MAX_LEN)
        return ops.jagged_reduce(y * values, offsets, MAX_LEN, "sum")

    frames = []

    def backend(gm, example_inputs):
        frames.append(gm)
        return gm.forward

    compiled = torch.compile(f, fullgraph=True, dynamic=True, backend=backend)
    for lengths in ([3, 0, 6, 1], [5, 2], [1, 2, 3, 4, 5, 6, 7]):
        o = offsets_of(lengths)
        v = rand(int(o[-1]), 3)
        torch.testing.assert_close(compiled(v, o), f(v, o))
    assert len(frames) == 1, f"{len(frames)} graphs compiled"


def test_fake_shapes_are_symbolic():
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    with FakeTensorMode(shape_env=ShapeEnv()) as mode:
        v = mode.from_tensor(rand(10, 3), static_shapes=False)
        o = mode.from_tensor(offsets_of([3, 0, 6, 1]), static_shapes=False)
        assert ops.jagged_to_padded_dense(v, o, MAX_LEN, 0.0).shape[1] == MAX_LEN
        assert ops.jagged_reduce(v, o, MAX_LEN, "sum").shape[0] == o.shape[0] - 1


KEEP = """
graph keep {
  %0 = input offsets : i64[B+1]
  %1 = seqs %0 : seqs
  %2 = input x : f32[%1, 4]
  %3 = input m : bool[%1]
  %4 = seqs_where %3 : seqs
  %5 = compact %2, %4 : f32[%4, 4]
  %6 = offsets %4 : i64[B+1]
  output values = %5
  output offsets = %6
}
"""

POOL = """
graph pool {
  attr max_len: index
  attr eps: float = 0.5
  %0 = input offsets : i64[B+1]
  %1 = seqs %0, max_len : seqs
  %2 = input x : f32[%1, 4]
  %3 = exp %2 : f32[%1, 4]
  %4 = reduce sum %3, axis 0 : f32[B, 4]
  %5 = attr eps : f32[]
  %6 = add %4, %5 : f32[B, 4]
  %7 = to_padded %3 : f32[B, N, 4]
  output pooled = %6
  output padded = %7
}
"""


def test_graph_ops_under_compile():
    torch._dynamo.reset()
    keep, pool = jagged.op(KEEP), jagged.op(POOL)

    def f(x, offsets, m):
        kept, kept_offsets = keep(offsets, x, m)
        pooled, padded = pool(offsets, x, max_len=MAX_LEN, eps=0.25)
        return kept * 2, kept_offsets, pooled, padded

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    with torch.no_grad():
        for lengths in ([3, 0, 6, 1], [2, 5]):
            o = offsets_of(lengths)
            x = rand(int(o[-1]), 4)
            m = torch.rand(int(o[-1])) < 0.5
            for got, want in zip(compiled(x, o, m), f(x, o, m)):
                torch.testing.assert_close(got, want)
            assert torch.equal(f(x, o, m)[0], x[m] * 2)
