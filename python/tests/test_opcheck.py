"""torch.library.opcheck on every op: schema, fake implementation, autograd registration, AOT dispatch."""

import pytest
import torch

import jagged  # noqa: F401
from conftest import offsets_of, rand

ops = torch.ops.jagged
O = offsets_of([3, 0, 6, 1])
T, B, N = 10, 4, 4


def leaf(*shape, dtype=torch.float32):
    return rand(*shape, dtype=dtype).requires_grad_()


CASES = {
    "complete_cumsum": (ops.complete_cumsum, (torch.tensor([3, 0, 6, 1]),)),
    "jagged_to_padded_dense": (ops.jagged_to_padded_dense, (leaf(T, 2), O, N, 0.5)),
    "dense_to_jagged": (ops.dense_to_jagged, (leaf(B, N, 2), O, T)),
    "jagged_dense_elementwise_mul": (ops.jagged_dense_elementwise_mul, (leaf(T, 2), O, leaf(B, N, 2), N)),
    "jagged_softmax": (ops.jagged_softmax, (leaf(T, 3), O, N)),
    "jagged_reduce": (ops.jagged_reduce, (leaf(T, 2), O, N, "mean")),
    "masked_select_jagged": (
        ops.masked_select_jagged,
        (leaf(T, 2), O, torch.tensor([1, 0, 1, 1, 1, 0, 0, 1, 1, 0], dtype=torch.bool)),
    ),
    "jagged_flash_attention": (ops.jagged_flash_attention, (leaf(T, 2, 4), leaf(T, 2, 4), leaf(T, 2, 3), O, N)),
    "jagged_flash_attention_silu": (
        ops.jagged_flash_attention,
        (leaf(T, 2, 4), leaf(T, 2, 4), leaf(T, 2, 3), O, N, 0.5, True, "silu"),
    ),
    "fbgemm_jagged_flash_attention_basic": (
        ops.fbgemm_jagged_flash_attention_basic,
        (leaf(T, 3), leaf(T, 3), leaf(T, 3), O, N, True),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_opcheck(name):
    op, args = CASES[name]
    result = torch.library.opcheck(op, args)
    assert all(v == "SUCCESS" for v in result.values()), result
