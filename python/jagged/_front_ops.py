"""The Semantic-ID and event-stream ops of docs/ops.md as `torch.library` custom ops.

They run through the Rust crate's front functions (`jagged::ops::quantize`,
`jagged::ops::quantize_train`, `jagged::ops::events`) on the emulator:
`product_quantize`, `residual_quantize`, `sid_embed`, `rq_train`,
`pq_train`, the interactions (`jagged::ops::interactions`:
`jagged_dense_bmm`, `jagged_jagged_bmm`, `jagged_pairwise_dot`,
`jagged_dense_dot` and the two backward ops, differentiable through
those), `session_pool`, `user_pool`,
`event_boost`, `event_boost_sessions`, `session_segment`, `jagged_topk`, `event_prune`. Each has a
fake implementation (the data-dependent row counts of `session_segment`,
`jagged_topk` and `event_prune` are `new_dynamic_size()`s); `sid_embed`,
`session_pool`, `user_pool`, `event_boost` and `event_prune` have backward
formulas for their float inputs (torch math on the saved inputs and the
package's own forward ops). Codes, indices, offsets, dwell times and
scores get no gradient.
"""

from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ._tensors import row_segments, run_op

LIB = "jagged"


def _dynamic_rows() -> "torch.SymInt":
    return torch.library.get_ctx().new_dynamic_size()


def _with_offsets(inputs: dict, offsets: Optional[Tensor]) -> dict:
    if offsets is not None:
        inputs["offsets"] = offsets
    return inputs


# ---------------------------------------------------------------------------
# Semantic IDs


@torch.library.custom_op(f"{LIB}::product_quantize", mutates_args=())
def product_quantize(x: Tensor, offsets: Optional[Tensor], centroids: Tensor) -> Tensor:
    """`codes [N, M]` (int32): the nearest centroid of `centroids [M, K, D / M]` for each of the
    `M` sub-vectors of every row of `x [N, D]` (or `[T, D]` on `offsets`; `None` for dense)."""
    return run_op("product_quantize", _with_offsets({"x": x, "centroids": centroids}, offsets), {})[0]


@product_quantize.register_fake
def _(x, offsets, centroids):
    return x.new_empty((x.shape[0], centroids.shape[0]), dtype=torch.int32)


@torch.library.custom_op(f"{LIB}::residual_quantize", mutates_args=())
def residual_quantize(x: Tensor, offsets: Optional[Tensor], codebooks: Tensor, beam: int = 1) -> Tensor:
    """`codes [N, levels]` (int32) of residual quantization of `x [N, D]` (or `[T, D]` on
    `offsets`) by `codebooks [levels, K, D]`: greedy with `beam = 1`, a beam search keeping the
    `beam` best partial encodings per level otherwise (FAISS's `max_beam_size`)."""
    return run_op(
        "residual_quantize", _with_offsets({"x": x, "codebooks": codebooks}, offsets), {"beam": beam}
    )[0]


@residual_quantize.register_fake
def _(x, offsets, codebooks, beam=1):
    return x.new_empty((x.shape[0], codebooks.shape[0]), dtype=torch.int32)


@torch.library.custom_op(f"{LIB}::sid_embed", mutates_args=())
def sid_embed(codes: Tensor, offsets: Optional[Tensor], codebooks: Tensor) -> Tensor:
    """`values [N, D] = sum_l codebooks[l, codes[:, l]]` for `codes [N, levels]` (int32; or
    `[T, levels]` on `offsets`); a code outside `0..K` adds 0."""
    return run_op("sid_embed", _with_offsets({"codes": codes, "codebooks": codebooks}, offsets), {})[0]


@sid_embed.register_fake
def _(codes, offsets, codebooks):
    return codebooks.new_empty((codes.shape[0], codebooks.shape[2]))


def _sid_embed_setup(ctx, inputs, output):
    codes, _, codebooks = inputs
    ctx.save_for_backward(codes)
    ctx.table = tuple(codebooks.shape)
    ctx.dtype = codebooks.dtype


