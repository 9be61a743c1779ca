"""CUDA tensors: the ops run in place on PyTorch's device memory, on PyTorch's current stream.

`run_op` and `run_graph` pass each input's dtype, shape and `data_ptr()`, the
device ordinal and the raw `CUstream` of `torch.cuda.current_stream(device)`
to the extension (python/src/cuda.rs), which compiles the graph for the
device's arch through the runtime's kernel cache and launches its kernels on
that stream with the driver API, calling back a `_Host` to allocate outputs
and scratch (`torch.zeros`: PyTorch's caching allocator, on the current
stream), to check the inputs' contents, and for the reads of a data-dependent
size (the only synchronizations).

Offsets (and `complete_cumsum`'s lengths) are checked as `JAGGED_CHECK_OFFSETS`
says: `async` (the default) on the device with `torch._assert_async`, no host
sync (a bad tensor is a device-side assertion, reported by the next
synchronizing call, after which the CUDA context is unusable, as for any
device assert); `sync`, on the host, an exception naming the argument (one
sync per offsets tensor); `off`, not at all (bad offsets are then
out-of-bounds accesses). `jagged.check_offsets` checks one tensor on request.

Untested on hardware: no GPU was available where this was written.
"""

import math
import os
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from . import _native
from ._tensors import DTYPE_NAMES, TORCH_DTYPES, JaggedInputError

CHECK_ENV = "JAGGED_CHECK_OFFSETS"
CHECK_MODES = ("async", "sync", "off")
POISON_ENV = "JAGGED_POISON_OUTPUTS"


def check_mode() -> str:
    """`JAGGED_CHECK_OFFSETS`: `async` (default), `sync` or `off`."""
    mode = os.environ.get(CHECK_ENV, "").strip().lower() or "async"
    if mode not in CHECK_MODES:
        raise JaggedInputError(f"{CHECK_ENV}={mode!r}: expected one of {', '.join(CHECK_MODES)}")
    return mode


