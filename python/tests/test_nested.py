"""The jagged.* wrappers on nested tensors of the jagged layout."""

import pytest
import torch

import jagged
from conftest import assert_close, offsets_of, rand, ref_attention, ref_reduce, ref_softmax, ref_to_padded


def nested(lengths, *inner, dtype=torch.float32, requires_grad=False):
    parts = [rand(n, *inner, dtype=dtype) for n in lengths]
    return torch.nested.nested_tensor(parts, layout=torch.jagged, requires_grad=requires_grad)


LENGTHS = [3, 1, 6, 2]


def test_softmax_returns_a_nested_tensor(device):
    nt = nested(LENGTHS, 3).to(device)
    values, offsets = nt.values().cpu(), nt.offsets().cpu()
    out = jagged.jagged_softmax(nt, max_len=4)
    assert out.is_nested and out.layout == torch.jagged and out.device == device
    assert torch.equal(out.offsets(), nt.offsets())
    assert_close(out.values(), ref_softmax(values, offsets, 4), 1e-5)
    # max_len defaults to the longest sequence.
    full = jagged.jagged_softmax(nt)
    assert_close(full.values(), ref_softmax(values, offsets, 6), 1e-5)


def test_reduce_and_padding_take_nested_tensors(device):
    nt = nested(LENGTHS, 2).to(device)
    values, o = nt.values().cpu(), nt.offsets().cpu()
    assert_close(jagged.jagged_reduce(nt, reduce="mean"), ref_reduce(values, o, 6, "mean"), 1e-5)
    dense = jagged.jagged_to_padded_dense(nt, max_len=5, padding_value=1.0)
    assert_close(dense, ref_to_padded(values, o, 5, 1.0), 1e-6)
    back = jagged.dense_to_jagged(dense, nt)
    assert back.is_nested
    assert torch.equal(back.offsets().cpu(), o)


def test_elementwise_mul_and_masked_select_nested():
    nt = nested(LENGTHS, 2)
    d = rand(len(LENGTHS), 6, 2)
    out = jagged.jagged_dense_elementwise_mul(nt, dense=d)
    assert out.is_nested
    mask = torch.nested.nested_tensor([torch.rand(n) < 0.5 for n in LENGTHS], layout=torch.jagged)
    kept = jagged.masked_select_jagged(nt, mask=mask)
    assert kept.is_nested
    assert torch.equal(kept.values(), nt.values()[mask.values()])


def test_attention_on_nested_tensors():
    q, k, v = (nested(LENGTHS, 2, 4) for _ in range(3))
    # Share one offsets tensor, as a model's q, k and v would.
    k = torch.nested.nested_tensor_from_jagged(k.values(), q.offsets())
    v = torch.nested.nested_tensor_from_jagged(v.values(), q.offsets())
    out, lse = jagged.jagged_flash_attention(q, k, v, max_len=4, causal=True)
    assert out.is_nested and lse.is_nested
    want, want_lse = ref_attention(q.values(), k.values(), v.values(), q.offsets(), 4, causal=True)
    assert_close(out.values(), want, 1e-5)
    assert_close(lse.values(), want_lse, 1e-5)
    out, lse = jagged.jagged_flash_attention(q, k, v, activation="silu")
    assert out.is_nested and lse is None
    q2, k2, v2 = (nested(LENGTHS, 4) for _ in range(3))
    assert jagged.fbgemm_jagged_flash_attention_basic(q2, k2, v2, max_len=4).is_nested


def test_gradients_flow_through_nested_tensors():
    nt = nested(LENGTHS, 3, requires_grad=True)
    out = jagged.jagged_softmax(nt, max_len=4)
    (out.values() * torch.arange(out.values().numel()).view(out.values().shape)).sum().backward()
    assert nt.grad is not None and nt.grad.is_nested


def test_nested_errors_name_the_argument():
    nt = nested(LENGTHS, 3)
    with pytest.raises(TypeError, match="offsets"):
        jagged.jagged_softmax(nt, offsets_of(LENGTHS), max_len=4)
    with pytest.warns(UserWarning, match="prototype"):
        strided = torch.nested.nested_tensor([rand(2, 3), rand(1, 3)])
    with pytest.raises(ValueError, match="layout"):
        jagged.jagged_softmax(strided, max_len=4)
    with pytest.raises(TypeError, match="`k`"):
        jagged.jagged_flash_attention(nested(LENGTHS, 1, 4), rand(12, 1, 4), rand(12, 1, 4))
    with pytest.raises(ValueError, match="nested"):
        torch.ops.jagged.jagged_softmax(nt, offsets_of(LENGTHS), 4)
