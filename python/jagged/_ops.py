"""The builtin ops of docs/ops.md as `torch.library` custom ops (`torch.ops.jagged.<name>`).

Each op takes plain tensors (a jagged tensor as `values` plus `offsets`) and
the op reference's attributes; it has a fake (meta) implementation for
`torch.compile` and, where differentiable, a backward formula. The
friendlier wrappers of `jagged/__init__.py` also take nested tensors.
"""

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _native
from ._tensors import (
    DTYPE_NAMES,
    JaggedInputError,
    common_device,
    from_native,
    lengths_of,
    row_segments,
    run_op,
    to_native,
)

LIB = "jagged"

_FLOAT_NAMES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16, "f64": torch.float64}


def _dynamic_rows() -> "torch.SymInt":
    return torch.library.get_ctx().new_dynamic_size()


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation is f32 whatever the input dtype, f64 for f64 (docs/ops.md)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------
# complete_cumsum


@torch.library.custom_op(f"{LIB}::complete_cumsum", mutates_args=())
def complete_cumsum(lengths: Tensor) -> Tensor:
    """`lengths [B]` (int32 or int64) to `offsets [B+1]`: 0, then the running sum."""
    return run_op("complete_cumsum", {"lengths": lengths}, {})[0]


@complete_cumsum.register_fake
def _(lengths: Tensor) -> Tensor:
    return lengths.new_empty((lengths.shape[0] + 1,))


# ---------------------------------------------------------------------------
# jagged_to_padded_dense


@torch.library.custom_op(f"{LIB}::jagged_to_padded_dense", mutates_args=())
def jagged_to_padded_dense(values: Tensor, offsets: Tensor, max_len: int, padding_value: float = 0.0) -> Tensor:
    """`values [T, *inner]` on `offsets` to `dense [B, max_len, *inner]`, `padding_value` past each sequence."""
    return run_op(
        "jagged_to_padded_dense",
        {"values": values, "offsets": offsets},
        {"max_len": max_len, "padding_value": float(padding_value)},
    )[0]


@jagged_to_padded_dense.register_fake
def _(values: Tensor, offsets: Tensor, max_len: int, padding_value: float = 0.0) -> Tensor:
    return values.new_empty((offsets.shape[0] - 1, max_len, *values.shape[1:]))


def _to_padded_setup(ctx, inputs, output):
    values, offsets, max_len, _ = inputs
    ctx.save_for_backward(offsets)
    ctx.max_len = max_len
    ctx.total = values.shape[0]


def _to_padded_backward(ctx, grad):
    (offsets,) = ctx.saved_tensors
    # d dense[b, i] / d values[o_b + i] = 1 for i < n_b: the inverse gather.
    dv = torch.ops.jagged.dense_to_jagged(grad.contiguous(), offsets, ctx.total)
    return dv, None, None, None


jagged_to_padded_dense.register_autograd(_to_padded_backward, setup_context=_to_padded_setup)


# ---------------------------------------------------------------------------
# dense_to_jagged


@torch.library.custom_op(f"{LIB}::dense_to_jagged", mutates_args=())
def dense_to_jagged(dense: Tensor, offsets: Tensor, total_L: Optional[int] = None) -> Tensor:
    """`dense [B, N, *inner]` to `values [T, *inner]` on `offsets` (rows past `N` are 0).

    `total_L`, optional (as in FBGEMM), is `T = offsets[B]`: given, `torch.compile`
    knows the output's row count without reading the offsets.
    """
    if total_L is not None and total_L < 0:
        raise JaggedInputError(f"jagged.dense_to_jagged: total_L={total_L} is negative")
    out = run_op("dense_to_jagged", {"dense": dense, "offsets": offsets}, {}, total_rows=total_L)[0]
    if total_L is not None and out.shape[0] != total_L:
        raise JaggedInputError(f"jagged.dense_to_jagged: total_L={total_L}, but offsets[B] = {out.shape[0]}")
    return out


