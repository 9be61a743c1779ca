"""The device rules and the CUDA path's Python side, on the CPU: which device a call runs on, the
errors naming the argument, the offsets checks (on the device without a sync, or on request), the
host callbacks' allocation and reads, and which ops take CUDA tensors. The CUDA runs themselves are
the op tests of test_ops.py with `device="cuda"` (skipped without a GPU)."""

import pytest
import torch

import jagged
from jagged import JaggedError, JaggedInputError, _cuda, _native
from jagged._tensors import common_device, run_op
from conftest import offsets_of, rand


def fake_cuda(*shape, dtype=torch.float32, device="cuda"):
    """A tensor that says it is on CUDA (no GPU needed): enough for the device rules."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):
        return torch.empty(*shape, dtype=dtype, device=device)


def test_the_device_of_a_call():
    assert common_device("jagged_softmax", {"values": rand(5, 3), "offsets": offsets_of([5])}) == torch.device("cpu")
    assert common_device("complete_cumsum", {}) == torch.device("cpu")
    d = common_device("jagged_softmax", {"values": fake_cuda(5, 3), "offsets": fake_cuda(2, dtype=torch.int64)})
    assert d.type == "cuda"


def test_mixed_devices_name_the_argument():
    with pytest.raises(JaggedInputError, match="argument `offsets` is on cpu, but argument `values` is on cuda"):
        run_op("jagged_softmax", {"values": fake_cuda(5, 3), "offsets": offsets_of([5])}, {"max_len": 4})
    with pytest.raises(JaggedInputError, match="argument `offsets` is on cuda.*`values` is on cpu"):
        common_device("jagged_softmax", {"values": rand(5, 3), "offsets": fake_cuda(2, dtype=torch.int64)})
    with pytest.raises(JaggedInputError, match="argument `offsets` is on cuda:1, but argument `values` is on cuda:0"):
        common_device(
            "jagged_softmax",
            {"values": fake_cuda(5, 3, device="cuda:0"), "offsets": fake_cuda(2, dtype=torch.int64, device="cuda:1")},
        )
    with pytest.raises(JaggedInputError, match="`values` is on meta; expected a CPU or CUDA tensor"):
        common_device("jagged_softmax", {"values": torch.empty(5, 3, device="meta")})


def test_which_ops_take_cuda_tensors():
    graph_ops = {
        "complete_cumsum",
        "jagged_to_padded_dense",
        "dense_to_jagged",
        "jagged_dense_elementwise_mul",
        "jagged_softmax",
        "jagged_reduce",
        "masked_select_jagged",
        "jagged_flash_attention",
        "fbgemm_jagged_flash_attention_basic",
    }
    for d in jagged.op_reference():
        assert _native.runs_on_cuda(d["name"]) == (d["name"] in graph_ops), d["name"]
    with pytest.raises(JaggedInputError, match="unknown op"):
        _native.runs_on_cuda("nope")


def test_front_ops_on_cuda_are_not_implemented_naming_the_op():
    x = fake_cuda(4, 6)
    with pytest.raises(NotImplementedError, match="jagged.product_quantize: CUDA tensors"):
        run_op("product_quantize", {"x": x, "centroids": fake_cuda(2, 3, 3)}, {})
    # The copying paths refuse a CUDA tensor rather than read device memory.
    from jagged._tensors import to_native

    with pytest.raises(NotImplementedError, match="`q` is on cuda"):
        to_native("jagged_flash_attention_backward", "q", x)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_offsets_valid_on_the_device(dtype):
    o = offsets_of([3, 0, 2], dtype)
    assert bool(_cuda.offsets_valid(o, 5))
    assert not bool(_cuda.offsets_valid(o, 6))  # offsets[B] != T
    assert not bool(_cuda.offsets_valid(torch.tensor([1, 3, 5], dtype=dtype), 5))  # offsets[0] != 0
    assert not bool(_cuda.offsets_valid(torch.tensor([0, 3, 2, 5], dtype=dtype), 5))  # decreasing
    assert bool(_cuda.offsets_valid(torch.tensor([0], dtype=dtype), 0))  # B = 0
    assert _cuda.offsets_valid(o, 5).dim() == 0


def test_lengths_valid_on_the_device():
    assert bool(_cuda.lengths_valid(torch.tensor([3, 0, 2]), "i64"))
    assert not bool(_cuda.lengths_valid(torch.tensor([3, -1, 2]), "i64"))
    assert not bool(_cuda.lengths_valid(torch.tensor([2**30, 2**30], dtype=torch.int32), "i32"))
    assert bool(_cuda.lengths_valid(torch.tensor([2**30, 2**30], dtype=torch.int64), "i64"))


def test_check_offsets_on_request():
    jagged.check_offsets(offsets_of([3, 0, 2]), 5)
    jagged.check_offsets(offsets_of([3, 0, 2]))
    with pytest.raises(JaggedInputError, match="seq_offsets"):
        jagged.check_offsets(torch.tensor([0, 3, 2]), name="seq_offsets")
    with pytest.raises(JaggedInputError, match="offsets"):
        jagged.check_offsets(offsets_of([3, 0, 2]), 6)
    with pytest.raises(JaggedInputError, match="int32 or int64"):
        jagged.check_offsets(torch.tensor([0.0, 1.0]))


def test_check_mode(monkeypatch):
    monkeypatch.delenv(_cuda.CHECK_ENV, raising=False)
    assert _cuda.check_mode() == "async"
    for mode in _cuda.CHECK_MODES:
        monkeypatch.setenv(_cuda.CHECK_ENV, mode.upper())
        assert _cuda.check_mode() == mode
    monkeypatch.setenv(_cuda.CHECK_ENV, "always")
    with pytest.raises(JaggedInputError, match="JAGGED_CHECK_OFFSETS"):
        _cuda.check_mode()


def test_host_callbacks(monkeypatch):
    """The callbacks python/src/cuda.rs makes, here on CPU tensors."""
    monkeypatch.setenv(_cuda.CHECK_ENV, "sync")
    o = offsets_of([3, 0, 2])
    host = _cuda._Host("jagged_softmax", torch.device("cpu"), {"offsets": o, "lengths": torch.tensor([1, -1])})
    t = host.alloc("f16", 6)
    assert t.dtype == torch.float16 and t.shape == (6,) and not t.any()
    assert host.alloc("u8", 0).numel() == 0
    monkeypatch.setenv(_cuda.POISON_ENV, "1")
    assert torch.isnan(host.alloc("bf16", 3)).all() and torch.isnan(host.alloc("f64", 2, "output")).all()
    assert host.alloc("i32", 2).tolist() == [-1, -1]
    assert not host.alloc("u8", 4, "scratch").any()
    monkeypatch.delenv(_cuda.POISON_ENV)
    assert host.read_last("offsets") == 5
    assert host.read_index(o, 1) == 3
    host.check("offsets", "offsets", 5)
    with pytest.raises(JaggedInputError, match="offsets"):
        host.check("offsets", "offsets", 4)
    with pytest.raises(JaggedInputError, match="lengths"):
        host.check("lengths", "lengths", "i64")
    # async: torch._assert_async, which on the CPU raises at once (on CUDA: a device assert).
    monkeypatch.setenv(_cuda.CHECK_ENV, "async")
    host = _cuda._Host("jagged_softmax", torch.device("cpu"), {"offsets": o, "lengths": torch.tensor([1, -1])})
    host.check("offsets", "offsets", 5)
    with pytest.raises(RuntimeError, match="`offsets`: invalid offsets"):
        host.check("offsets", "offsets", 4)
    with pytest.raises(RuntimeError, match="`lengths`"):
        host.check("lengths", "lengths", "i64")
    monkeypatch.setenv(_cuda.CHECK_ENV, "off")
    host = _cuda._Host("jagged_softmax", torch.device("cpu"), {"offsets": o})
    host.check("offsets", "offsets", 4)
    host = _cuda._Host("jagged_softmax", torch.device("cpu"), {"offsets": torch.empty(0, dtype=torch.int64)})
    with pytest.raises(JaggedInputError, match="empty"):
        host.read_last("offsets")


def test_outputs_take_their_shapes():
    flat = torch.arange(12.0)
    a, b, c = _cuda._shaped([("a", flat, [2, 3]), ("b", flat, [0, 4]), ("c", torch.zeros(1, dtype=torch.int64), [1])])
    assert a.shape == (2, 3) and torch.equal(a.reshape(-1), flat[:6])
    assert b.shape == (0, 4)
    assert c.shape == (1,)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_run_op_cuda_without_a_gpu_is_a_clean_error():
    host = _cuda._Host("jagged_softmax", torch.device("cpu"), {})
    inputs = [("values", "f32", [5, 3], 0), ("offsets", "i64", [2], 0)]
    with pytest.raises(JaggedError, match="cannot open CUDA device 0"):
        _native.run_op_cuda("jagged_softmax", inputs, {"max_len": 4}, 0, 0, host)
    with pytest.raises(NotImplementedError, match="product_quantize"):
        _native.run_op_cuda("product_quantize", [], {}, 0, 0, host)
    bf16 = [(n, "bf16", [4, 1, 32], 0) for n in ("q", "k", "v", "out", "dout")]
    inputs = [("offsets", "i32", [2], 0), ("lse", "f32", [4, 1], 0)] + bf16
    with pytest.raises(JaggedError, match="cannot open CUDA device 0"):
        _native.attention_backward_cuda(inputs, 4, 0.5, False, "softmax", 0, 0, host)
    with pytest.raises(JaggedInputError, match="activation `gelu`"):
        _native.attention_backward_cuda(inputs, 4, 0.5, False, "gelu", 0, 0, host)


def test_the_python_side_of_a_cuda_call(monkeypatch):
    """What `_cuda.run_op` passes to the extension and makes of its answer, on CPU tensors standing in
    for CUDA ones (the extension call replaced by a stand-in that makes the callbacks it would)."""
    import contextlib

    seen = {}

    def fake_run_op_cuda(op, inputs, attrs, device, stream, host, total_rows):
        seen.update(op=op, inputs=inputs, attrs=attrs, device=device, stream=stream, total_rows=total_rows)
        host.check("offsets", "offsets", 5)
        out = host.alloc("f32", 8)  # longer than the shape: a compaction's rows past those written
        out[:6] = torch.arange(6.0)
        rows = host.read_index(host.alloc("i64", 3), 2)
        return [("values", out, [3, 2]), ("offsets", host.alloc("i64", 3), [3]), ("n", torch.tensor([rows]), [1])]

    monkeypatch.setattr(_native, "run_op_cuda", fake_run_op_cuda)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(_cuda, "_stream", lambda d: 1234)
    monkeypatch.setenv(_cuda.CHECK_ENV, "sync")
    v, o, m = rand(5, 2), offsets_of([3, 2]), torch.ones(5, dtype=torch.bool)
    values, offsets, n = _cuda.run_op(
        "masked_select_jagged", {"values": v, "offsets": o, "mask": m}, {}, torch.device("cpu"), None
    )
    assert seen["op"] == "masked_select_jagged" and seen["stream"] == 1234 and seen["total_rows"] is None
    assert seen["inputs"] == [
        ("values", "f32", [5, 2], v.data_ptr()),
        ("offsets", "i64", [3], o.data_ptr()),
        ("mask", "bool", [5], m.data_ptr()),
    ]
    assert values.shape == (3, 2) and torch.equal(values.reshape(-1), torch.arange(6.0))
    assert offsets.shape == (3,) and n.tolist() == [0]
    # The offsets check runs before the launches, naming the argument.
    with pytest.raises(JaggedInputError, match="offsets"):
        bad = {"values": v, "offsets": offsets_of([3, 3]), "mask": m}
        _cuda.run_op("masked_select_jagged", bad, {}, torch.device("cpu"), None)
    # Ops of the Rust front functions never reach the extension.
    seen.clear()
    with pytest.raises(NotImplementedError, match="jagged.jagged_topk"):
        _cuda.run_op("jagged_topk", {"scores": v[:, 0], "offsets": o}, {"k": 1}, torch.device("cpu"), None)
    assert not seen
