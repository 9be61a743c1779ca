"""jagged: jagged-tensor ops compiled to PTX kernels, as PyTorch ops.

Importing the package registers every builtin op of docs/ops.md as a
`torch.library` custom op, `torch.ops.jagged.<name>`, taking plain tensors
(a jagged tensor is `values [T, ...]` plus `offsets [B + 1]`), with fake
implementations for `torch.compile` and backward formulas for autograd.

The functions of this module (`jagged.jagged_softmax`, ...) call those ops
and also take nested tensors of the jagged layout
(`torch.nested.nested_tensor(..., layout=torch.jagged)`) where values and
offsets go, returning nested tensors where the input was one; `max_len`
defaults to the longest sequence there.

CPU tensors run through the bundled PTX emulator. CUDA tensors run in place
on PyTorch's memory and current stream (the ops of one graph; untested on
hardware so far); the ops of the Rust front functions raise
NotImplementedError for them. See docs/python.md, "Devices".
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from . import _native, _ops  # noqa: F401  (_ops registers the ops)
from ._cuda import check_offsets
from ._graph import GraphOp, op
from ._native import JaggedError, JaggedInputError
from ._tensors import longest

JaggedError.__module__ = "jagged"
JaggedInputError.__module__ = "jagged"

__all__ = [
    "GraphOp",
    "JaggedError",
    "JaggedInputError",
    "check_offsets",
    "complete_cumsum",
    "dense_to_jagged",
    "device_name",
    "event_boost",
    "event_boost_sessions",
    "event_prune",
    "fbgemm_jagged_flash_attention_basic",
    "jagged_dense_bmm",
    "jagged_dense_dot",
    "jagged_dense_elementwise_mul",
    "jagged_jagged_bmm",
    "jagged_pairwise_dot",
    "jagged_flash_attention",
    "jagged_reduce",
    "jagged_softmax",
    "jagged_to_padded_dense",
    "jagged_topk",
    "masked_select_jagged",
    "op",
    "op_reference",
    "pq_train",
    "product_quantize",
    "residual_quantize",
    "rq_train",
    "session_pool",
    "session_segment",
    "set_arch",
    "sid_embed",
    "stats",
    "user_pool",
]

#: The op names registered under torch.ops.jagged (the builtin ops, and the
#: attention backward the autograd formula of jagged_flash_attention calls).
REGISTERED = [d["name"] for d in _native.op_reference()] + ["jagged_flash_attention_backward"]


def op_reference() -> List[Dict[str, Any]]:
    """Every builtin op as `{name, inputs, attrs, outputs}` (attrs: `{name, type, default, choices, doc}`)."""
    return _native.op_reference()


def device_name() -> str:
    """Where the kernels run: the PTX emulator (CPU)."""
    return _native.device_name()


def set_arch(arch: Optional[str] = None) -> None:
    """Compile the kernels for `arch` ("sm_80" or "sm_90a") from the next call on, on the CPU
    (the emulator runs both) and every CUDA device (sm_80 runs on compute capability 8.0 and
    later, sm_90a on 9.x only: else the next op on that device raises `JaggedError` naming both);
    `None`: back to `JAGGED_ARCH`, else the device's arch. `JaggedInputError` for another name."""
    _native.set_arch(arch)


def stats() -> Dict[str, int]:
    """Counters of the runtime: runs, code-generator runs (and microseconds), kernel-cache hits, module loads."""
    return dict(_native.stats())


def _is_nested(t: object) -> bool:
    return isinstance(t, torch.Tensor) and t.is_nested


def _unpack(opname: str, name: str, x: torch.Tensor, offsets: Optional[torch.Tensor]):
    """`(values, offsets, nested)` of a values argument that may be a nested tensor."""
    if _is_nested(x):
        if x.layout != torch.jagged:
            raise JaggedInputError(
                f"jagged.{opname}: argument `{name}` is a nested tensor of layout {x.layout}; "
                f"use layout=torch.jagged"
            )
        if offsets is not None:
            raise TypeError(f"jagged.{opname}: `{name}` is a nested tensor, which carries its offsets; drop `offsets`")
        if x.dim() < 2 or x._ragged_idx != 1:
            raise JaggedInputError(f"jagged.{opname}: argument `{name}` must be ragged along dim 1")
        return x.values(), x.offsets(), True
    if offsets is None:
        raise TypeError(f"jagged.{opname}: `offsets` is required when `{name}` is not a nested tensor")
    return x, offsets, False