@dense_to_jagged.register_fake
def _(dense: Tensor, offsets: Tensor, total_L: Optional[int] = None) -> Tensor:
    rows = _dynamic_rows() if total_L is None else total_L
    return dense.new_empty((rows, *dense.shape[2:]))


def _to_jagged_setup(ctx, inputs, output):
    dense, offsets, _ = inputs
    ctx.save_for_backward(offsets)
    ctx.n = dense.shape[1]


def _to_jagged_backward(ctx, grad):
    (offsets,) = ctx.saved_tensors
    dd = torch.ops.jagged.jagged_to_padded_dense(grad.contiguous(), offsets, ctx.n, 0.0)
    return dd, None, None


dense_to_jagged.register_autograd(_to_jagged_backward, setup_context=_to_jagged_setup)


# ---------------------------------------------------------------------------
# jagged_dense_elementwise_mul


@torch.library.custom_op(f"{LIB}::jagged_dense_elementwise_mul", mutates_args=())
def jagged_dense_elementwise_mul(values: Tensor, offsets: Tensor, dense: Tensor, max_len: int) -> Tensor:
    """`values [T, *inner] * dense [B, max_len, *inner]` row by row; rows past `n_b` are 0."""
    return run_op(
        "jagged_dense_elementwise_mul",
        {"values": values, "offsets": offsets, "dense": dense},
        {"max_len": max_len},
    )[0]


@jagged_dense_elementwise_mul.register_fake
def _(values: Tensor, offsets: Tensor, dense: Tensor, max_len: int) -> Tensor:
    return torch.empty_like(values)


def _jdem_setup(ctx, inputs, output):
    values, offsets, dense, max_len = inputs
    ctx.save_for_backward(values, offsets, dense)
    ctx.max_len = max_len


def _jdem_backward(ctx, grad):
    values, offsets, dense = ctx.saved_tensors
    grad = grad.contiguous()
    dv = dd = None
    if ctx.needs_input_grad[0]:
        dv = torch.ops.jagged.jagged_dense_elementwise_mul(grad, offsets, dense, ctx.max_len)
    if ctx.needs_input_grad[2]:
        dd = torch.ops.jagged.jagged_to_padded_dense((grad * values).contiguous(), offsets, ctx.max_len, 0.0)
    return dv, None, dd, None


jagged_dense_elementwise_mul.register_autograd(_jdem_backward, setup_context=_jdem_setup)


# ---------------------------------------------------------------------------
# jagged_softmax


@torch.library.custom_op(f"{LIB}::jagged_softmax", mutates_args=())
def jagged_softmax(values: Tensor, offsets: Tensor, max_len: int) -> Tensor:
    """Softmax over the rows `i < n_b` of each sequence, per column; rows past `n_b` are 0."""
    return run_op("jagged_softmax", {"values": values, "offsets": offsets}, {"max_len": max_len})[0]


@jagged_softmax.register_fake
def _(values: Tensor, offsets: Tensor, max_len: int) -> Tensor:
    return torch.empty_like(values)


def _softmax_setup(ctx, inputs, output):
    _, offsets, max_len = inputs
    ctx.save_for_backward(offsets, output)
    ctx.max_len = max_len


def _softmax_backward(ctx, grad):
    offsets, y = ctx.saved_tensors
    gy = (grad * y).contiguous()
    # dx = y * (g - sum_seq(g * y)); rows past n_b have y = 0.
    s = torch.ops.jagged.jagged_reduce(gy, offsets, ctx.max_len, "sum")
    seg, _ = row_segments(offsets, y.shape[0])
    return y * (grad - s[seg]), None, None


jagged_softmax.register_autograd(_softmax_backward, setup_context=_softmax_setup)


# ---------------------------------------------------------------------------
# jagged_reduce


@torch.library.custom_op(f"{LIB}::jagged_reduce", mutates_args=())
def jagged_reduce(values: Tensor, offsets: Tensor, max_len: int, reduce: str = "sum") -> Tensor:
    """`values [T, *inner]` to `out [B, *inner]`: `sum`, `mean` (`sum / max(n_b, 1)`) or `max` (0 if empty)."""
    return run_op(
        "jagged_reduce", {"values": values, "offsets": offsets}, {"max_len": max_len, "reduce": reduce}
    )[0]


