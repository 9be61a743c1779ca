"""Backward formulas: torch.autograd.gradcheck in f64, and gradients against float64 torch references.

The general path computes f64 values in f32 today (see conftest.TOL), so
gradcheck runs with a larger step and tolerances than its defaults: a
finite difference of 1e-3 over values accurate to ~1e-7 is good to ~1e-4.
"""

import pytest
import torch

import jagged
from conftest import offsets_of, rand, ref_attention, ref_fbgemm, ref_jdem, ref_reduce, ref_softmax, ref_to_padded

ops = torch.ops.jagged
MAX_LEN = 4
LENGTHS = [3, 0, 6, 1]  # an empty sequence, one longer than MAX_LEN
GRADCHECK = dict(eps=1e-3, atol=1e-3, rtol=1e-3)


def leaf(*shape, dtype=torch.float64):
    return rand(*shape, dtype=dtype).requires_grad_()


def gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, **GRADCHECK)


def against_reference(fn, ref, *shapes, dtype=torch.float32, tol=1e-4):
    """Gradients of `fn` (float32 inputs, through the emulator) against those of `ref` in float64."""
    xs = [leaf(*s, dtype=dtype) for s in shapes]
    ys = [x.detach().double().requires_grad_() for x in xs]
    out = fn(*xs)
    want = ref(*ys)
    g = torch.randn(want.shape, dtype=torch.float64)
    out.backward(g.to(out.dtype))
    want.backward(g)
    for x, y in zip(xs, ys):
        err = (x.grad.double() - y.grad).norm() / max(y.grad.norm(), 1e-30)
        assert err <= tol, f"gradient relative L2 error {err:.3e}"


O = offsets_of(LENGTHS)
T = int(O[-1])
B = len(LENGTHS)


def test_jagged_to_padded_dense():
    gradcheck(lambda v: ops.jagged_to_padded_dense(v, O, MAX_LEN, 0.5), leaf(T, 2))
    against_reference(
        lambda v: ops.jagged_to_padded_dense(v, O, MAX_LEN, 0.5), lambda v: ref_to_padded_diff(v, MAX_LEN, 0.5), (T, 2)
    )


def ref_to_padded_diff(v, n, pad):
    rows = []
    for s, e in zip(O[:-1].tolist(), O[1:].tolist()):
        k = min(e - s, n)
        rows.append(torch.cat([v[s : s + k], torch.full((n - k, *v.shape[1:]), pad, dtype=v.dtype)]))
    return torch.stack(rows)


def ref_to_jagged_diff(d):
    out = []
    for b, (s, e) in enumerate(zip(O[:-1].tolist(), O[1:].tolist())):
        k = min(e - s, d.shape[1])
        out += [d[b, :k], torch.zeros((e - s - k, *d.shape[2:]), dtype=d.dtype)]
    return torch.cat(out)


def test_dense_to_jagged():
    gradcheck(lambda d: ops.dense_to_jagged(d, O), leaf(B, MAX_LEN, 2))
    against_reference(lambda d: ops.dense_to_jagged(d, O), ref_to_jagged_diff, (B, MAX_LEN, 2))


def test_jagged_dense_elementwise_mul():
    gradcheck(lambda v, d: ops.jagged_dense_elementwise_mul(v, O, d, MAX_LEN), leaf(T, 2), leaf(B, MAX_LEN, 2))
    against_reference(
        lambda v, d: ops.jagged_dense_elementwise_mul(v, O, d, MAX_LEN),
        lambda v, d: ref_to_jagged_diff(ref_to_padded_diff(v, MAX_LEN, 0.0) * d),
        (T, 2),
        (B, MAX_LEN, 2),
    )


def test_jagged_softmax():
    gradcheck(lambda v: ops.jagged_softmax(v, O, MAX_LEN), leaf(T, 3))
    against_reference(
        lambda v: ops.jagged_softmax(v, O, MAX_LEN),
        lambda v: ref_to_jagged_diff(masked_softmax(ref_to_padded_diff(v, MAX_LEN, -torch.inf))),
        (T, 3),
    )


