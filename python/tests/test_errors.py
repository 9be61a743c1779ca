"""Bad inputs are Python exceptions naming the argument, never a crash."""

import pytest
import torch

import jagged
from jagged import JaggedError, JaggedInputError
from jagged._tensors import check_tensor
from conftest import offsets_of, rand

ops = torch.ops.jagged
O = offsets_of([3, 0, 2])


def test_exception_classes():
    assert issubclass(JaggedInputError, ValueError)
    assert issubclass(JaggedError, RuntimeError)


def test_cuda_tensors_pass_the_tensor_checks():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        cuda = torch.empty(5, 3, device="cuda")
    assert check_tensor("jagged_softmax", "values", cuda) is cuda


def test_set_arch_refuses_an_unknown_arch():
    with pytest.raises(JaggedInputError, match=r'jagged\.set_arch="sm_75" names no arch'):
        jagged.set_arch("sm_75")
    jagged.set_arch(None)


def test_not_a_tensor():
    with pytest.raises(TypeError, match="`x`"):
        check_tensor("jagged_softmax", "x", [1.0, 2.0])


def test_wrong_dtype_names_the_input():
    with pytest.raises(ValueError, match="values"):
        ops.jagged_softmax(torch.ones(5, 3, dtype=torch.int32), O, 4)
    with pytest.raises(ValueError, match="`values`.*complex"):
        ops.jagged_softmax(torch.ones(5, 3, dtype=torch.complex64), O, 4)
    with pytest.raises(ValueError, match="offsets"):
        ops.jagged_softmax(rand(5, 3), O.float(), 4)
    with pytest.raises(ValueError, match="lengths"):
        ops.complete_cumsum(torch.ones(3))
    with pytest.raises(ValueError, match="mask"):
        ops.masked_select_jagged(rand(5, 3), O, torch.ones(5, dtype=torch.int32))
    with pytest.raises(ValueError, match="'k'|`k`"):
        ops.jagged_flash_attention(rand(5, 1, 4), rand(5, 1, 4).double(), rand(5, 1, 4), O, 4)


def test_wrong_shape_names_the_input():
    with pytest.raises(ValueError, match="dense"):
        ops.jagged_dense_elementwise_mul(rand(5, 3), O, rand(3, 4, 2), 4)
    with pytest.raises(ValueError, match="`q`"):
        ops.jagged_flash_attention(rand(5, 4), rand(5, 4), rand(5, 4), O, 4)
    with pytest.raises(ValueError, match="'k'|`k`"):
        ops.jagged_flash_attention(rand(5, 1, 4), rand(5, 1, 8), rand(5, 1, 4), O, 4)
    with pytest.raises(ValueError, match="dense"):
        ops.dense_to_jagged(rand(3), O)
    with pytest.raises(ValueError, match="mask"):
        ops.masked_select_jagged(rand(5, 3), O, torch.ones(4, dtype=torch.bool))


def test_non_contiguous_names_the_input():
    with pytest.raises(ValueError, match="`values`.*contiguous"):
        ops.jagged_softmax(rand(3, 5).t(), O, 4)


def test_bad_offsets_name_the_input():
    with pytest.raises(ValueError, match="offsets"):
        ops.jagged_softmax(rand(5, 3), torch.tensor([0, 4, 2, 5]), 4)
    with pytest.raises(ValueError, match="offsets"):
        ops.jagged_softmax(rand(5, 3), torch.tensor([0, 2, 6]), 4)
    with pytest.raises(ValueError, match="offsets"):
        ops.jagged_softmax(rand(5, 3), torch.tensor([1, 2, 5]), 4)
    with pytest.raises(ValueError, match="lengths"):
        ops.complete_cumsum(torch.tensor([2, -1, 3]))


def test_bad_attributes_name_the_attribute():
    with pytest.raises(ValueError, match="max_len"):
        ops.jagged_softmax(rand(5, 3), O, -1)
    with pytest.raises(ValueError, match="reduce"):
        ops.jagged_reduce(rand(5, 3), O, 4, "median")
    with pytest.raises(ValueError, match="activation"):
        ops.jagged_flash_attention(rand(5, 1, 4), rand(5, 1, 4), rand(5, 1, 4), O, 4, None, False, "relu")
    with pytest.raises(ValueError, match="dtype"):
        ops.fbgemm_jagged_flash_attention_basic(rand(5, 4), rand(5, 4), rand(5, 4), O, 4, False, "f8")
    with pytest.raises(ValueError, match="max_len"):
        ops.jagged_softmax(rand(5, 3), O, 2**40)


def test_wrapper_needs_offsets():
    with pytest.raises(TypeError, match="offsets"):
        jagged.jagged_softmax(rand(5, 3))


def test_native_errors_are_typed():
    with pytest.raises(JaggedInputError, match="unknown op"):
        jagged._native.run_op("no_such_op", [], {})
    with pytest.raises(JaggedInputError, match="unknown dtype"):
        jagged._native.run_op("jagged_softmax", [("values", "f128", [1], b"")], {})
    with pytest.raises(JaggedInputError, match="values"):
        # 7 bytes are no whole number of f32 elements.
        jagged._native.run_op(
            "jagged_softmax",
            [("values", "f32", [2], b"\0" * 7), ("offsets", "i64", [2], bytes(16))],
            {"max_len": 4},
        )
    with pytest.raises(JaggedInputError, match="shape"):
        jagged._native.run_op(
            "jagged_softmax",
            [("values", "f32", [3], b"\0" * 8), ("offsets", "i64", [2], bytes(16))],
            {"max_len": 4},
        )
    with pytest.raises(JaggedInputError, match="no attribute `bogus`"):
        jagged._native.run_op(
            "jagged_softmax",
            [("values", "f32", [0], b""), ("offsets", "i64", [1], bytes(8))],
            {"max_len": 4, "bogus": 1},
        )