@jagged_reduce.register_fake
def _(values: Tensor, offsets: Tensor, max_len: int, reduce: str = "sum") -> Tensor:
    return values.new_empty((offsets.shape[0] - 1, *values.shape[1:]))


def _reduce_setup(ctx, inputs, output):
    values, offsets, max_len, reduce = inputs
    ctx.save_for_backward(values, offsets, output)
    ctx.max_len = max_len
    ctx.reduce = reduce


def _reduce_backward(ctx, grad):
    values, offsets, out = ctx.saved_tensors
    seg, pos = row_segments(offsets, values.shape[0])
    shape = (-1,) + (1,) * (values.dim() - 1)
    valid = (pos < ctx.max_len).reshape(shape)
    g = grad[seg]
    if ctx.reduce == "sum":
        dv = torch.where(valid, g, 0.0)
    elif ctx.reduce == "mean":
        n = lengths_of(offsets).clamp(max=ctx.max_len).clamp(min=1).to(grad.dtype)
        dv = torch.where(valid, g / n[seg].reshape(shape), 0.0)
    else:
        # max: the gradient goes to the maximal entries, split evenly among
        # ties. The maxima are found again here (not read from `out`, which
        # may be rounded: an f64 op computes in f32 today).
        masked = torch.where(valid, values, -torch.inf)
        index = seg.reshape(shape).expand(masked.shape)
        m = torch.full_like(out, -torch.inf).scatter_reduce(0, index, masked, "amax")
        hit = valid & (values == m[seg])
        count = torch.zeros_like(out).index_add(0, seg, hit.to(out.dtype))
        dv = torch.where(hit, g / count[seg].clamp(min=1), 0.0)
    return dv.to(values.dtype), None, None, None


jagged_reduce.register_autograd(_reduce_backward, setup_context=_reduce_setup)


# ---------------------------------------------------------------------------
# masked_select_jagged