def offsets_valid(offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """A 0-dim bool tensor on the offsets' device, computed without a sync: `offsets` (`[B+1]`,
    B + 1 >= 1) starts at 0, never decreases and ends at `rows`."""
    o = offsets.reshape(-1)
    ok = (o[0] == 0) & (o[-1] == rows)
    return ok & (o[1:] >= o[:-1]).all()


def lengths_valid(lengths: torch.Tensor, dtype: str) -> torch.Tensor:
    """A 0-dim bool tensor, without a sync: `lengths` are non-negative and their sum fits `dtype`
    (the offsets a scan makes of them)."""
    limit = 2**31 - 1 if dtype == "i32" else 2**63 - 1
    total = lengths.to(torch.float64).sum()
    return (lengths >= 0).all() & (total <= float(limit))


def check_offsets(offsets: torch.Tensor, rows: Optional[int] = None, name: str = "offsets") -> None:
    """Checks `offsets` on the host (a sync for a CUDA tensor): `[B+1]`, int32 or int64, starting at
    0, non-decreasing, ending at `rows` when given; raises `JaggedInputError` naming `name`."""
    if not isinstance(offsets, torch.Tensor) or offsets.dtype not in (torch.int32, torch.int64):
        raise JaggedInputError(f"argument `{name}` must be an int32 or int64 tensor")
    if offsets.dim() != 1:
        raise JaggedInputError(f"argument `{name}` must be [B+1], got shape {tuple(offsets.shape)}")
    _native.check_offsets(name, offsets.tolist(), rows)


class _Host:
    """The callbacks of one CUDA call (see python/src/cuda.rs)."""

    def __init__(self, op: str, device: torch.device, tensors: Dict[str, torch.Tensor]):
        self.op = op
        self.device = device
        self.tensors = tensors
        self.mode = check_mode()

    def alloc(self, dtype: str, elems: int, role: str = "output") -> torch.Tensor:
        """A zeroed flat tensor (an `output`, or `scratch` as uint8): the caching allocator, current
        stream. With `JAGGED_POISON_OUTPUTS=1` an output is filled with 0xFF bytes instead (NaN in
        every float dtype), so that an element no kernel writes shows (the tests' setting)."""
        if role == "output" and os.environ.get(POISON_ENV, "") == "1":
            t = torch.empty(elems, dtype=TORCH_DTYPES[dtype], device=self.device)
            t.view(torch.uint8).fill_(0xFF)
            return t
        return torch.zeros(elems, dtype=TORCH_DTYPES[dtype], device=self.device)

    def read_last(self, name: str) -> int:
        """`offsets[B]` of input `name`, where no input gives `T` (a sync)."""
        t = self.tensors[name]
        if t.numel() == 0:
            raise JaggedInputError(f"jagged.{self.op}: argument `{name}` is empty; offsets are [B+1]")
        return int(t[-1])

    def read_index(self, tensor: torch.Tensor, index: int) -> int:
        """Element `index` of an output (a compaction's row count: a sync, as torch.nonzero's)."""
        return int(tensor[index])

    def check(self, kind: str, name: str, arg) -> None:
        """The check of input `name`'s contents: `offsets` of `arg` rows, or `lengths` of dtype `arg`."""
        t = self.tensors[name]
        where = f"jagged.{self.op}: argument `{name}`"
        if self.mode == "off":
            return
        if kind == "offsets":
            if t.numel() == 0:
                raise JaggedInputError(f"{where}: offsets are [B+1], got an empty tensor")
            if self.mode == "sync":
                _native.check_offsets(name, t.tolist(), arg)
            else:
                torch._assert_async(offsets_valid(t, arg), f"{where}: invalid offsets (expected {arg} rows)")
        else:
            if self.mode == "sync":
                _native.check_lengths(name, t.tolist(), arg)
            elif t.numel():
                torch._assert_async(lengths_valid(t, arg), f"{where}: negative lengths or a sum past {arg}")


def _native_inputs(tensors: Dict[str, torch.Tensor]) -> List[Tuple[str, str, List[int], int]]:
    return [(name, DTYPE_NAMES[t.dtype], list(t.shape), t.data_ptr()) for name, t in tensors.items()]


def _shaped(outs: Sequence[Tuple[str, torch.Tensor, Sequence[int]]]) -> List[torch.Tensor]:
    """Each flat output as its shape (a compaction's: a view of the rows written)."""
    return [flat[: math.prod(shape)].view(tuple(shape)) for _, flat, shape in outs]


def _stream(device: torch.device) -> int:
    """The raw `CUstream` of torch's current stream on `device`.

    Every native call below runs under `torch.cuda.device(device)`: the extension makes the device's
    primary context current on the thread to launch, which is then what torch expects, and torch
    restores its own current device afterwards."""
    return torch.cuda.current_stream(device).cuda_stream


def run_op(
    op: str, tensors: Dict[str, torch.Tensor], attrs: Dict[str, object], device: torch.device, total_rows: Optional[int]
) -> List[torch.Tensor]:
    """The builtin `op` on CUDA tensors of `device` (checked by the caller)."""
    if not _native.runs_on_cuda(op):
        raise NotImplementedError(
            f"jagged.{op}: CUDA tensors are not supported by this op yet (it runs through a Rust front "
            f"function, on the emulator only): pass CPU tensors"
        )
    host = _Host(op, device, tensors)
    with torch.cuda.device(device):
        outs = _native.run_op_cuda(op, _native_inputs(tensors), attrs, device.index, _stream(device), host, total_rows)
    return _shaped(outs)


def run_graph(where: str, graph, tensors: Dict[str, torch.Tensor], attrs: Dict[str, object], device: torch.device):
    """A `jagged.op` graph (`_native.CompiledGraph`) on CUDA tensors of `device`."""
    host = _Host(where, device, tensors)
    with torch.cuda.device(device):
        return _shaped(graph.run_cuda(_native_inputs(tensors), attrs, device.index, _stream(device), host))


def attention_backward(
    tensors: Dict[str, torch.Tensor], max_len: int, scale: float, causal: bool, activation: str, device: torch.device
) -> List[torch.Tensor]:
    """`[dq, dk, dv]` by the attention backward template on CUDA tensors of `device`."""
    op = "jagged_flash_attention_backward"
    host = _Host(op, device, tensors)
    with torch.cuda.device(device):
        outs = _native.attention_backward_cuda(
            _native_inputs(tensors), max_len, scale, causal, activation, device.index, _stream(device), host
        )
    return _shaped(outs)
