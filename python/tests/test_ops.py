"""Each builtin op (torch.ops.jagged.*) against a torch reference, on the emulator (CPU tensors) and,
where a GPU is present, on CUDA tensors (the `device` fixture)."""

import pytest
import torch

import jagged
from conftest import (
    LAYOUTS,
    TOL,
    assert_close,
    offsets_of,
    on,
    rand,
    ref_attention,
    ref_fbgemm,
    ref_jdem,
    ref_reduce,
    ref_softmax,
    ref_to_jagged,
    ref_to_padded,
)

MAX_LEN = 4
ops = torch.ops.jagged


def test_every_builtin_is_registered():
    names = [d["name"] for d in jagged.op_reference()]
    assert names == [
        "complete_cumsum",
        "jagged_to_padded_dense",
        "dense_to_jagged",
        "jagged_dense_elementwise_mul",
        "jagged_softmax",
        "jagged_reduce",
        "masked_select_jagged",
        "jagged_flash_attention",
        "fbgemm_jagged_flash_attention_basic",
        "jagged_dense_bmm",
        "jagged_jagged_bmm",
        "jagged_pairwise_dot",
        "jagged_dense_dot",
        "jagged_dense_bmm_backward",
        "jagged_jagged_bmm_backward",
        "product_quantize",
        "residual_quantize",
        "sid_embed",
        "rq_train",
        "pq_train",
        "session_pool",
        "user_pool",
        "event_boost",
        "event_boost_sessions",
        "session_segment",
        "jagged_topk",
        "event_prune",
    ]
    for d in jagged.op_reference():
        op = getattr(ops, d["name"])
        schema = op.default._schema
        args = [a.name for a in schema.arguments]
        # The op reference's inputs and attributes, by name, in order.
        assert args[: len(d["inputs"])] == d["inputs"], d["name"]
        assert args[len(d["inputs"]) :][: len(d["attrs"])] == [a["name"] for a in d["attrs"]], d["name"]
        assert len(schema.returns) == len(d["outputs"]), d["name"]


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_complete_cumsum(dtype, device):
    for lengths in LAYOUTS:
        got = ops.complete_cumsum(torch.tensor(lengths, dtype=dtype, device=device))
        assert got.dtype == dtype and got.device == device
        assert torch.equal(got.cpu(), offsets_of(lengths, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("inner", [(), (3,), (2, 2)])
def test_jagged_to_padded_dense(dtype, inner, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths, torch.int32)
        v = rand(int(o[-1]), *inner, dtype=dtype)
        got = ops.jagged_to_padded_dense(*on(device, v, o), MAX_LEN, -1.5)
        assert got.dtype == dtype
        assert_close(got, ref_to_padded(v, o, MAX_LEN, -1.5), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dense_to_jagged(dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths)
        d = rand(len(lengths), MAX_LEN, 3, dtype=dtype)
        got = ops.dense_to_jagged(*on(device, d, o))
        assert_close(got, ref_to_jagged(d, o), TOL[dtype])
        with_total = ops.dense_to_jagged(*on(device, d, o), int(o[-1]))
        assert with_total.shape == got.shape
        assert_close(with_total, ref_to_jagged(d, o), TOL[dtype])


def test_dense_to_jagged_total_l_mismatch():
    o = offsets_of([2, 3])
    with pytest.raises(ValueError, match="total_L"):
        ops.dense_to_jagged(rand(2, 4, 3), o, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jagged_dense_elementwise_mul(dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths)
        v = rand(int(o[-1]), 3, dtype=dtype)
        d = rand(len(lengths), MAX_LEN, 3, dtype=dtype)
        got = ops.jagged_dense_elementwise_mul(*on(device, v, o, d), MAX_LEN)
        assert_close(got, ref_jdem(v, o, d, MAX_LEN), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_jagged_softmax(dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths, torch.int32)
        v = rand(int(o[-1]), 5, dtype=dtype)
        got = ops.jagged_softmax(*on(device, v, o), MAX_LEN)
        assert got.dtype == dtype
        assert_close(got, ref_softmax(v, o, MAX_LEN), TOL[dtype])


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_jagged_reduce(reduce, dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths)
        v = rand(int(o[-1]), 2, 3, dtype=dtype)
        got = ops.jagged_reduce(*on(device, v, o), MAX_LEN, reduce)
        assert got.shape == (len(lengths), 2, 3)
        assert_close(got, ref_reduce(v, o, MAX_LEN, reduce), TOL[dtype])


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8])
def test_masked_select_jagged(mask_dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths)
        T = int(o[-1])
        v = rand(T, 3)
        m = torch.rand(T) < 0.5
        got, got_o = ops.masked_select_jagged(*on(device, v, o, m.to(mask_dtype)))
        assert torch.equal(got.cpu(), v[m])
        kept = [int(m[s:e].sum()) for s, e in zip(o[:-1].tolist(), o[1:].tolist())]
        assert torch.equal(got_o.cpu(), offsets_of(kept))


@pytest.mark.parametrize(
    "dtype,heads,dim,value_dim",
    [
        (torch.float32, 2, 4, 3),
        (torch.float64, 1, 3, 3),
        (torch.bfloat16, 2, 32, 32),
        (torch.float16, 1, 32, 32),
        # The wgmma forward on sm_90a.
        (torch.bfloat16, 1, 64, 64),
    ],
)
@pytest.mark.parametrize("activation", ["softmax", "silu"])
@pytest.mark.parametrize("causal", [False, True])
def test_jagged_flash_attention(dtype, heads, dim, value_dim, activation, causal, device, arch):
    for lengths in [[], [0, 0], [3, 0, 6, 1]]:
        o = offsets_of(lengths, torch.int32)
        T = int(o[-1])
        q, k = rand(T, heads, dim, dtype=dtype), rand(T, heads, dim, dtype=dtype)
        v = rand(T, heads, value_dim, dtype=dtype)
        out, lse = ops.jagged_flash_attention(*on(device, q, k, v, o), MAX_LEN, 0.4, causal, activation)
        want_out, want_lse = ref_attention(q, k, v, o, MAX_LEN, 0.4, causal, activation)
        assert out.dtype == dtype
        assert_close(out, want_out, TOL[dtype])
        if activation == "softmax":
            assert lse.dtype == torch.float32 and lse.shape == (T, heads)
            assert_close(lse, want_lse, 1e-5)
        else:
            assert lse.numel() == 0 and lse.device == device


def test_jagged_flash_attention_default_scale_and_dtype():
    o = offsets_of([3, 5])
    q, k, v = rand(8, 2, 4), rand(8, 2, 4), rand(8, 2, 4)
    out, _ = ops.jagged_flash_attention(q, k, v, o, MAX_LEN)
    assert_close(out, ref_attention(q, k, v, o, MAX_LEN)[0], 1e-5)
    # dtype: the inputs are rounded to bf16 before computing.
    out_bf16, _ = ops.jagged_flash_attention(q, k, v, o, MAX_LEN, dtype="bf16")
    want = ref_attention(*(x.bfloat16() for x in (q, k, v)), o, MAX_LEN)[0]
    assert out_bf16.dtype == torch.float32
    assert_close(out_bf16, want, 1e-5)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fbgemm_jagged_flash_attention_basic(use_mask, dtype, device):
    for lengths in LAYOUTS:
        o = offsets_of(lengths)
        T = int(o[-1])
        q, k, v = (rand(T, 4, dtype=dtype) for _ in range(3))
        got = ops.fbgemm_jagged_flash_attention_basic(*on(device, q, k, v, o), MAX_LEN, use_mask)
        assert_close(got, ref_fbgemm(q, k, v, o, MAX_LEN, use_mask), TOL[dtype])


def test_kernels_are_cached():
    o = offsets_of([2, 5])
    v = rand(7, 6)
    ops.jagged_softmax(v, o, MAX_LEN)
    before = jagged.stats()
    ops.jagged_softmax(rand(7, 6), o, MAX_LEN)
    after = jagged.stats()
    assert after["runs"] == before["runs"] + 1
    assert after["codegen_runs"] == before["codegen_runs"]