@torch.library.custom_op(f"{LIB}::masked_select_jagged", mutates_args=())
def masked_select_jagged(values: Tensor, offsets: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    """Keeps the rows whose `mask [T]` (bool or uint8) is set; returns `(values, offsets)` of the kept rows."""
    out, new_offsets = run_op("masked_select_jagged", {"values": values, "offsets": offsets, "mask": mask}, {})
    return out, new_offsets


@masked_select_jagged.register_fake
def _(values: Tensor, offsets: Tensor, mask: Tensor) -> Tuple[Tensor, Tensor]:
    kept = _dynamic_rows()
    return values.new_empty((kept, *values.shape[1:])), torch.empty_like(offsets)


def _masked_setup(ctx, inputs, output):
    _, _, mask = inputs
    ctx.save_for_backward(mask)
    ctx.mark_non_differentiable(output[1])


def _masked_backward(ctx, grad, _grad_offsets):
    (mask,) = ctx.saved_tensors
    keep = mask != 0
    # Kept row r is row cumsum(keep)[r] - 1 of the output: gather from the
    # gradient with a zero row in front, at 0 for the rows not kept.
    index = torch.cumsum(keep.to(torch.int64), 0) * keep
    padded = torch.cat([grad.new_zeros((1, *grad.shape[1:])), grad], 0)
    return padded[index], None, None


masked_select_jagged.register_autograd(_masked_backward, setup_context=_masked_setup)


# ---------------------------------------------------------------------------
# Attention: padded reference math for the backward of the cases the
# backward template does not take (f32 / f64, other head dims, `dtype`).


def _padded(x: Tensor, offsets: Tensor, n: int) -> Tensor:
    return torch.ops.jagged.jagged_to_padded_dense(x.contiguous(), offsets, n, 0.0)


def _unpadded(x: Tensor, offsets: Tensor, total: int) -> Tensor:
    return torch.ops.jagged.dense_to_jagged(x.contiguous(), offsets, total)


def _valid(offsets: Tensor, n: int) -> Tensor:
    """`[B, n]`: row i of sequence b is one of its first min(L_b, n) rows."""
    pos = torch.arange(n, device=offsets.device)
    return pos[None, :] < lengths_of(offsets)[:, None]


def _rounded(x: Tensor, dtype: Optional[str]) -> Tensor:
    return x if dtype is None else x.to(_FLOAT_NAMES[dtype]).to(x.dtype)


def _attention_backward_math(q, k, v, offsets, dout, dlse, max_len, scale, causal, activation, dtype):
    total = q.shape[0]
    acc = _acc_dtype(q.dtype if dtype is None else _FLOAT_NAMES[dtype])
    qp, kp, vp = (_padded(_rounded(x, dtype), offsets, max_len).to(acc) for x in (q, k, v))
    gp = _padded(dout, offsets, max_len).to(acc)
    valid = _valid(offsets, max_len)
    allowed = valid[:, None, :, None] & valid[:, None, None, :]
    if causal:
        allowed = allowed & torch.ones(max_len, max_len, dtype=torch.bool, device=q.device).tril()
    s = scale * torch.einsum("bihd,bjhd->bhij", qp, kp)
    dp = torch.einsum("bihe,bjhe->bhij", gp, vp)
    if activation == "softmax":
        p = torch.softmax(s.masked_fill(~allowed, -math.inf), -1)
        p = torch.where(allowed, p, 0.0)
        delta = (p * dp).sum(-1, keepdim=True)
        ds = p * (dp - delta)
        if dlse is not None:
            # d lse_i / d s_ij = p_ij.
            glse = _padded(dlse.contiguous(), offsets, max_len).to(acc)  # [B, N, H]
            ds = ds + p * glse.permute(0, 2, 1)[..., None]
    else:
        sig = torch.sigmoid(s)
        p = torch.where(allowed, s * sig / max_len, 0.0)
        ds = torch.where(allowed, dp * sig * (1 + s * (1 - sig)) / max_len, 0.0)
    dq = scale * torch.einsum("bhij,bjhd->bihd", ds, kp)
    dk = scale * torch.einsum("bhij,bihd->bjhd", ds, qp)
    dv = torch.einsum("bhij,bihe->bjhe", p, gp)
    return tuple(_unpadded(g.to(q.dtype), offsets, total) for g in (dq, dk, dv))


# ---------------------------------------------------------------------------
# jagged_flash_attention


@torch.library.custom_op(f"{LIB}::jagged_flash_attention", mutates_args=())
def jagged_flash_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    offsets: Tensor,
    max_len: int,
    scale: Optional[float] = None,
    causal: bool = False,
    activation: str = "softmax",
    dtype: Optional[str] = None,
) -> Tuple[Tensor, Tensor]:
    """Jagged attention: `q, k [T, H, D]`, `v [T, H, Dv]` to `(out [T, H, Dv], lse [T, H] f32)`.

    With `activation="silu"` (HSTU) there is no lse: the second output is an
    empty f32 tensor. Both `out` and `lse` are differentiable.
    """
    outs = run_op(
        "jagged_flash_attention",
        {"q": q, "k": k, "v": v, "offsets": offsets},
        {"max_len": max_len, "scale": scale, "causal": causal, "activation": activation, "dtype": dtype},
    )
    if len(outs) == 1:
        return outs[0], torch.empty((0,), dtype=torch.float32, device=q.device)
    return outs[0], outs[1]


@jagged_flash_attention.register_fake
def _(q, k, v, offsets, max_len, scale=None, causal=False, activation="softmax", dtype=None):
    out = q.new_empty((q.shape[0], q.shape[1], v.shape[2]))
    if activation == "softmax":
        return out, q.new_empty((q.shape[0], q.shape[1]), dtype=torch.float32)
    return out, q.new_empty((0,), dtype=torch.float32)