def _max_len(max_len: Optional[int], offsets: torch.Tensor) -> int:
    return longest(offsets) if max_len is None else max_len


def _nested(values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    return torch.nested.nested_tensor_from_jagged(values, offsets)


def complete_cumsum(lengths: torch.Tensor) -> torch.Tensor:
    """`lengths [B]` (int32 or int64) to `offsets [B+1]`."""
    return torch.ops.jagged.complete_cumsum(lengths)


def jagged_to_padded_dense(
    values: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    padding_value: float = 0.0,
) -> torch.Tensor:
    """`values [T, *inner]` (or a nested tensor) to `dense [B, max_len, *inner]`."""
    v, o, _ = _unpack("jagged_to_padded_dense", "values", values, offsets)
    return torch.ops.jagged.jagged_to_padded_dense(v, o, _max_len(max_len, o), padding_value)


def dense_to_jagged(dense: torch.Tensor, offsets: torch.Tensor, total_L: Optional[int] = None) -> torch.Tensor:
    """`dense [B, N, *inner]` to `values [T, *inner]` on `offsets`.

    `offsets` may be a nested tensor: its offsets are used, and the result is
    a nested tensor of its layout.
    """
    if _is_nested(offsets):
        o = offsets.offsets()
        return _nested(torch.ops.jagged.dense_to_jagged(dense, o, total_L), o)
    return torch.ops.jagged.dense_to_jagged(dense, offsets, total_L)


def jagged_dense_elementwise_mul(
    values: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    dense: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
) -> torch.Tensor:
    """`values [T, *inner] * dense [B, max_len, *inner]`; `max_len` defaults to `dense.shape[1]`."""
    v, o, nested = _unpack("jagged_dense_elementwise_mul", "values", values, offsets)
    if dense is None:
        raise TypeError("jagged.jagged_dense_elementwise_mul: `dense` is required")
    n = dense.shape[1] if max_len is None and dense.dim() >= 2 else _max_len(max_len, o)
    out = torch.ops.jagged.jagged_dense_elementwise_mul(v, o, dense, n)
    return _nested(out, o) if nested else out


def jagged_softmax(
    values: torch.Tensor, offsets: Optional[torch.Tensor] = None, max_len: Optional[int] = None
) -> torch.Tensor:
    """Softmax over the rows of each sequence, per column."""
    v, o, nested = _unpack("jagged_softmax", "values", values, offsets)
    out = torch.ops.jagged.jagged_softmax(v, o, _max_len(max_len, o))
    return _nested(out, o) if nested else out


def jagged_reduce(
    values: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    reduce: str = "sum",
) -> torch.Tensor:
    """`values [T, *inner]` to `out [B, *inner]` by `sum`, `mean` or `max`."""
    v, o, _ = _unpack("jagged_reduce", "values", values, offsets)
    return torch.ops.jagged.jagged_reduce(v, o, _max_len(max_len, o), reduce)


def masked_select_jagged(
    values: torch.Tensor, offsets: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
):
    """The rows whose mask is set: `(values, offsets)`, or a nested tensor for a nested input.

    With a nested `values`, `mask` may be a nested tensor of the same layout.
    """
    v, o, nested = _unpack("masked_select_jagged", "values", values, offsets)
    if mask is None:
        raise TypeError("jagged.masked_select_jagged: `mask` is required")
    if _is_nested(mask):
        mask = mask.values()
    out, new_offsets = torch.ops.jagged.masked_select_jagged(v, o, mask)
    return _nested(out, new_offsets) if nested else (out, new_offsets)


def _attention_inputs(opname: str, q, k, v, offsets):
    q_, o, nested = _unpack(opname, "q", q, offsets)
    if nested:
        parts = []
        for name, x in (("k", k), ("v", v)):
            if not _is_nested(x):
                raise TypeError(f"jagged.{opname}: `q` is a nested tensor, so `{name}` must be one too")
            if x.offsets() is not o and not torch.equal(x.offsets(), o):
                raise JaggedInputError(f"jagged.{opname}: `{name}` has other offsets than `q`")
            parts.append(x.values())
        return q_, parts[0], parts[1], o, True
    for name, x in (("k", k), ("v", v)):
        if _is_nested(x):
            raise TypeError(f"jagged.{opname}: `{name}` is a nested tensor but `q` is not")
    return q_, k, v, o, False


def jagged_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    scale: Optional[float] = None,
    causal: bool = False,
    activation: str = "softmax",
    dtype: Optional[str] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Jagged attention: `(out [T, H, Dv], lse [T, H])`, `lse` None with `activation="silu"`."""
    q_, k_, v_, o, nested = _attention_inputs("jagged_flash_attention", q, k, v, offsets)
    out, lse = torch.ops.jagged.jagged_flash_attention(
        q_, k_, v_, o, _max_len(max_len, o), scale, causal, activation, dtype
    )
    if activation != "softmax":
        return (_nested(out, o) if nested else out), None
    if nested:
        return _nested(out, o), _nested(lse, o)
    return out, lse


def fbgemm_jagged_flash_attention_basic(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    use_mask: bool = False,
    dtype: Optional[str] = None,
) -> torch.Tensor:
    """FBGEMM's `jagged_flash_attention_basic`: `q, k, v [T, D]` to `out [T, D]`."""
    q_, k_, v_, o, nested = _attention_inputs("fbgemm_jagged_flash_attention_basic", q, k, v, offsets)
    out = torch.ops.jagged.fbgemm_jagged_flash_attention_basic(q_, k_, v_, o, _max_len(max_len, o), use_mask, dtype)
    return _nested(out, o) if nested else out




# ---------------------------------------------------------------------------
# Semantic IDs and event streams (docs/ops.md): row-wise ops keep the input's
# layout (a nested input gives a nested output on the same offsets); the
# selections return nested tensors on their new offsets.


def _rows(opname: str, name: str, x: torch.Tensor, offsets: Optional[torch.Tensor]):
    """`(rows, offsets or None, nested)` of a row-wise op's input: dense, jagged or nested."""
    if _is_nested(x):
        return _unpack(opname, name, x, offsets)
    return x, offsets, False


def _need(opname: str, name: str, value):
    if value is None:
        raise TypeError(f"jagged.{opname}: `{name}` is required")
    return value


def product_quantize(
    x: torch.Tensor, offsets: Optional[torch.Tensor] = None, centroids: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """`codes [N, M]` (int32) of `x [N, D]`, or of `[T, D]` on `offsets`, or of a nested tensor
    (then a nested tensor of codes on its offsets); `centroids [M, K, D / M]`."""
    v, o, nested = _rows("product_quantize", "x", x, offsets)
    out = torch.ops.jagged.product_quantize(v, o, _need("product_quantize", "centroids", centroids))
    return _nested(out, o) if nested else out


def residual_quantize(
    x: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    codebooks: Optional[torch.Tensor] = None,
    beam: int = 1,
) -> torch.Tensor:
    """`codes [N, levels]` (int32) of `x` (dense, jagged or nested) by `codebooks [levels, K, D]`."""
    v, o, nested = _rows("residual_quantize", "x", x, offsets)
    out = torch.ops.jagged.residual_quantize(v, o, _need("residual_quantize", "codebooks", codebooks), beam)
    return _nested(out, o) if nested else out


def sid_embed(
    codes: torch.Tensor, offsets: Optional[torch.Tensor] = None, codebooks: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """`values [N, D] = sum_l codebooks[l, codes[:, l]]` for `codes` dense, jagged or nested."""
    v, o, nested = _rows("sid_embed", "codes", codes, offsets)
    out = torch.ops.jagged.sid_embed(v, o, _need("sid_embed", "codebooks", codebooks))
    return _nested(out, o) if nested else out


def rq_train(
    x: torch.Tensor, levels: int, k: int, iterations: int = 25, seed: int = 1234, init: str = "k-means++"
) -> torch.Tensor:
    """Codebooks `[levels, K, D]` of a greedy residual quantizer trained on `x [N, D]` (or a nested
    tensor's rows) by k-means per level (`init`: "k-means++" or "random"); deterministic per seed."""
    v = x.values() if _is_nested(x) else x
    return torch.ops.jagged.rq_train(v, levels, k, iterations, seed, init)


def pq_train(
    x: torch.Tensor, m: int, k: int, iterations: int = 25, seed: int = 1234, init: str = "k-means++"
) -> torch.Tensor:
    """Centroids `[M, K, D / M]` of a product quantizer trained on `x [N, D]` (or a nested tensor's
    rows) by k-means per sub-space."""
    v = x.values() if _is_nested(x) else x
    return torch.ops.jagged.pq_train(v, m, k, iterations, seed, init)


def session_pool(
    values: torch.Tensor, session_offsets: Optional[torch.Tensor] = None, reduce: str = "sum"
) -> torch.Tensor:
    """`out [S, *inner]`: each session (a sequence of `session_offsets`, or a component of a
    nested `values`) reduced over all its rows."""
    v, o, _ = _unpack("session_pool", "values", values, session_offsets)
    return torch.ops.jagged.session_pool(v, o, reduce)


def user_pool(
    pooled: torch.Tensor, user_offsets: Optional[torch.Tensor] = None, reduce: str = "sum"
) -> torch.Tensor:
    """`out [B, *inner]`: each user's pooled sessions (`pooled [S, *inner]` on `user_offsets`, or a
    nested tensor of them) reduced."""
    v, o, _ = _unpack("user_pool", "pooled", pooled, user_offsets)
    return torch.ops.jagged.user_pool(v, o, reduce)


def event_boost(
    values: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    segment: Optional[torch.Tensor] = None,
    cond: Optional[torch.Tensor] = None,
    table: Optional[torch.Tensor] = None,
    columns: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """`values [T, D]` with the `columns` of event `i` of user `b` times `table[segment[b], cond[i]]`.

    `values` may be a nested tensor (the result is one too), and `cond` then a nested tensor of
    the same layout.
    """
    v, o, nested = _unpack("event_boost", "values", values, offsets)
    cond = _need("event_boost", "cond", cond)
    if _is_nested(cond):
        cond = cond.values()
    out = torch.ops.jagged.event_boost(
        v,
        o,
        _need("event_boost", "segment", segment),
        cond,
        _need("event_boost", "table", table),
        _need("event_boost", "columns", columns),
    )
    return _nested(out, o) if nested else out


def event_boost_sessions(
    values: torch.Tensor,
    session_offsets: Optional[torch.Tensor] = None,
    user_offsets: Optional[torch.Tensor] = None,
    segment: Optional[torch.Tensor] = None,
    cond: Optional[torch.Tensor] = None,
    table: Optional[torch.Tensor] = None,
    columns: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """`event_boost` with a condition per session (`cond [S]`); `values` may be a nested tensor of
    the sessions (the result is one too)."""
    v, so, nested = _unpack("event_boost_sessions", "values", values, session_offsets)
    out = torch.ops.jagged.event_boost_sessions(
        v,
        so,
        _need("event_boost_sessions", "user_offsets", user_offsets),
        _need("event_boost_sessions", "segment", segment),
        _need("event_boost_sessions", "cond", cond),
        _need("event_boost_sessions", "table", table),
        _need("event_boost_sessions", "columns", columns),
    )
    return _nested(out, so) if nested else out


def session_segment(
    timestamps: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    gap: Optional[float] = None,
    surface: Optional[torch.Tensor] = None,
):
    """`(session_offsets [S+1], user_offsets [B+1], dwell)` of users' event timestamps; given a
    `surface` per event (a tensor aligned with the timestamps, or a nested one of their layout), a
    session also starts where it changes.

    `timestamps` may be a nested tensor `[B, j]`: `dwell` is then a nested tensor of its layout.
    """
    v, o, nested = _unpack("session_segment", "timestamps", timestamps, offsets)
    if surface is not None and surface.is_nested:
        surface = surface.values()
    s, u, dwell = torch.ops.jagged.session_segment(
        v, o, surface, float(_need("session_segment", "gap", gap))
    )
    return s, u, (_nested(dwell, o) if nested else dwell)


def jagged_topk(scores: torch.Tensor, offsets: Optional[torch.Tensor] = None, k: Optional[int] = None):
    """Per sequence the rows of its `k` highest scores, in order: `(indices, offsets)` (global rows),
    or a nested tensor of the indices for a nested `scores`."""
    v, o, nested = _unpack("jagged_topk", "scores", scores, offsets)
    indices, new_offsets = torch.ops.jagged.jagged_topk(v, o, int(_need("jagged_topk", "k", k)))
    return _nested(indices, new_offsets) if nested else (indices, new_offsets)


def event_prune(
    scores: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    features: Sequence[torch.Tensor] = (),
    threshold: Optional[float] = None,
    k: Optional[int] = None,
):
    """Keeps the rows with `scores >= threshold` (if given) among each sequence's `k` best (if given).

    Returns `(features, indices, offsets)`: the kept rows of each feature `[T, ...]`, their global
    rows and offsets. For a nested `scores` the features may be nested tensors of its layout, and
    it returns `(features, indices)` as nested tensors on the new offsets.
    """
    v, o, nested = _unpack("event_prune", "scores", scores, offsets)
    feats = [f.values() if _is_nested(f) else f for f in features]
    kept, indices, new_offsets = torch.ops.jagged.event_prune(v, o, feats, threshold, k)
    if nested:
        return [_nested(f, new_offsets) for f in kept], _nested(indices, new_offsets)
    return kept, indices, new_offsets


# ---------------------------------------------------------------------------
# Interactions: `x` (and `jagged_jagged_bmm`'s `y`) may be nested tensors;
# `max_len` defaults to the longest sequence.


def jagged_dense_bmm(
    x: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    y: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    dtype: Optional[str] = None,
    tf32: bool = False,
) -> torch.Tensor:
    """`out[o_b + i] = x[o_b + i] @ y[b]` (`y [B, K, M]`); nested in, nested out."""
    v, o, nested = _unpack("jagged_dense_bmm", "x", x, offsets)
    out = torch.ops.jagged.jagged_dense_bmm(v, o, _need("jagged_dense_bmm", "y", y), _max_len(max_len, o), dtype, tf32)
    return _nested(out, o) if nested else out


def jagged_dense_dot(
    x: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    y: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    dtype: Optional[str] = None,
    tf32: bool = False,
) -> torch.Tensor:
    """`out[o_b + i, f] = x[o_b + i] . y[b, f]` (`y [B, F, D]`); nested in, nested out."""
    v, o, nested = _unpack("jagged_dense_dot", "x", x, offsets)
    out = torch.ops.jagged.jagged_dense_dot(v, o, _need("jagged_dense_dot", "y", y), _max_len(max_len, o), dtype, tf32)
    return _nested(out, o) if nested else out


def jagged_jagged_bmm(
    x: torch.Tensor,
    y: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    dtype: Optional[str] = None,
    tf32: bool = False,
) -> torch.Tensor:
    """`out[b] = sum_i x[o_b + i]^T y[o_b + i]` `[B, M, P]`; `x` and `y` may be nested tensors of one layout."""
    v, o, nested = _unpack("jagged_jagged_bmm", "x", x, offsets)
    if _is_nested(y):
        if not nested:
            raise TypeError("jagged.jagged_jagged_bmm: `y` is a nested tensor but `x` is not")
        y = y.values()
    return torch.ops.jagged.jagged_jagged_bmm(v, y, o, _max_len(max_len, o), dtype, tf32)


def jagged_pairwise_dot(
    x: torch.Tensor,
    offsets: Optional[torch.Tensor] = None,
    max_len: Optional[int] = None,
    dtype: Optional[str] = None,
    tf32: bool = False,
):
    """`x_i . x_j` for every pair `i < j` of each sequence, packed: `(values, offsets)`, or a nested
    tensor of them for a nested `x`."""
    v, o, nested = _unpack("jagged_pairwise_dot", "x", x, offsets)
    values, new_offsets = torch.ops.jagged.jagged_pairwise_dot(v, o, _max_len(max_len, o), dtype, tf32)
    return _nested(values, new_offsets) if nested else (values, new_offsets)