def masked_softmax(p):
    return torch.nan_to_num(torch.softmax(p, 1), nan=0.0)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_jagged_reduce(reduce):
    gradcheck(lambda v: ops.jagged_reduce(v, O, MAX_LEN, reduce), leaf(T, 2))

    def ref(v):
        out = []
        for s, e in zip(O[:-1].tolist(), O[1:].tolist()):
            x = v[s : s + min(e - s, MAX_LEN)]
            if x.shape[0] == 0:
                out.append(torch.zeros(v.shape[1:], dtype=v.dtype))
            else:
                out.append({"sum": x.sum(0), "mean": x.mean(0), "max": x.amax(0)}[reduce])
        return torch.stack(out)

    against_reference(lambda v: ops.jagged_reduce(v, O, MAX_LEN, reduce), ref, (T, 2))


def test_masked_select_jagged():
    mask = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    gradcheck(lambda v: ops.masked_select_jagged(v, O, mask)[0], leaf(T, 2))
    against_reference(lambda v: ops.masked_select_jagged(v, O, mask)[0], lambda v: v[mask], (T, 2))


def ref_attention_diff(q, k, v, scale, causal, activation):
    outs = []
    for s, e in zip(O[:-1].tolist(), O[1:].tolist()):
        n = min(e - s, MAX_LEN)
        sc = scale * torch.einsum("ihd,jhd->hij", q[s : s + n], k[s : s + n])
        allowed = torch.ones(n, n, dtype=torch.bool)
        if causal:
            allowed = allowed.tril()
        if activation == "softmax":
            p = torch.softmax(sc.masked_fill(~allowed, -torch.inf), -1)
        else:
            p = torch.where(allowed, sc * torch.sigmoid(sc) / MAX_LEN, 0.0)
        outs.append(torch.einsum("hij,jhe->ihe", p, v[s : s + n]))
        outs.append(torch.zeros((e - s - n, q.shape[1], v.shape[2]), dtype=q.dtype))
    return torch.cat(outs)