def _attention_setup(ctx, inputs, output):
    q, k, v, offsets, max_len, scale, causal, activation, dtype = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, offsets, out, lse)
    ctx.max_len = max_len
    ctx.scale = 1.0 / math.sqrt(q.shape[2]) if scale is None else scale
    ctx.causal = causal
    ctx.activation = activation
    ctx.dtype = None if dtype is None or _FLOAT_NAMES[dtype] == q.dtype else dtype
    # An output nothing reads gets None, not zeros: no lse term then.
    ctx.set_materialize_grads(False)
    if activation != "softmax":
        ctx.mark_non_differentiable(lse)


def _attention_backward(ctx, dout, dlse):
    q, k, v, offsets, out, lse = ctx.saved_tensors
    dout = torch.zeros_like(out) if dout is None else dout.contiguous()
    if ctx.activation != "softmax":
        dlse = None
    if ctx.dtype is None and _native.attention_backward_supported(
        DTYPE_NAMES.get(q.dtype, "?"), q.shape[2], v.shape[2]
    ):
        dq, dk, dv = torch.ops.jagged.jagged_flash_attention_backward(
            q, k, v, offsets, out, dout, lse, ctx.max_len, ctx.scale, ctx.causal, ctx.activation
        )
        if dlse is not None:
            # The lse term, dS_ij = P_ij dlse_i, with the same kernels:
            # sum_j P_ij k_j is the forward with v = k, and sum_i P_ij x_i is
            # the backward's dv for dout = x.
            g = dlse.to(torch.float32)[..., None]
            pk, _ = torch.ops.jagged.jagged_flash_attention(
                q, k, k, offsets, ctx.max_len, ctx.scale, ctx.causal, "softmax", None
            )
            gq = (g * q.to(torch.float32)).to(q.dtype).contiguous()
            _, _, ptq = torch.ops.jagged.jagged_flash_attention_backward(
                q, k, k, offsets, pk, gq, lse, ctx.max_len, ctx.scale, ctx.causal, "softmax"
            )
            dq = (dq.to(torch.float32) + ctx.scale * g * pk.to(torch.float32)).to(q.dtype)
            dk = (dk.to(torch.float32) + ctx.scale * ptq.to(torch.float32)).to(k.dtype)
    else:
        dq, dk, dv = _attention_backward_math(
            q, k, v, offsets, dout, dlse, ctx.max_len, ctx.scale, ctx.causal, ctx.activation, ctx.dtype
        )
    return dq, dk, dv, None, None, None, None, None, None


jagged_flash_attention.register_autograd(_attention_backward, setup_context=_attention_setup)


@torch.library.custom_op(f"{LIB}::jagged_flash_attention_backward", mutates_args=())
def jagged_flash_attention_backward(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    offsets: Tensor,
    out: Tensor,
    dout: Tensor,
    lse: Tensor,
    max_len: int,
    scale: float,
    causal: bool = False,
    activation: str = "softmax",
) -> Tuple[Tensor, Tensor, Tensor]:
    """`(dq, dk, dv)` of `jagged_flash_attention` by the backward template (tensor cores):
    f16 / bf16, `D = Dv` in 32, 64, 128, 256. `out` and `lse` are read for softmax only."""
    op = "jagged_flash_attention_backward"
    named = {"offsets": offsets, "q": q, "k": k, "v": v, "dout": dout}
    if activation == "softmax":
        named["out"] = out
        named["lse"] = lse
    device = common_device(op, named)
    if device.type == "cuda":
        from . import _cuda

        dq, dk, dv = _cuda.attention_backward(named, max_len, float(scale), causal, activation, device)
        return dq, dk, dv
    native = [to_native(op, name, t) for name, t in named.items()]
    outs = _native.attention_backward(native, max_len, float(scale), causal, activation)
    dq, dk, dv = (from_native(o) for o in outs)
    return dq, dk, dv


@jagged_flash_attention_backward.register_fake
def _(q, k, v, offsets, out, dout, lse, max_len, scale, causal=False, activation="softmax"):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