def _sid_embed_backward(ctx, grad):
    (codes,) = ctx.saved_tensors
    levels, k, d = ctx.table
    n = codes.shape[0]
    # d values[t] / d codebooks[l, codes[t, l]] = 1 for codes in 0..K.
    valid = (codes >= 0) & (codes < k)
    rows = codes.to(torch.int64) + torch.arange(levels, dtype=torch.int64) * k
    g = grad.to(torch.float32)[:, None, :].expand(n, levels, d)
    dc = torch.zeros((levels * k, d), dtype=torch.float32).index_add_(0, rows[valid], g[valid])
    return None, None, dc.reshape(levels, k, d).to(ctx.dtype)


sid_embed.register_autograd(_sid_embed_backward, setup_context=_sid_embed_setup)


# ---------------------------------------------------------------------------
# Codebook training (jagged::ops::quantize_train): k-means on the device,
# init and the sums' division on the host. Not differentiable.


@torch.library.custom_op(f"{LIB}::rq_train", mutates_args=())
def rq_train(
    x: Tensor, levels: int, k: int, iterations: int = 25, seed: int = 1234, init: str = "k-means++"
) -> Tensor:
    """The codebooks `[levels, K, D]` (float32) of a greedy residual quantizer of the rows of `x [N, D]`
    (float32, `N >= K`): k-means on each level's residuals."""
    return run_op(
        "rq_train",
        {"x": x},
        {"levels": levels, "k": k, "iterations": iterations, "seed": seed, "init": init},
    )[0]


@rq_train.register_fake
def _(x, levels, k, iterations=25, seed=1234, init="k-means++"):
    return x.new_empty((levels, k, x.shape[1]), dtype=torch.float32)


@torch.library.custom_op(f"{LIB}::pq_train", mutates_args=())
def pq_train(
    x: Tensor, m: int, k: int, iterations: int = 25, seed: int = 1234, init: str = "k-means++"
) -> Tensor:
    """The centroids `[M, K, D / M]` (float32) of a product quantizer of the rows of `x [N, D]`
    (float32, `N >= K`): k-means in each of the `M` sub-spaces."""
    return run_op(
        "pq_train",
        {"x": x},
        {"m": m, "k": k, "iterations": iterations, "seed": seed, "init": init},
    )[0]