@pytest.mark.parametrize("activation", ["softmax", "silu"])
@pytest.mark.parametrize("causal", [False, True])
def test_jagged_flash_attention(activation, causal):
    def fn(q, k, v):
        return ops.jagged_flash_attention(q, k, v, O, MAX_LEN, 0.5, causal, activation)[0]

    gradcheck(fn, leaf(T, 1, 2), leaf(T, 1, 2), leaf(T, 1, 3))
    against_reference(
        fn, lambda q, k, v: ref_attention_diff(q, k, v, 0.5, causal, activation), (T, 2, 4), (T, 2, 4), (T, 2, 3)
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("activation", ["softmax", "silu"])
@pytest.mark.parametrize("causal", [False, True])
def test_jagged_flash_attention_backward_template(dtype, activation, causal):
    """f16 / bf16 with D = 32 take the backward template (tensor cores, emulated)."""
    before = jagged.stats()["backward_kernels"]

    def fn(q, k, v):
        return ops.jagged_flash_attention(q, k, v, O, MAX_LEN, 0.3, causal, activation)[0]

    tol = 2e-2 if dtype == torch.bfloat16 else 5e-3
    against_reference(
        fn,
        lambda q, k, v: ref_attention_diff(q, k, v, 0.3, causal, activation),
        (T, 2, 32),
        (T, 2, 32),
        (T, 2, 32),
        dtype=dtype,
        tol=tol,
    )
    # The template ran (its kernels are compiled once per spec, so the
    # count grows by at most one here).
    assert jagged.stats()["backward_kernels"] >= max(before, 1)
    assert jagged._native.attention_backward_supported(jagged._tensors.DTYPE_NAMES[dtype], 32, 32)


def ref_attention_lse(q, k, v, scale, causal, n=MAX_LEN, offsets=O):
    """`(out, lse)` of softmax attention, differentiable (float64)."""
    outs, lses = [], []
    for s, e in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        m = min(e - s, n)
        sc = scale * torch.einsum("ihd,jhd->hij", q[s : s + m], k[s : s + m])
        allowed = torch.ones(m, m, dtype=torch.bool)
        if causal:
            allowed = allowed.tril()
        sc = sc.masked_fill(~allowed, -torch.inf)
        outs += [torch.einsum("hij,jhe->ihe", torch.softmax(sc, -1), v[s : s + m])]
        lses += [torch.logsumexp(sc, -1).T]
        outs += [torch.zeros((e - s - m, q.shape[1], v.shape[2]), dtype=q.dtype)]
        lses += [torch.zeros((e - s - m, q.shape[1]), dtype=q.dtype)]
    return torch.cat(outs), torch.cat(lses)


@pytest.mark.parametrize("causal", [False, True])
def test_lse_is_differentiable(causal):
    def fn(q, k, v):
        out, lse = ops.jagged_flash_attention(q, k, v, O, MAX_LEN, 0.5, causal)
        return out, lse

    gradcheck(fn, leaf(T, 1, 2), leaf(T, 1, 2), leaf(T, 1, 2))
    # lse alone (out unused: its gradient is None in the backward).
    gradcheck(lambda q, k, v: fn(q, k, v)[1], leaf(T, 2, 2), leaf(T, 2, 2), leaf(T, 2, 3))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("use_out", [False, True])
def test_lse_gradient_with_the_backward_template(causal, use_out):
    xs = [leaf(T, 2, 32, dtype=torch.bfloat16) for _ in range(3)]
    ys = [x.detach().double().requires_grad_() for x in xs]
    out, lse = ops.jagged_flash_attention(*xs, O, MAX_LEN, 0.3, causal)
    want_out, want_lse = ref_attention_lse(*ys, 0.3, causal)
    h = torch.randn(want_lse.shape, dtype=torch.float64)
    g = torch.randn(want_out.shape, dtype=torch.float64)
    loss = (lse.double() * h).sum() + ((out.double() * g).sum() if use_out else 0)
    want = (want_lse * h).sum() + ((want_out * g).sum() if use_out else 0)
    loss.backward()
    want.backward()
    for x, y in zip(xs, ys):
        if not use_out and y is ys[2]:
            assert x.grad is None or not x.grad.any()
            continue
        err = (x.grad.double() - y.grad).norm() / max(y.grad.norm(), 1e-30)
        assert err <= 2e-2, f"gradient relative L2 error {err:.3e}"


@pytest.mark.parametrize("use_mask", [False, True])
def test_fbgemm_jagged_flash_attention_basic(use_mask):
    def fn(q, k, v):
        return ops.fbgemm_jagged_flash_attention_basic(q, k, v, O, MAX_LEN, use_mask)

    def ref(q, k, v):
        outs = []
        for s, e in zip(O[:-1].tolist(), O[1:].tolist()):
            n = min(e - s, MAX_LEN)
            p = torch.softmax(q[s : s + n] @ k[s : s + n].T, -1) / MAX_LEN
            if use_mask:
                p = p * torch.ones(n, n, dtype=q.dtype).triu()
            outs += [p @ v[s : s + n], torch.zeros((e - s - n, q.shape[1]), dtype=q.dtype)]
        return torch.cat(outs)

    gradcheck(fn, leaf(T, 2), leaf(T, 2), leaf(T, 2))
    against_reference(fn, ref, (T, 3), (T, 3), (T, 3))


def test_unused_helpers_match():
    # The non-differentiable references of conftest agree with the ones here.
    v = rand(T, 2, dtype=torch.float64)
    assert torch.allclose(ref_to_padded(v, O, MAX_LEN), ref_to_padded_diff(v, MAX_LEN, 0.0))
    assert torch.allclose(ref_softmax(v, O, MAX_LEN), ref_to_jagged_diff(masked_softmax(ref_to_padded_diff(v, MAX_LEN, -torch.inf))))
    d = rand(B, MAX_LEN, 2, dtype=torch.float64)
    assert torch.allclose(ref_jdem(v, O, d, MAX_LEN), ref_to_jagged_diff(ref_to_padded_diff(v, MAX_LEN, 0.0) * d))
    assert ref_reduce(v, O, MAX_LEN, "sum").shape == (B, 2)
    q = rand(T, 1, 2, dtype=torch.float64)
    assert torch.allclose(ref_attention(q, q, q, O, MAX_LEN, 0.5)[0], ref_attention_diff(q, q, q, 0.5, False, "softmax"))
    q2 = rand(T, 2, dtype=torch.float64)
    assert ref_fbgemm(q2, q2, q2, O, MAX_LEN).shape == (T, 2)


@pytest.mark.parametrize("activation", ["softmax", "silu"])
def test_backward_template_long_sequences_and_empty_batches(activation):
    """Several query and key blocks (a sequence of 70 rows, max_len 64), and B = 0."""
    for lengths, n in (([70, 0, 3], 64), ([], 16), ([0, 0], 16)):
        o = offsets_of(lengths, torch.int32)
        t = int(o[-1])
        xs = [leaf(t, 1, 32, dtype=torch.bfloat16) for _ in range(3)]
        ys = [x.detach().double().requires_grad_() for x in xs]
        out, _ = ops.jagged_flash_attention(*xs, o, n, 0.2, True, activation)
        g = torch.randn(out.shape, dtype=torch.float64)
        out.backward(g.to(out.dtype))
        want = []
        for s, e in zip(o[:-1].tolist(), o[1:].tolist()):
            k = min(e - s, n)
            q_, k_, v_ = (y[s : s + k] for y in ys)
            sc = 0.2 * torch.einsum("ihd,jhd->hij", q_, k_)
            allowed = torch.ones(k, k, dtype=torch.bool).tril()
            if activation == "softmax":
                p = torch.softmax(sc.masked_fill(~allowed, -torch.inf), -1)
            else:
                p = torch.where(allowed, sc * torch.sigmoid(sc) / n, 0.0)
            want += [torch.einsum("hij,jhe->ihe", p, v_), torch.zeros((e - s - k, 1, 32), dtype=torch.float64)]
        if t:
            torch.cat(want).backward(g)
            for x, y in zip(xs, ys):
                err = (x.grad.double() - y.grad).norm() / max(y.grad.norm(), 1e-30)
                assert err <= 2e-2, f"{lengths}: gradient relative L2 error {err:.3e}"
        else:
            assert all(x.grad.shape == (0, 1, 32) for x in xs)


# Every backward formula on each device of the `device` fixture (the CUDA
# cases where a GPU is present): the gradients against those of the same op
# on CPU tensors. On CUDA the attention takes the padded-math backward.
DEVICE_CASES = {
    "to_padded": (lambda o, m, v: ops.jagged_to_padded_dense(v, o, MAX_LEN, 0.5), [(T, 2)]),
    "to_jagged": (lambda o, m, d: ops.dense_to_jagged(d, o), [(B, MAX_LEN, 2)]),
    "jdem": (lambda o, m, v, d: ops.jagged_dense_elementwise_mul(v, o, d, MAX_LEN), [(T, 2), (B, MAX_LEN, 2)]),
    "softmax": (lambda o, m, v: ops.jagged_softmax(v, o, MAX_LEN), [(T, 3)]),
    "reduce_max": (lambda o, m, v: ops.jagged_reduce(v, o, MAX_LEN, "max"), [(T, 2)]),
    "masked_select": (lambda o, m, v: ops.masked_select_jagged(v, o, m)[0], [(T, 2)]),
    "attention": (
        lambda o, m, q, k, v: ops.jagged_flash_attention(q, k, v, o, MAX_LEN, 0.5, True, "softmax")[0],
        [(T, 2, 4), (T, 2, 4), (T, 2, 3)],
    ),
    "fbgemm": (lambda o, m, q, k, v: ops.fbgemm_jagged_flash_attention_basic(q, k, v, o, MAX_LEN), [(T, 4)] * 3),
}


# The backward template (bf16, D = 32), with the lse term.
DEVICE_CASES["attention_template"] = (
    lambda o, m, q, k, v: sum(
        (x.float() * (1 + torch.arange(x.numel(), device=x.device).reshape(x.shape) % 3)).sum()
        for x in ops.jagged_flash_attention(q, k, v, o, MAX_LEN, 0.5, False, "softmax")
    ).reshape(1),
    [(T, 1, 32, torch.bfloat16)] * 3,
)


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_gradients_on_each_device(case, device):
    fn, shapes = DEVICE_CASES[case]
    xs = [rand(*s[:-1], dtype=s[-1]) if isinstance(s[-1], torch.dtype) else rand(*s) for s in shapes]
    mask = torch.tensor([1, 0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    g = None

    def grads(dev):
        nonlocal g
        leaves = [x.to(dev).requires_grad_() for x in xs]
        out = fn(O.to(dev), mask.to(dev), *leaves)
        assert out.device.type == torch.device(dev).type
        if g is None:
            g = torch.randn(out.shape)
        out.backward(g.to(dev))
        return [leaf.grad.cpu() for leaf in leaves]

    want = grads("cpu")
    for got, ref in zip(grads(device), want):
        err = (got.double() - ref.double()).norm() / max(ref.double().norm(), 1e-30)
        assert err <= (1e-2 if got.dtype == torch.bfloat16 else 1e-5), f"gradient relative L2 error {err:.3e}"