# ---------------------------------------------------------------------------
# fbgemm_jagged_flash_attention_basic


@torch.library.custom_op(f"{LIB}::fbgemm_jagged_flash_attention_basic", mutates_args=())
def fbgemm_jagged_flash_attention_basic(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    offsets: Tensor,
    max_len: int,
    use_mask: bool = False,
    dtype: Optional[str] = None,
) -> Tensor:
    """FBGEMM's `jagged_flash_attention_basic`: `q, k, v [T, D]` to `out [T, D]`."""
    return run_op(
        "fbgemm_jagged_flash_attention_basic",
        {"q": q, "k": k, "v": v, "offsets": offsets},
        {"max_len": max_len, "use_mask": use_mask, "dtype": dtype},
    )[0]


@fbgemm_jagged_flash_attention_basic.register_fake
def _(q, k, v, offsets, max_len, use_mask=False, dtype=None):
    return torch.empty_like(q)


def _fbgemm_setup(ctx, inputs, output):
    q, k, v, offsets, max_len, use_mask, dtype = inputs
    ctx.save_for_backward(q, k, v, offsets)
    ctx.max_len = max_len
    ctx.use_mask = use_mask
    ctx.dtype = dtype


def _fbgemm_backward(ctx, dout):
    q, k, v, offsets = ctx.saved_tensors
    n, total, dtype = ctx.max_len, q.shape[0], ctx.dtype
    acc = _acc_dtype(q.dtype if dtype is None else _FLOAT_NAMES[dtype])
    qp, kp, vp = (_padded(_rounded(x, dtype), offsets, n).to(acc) for x in (q, k, v))
    gp = _padded(dout.contiguous(), offsets, n).to(acc)
    valid = _valid(offsets, n)
    allowed = valid[:, :, None] & valid[:, None, :]
    p0 = torch.softmax(torch.einsum("bid,bjd->bij", qp, kp).masked_fill(~allowed, -math.inf), -1)
    p0 = torch.where(allowed, p0, 0.0)
    keep = allowed
    if ctx.use_mask:
        keep = keep & torch.ones(n, n, dtype=torch.bool, device=q.device).triu()
    p = torch.where(keep, p0 / n, 0.0)
    dv = torch.einsum("bij,bid->bjd", p, gp)
    dp0 = torch.where(keep, torch.einsum("bid,bjd->bij", gp, vp) / n, 0.0)
    ds = p0 * (dp0 - (p0 * dp0).sum(-1, keepdim=True))
    dq = torch.einsum("bij,bjd->bid", ds, kp)
    dk = torch.einsum("bij,bid->bjd", ds, qp)
    grads = tuple(_unpadded(g.to(q.dtype), offsets, total) for g in (dq, dk, dv))
    return (*grads, None, None, None, None)


fbgemm_jagged_flash_attention_basic.register_autograd(_fbgemm_backward, setup_context=_fbgemm_setup)


# ---------------------------------------------------------------------------
# The Semantic-ID and event-stream ops (Rust front functions).

from . import _front_ops  # noqa: E402,F401  (registers them)

# ---------------------------------------------------------------------------
# A nested tensor passed to torch.ops.jagged.* (which take values and offsets)
# gets an error naming the wrapper that takes it, instead of the nested
# tensor's bare NotImplementedError.


def _refuse_nested(name: str):
    def rule(mode, func, types, args, kwargs):
        raise JaggedInputError(
            f"torch.ops.jagged.{name} takes values and offsets, not a nested tensor: "
            f"call jagged.{name}(...) with the nested tensor, or pass its .values() and .offsets()"
        )

    return rule


def _register_nested_rules():
    try:
        from torch.nested._internal.nested_tensor import NestedTensor
    except ImportError:  # another torch layout of the module: keep torch's own error
        return
    for d in _native.op_reference():
        torch.library.register_torch_dispatch(f"{LIB}::{d['name']}", NestedTensor, _refuse_nested(d["name"]))


_register_nested_rules()