@pq_train.register_fake
def _(x, m, k, iterations=25, seed=1234, init="k-means++"):
    return x.new_empty((m, k, x.shape[1] // m), dtype=torch.float32)


# ---------------------------------------------------------------------------
# Interactions (jagged::ops::interactions): `dtype` is applied here, by
# casting the inputs to it (the Rust front functions compute in the inputs'
# dtype); gradients come back in each input's own dtype.

_COMPUTE = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def _compute_dtype(x: Tensor, dtype: Optional[str]) -> torch.dtype:
    return x.dtype if dtype is None else _COMPUTE.get(dtype, x.dtype)


def _cast(t: Tensor, dt: torch.dtype) -> Tensor:
    return t if t.dtype == dt else t.to(dt)


def _interaction(op: str, inputs: dict, max_len: int, dtype: Optional[str], tf32: bool) -> List[Tensor]:
    if dtype is not None and dtype not in _COMPUTE:
        from ._native import JaggedInputError

        raise JaggedInputError(f"{op}: attribute `dtype`: expected one of f32, f16, bf16 or None, got {dtype!r}")
    if dtype is not None:
        # Computed in `dtype`: every tensor but the offsets cast to it. With
        # None the inputs must share one dtype (checked by the extension).
        dt = _COMPUTE[dtype]
        inputs = {k: (v if k == "offsets" else _cast(v, dt)) for k, v in inputs.items()}
    return run_op(op, inputs, {"max_len": max_len, "tf32": tf32})


@torch.library.custom_op(f"{LIB}::jagged_dense_bmm", mutates_args=())
def jagged_dense_bmm(
    x: Tensor, offsets: Tensor, y: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tensor:
    """`out[o_b + i] = x[o_b + i] @ y[b]` for `i < n_b` (`x [T, K]`, `y [B, K, M]`, `out [T, M]`)."""
    return _interaction("jagged_dense_bmm", {"x": x, "offsets": offsets, "y": y}, max_len, dtype, tf32)[0]


@jagged_dense_bmm.register_fake
def _(x, offsets, y, max_len, dtype=None, tf32=False):
    return x.new_empty((x.shape[0], y.shape[2]), dtype=_compute_dtype(x, dtype))


@torch.library.custom_op(f"{LIB}::jagged_jagged_bmm", mutates_args=())
def jagged_jagged_bmm(
    x: Tensor, y: Tensor, offsets: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tensor:
    """`out[b] = sum_{i < n_b} x[o_b + i]^T y[o_b + i]` (`x [T, M]`, `y [T, P]`, `out [B, M, P]`)."""
    return _interaction("jagged_jagged_bmm", {"x": x, "y": y, "offsets": offsets}, max_len, dtype, tf32)[0]


@jagged_jagged_bmm.register_fake
def _(x, y, offsets, max_len, dtype=None, tf32=False):
    return x.new_empty((offsets.shape[0] - 1, x.shape[1], y.shape[1]), dtype=_compute_dtype(x, dtype))


@torch.library.custom_op(f"{LIB}::jagged_dense_dot", mutates_args=())
def jagged_dense_dot(
    x: Tensor, offsets: Tensor, y: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tensor:
    """`out[o_b + i, f] = x[o_b + i] . y[b, f]` for `i < n_b` (`x [T, D]`, `y [B, F, D]`, `out [T, F]`)."""
    return _interaction("jagged_dense_dot", {"x": x, "offsets": offsets, "y": y}, max_len, dtype, tf32)[0]


@jagged_dense_dot.register_fake
def _(x, offsets, y, max_len, dtype=None, tf32=False):
    return x.new_empty((x.shape[0], y.shape[1]), dtype=_compute_dtype(x, dtype))


@torch.library.custom_op(f"{LIB}::jagged_pairwise_dot", mutates_args=())
def jagged_pairwise_dot(
    x: Tensor, offsets: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tuple[Tensor, Tensor]:
    """`x_i . x_j` for every pair `i < j < n_b` of each sequence, packed row-major over `(i, j)`:
    `(values [sum n_b (n_b - 1) / 2], offsets [B+1])`."""
    values, new_offsets = _interaction("jagged_pairwise_dot", {"x": x, "offsets": offsets}, max_len, dtype, tf32)
    return values, new_offsets


@jagged_pairwise_dot.register_fake
def _(x, offsets, max_len, dtype=None, tf32=False):
    return x.new_empty((_dynamic_rows(),), dtype=_compute_dtype(x, dtype)), torch.empty_like(offsets)


@torch.library.custom_op(f"{LIB}::jagged_dense_bmm_backward", mutates_args=())
def jagged_dense_bmm_backward(
    x: Tensor, offsets: Tensor, y: Tensor, dout: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tuple[Tensor, Tensor]:
    """`(dx [T, K], dy [B, K, M])` of `jagged_dense_bmm` for the cotangent `dout [T, M]`."""
    dx, dy = _interaction(
        "jagged_dense_bmm_backward", {"x": x, "offsets": offsets, "y": y, "dout": dout}, max_len, dtype, tf32
    )
    return dx, dy


@jagged_dense_bmm_backward.register_fake
def _(x, offsets, y, dout, max_len, dtype=None, tf32=False):
    dt = _compute_dtype(x, dtype)
    return x.new_empty(x.shape, dtype=dt), y.new_empty(y.shape, dtype=dt)


@torch.library.custom_op(f"{LIB}::jagged_jagged_bmm_backward", mutates_args=())
def jagged_jagged_bmm_backward(
    x: Tensor, y: Tensor, offsets: Tensor, dout: Tensor, max_len: int, dtype: Optional[str] = None, tf32: bool = False
) -> Tuple[Tensor, Tensor]:
    """`(dx [T, M], dy [T, P])` of `jagged_jagged_bmm` for the cotangent `dout [B, M, P]`."""
    dx, dy = _interaction(
        "jagged_jagged_bmm_backward", {"x": x, "y": y, "offsets": offsets, "dout": dout}, max_len, dtype, tf32
    )
    return dx, dy


@jagged_jagged_bmm_backward.register_fake
def _(x, y, offsets, dout, max_len, dtype=None, tf32=False):
    dt = _compute_dtype(x, dtype)
    return x.new_empty(x.shape, dtype=dt), y.new_empty(y.shape, dtype=dt)


def _bmm_setup(ctx, inputs, output):
    a, b, c, max_len, dtype, tf32 = inputs
    ctx.save_for_backward(a, b, c)
    ctx.attrs = (max_len, dtype, tf32)


def _dense_bmm_backward(ctx, grad):
    x, offsets, y = ctx.saved_tensors
    dx, dy = torch.ops.jagged.jagged_dense_bmm_backward(x, offsets, y, grad.contiguous(), *ctx.attrs)
    return _cast(dx, x.dtype), None, _cast(dy, y.dtype), None, None, None


def _jagged_bmm_backward(ctx, grad):
    x, y, offsets = ctx.saved_tensors
    dx, dy = torch.ops.jagged.jagged_jagged_bmm_backward(x, y, offsets, grad.contiguous(), *ctx.attrs)
    return _cast(dx, x.dtype), _cast(dy, y.dtype), None, None, None, None


def _dense_dot_backward(ctx, grad):
    x, offsets, y = ctx.saved_tensors
    g = grad.contiguous()
    dx = dy = None
    if ctx.needs_input_grad[0]:
        # dx[i] = dout[i] @ y[b]: a jagged_dense_bmm with K = F, M = D.
        dx = _cast(torch.ops.jagged.jagged_dense_bmm(g, offsets, _cast(y, g.dtype), *ctx.attrs), x.dtype)
    if ctx.needs_input_grad[2]:
        # dy[b] = sum_i dout[i]^T x[i]: a jagged_jagged_bmm.
        dy = _cast(torch.ops.jagged.jagged_jagged_bmm(g, _cast(x, g.dtype), offsets, *ctx.attrs), y.dtype)
    return dx, None, dy, None, None, None


jagged_dense_bmm.register_autograd(_dense_bmm_backward, setup_context=_bmm_setup)
jagged_jagged_bmm.register_autograd(_jagged_bmm_backward, setup_context=_bmm_setup)
jagged_dense_dot.register_autograd(_dense_dot_backward, setup_context=_bmm_setup)


def _pairwise_setup(ctx, inputs, output):
    x, offsets, max_len, dtype, tf32 = inputs
    ctx.save_for_backward(x, offsets, output[1])
    ctx.max_len = max_len
    ctx.mark_non_differentiable(output[1])


def _pairwise_backward(ctx, grad, _grad_offsets):
    """Pair `(i, j)` of sequence `b` at packed row `q`: `dx_i += g_q x_j`, `dx_j += g_q x_i` (torch, f32)."""
    x, offsets, packed_offsets = ctx.saved_tensors
    q = torch.arange(grad.shape[0], dtype=torch.int64)
    po = packed_offsets.to(torch.int64)
    b = torch.searchsorted(po[1:].contiguous(), q, right=True)
    r = q - po[b]
    n = (offsets[1:] - offsets[:-1]).to(torch.int64).clamp(max=ctx.max_len)[b]

    def start(i):  # packed position of (i, i + 1) within the sequence
        return i * n - i * (i + 1) // 2

    # Row i: the largest with start(i) <= r (the closed form, then corrected).
    m = (2 * n - 1).to(torch.float64)
    i = torch.floor((m - torch.sqrt((m * m - 8 * r.to(torch.float64)).clamp(min=0))) / 2).to(torch.int64).clamp(min=0)
    for _ in range(2):
        i = torch.where(start(i + 1) <= r, i + 1, i)
        i = torch.where(start(i) > r, i - 1, i)
    j = r - start(i) + i + 1
    base = offsets.to(torch.int64)[b]
    gi, gj = base + i, base + j
    xf = x.to(torch.float32)
    g = grad.to(torch.float32)[:, None]
    dx = torch.zeros(xf.shape, dtype=torch.float32)
    dx = dx.index_add(0, gi, g * xf[gj]).index_add(0, gj, g * xf[gi])
    return dx.to(x.dtype), None, None, None, None


jagged_pairwise_dot.register_autograd(_pairwise_backward, setup_context=_pairwise_setup)


# ---------------------------------------------------------------------------
# Event streams: pooling


def _pool_fake(values, offsets, reduce="sum"):
    return values.new_empty((offsets.shape[0] - 1, *values.shape[1:]))


def _pool_setup(ctx, inputs, output):
    values, offsets, reduce = inputs
    ctx.save_for_backward(values, offsets)
    ctx.reduce = reduce


def _pool_backward(ctx, grad):
    """`jagged_reduce`'s gradient over every row (no max_len): sum, mean, max (split among ties)."""
    values, offsets = ctx.saved_tensors
    seg, _ = row_segments(offsets, values.shape[0])
    shape = (-1,) + (1,) * (values.dim() - 1)
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    g = grad.to(acc)[seg]
    if ctx.reduce == "sum":
        dv = g
    elif ctx.reduce == "mean":
        n = (offsets[1:] - offsets[:-1]).clamp(min=1).to(acc)
        dv = g / n[seg].reshape(shape)
    else:
        # The maxima found again in torch (not read from the output, which
        # may be rounded), the gradient split evenly among ties.
        x = values.to(acc)
        index = seg.reshape(shape).expand(x.shape)
        m = torch.full((grad.shape[0], *values.shape[1:]), -torch.inf, dtype=acc).scatter_reduce(0, index, x, "amax")
        hit = x == m[seg]
        count = torch.zeros(m.shape, dtype=acc).index_add(0, seg, hit.to(acc))
        dv = torch.where(hit, g / count[seg].clamp(min=1), 0.0)
    return dv.to(values.dtype), None, None


@torch.library.custom_op(f"{LIB}::session_pool", mutates_args=())
def session_pool(values: Tensor, session_offsets: Tensor, reduce: str = "sum") -> Tensor:
    """`values [T, *inner]` on `session_offsets [S+1]` to `out [S, *inner]`: `sum`, `mean` or `max`
    over every row of each session (0 for an empty one)."""
    return run_op("session_pool", {"values": values, "session_offsets": session_offsets}, {"reduce": reduce})[0]


session_pool.register_fake(_pool_fake)
session_pool.register_autograd(_pool_backward, setup_context=_pool_setup)


@torch.library.custom_op(f"{LIB}::user_pool", mutates_args=())
def user_pool(pooled: Tensor, user_offsets: Tensor, reduce: str = "sum") -> Tensor:
    """`pooled [S, *inner]` (a row per session) on `user_offsets [B+1]` to `out [B, *inner]`."""
    return run_op("user_pool", {"pooled": pooled, "user_offsets": user_offsets}, {"reduce": reduce})[0]


user_pool.register_fake(_pool_fake)
user_pool.register_autograd(_pool_backward, setup_context=_pool_setup)


# ---------------------------------------------------------------------------
# event_boost


@torch.library.custom_op(f"{LIB}::event_boost", mutates_args=())
def event_boost(
    values: Tensor, offsets: Tensor, segment: Tensor, cond: Tensor, table: Tensor, columns: Tensor
) -> Tensor:
    """`values [T, D]` with the `columns [D]` (uint8 or bool, nonzero: boosted) of event `i` of user `b`
    times `table[segment[b], cond[i]]` (`table [G, C]`; 1 for a segment or condition out of range)."""
    return run_op(
        "event_boost",
        {"values": values, "offsets": offsets, "segment": segment, "cond": cond, "table": table, "columns": columns},
        {},
    )[0]


@event_boost.register_fake
def _(values, offsets, segment, cond, table, columns):
    return torch.empty_like(values)


def _boost_setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _boost_backward(ctx, grad):
    values, offsets, segment, cond, table, columns = ctx.saved_tensors
    grad = grad.contiguous()
    dv = dt = None
    if ctx.needs_input_grad[0]:
        # Linear in values: the same boost of the gradient.
        dv = torch.ops.jagged.event_boost(grad, offsets, segment, cond, table, columns)
    if ctx.needs_input_grad[4]:
        g_, c_ = table.shape
        seg, _ = row_segments(offsets, values.shape[0])
        s = segment.to(torch.int64)[seg]
        c = cond.to(torch.int64)
        known = (s >= 0) & (s < g_) & (c >= 0) & (c < c_)
        mask = (columns != 0).to(torch.float32)
        contrib = (grad.to(torch.float32) * values.to(torch.float32) * mask).sum(1)
        flat = torch.zeros(g_ * c_, dtype=torch.float32).index_add_(0, (s * c_ + c)[known], contrib[known])
        dt = flat.reshape(g_, c_).to(table.dtype)
    return dv, None, None, None, dt, None


event_boost.register_autograd(_boost_backward, setup_context=_boost_setup)


@torch.library.custom_op(f"{LIB}::event_boost_sessions", mutates_args=())
def event_boost_sessions(
    values: Tensor,
    session_offsets: Tensor,
    user_offsets: Tensor,
    segment: Tensor,
    cond: Tensor,
    table: Tensor,
    columns: Tensor,
) -> Tensor:
    """`event_boost` with the condition per session of a nested tensor (`values [T, D]` on
    `session_offsets [S+1]`, sessions on `user_offsets [B+1]`): every event of session `s` of user
    `b` gets `table[segment[b], cond[s]]` (`cond [S]`; 1 out of range) on the `columns`."""
    return run_op(
        "event_boost_sessions",
        {
            "values": values,
            "session_offsets": session_offsets,
            "user_offsets": user_offsets,
            "segment": segment,
            "cond": cond,
            "table": table,
            "columns": columns,
        },
        {},
    )[0]


@event_boost_sessions.register_fake
def _(values, session_offsets, user_offsets, segment, cond, table, columns):
    return torch.empty_like(values)


def _boost_sessions_backward(ctx, grad):
    values, session_offsets, user_offsets, segment, cond, table, columns = ctx.saved_tensors
    grad = grad.contiguous()
    dv = dt = None
    if ctx.needs_input_grad[0]:
        dv = torch.ops.jagged.event_boost_sessions(
            grad, session_offsets, user_offsets, segment, cond, table, columns
        )
    if ctx.needs_input_grad[5]:
        g_, c_ = table.shape
        session, _ = row_segments(session_offsets, values.shape[0])
        user, _ = row_segments(user_offsets, cond.shape[0])
        s = segment.to(torch.int64)[user][session]
        c = cond.to(torch.int64)[session]
        known = (s >= 0) & (s < g_) & (c >= 0) & (c < c_)
        mask = (columns != 0).to(torch.float32)
        contrib = (grad.to(torch.float32) * values.to(torch.float32) * mask).sum(1)
        flat = torch.zeros(g_ * c_, dtype=torch.float32).index_add_(0, (s * c_ + c)[known], contrib[known])
        dt = flat.reshape(g_, c_).to(table.dtype)
    return dv, None, None, None, None, dt, None


event_boost_sessions.register_autograd(_boost_sessions_backward, setup_context=_boost_setup)


# ---------------------------------------------------------------------------
# session_segment, jagged_topk, event_prune: data-dependent row counts


@torch.library.custom_op(f"{LIB}::session_segment", mutates_args=())
def session_segment(
    timestamps: Tensor, offsets: Tensor, surface: Optional[Tensor], gap: float
) -> Tuple[Tensor, Tensor, Tensor]:
    """Sessions of users' event streams: `timestamps [T]` (float32, float64 or int64) on `offsets [B+1]`;
    a session starts at a user's first event, wherever `t_i - t_{i-1} > gap`, and (given `surface [T]`,
    any dtype) wherever the surface changes. Returns `(session_offsets [S+1], user_offsets [B+1],
    dwell [T])`."""
    inputs = {"timestamps": timestamps, "offsets": offsets}
    if surface is not None:
        inputs["surface"] = surface
    s, u, d = run_op("session_segment", inputs, {"gap": float(gap)})
    return s, u, d


@session_segment.register_fake
def _(timestamps, offsets, surface, gap):
    # S + 1 entries, S data-dependent (an unbacked size must be an output's
    # dim as it is, not S + 1).
    entries = torch.library.get_ctx().new_dynamic_size(min=1)
    return offsets.new_empty((entries,)), torch.empty_like(offsets), torch.empty_like(timestamps)


@torch.library.custom_op(f"{LIB}::jagged_topk", mutates_args=())
def jagged_topk(scores: Tensor, offsets: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Per sequence the rows of its `k` highest `scores [T]` (ties to the lower row, NaN highest), in
    their original order: `(indices [sum min(k, L_b)]` (global rows, the offsets' dtype)`, offsets [B+1])`."""
    indices, new_offsets = run_op("jagged_topk", {"scores": scores, "offsets": offsets}, {"k": k})
    return indices, new_offsets


@jagged_topk.register_fake
def _(scores, offsets, k):
    return offsets.new_empty((_dynamic_rows(),)), torch.empty_like(offsets)


@torch.library.custom_op(f"{LIB}::event_prune", mutates_args=())
def event_prune(
    scores: Tensor,
    offsets: Tensor,
    features: List[Tensor],
    threshold: Optional[float] = None,
    k: Optional[int] = None,
) -> Tuple[List[Tensor], Tensor, Tensor]:
    """Keeps row `i` of `scores [T]` (float) if `scores[i] >= threshold` (when given) and it is among its
    sequence's `k` highest (when given): `(the kept rows of each feature [T, ...], indices [T'], offsets [B+1])`."""
    inputs = {"scores": scores, "offsets": offsets}
    for i, f in enumerate(features):
        inputs[f"features[{i}]"] = f
    outs = run_op("event_prune", inputs, {"threshold": None if threshold is None else float(threshold), "k": k})
    return list(outs[:-2]), outs[-2], outs[-1]


@event_prune.register_fake
def _(scores, offsets, features, threshold=None, k=None):
    kept = _dynamic_rows()
    return (
        [f.new_empty((kept, *f.shape[1:])) for f in features],
        offsets.new_empty((kept,)),
        torch.empty_like(offsets),
    )


def _prune_setup(ctx, inputs, output):
    _, _, features, _, _ = inputs
    _, indices, _ = output
    ctx.save_for_backward(indices)
    ctx.features = [(tuple(f.shape), f.dtype) for f in features]


def _prune_backward(ctx, grads, _grad_indices, _grad_offsets):
    (indices,) = ctx.saved_tensors
    index = indices.to(torch.int64)
    out = []
    for (shape, dtype), g in zip(ctx.features, grads):
        if g is None:
            out.append(None)
            continue
        # Kept row r is row indices[r] of the feature: scatter back (no
        # index repeats), 0 for the pruned rows.
        out.append(torch.zeros(shape, dtype=dtype).index_put_((index,), g.to(dtype)))
    return None, None, out, None, None


event_prune.register_autograd(_prune_backward, setup_context=_prune_setup)
