"""Torch tensors to and from the native extension: `(name, dtype, shape, bytes)` tuples for CPU
tensors, the device rules, and the dispatch of CUDA tensors to `_cuda`."""

import ctypes
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import _native
from ._native import JaggedInputError

DTYPE_NAMES: Dict[torch.dtype, str] = {
    torch.float64: "f64",
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.int32: "i32",
    torch.int64: "i64",
    torch.uint8: "u8",
    torch.bool: "bool",
}
TORCH_DTYPES: Dict[str, torch.dtype] = {v: k for k, v in DTYPE_NAMES.items()}


def check_tensor(op: str, name: str, t: object) -> torch.Tensor:
    """`t` is a contiguous CPU or CUDA tensor of a supported dtype, else an exception naming `name`."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"jagged.{op}: argument `{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.is_nested:
        raise JaggedInputError(
            f"jagged.{op}: argument `{name}` is a nested tensor; pass it to jagged.{op} "
            f"(the Python wrapper), or pass its .values() and .offsets()"
        )
    if t.device.type not in ("cpu", "cuda"):
        raise JaggedInputError(f"jagged.{op}: argument `{name}` is on {t.device}; expected a CPU or CUDA tensor")
    if t.dtype not in DTYPE_NAMES:
        raise JaggedInputError(
            f"jagged.{op}: argument `{name}` has dtype {t.dtype}; supported: "
            + ", ".join(str(d) for d in DTYPE_NAMES)
        )
    if not t.is_contiguous():
        raise JaggedInputError(
            f"jagged.{op}: argument `{name}` is not contiguous (strides {t.stride()} for shape "
            f"{tuple(t.shape)}); call .contiguous() first"
        )
    return t


def common_device(op: str, inputs: Dict[str, object]) -> torch.device:
    """The one device of every tensor of a call (each checked by `check_tensor`): the CPU or one
    CUDA device. A tensor elsewhere is an error naming it and the first tensor's device."""
    device = None
    first = None
    for name, t in inputs.items():
        t = check_tensor(op, name, t)
        if device is None:
            device, first = t.device, name
        elif t.device != device:
            raise JaggedInputError(
                f"jagged.{op}: argument `{name}` is on {t.device}, but argument `{first}` is on {device}; "
                f"every tensor of a call must be on one device"
            )
    return torch.device("cpu") if device is None else device


def to_native(op: str, name: str, t: object) -> Tuple[str, str, List[int], bytes]:
    """A CPU tensor's `(name, dtype, shape, bytes)` for the emulator (a CUDA one is refused: the
    paths that copy to the host take CPU tensors only)."""
    t = check_tensor(op, name, t)
    if t.device.type != "cpu":
        raise NotImplementedError(
            f"jagged.{op}: argument `{name}` is on {t.device}; this op takes CPU tensors only "
            f"(run by the PTX emulator): move the inputs to the CPU"
        )
    nbytes = t.numel() * t.element_size()
    # A contiguous CPU tensor's elements are the nbytes from data_ptr() on;
    # `t` stays alive for the copy.
    data = ctypes.string_at(t.data_ptr(), nbytes) if nbytes else b""
    return (name, DTYPE_NAMES[t.dtype], list(t.shape), data)


def from_native(out: Tuple[str, str, Sequence[int], bytearray]) -> torch.Tensor:
    _, dtype, shape, data = out
    dt = TORCH_DTYPES[dtype]
    if len(data) == 0:
        return torch.empty(tuple(shape), dtype=dt)
    return torch.frombuffer(data, dtype=torch.uint8).view(dt).reshape(tuple(shape))


def run_op(
    op: str, inputs: Dict[str, torch.Tensor], attrs: Dict[str, object], total_rows: Optional[int] = None
) -> List[torch.Tensor]:
    """Runs the builtin `op`; outputs in the op's order. CPU tensors: copied to the emulator and
    back. CUDA tensors (all on one device): in place on the device, on PyTorch's current stream
    (`_cuda.run_op`; `total_rows` is `T` where the caller knows it, else it may be read)."""
    device = common_device(op, inputs)
    if device.type == "cuda":
        from . import _cuda

        return _cuda.run_op(op, inputs, attrs, device, total_rows)
    native = [to_native(op, name, t) for name, t in inputs.items()]
    return [from_native(o) for o in _native.run_op(op, native, attrs)]


def lengths_of(offsets: torch.Tensor) -> torch.Tensor:
    return offsets[1:] - offsets[:-1]


def longest(offsets: torch.Tensor) -> int:
    """The longest sequence of `offsets` (0 for an empty batch)."""
    if offsets.numel() <= 1:
        return 0
    return int(lengths_of(offsets).max().item())


def row_segments(offsets: torch.Tensor, total: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each of the `total` rows: its sequence `b` and its index within it."""
    rows = torch.arange(total, dtype=offsets.dtype, device=offsets.device)
    # Valid offsets put every row r < T before offsets[B]: its sequence is
    # the b with offsets[b] <= r < offsets[b + 1].
    seg = torch.searchsorted(offsets[1:].contiguous(), rows, right=True)
    return seg, rows - offsets[seg]

