"""The Semantic-ID and event-stream ops (docs/ops.md): each against a numpy / torch reference written
here, their gradients, nested tensors, the bad-input exceptions and torch.compile(fullgraph=True)."""

import numpy as np
import pytest
import torch

import jagged
from jagged import JaggedInputError
from conftest import offsets_of, rand

ops = torch.ops.jagged
# Users: an empty one, one long enough for several sessions, one event.
LAYOUTS = [[], [0, 0], [1], [3, 0, 6, 1], [0, 5, 2, 9, 0]]
GRADCHECK = dict(eps=1e-3, atol=1e-3, rtol=1e-3)
FLOATS = [torch.float32, torch.float16, torch.bfloat16]


def seqs(offsets):
    o = offsets.tolist()
    return [(o[b], o[b + 1]) for b in range(len(o) - 1)]


# ---------------------------------------------------------------------------
# Semantic IDs


def nearest(x, c):
    """numpy: `|c_k|^2 - 2 x . c_k` for rows `x [n, s]` and codewords `c [K, s]` (f64), and its argmin
    (the first minimum, so ties to the lower index)."""
    d = (c * c).sum(1)[None, :] - 2.0 * x @ c.T
    return d, d.argmin(1) if c.shape[0] else np.full(x.shape[0], -1)


def assert_argmin(codes, d, rel=1e-4):
    """Each code is a minimum of its row of distances `d` (up to f32 rounding), and the exact argmin
    wherever the two smallest distances are apart."""
    n = d.shape[0]
    if n == 0:
        return
    chosen = d[np.arange(n), codes]
    best = d.min(1)
    scale = np.abs(d).max(1) + 1.0
    assert np.all(chosen - best <= rel * scale), (codes, d.argmin(1))
    part = np.sort(d, 1)
    clear = (part[:, 1] - part[:, 0]) > 10 * rel * scale if d.shape[1] > 1 else np.ones(n, bool)
    assert np.array_equal(codes[clear], d.argmin(1)[clear])


def ref_product_quantize(x, centroids):
    x = x.double().numpy()
    c = centroids.double().numpy()
    m, k, s = c.shape
    dists = [nearest(x[:, j * s : (j + 1) * s], c[j])[0] for j in range(m)]
    return dists  # one [n, K] per sub-vector


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index", [None, torch.int32, torch.int64])
def test_product_quantize(dtype, index):
    m, k, s = 3, 16, 4
    centroids = rand(m, k, s, dtype=dtype)
    for lengths in LAYOUTS + [[33]]:
        t = sum(lengths)
        x = rand(t, m * s, dtype=dtype)
        o = None if index is None else offsets_of(lengths, index)
        codes = ops.product_quantize(x, o, centroids)
        assert codes.dtype == torch.int32 and codes.shape == (t, m)
        for j, d in enumerate(ref_product_quantize(x, centroids)):
            assert_argmin(codes[:, j].numpy(), d)


def test_product_quantize_ties_go_to_the_lower_index():
    c = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]])  # duplicated codewords
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert ops.product_quantize(x, None, c)[:, 0].tolist() == [0, 1, 0]


def ref_residual(x, codebooks, codes):
    """The greedy residuals along `codes` and each level's distances (numpy, f64)."""
    r = x.double().numpy().copy()
    cb = codebooks.double().numpy()
    out = []
    for level in range(cb.shape[0]):
        d, _ = nearest(r, cb[level])
        out.append(d)
        r = r - cb[level][codes[:, level]]
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index", [None, torch.int64])
def test_residual_quantize_greedy(dtype, index):
    levels, k, d = 3, 8, 6
    codebooks = rand(levels, k, d, dtype=dtype)
    codebooks[1:] *= 0.3
    for lengths in LAYOUTS + [[40]]:
        t = sum(lengths)
        x = rand(t, d, dtype=dtype)
        o = None if index is None else offsets_of(lengths, index)
        codes = ops.residual_quantize(x, o, codebooks)
        assert codes.dtype == torch.int32 and codes.shape == (t, levels)
        # Each level's code is the nearest codeword to the residual left by the levels before.
        for level, dist in enumerate(ref_residual(x, codebooks, codes.numpy())):
            assert_argmin(codes[:, level].numpy(), dist)


def ref_beam(x, codebooks, beam):
    """FAISS-style beam search (numpy, f64): per row, the `beam` best partial encodings of each level
    (candidates `m = b K + k` ranked by full squared error, ties to the lower m); the best at the end."""
    cb = codebooks.double().numpy()
    levels, k, _ = cb.shape
    out = np.zeros((x.shape[0], levels), dtype=np.int64)
    for row in range(x.shape[0]):
        kept = [(x[row].double().numpy(), [])]
        for level in range(levels):
            cands = []
            for b, (r, codes) in enumerate(kept):
                err = ((r[None, :] - cb[level]) ** 2).sum(1)
                for j in range(k):
                    cands.append((err[j], b * k + j, r - cb[level][j], codes + [j]))
            cands.sort(key=lambda c: (c[0], c[1]))
            kept = [(c[2], c[3]) for c in cands[:beam]]
        out[row] = kept[0][1]
    return out


def reconstruction_error(x, codebooks, codes):
    cb = codebooks.double().numpy()
    rec = sum(cb[level][codes[:, level]] for level in range(cb.shape[0]))
    return ((x.double().numpy() - rec) ** 2).sum(1)


@pytest.mark.parametrize("beam", [2, 5])
@pytest.mark.parametrize("index", [None, torch.int32])
def test_residual_quantize_beam(beam, index):
    """beam > 1: the Rust crate's beam search (65a85f4) against the numpy one above."""
    codebooks = rand(3, 4, 5)
    codebooks[1:] *= 0.5
    for lengths in ([], [5, 0, 7], [33]):
        t = sum(lengths)
        x = rand(t, 5)
        o = None if index is None else offsets_of(lengths, index)
        codes = ops.residual_quantize(x, o, codebooks, beam)
        assert codes.dtype == torch.int32 and codes.shape == (t, 3)
        if t == 0:
            continue
        want = ref_beam(x, codebooks, beam)
        # The same encodings up to near-ties: equal reconstruction errors, and mostly equal codes.
        got_err = reconstruction_error(x, codebooks, codes.numpy())
        want_err = reconstruction_error(x, codebooks, want)
        np.testing.assert_allclose(got_err, want_err, rtol=1e-4, atol=1e-5)
        assert (codes.numpy() == want).all(1).mean() >= 0.9
    # beam = 1 is greedy, and the beam search is never worse than greedy here.
    x = rand(40, 5)
    greedy = ops.residual_quantize(x, None, codebooks)
    assert torch.equal(ops.residual_quantize(x, None, codebooks, 1), greedy)
    wide = ops.residual_quantize(x, None, codebooks, 8)
    assert reconstruction_error(x, codebooks, wide.numpy()).sum() <= reconstruction_error(
        x, codebooks, greedy.numpy()
    ).sum() * (1 + 1e-6)


def ref_sid_embed(codes, codebooks):
    cb = codebooks.double()
    levels, k, d = cb.shape
    out = torch.zeros((codes.shape[0], d), dtype=torch.float64)
    for t in range(codes.shape[0]):
        for level in range(levels):
            c = int(codes[t, level])
            if 0 <= c < k:
                out[t] += cb[level, c]
    return out


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index", [None, torch.int32])
def test_sid_embed(dtype, index):
    levels, k, d = 3, 5, 4
    codebooks = rand(levels, k, d, dtype=dtype)
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    for lengths in LAYOUTS + [[20]]:
        t = sum(lengths)
        # Codes out of range (-1, K, 100) add 0.
        codes = torch.randint(-1, k + 1, (t, levels), dtype=torch.int32)
        if t:
            codes[0, 0] = 100
        o = None if index is None else offsets_of(lengths, index)
        got = ops.sid_embed(codes, o, codebooks)
        assert got.dtype == dtype and got.shape == (t, d)
        want = ref_sid_embed(codes, codebooks)
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_quantize_round_trip_on_nested_tensors():
    nt = torch.nested.nested_tensor([rand(n, 6) for n in (3, 0, 5)], layout=torch.jagged)
    codebooks = rand(2, 8, 6)
    codes = jagged.residual_quantize(nt, codebooks=codebooks)
    assert codes.is_nested and torch.equal(codes.offsets(), nt.offsets())
    assert torch.equal(codes.values(), ops.residual_quantize(nt.values(), None, codebooks))
    emb = jagged.sid_embed(codes, codebooks=codebooks)
    assert emb.is_nested and torch.equal(emb.offsets(), nt.offsets())
    torch.testing.assert_close(emb.values().double(), ref_sid_embed(codes.values(), codebooks), rtol=1e-5, atol=1e-5)
    pq = jagged.product_quantize(nt, centroids=rand(2, 4, 3))
    assert pq.is_nested and pq.values().shape == (8, 2)


def test_sid_embed_gradient():
    codes = torch.tensor([[0, 1], [2, 2], [-1, 0], [1, 7]], dtype=torch.int32)
    cb = rand(2, 3, 4, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda c: ops.sid_embed(codes, None, c), (cb,), **GRADCHECK)
    g = torch.randn(4, 4, dtype=torch.float64)
    cb32 = cb.detach().float().requires_grad_()
    ops.sid_embed(codes, None, cb32).backward(g.float())
    ref = cb.detach().clone().requires_grad_()
    ref_sid_embed_diff(codes, ref).backward(g)
    torch.testing.assert_close(cb32.grad.double(), ref.grad, rtol=1e-5, atol=1e-5)


def ref_sid_embed_diff(codes, cb):
    rows = []
    for t in range(codes.shape[0]):
        acc = torch.zeros(cb.shape[2], dtype=cb.dtype)
        for level in range(cb.shape[0]):
            c = int(codes[t, level])
            if 0 <= c < cb.shape[1]:
                acc = acc + cb[level, c]
        rows.append(acc)
    return torch.stack(rows)


# ---------------------------------------------------------------------------
# Codebook training


def clustered(n_per, centers, noise, seed):
    g = torch.Generator().manual_seed(seed)
    c = centers.repeat_interleave(n_per, 0)
    return (c + noise * torch.randn(c.shape, generator=g, dtype=torch.float64)).float()


def assert_lloyd_fixed_point(x, centroids, tol=1e-4):
    """numpy: each centroid is the mean of the rows nearest to it (k-means converged)."""
    x = x.double().numpy()
    c = centroids.double().numpy()
    _, assign = nearest(x, c)
    for j in range(c.shape[0]):
        rows = x[assign == j]
        if len(rows):
            np.testing.assert_allclose(c[j], rows.mean(0), rtol=tol, atol=tol)


def test_rq_train():
    g = torch.Generator().manual_seed(3)
    centers = torch.randn(8, 6, generator=g, dtype=torch.float64) * 4
    x = clustered(40, centers, 0.05, 4)
    books = ops.rq_train(x, 2, 8, 20)
    assert books.dtype == torch.float32 and books.shape == (2, 8, 6)
    # Level 0 converged on the rows, level 1 on the residuals level 0 leaves.
    assert_lloyd_fixed_point(x, books[0])
    _, a0 = nearest(x.double().numpy(), books[0].double().numpy())
    residual = x - books[0][torch.from_numpy(a0)]
    assert_lloyd_fixed_point(residual, books[1])
    # The clusters are found: the error left is about the noise (D * 0.05^2 per row).
    codes = ops.residual_quantize(x, None, books)
    mse = reconstruction_error(x, books, codes.numpy().astype(np.int64)).mean()
    assert mse <= 2 * 6 * 0.05**2, mse
    # Deterministic per seed; another seed or init trains (possibly) other codebooks but as well.
    assert torch.equal(ops.rq_train(x, 2, 8, 20), books)
    for seed, init in ((7, "k-means++"), (7, "random")):
        other = jagged.rq_train(x, 2, 8, 20, seed=seed, init=init)
        assert other.shape == books.shape
        assert_lloyd_fixed_point(x, other[0])


def test_pq_train():
    g = torch.Generator().manual_seed(5)
    # Two sub-spaces of 3 features, 4 clusters in each.
    centers = torch.randn(4, 6, generator=g, dtype=torch.float64) * 4
    x = clustered(30, centers, 0.05, 6)
    cents = ops.pq_train(x, 2, 4, 15)
    assert cents.dtype == torch.float32 and cents.shape == (2, 4, 3)
    for j in range(2):
        assert_lloyd_fixed_point(x[:, 3 * j : 3 * j + 3], cents[j])
    codes = ops.product_quantize(x, None, cents)
    rec = torch.cat([cents[j][codes[:, j].long()] for j in range(2)], 1)
    assert ((rec.double() - x.double()) ** 2).sum(1).mean() <= 2 * 6 * 0.05**2
    nt = torch.nested.nested_tensor_from_jagged(x, offsets_of([50, 0, 70]))
    assert torch.equal(jagged.pq_train(nt, 2, 4, 15), cents)


def test_training_bad_inputs():
    with pytest.raises(JaggedInputError, match="`x`"):
        ops.rq_train(rand(10, 4).double(), 1, 2)
    with pytest.raises(JaggedInputError, match="K = 8"):
        ops.rq_train(rand(5, 4), 1, 8)
    with pytest.raises(JaggedInputError, match="init"):
        ops.pq_train(rand(10, 4), 2, 2, 5, 1, "kmeans")
    with pytest.raises(JaggedInputError, match="M = 3"):
        ops.pq_train(rand(10, 4), 3, 2)


# ---------------------------------------------------------------------------
# Interactions


def trunc_rows(offsets, max_len):
    """`(b, s, n)` per sequence: its first row and the rows taking part, `n = min(L_b, max_len)`."""
    return [(b, s, min(e - s, max_len)) for b, (s, e) in enumerate(seqs(offsets))]


def ref_dense_bmm(x, offsets, y, max_len):
    out = torch.zeros((x.shape[0], y.shape[2]), dtype=torch.float64)
    for b, s, n in trunc_rows(offsets, max_len):
        out[s : s + n] = x[s : s + n].double() @ y[b].double()
    return out


def ref_jagged_bmm(x, y, offsets, max_len):
    out = torch.zeros((offsets.numel() - 1, x.shape[1], y.shape[1]), dtype=torch.float64)
    for b, s, n in trunc_rows(offsets, max_len):
        out[b] = x[s : s + n].double().T @ y[s : s + n].double()
    return out


def ref_dense_dot(x, offsets, y, max_len):
    out = torch.zeros((x.shape[0], y.shape[1]), dtype=torch.float64)
    for b, s, n in trunc_rows(offsets, max_len):
        out[s : s + n] = x[s : s + n].double() @ y[b].double().T
    return out


def ref_pairwise(x, offsets, max_len):
    values, out_offsets = [], [0]
    for b, s, n in trunc_rows(offsets, max_len):
        xs = x[s : s + n].double()
        for i in range(n):
            for j in range(i + 1, n):
                values.append(xs[i] @ xs[j])
        out_offsets.append(len(values))
    return torch.stack(values) if values else torch.zeros(0, dtype=torch.float64), out_offsets


INTERACTION_TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
MAX_LEN = 4


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_interactions(dtype, index):
    k, m = 5, 3
    tol = INTERACTION_TOL[dtype]
    for lengths in LAYOUTS:
        o = offsets_of(lengths, index)
        t, b = int(o[-1]), len(lengths)
        x = rand(t, k, dtype=dtype)
        y3 = rand(b, k, m, dtype=dtype)
        got = ops.jagged_dense_bmm(x, o, y3, MAX_LEN)
        assert got.dtype == dtype
        torch.testing.assert_close(got.double(), ref_dense_bmm(x, o, y3, MAX_LEN), rtol=tol, atol=tol)
        y2 = rand(t, m, dtype=dtype)
        got = ops.jagged_jagged_bmm(x, y2, o, MAX_LEN)
        torch.testing.assert_close(got.double(), ref_jagged_bmm(x, y2, o, MAX_LEN), rtol=tol, atol=tol)
        yf = rand(b, m, k, dtype=dtype)
        got = ops.jagged_dense_dot(x, o, yf, MAX_LEN)
        torch.testing.assert_close(got.double(), ref_dense_dot(x, o, yf, MAX_LEN), rtol=tol, atol=tol)
        values, new_o = ops.jagged_pairwise_dot(x, o, MAX_LEN)
        want, want_o = ref_pairwise(x, o, MAX_LEN)
        assert new_o.tolist() == want_o and new_o.dtype == index
        torch.testing.assert_close(values.double(), want, rtol=tol, atol=tol)
        # The backward ops.
        dout = rand(t, m, dtype=dtype)
        dx, dy = ops.jagged_dense_bmm_backward(x, o, y3, dout, MAX_LEN)
        xr = x.double().requires_grad_()
        yr = y3.double().requires_grad_()
        ((ref_dense_bmm_diff(xr, o, yr, MAX_LEN) * dout.double()).sum() + 0 * (xr.sum() + yr.sum())).backward()
        torch.testing.assert_close(dx.double(), xr.grad, rtol=tol, atol=tol)
        torch.testing.assert_close(dy.double(), yr.grad, rtol=tol, atol=tol)


def ref_dense_bmm_diff(x, offsets, y, max_len):
    rows = []
    for b, (s, e) in enumerate(seqs(offsets)):
        n = min(e - s, max_len)
        rows += [x[s : s + n] @ y[b], torch.zeros((e - s - n, y.shape[2]), dtype=x.dtype)]
    return torch.cat(rows) if rows else torch.zeros((0, y.shape[2]), dtype=x.dtype)


def test_interactions_tf32_and_dtype_attribute():
    o = offsets_of([3, 0, 6, 1])
    x, y = rand(10, 8), rand(4, 8, 4)
    want = ref_dense_bmm(x, o, y, MAX_LEN)
    # tf32: f32 operands rounded to 10 mantissa bits.
    torch.testing.assert_close(ops.jagged_dense_bmm(x, o, y, MAX_LEN, None, True).double(), want, rtol=5e-3, atol=5e-3)
    # dtype="bf16": computed (and returned) in bf16.
    got = ops.jagged_dense_bmm(x, o, y, MAX_LEN, "bf16")
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.double(), want, rtol=3e-2, atol=3e-2)


def test_interaction_gradients():
    """Gradients through the backward ops (and jagged_dense_dot's through the forward ones; the
    pairwise dot's in torch) against float64 torch references."""
    o = offsets_of([3, 0, 6, 1])
    t, b = 10, 4

    def check(fn, ref, *shapes, tol=1e-4):
        xs = [rand(*sh).requires_grad_() for sh in shapes]
        ys = [x.detach().double().requires_grad_() for x in xs]
        out, want = fn(*xs), ref(*ys)
        g = torch.randn(want.shape, dtype=torch.float64)
        out.backward(g.float())
        want.backward(g)
        for x, y in zip(xs, ys):
            torch.testing.assert_close(x.grad.double(), y.grad, rtol=tol, atol=tol)

    check(lambda x, y: ops.jagged_dense_bmm(x, o, y, MAX_LEN), lambda x, y: ref_dense_bmm_diff(x, o, y, MAX_LEN), (t, 5), (b, 5, 3))

    def jj(x, y):
        return torch.stack([x[s : s + n].T @ y[s : s + n] for _, s, n in trunc_rows(o, MAX_LEN)])

    check(lambda x, y: ops.jagged_jagged_bmm(x, y, o, MAX_LEN), jj, (t, 5), (t, 3))
    check(
        lambda x, y: ops.jagged_dense_dot(x, o, y, MAX_LEN),
        lambda x, y: ref_dense_bmm_diff(x, o, y.transpose(1, 2), MAX_LEN),
        (t, 5),
        (b, 3, 5),
    )

    def pw(x):
        vals = []
        for _, s, n in trunc_rows(o, MAX_LEN):
            for i in range(n):
                for j in range(i + 1, n):
                    vals.append(x[s + i] @ x[s + j])
        return torch.stack(vals)

    check(lambda x: ops.jagged_pairwise_dot(x, o, MAX_LEN)[0], pw, (t, 5))
    # Sequences longer than the closed form's float rounding could trip: n up to 60.
    o2 = offsets_of([60, 2, 33])
    x = rand(95, 3).requires_grad_()
    values, _ = ops.jagged_pairwise_dot(x, o2, 60)
    g = torch.randn(values.shape)
    values.backward(g)
    xr = x.detach().double().requires_grad_()
    vals = []
    for _, s, n in trunc_rows(o2, 60):
        p = xr[s : s + n] @ xr[s : s + n].T
        iu = torch.triu_indices(n, n, 1)
        vals.append(p[iu[0], iu[1]])
    torch.cat(vals).backward(g.double())
    torch.testing.assert_close(x.grad.double(), xr.grad, rtol=1e-4, atol=1e-4)


def test_interactions_nested_and_errors():
    nt = torch.nested.nested_tensor([rand(n, 4) for n in (3, 0, 5)], layout=torch.jagged)
    y = rand(3, 4, 2)
    out = jagged.jagged_dense_bmm(nt, y=y)
    assert out.is_nested
    torch.testing.assert_close(out.values().double(), ref_dense_bmm(nt.values(), nt.offsets(), y, 5), rtol=1e-5, atol=1e-5)
    pairs = jagged.jagged_pairwise_dot(nt)
    assert pairs.is_nested and pairs.offsets().tolist() == [0, 3, 3, 13]
    o = offsets_of([2, 3])
    with pytest.raises(JaggedInputError, match="`y`"):
        ops.jagged_dense_bmm(rand(5, 4), o, rand(2, 4, 3).double(), 4)
    with pytest.raises(JaggedInputError, match="`x`"):
        ops.jagged_dense_bmm(rand(5, 4).double(), o, rand(2, 4, 3), 4)
    with pytest.raises(JaggedInputError, match="`offsets`"):
        ops.jagged_pairwise_dot(rand(5, 4), torch.tensor([0, 3, 2, 5]), 4)
    with pytest.raises(JaggedInputError, match="'y'|`y`"):
        ops.jagged_dense_bmm(rand(5, 4), o, rand(3, 4, 3), 4)  # B = 2
    with pytest.raises(JaggedInputError, match="'dout'|`dout`"):
        ops.jagged_jagged_bmm_backward(rand(5, 4), rand(5, 3), o, rand(2, 4), 4)


# ---------------------------------------------------------------------------
# Event streams: pooling and boosting


def ref_pool(values, offsets, reduce):
    out = torch.zeros((offsets.numel() - 1, *values.shape[1:]), dtype=torch.float64)
    for b, (s, e) in enumerate(seqs(offsets)):
        if e > s:
            x = values[s:e].double()
            out[b] = {"sum": x.sum(0), "mean": x.mean(0), "max": x.amax(0)}[reduce]
    return out


POOL_TOL = {torch.float32: 1e-5, torch.float64: 2e-6, torch.bfloat16: 1e-2}


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("inner", [(), (3,), (2, 2)])
def test_session_and_user_pool(reduce, dtype, inner):
    for lengths in LAYOUTS + [[1500, 0, 3]]:
        for index in (torch.int32, torch.int64):
            so = offsets_of(lengths, index)
            v = rand(int(so[-1]), *inner, dtype=dtype)
            got = ops.session_pool(v, so, reduce)
            want = ref_pool(v, so, reduce)
            assert got.dtype == dtype and got.shape == want.shape
            tol = POOL_TOL[dtype] * (10 if 1500 in lengths else 1)
            torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)
            # Users of these sessions: two sessions, then the rest (an empty user first).
            s = len(lengths)
            uo = torch.tensor([0, 0, min(2, s), s], dtype=index)
            got_u = ops.user_pool(got, uo, reduce)
            torch.testing.assert_close(got_u.double(), ref_pool(got, uo, reduce), rtol=tol, atol=tol)


def test_nested_pooling():
    sessions = [rand(n, 3) for n in (2, 0, 4, 1)]
    nt = torch.nested.nested_tensor(sessions, layout=torch.jagged)
    pooled = jagged.session_pool(nt, reduce="mean")
    want = torch.stack([s.double().mean(0) if len(s) else torch.zeros(3, dtype=torch.float64) for s in sessions])
    torch.testing.assert_close(pooled.double(), want, rtol=1e-5, atol=1e-5)
    users = torch.nested.nested_tensor_from_jagged(pooled, torch.tensor([0, 3, 4]))
    got = jagged.user_pool(users, reduce="max")
    torch.testing.assert_close(got.double(), torch.stack([want[:3].amax(0), want[3]]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_pool_gradients(reduce):
    so = offsets_of([3, 0, 4, 1])
    v = rand(8, 2, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.session_pool(x, so, reduce), (v,), **GRADCHECK)
    uo = offsets_of([2, 0, 2])
    p = rand(4, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: ops.user_pool(x, uo, reduce), (p,), **GRADCHECK)


def ref_event_boost(values, offsets, segment, cond, table, columns):
    out = values.double().clone()
    g, c = table.shape
    for b, (s, e) in enumerate(seqs(offsets)):
        for i in range(s, e):
            seg, cn = int(segment[b]), int(cond[i])
            factor = float(table[seg, cn]) if 0 <= seg < g and 0 <= cn < c else 1.0
            for d in range(values.shape[1]):
                if columns[d]:
                    out[i, d] = out[i, d] * factor
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8])
def test_event_boost(dtype, index, mask_dtype):
    g, c, d = 3, 4, 5
    table = (torch.rand(g, c, dtype=torch.float64) * 2).to(dtype)
    columns = torch.tensor([1, 0, 1, 1, 0]).to(mask_dtype)
    for lengths in LAYOUTS:
        o = offsets_of(lengths, index)
        t, b = int(o[-1]), len(lengths)
        v = rand(t, d, dtype=dtype)
        # Out of range on both sides: factor 1.
        segment = torch.randint(-1, g + 1, (b,), dtype=index)
        cond = torch.randint(-1, c + 1, (t,), dtype=index)
        got = ops.event_boost(v, o, segment, cond, table, columns)
        want = ref_event_boost(v, o, segment, cond, table, columns)
        tol = 1e-6 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_event_boost_nested_and_gradients():
    o = offsets_of([3, 0, 4])
    segment = torch.tensor([1, 0, 5])
    cond = torch.tensor([0, 1, 2, 3, 0, -1, 1])
    columns = torch.tensor([True, False, True])
    table = torch.rand(2, 3, dtype=torch.float64).requires_grad_()
    v = rand(7, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, tb: ops.event_boost(x, o, segment, cond, tb, columns), (v, table), **GRADCHECK
    )
    nt = torch.nested.nested_tensor_from_jagged(v.detach().float(), o)
    cond_nt = torch.nested.nested_tensor_from_jagged(cond, o)
    got = jagged.event_boost(nt, segment=segment, cond=cond_nt, table=table.detach().float(), columns=columns)
    assert got.is_nested
    want = ref_event_boost(v.detach().float(), o, segment, cond, table.detach(), columns)
    torch.testing.assert_close(got.values().double(), want, rtol=1e-6, atol=1e-6)


def ref_boost_sessions(values, session_offsets, user_offsets, segment, cond, table, columns):
    out = values.double().clone()
    g, c = table.shape
    for b, (us, ue) in enumerate(seqs(user_offsets)):
        for s in range(us, ue):
            seg, cn = int(segment[b]), int(cond[s])
            factor = float(table[seg, cn]) if 0 <= seg < g and 0 <= cn < c else 1.0
            for i in range(int(session_offsets[s]), int(session_offsets[s + 1])):
                for d in range(values.shape[1]):
                    if columns[d]:
                        out[i, d] = out[i, d] * factor
    return out


@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_event_boost_sessions(index):
    g, c, d = 2, 3, 4
    table = torch.rand(g, c) * 2
    columns = torch.tensor([1, 1, 0, 1], dtype=torch.uint8)
    # Sessions (an empty one), users of sessions (an empty user).
    for sessions, users in (([], []), ([2, 0, 3, 1, 4], [2, 0, 3]), ([5], [1])):
        so = offsets_of(sessions, index)
        uo = offsets_of(users, index)
        v = rand(int(so[-1]), d)
        segment = torch.randint(-1, g + 1, (len(users),), dtype=index)
        cond = torch.randint(-1, c + 1, (len(sessions),), dtype=index)
        got = ops.event_boost_sessions(v, so, uo, segment, cond, table, columns)
        want = ref_boost_sessions(v, so, uo, segment, cond, table, columns)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)
    so, uo = offsets_of([2, 0, 3, 1]), offsets_of([2, 2])
    segment, cond = torch.tensor([1, 0]), torch.tensor([0, 2, 1, 5])
    vv = rand(6, 4, dtype=torch.float64).requires_grad_()
    tt = torch.rand(2, 3, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, t: ops.event_boost_sessions(x, so, uo, segment, cond, t, columns), (vv, tt), **GRADCHECK
    )
    nt = torch.nested.nested_tensor_from_jagged(vv.detach().float(), so)
    out = jagged.event_boost_sessions(nt, user_offsets=uo, segment=segment, cond=cond, table=tt.detach().float(), columns=columns)
    assert out.is_nested and torch.equal(out.offsets(), so)
    with pytest.raises(JaggedInputError, match="`user_offsets`"):
        ops.event_boost_sessions(vv.detach(), so, torch.tensor([0, 2, 5]), segment, cond, tt.detach(), columns)
    with pytest.raises(JaggedInputError, match="`cond`"):
        ops.event_boost_sessions(vv.detach(), so, uo, segment, cond[:3], tt.detach(), columns)


# ---------------------------------------------------------------------------
# Event streams: session_segment, jagged_topk, event_prune


def ref_session_segment(ts, offsets, gap, surface=None):
    session_offsets, user_offsets, dwell = [0], [0], [0.0] * len(ts)
    moved = lambda i: surface is not None and surface[i] != surface[i - 1]
    for s, e in seqs(offsets):
        starts = [i for i in range(s, e) if i == s or ts[i] - ts[i - 1] > gap or moved(i)]
        for j, st in enumerate(starts):
            end = starts[j + 1] if j + 1 < len(starts) else e
            session_offsets.append(end)
            for i in range(st, end - 1):
                dwell[i] = ts[i + 1] - ts[i]
        user_offsets.append(user_offsets[-1] + len(starts))
    return session_offsets, user_offsets, dwell


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_session_segment(dtype, index):
    gen = torch.Generator().manual_seed(1)
    for lengths in LAYOUTS + [[40, 1, 0, 7]]:
        o = offsets_of(lengths, index)
        t = int(o[-1])
        # Steps of 0..60 (gap 30): a few sessions per user, a step back now and then.
        steps = torch.randint(0, 61, (t,), generator=gen)
        steps[torch.rand(t, generator=gen) < 0.1] *= -1
        ts = torch.cumsum(steps, 0).to(dtype)
        s, u, dwell = ops.session_segment(ts, o, None, 30.0)
        want_s, want_u, want_d = ref_session_segment(ts.tolist(), o, 30)
        assert s.dtype == index and u.dtype == index and dwell.dtype == dtype
        assert s.tolist() == want_s
        assert u.tolist() == want_u
        assert dwell.tolist() == want_d


def test_session_segment_by_surface():
    o = offsets_of([9, 0, 6])
    ts = torch.tensor([0.0, 1, 2, 3, 50, 51, 52, 53, 54, 0, 1, 2, 3, 4, 5])
    surface = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 5, 5, 5, 6, 6, 5], dtype=torch.uint8)
    s, u, dwell = ops.session_segment(ts, o, surface, 30.0)
    want_s, want_u, want_d = ref_session_segment(ts.tolist(), o, 30, surface.tolist())
    assert s.tolist() == want_s and u.tolist() == want_u and dwell.tolist() == want_d
    assert want_s == [0, 2, 4, 5, 9, 12, 14, 15]
    with pytest.raises(JaggedInputError, match="`surface`"):
        ops.session_segment(ts, o, surface[:4], 30.0)
    nt = torch.nested.nested_tensor_from_jagged(ts, o)
    s2, _, _ = jagged.session_segment(nt, gap=30.0, surface=torch.nested.nested_tensor_from_jagged(surface, o))
    assert s2.tolist() == want_s


def test_session_segment_nested():
    nt = torch.nested.nested_tensor([torch.tensor([0.0, 10, 100, 105]), torch.tensor([5.0])], layout=torch.jagged)
    s, u, dwell = jagged.session_segment(nt, gap=50)
    assert s.tolist() == [0, 2, 4, 5] and u.tolist() == [0, 2, 3]
    assert dwell.is_nested and dwell.values().tolist() == [10.0, 0.0, 5.0, 0.0, 0.0]


def ref_topk_rows(scores, offsets, k):
    """Per sequence the rows of the k highest scores (NaN highest, ties to the lower row), in order."""
    rows, out_offsets = [], [0]
    for s, e in seqs(offsets):
        key = lambda i: (0 if np.isnan(scores[i]) else 1, -scores[i] if not np.isnan(scores[i]) else 0, i)
        kept = sorted(sorted(range(s, e), key=key)[:k])
        rows += kept
        out_offsets.append(len(rows))
    return rows, out_offsets


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int32, torch.int64])
@pytest.mark.parametrize("index", [torch.int32, torch.int64])
def test_jagged_topk(dtype, index):
    for lengths in LAYOUTS + [[50, 3]]:
        o = offsets_of(lengths, index)
        t = int(o[-1])
        scores = torch.randint(0, 6, (t,)).to(dtype)  # many ties
        if t > 2 and dtype.is_floating_point:
            scores[1] = float("nan")
        for k in (0, 1, 3, 2000):
            idx, new_o = ops.jagged_topk(scores, o, k)
            want_rows, want_o = ref_topk_rows(scores.double().numpy(), o, k)
            assert idx.dtype == index and new_o.dtype == index
            assert idx.tolist() == want_rows, (lengths, k)
            assert new_o.tolist() == want_o


def test_jagged_topk_nested():
    nt = torch.nested.nested_tensor([torch.tensor([1.0, 3, 2]), torch.tensor([5.0, 4])], layout=torch.jagged)
    top = jagged.jagged_topk(nt, k=2)
    assert top.is_nested
    assert top.values().tolist() == [1, 2, 3, 4] and top.offsets().tolist() == [0, 2, 4]


def ref_prune_rows(scores, offsets, threshold, k):
    top, _ = ref_topk_rows(scores, offsets, len(scores) if k is None else k)
    top = set(top)
    rows, out_offsets = [], [0]
    for s, e in seqs(offsets):
        rows += [i for i in range(s, e) if i in top and (threshold is None or scores[i] >= threshold)]
        out_offsets.append(len(rows))
    return rows, out_offsets


@pytest.mark.parametrize("threshold", [None, 0.25])
@pytest.mark.parametrize("k", [None, 0, 2])
def test_event_prune(threshold, k):
    for lengths in LAYOUTS:
        for index in (torch.int32, torch.int64):
            o = offsets_of(lengths, index)
            t = int(o[-1])
            scores = rand(t)
            if t > 3:
                scores[3] = float("nan")  # fails any threshold, ranks first
            feats = [rand(t, 3), rand(t, dtype=torch.float64), rand(t, 2, 2, dtype=torch.bfloat16)]
            kept, idx, new_o = ops.event_prune(scores, o, feats, threshold, k)
            rows, want_o = ref_prune_rows(scores.double().numpy(), o, threshold, k)
            assert idx.tolist() == rows and new_o.tolist() == want_o and new_o.dtype == index
            assert len(kept) == len(feats)
            for f, got in zip(feats, kept):
                assert got.dtype == f.dtype
                # f64 goes through the kernels in f32 (docs/ops.md, conventions).
                tol = 2e-7 if f.dtype == torch.float64 else 0.0
                torch.testing.assert_close(got, f[rows], rtol=tol, atol=tol)


def test_event_prune_nested_and_gradients():
    o = offsets_of([3, 0, 4])
    scores = torch.tensor([0.5, 0.1, 0.9, 0.3, 0.8, 0.2, 0.7])
    x = rand(7, 2, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(lambda f: ops.event_prune(scores, o, [f], None, 2)[0][0], (x,), **GRADCHECK)
    nt = torch.nested.nested_tensor_from_jagged(scores, o)
    feats, idx = jagged.event_prune(nt, features=[torch.nested.nested_tensor_from_jagged(x.detach(), o)], k=2)
    assert idx.is_nested and idx.values().tolist() == [0, 2, 4, 6] and idx.offsets().tolist() == [0, 2, 2, 4]
    torch.testing.assert_close(feats[0].values(), x.detach()[[0, 2, 4, 6]], rtol=2e-7, atol=2e-7)


def test_event_prune_integer_features():
    o = offsets_of([3, 2])
    scores = torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3])
    feats = [torch.arange(5), torch.arange(10, dtype=torch.int32).view(5, 2), torch.tensor([1, 0, 1, 1, 0], dtype=torch.uint8)]
    kept, _, _ = ops.event_prune(scores, o, feats, None, 1)
    for f, got in zip(feats, kept):
        assert got.dtype == f.dtype and torch.equal(got, f[[1, 4]])


# ---------------------------------------------------------------------------
# Bad inputs: exceptions naming the argument


def test_wrong_dtypes_name_the_argument():
    o = offsets_of([2, 3])
    with pytest.raises(JaggedInputError, match="`x`"):
        ops.product_quantize(torch.ones(5, 4, dtype=torch.int32), o, rand(2, 3, 2))
    with pytest.raises(JaggedInputError, match="`centroids`"):
        ops.product_quantize(rand(5, 4), o, rand(2, 3, 2, dtype=torch.float16))
    with pytest.raises(JaggedInputError, match="`codebooks`"):
        ops.residual_quantize(rand(5, 4), None, rand(2, 3, 4).double())
    with pytest.raises(JaggedInputError, match="`codes`"):
        ops.sid_embed(torch.zeros(5, 2), None, rand(2, 3, 4))
    with pytest.raises(JaggedInputError, match="`values`"):
        ops.session_pool(torch.ones(5, 2, dtype=torch.int64), o, "sum")
    with pytest.raises(JaggedInputError, match="`timestamps`"):
        ops.session_segment(torch.ones(5, dtype=torch.int32), o, None, 1.0)
    with pytest.raises(JaggedInputError, match="`scores`"):
        ops.event_prune(torch.ones(5, dtype=torch.int64), o, [], None, 1)
    args = dict(segment=torch.tensor([0, 1]), cond=torch.zeros(5, dtype=torch.int64), table=rand(2, 2))
    with pytest.raises(JaggedInputError, match="`columns`"):
        ops.event_boost(rand(5, 3), o, args["segment"], args["cond"], args["table"], torch.ones(3))
    with pytest.raises(JaggedInputError, match="`cond`"):
        ops.event_boost(rand(5, 3), o, args["segment"], args["cond"].int(), args["table"], torch.ones(3, dtype=torch.bool))
    with pytest.raises(JaggedInputError, match="`table`"):
        ops.event_boost(rand(5, 3), o, args["segment"], args["cond"], args["table"].double(), torch.ones(3, dtype=torch.bool))
    with pytest.raises(JaggedInputError, match="`offsets`"):
        ops.jagged_topk(rand(5), o.float(), 1)


def test_wrong_shapes_name_the_argument():
    o = offsets_of([2, 3])
    with pytest.raises(JaggedInputError, match="centroids"):
        ops.product_quantize(rand(5, 4), None, rand(3, 3, 2))  # 3 x 2 features != 4
    with pytest.raises(JaggedInputError, match="`codes`"):
        ops.sid_embed(torch.zeros(5, 3, dtype=torch.int32), None, rand(2, 3, 4))
    with pytest.raises(JaggedInputError, match="`segment`"):
        ops.event_boost(rand(5, 3), o, torch.tensor([0]), torch.zeros(5, dtype=torch.int64), rand(2, 2), torch.ones(3, dtype=torch.bool))
    with pytest.raises(JaggedInputError, match=r"`features\[1\]`"):
        ops.event_prune(rand(5), o, [rand(5), rand(4)], None, 1)


def test_bad_offsets_name_the_argument():
    with pytest.raises(JaggedInputError, match="`session_offsets`"):
        ops.session_pool(rand(5, 2), torch.tensor([0, 3, 2, 5]), "sum")  # decreasing
    with pytest.raises(JaggedInputError, match="`user_offsets`"):
        ops.user_pool(rand(3, 2), torch.tensor([0, 1, 4]), "mean")  # ends past S
    with pytest.raises(JaggedInputError, match="`offsets`"):
        ops.product_quantize(rand(5, 4), torch.tensor([1, 5]), rand(2, 3, 2))  # offsets[0] != 0
    with pytest.raises(JaggedInputError, match="`offsets`"):
        ops.session_segment(rand(5), torch.tensor([0, 2, 4]), None, 1.0)  # offsets[B] != T
    with pytest.raises(JaggedInputError, match="`offsets`"):
        ops.event_prune(rand(5), torch.tensor([0, 2, 5, -1]), [], 0.0, None)


def test_bad_attributes():
    with pytest.raises(JaggedInputError, match="beam"):
        ops.residual_quantize(rand(5, 4), None, rand(2, 3, 4), 0)
    with pytest.raises(JaggedInputError, match="reduce"):
        ops.session_pool(rand(5, 2), offsets_of([5]), "median")
    with pytest.raises(JaggedInputError, match="gap"):
        ops.session_segment(torch.arange(5), offsets_of([5]), None, -1.0)
    with pytest.raises(JaggedInputError, match="`k`"):
        ops.jagged_topk(rand(5), offsets_of([5]), -1)


def test_wrong_device_names_the_argument():
    from torch._subclasses.fake_tensor import FakeTensorMode

    from jagged._tensors import run_op

    with FakeTensorMode(allow_non_fake_inputs=True):
        cuda = torch.empty(5, 4, device="cuda")
    with pytest.raises(JaggedInputError, match="`centroids` is on cpu, but argument `x` is on cuda"):
        run_op("product_quantize", {"x": cuda, "centroids": rand(2, 3, 2)}, {})
    with pytest.raises(JaggedInputError, match="`timestamps`.*CPU"):
        run_op("session_segment", {"timestamps": torch.empty(5, device="meta"), "offsets": offsets_of([5])}, {"gap": 1.0})
    with pytest.raises(JaggedInputError, match="not contiguous"):
        ops.session_pool(rand(3, 5).T, offsets_of([5]), "sum")


# ---------------------------------------------------------------------------
# opcheck and torch.compile


def test_opcheck():
    o = offsets_of([3, 0, 4])
    x = rand(7, 4).requires_grad_()
    cases = [
        (ops.product_quantize, (rand(7, 4), o, rand(2, 3, 2))),
        (ops.residual_quantize, (rand(7, 4), None, rand(2, 3, 4), 1)),
        (ops.residual_quantize, (rand(7, 4), o, rand(2, 3, 4), 3)),
        (ops.sid_embed, (torch.randint(0, 3, (7, 2), dtype=torch.int32), o, rand(2, 3, 4).requires_grad_())),
        (ops.rq_train, (rand(9, 4), 2, 3, 2)),
        (ops.pq_train, (rand(9, 4), 2, 3, 2, 7, "random")),
        (ops.jagged_dense_bmm, (x, o, rand(3, 4, 2).requires_grad_(), 3)),
        (ops.jagged_jagged_bmm, (x, rand(7, 2).requires_grad_(), o, 3)),
        (ops.jagged_dense_dot, (x, o, rand(3, 2, 4).requires_grad_(), 3, "f32")),
        (ops.jagged_pairwise_dot, (x, o, 3)),
        (ops.session_pool, (x, o, "mean")),
        (ops.user_pool, (x, o, "max")),
        (
            ops.event_boost,
            (x, o, torch.tensor([0, 1, 0]), torch.randint(0, 2, (7,)), rand(2, 2).requires_grad_(), torch.tensor([1, 0, 1, 1], dtype=torch.uint8)),
        ),
        (
            ops.event_boost_sessions,
            (x, o, offsets_of([2, 1]), torch.tensor([0, 1]), torch.tensor([0, 2, 1]), rand(2, 3).requires_grad_(), torch.tensor([1, 0, 1, 1], dtype=torch.bool)),
        ),
        (ops.session_segment, (torch.tensor([0.0, 5, 50, 1, 2, 90, 91]), o, None, 30.0)),
        (ops.jagged_topk, (rand(7), o, 2)),
        (ops.event_prune, (rand(7), o, [x], 0.0, 2)),
    ]
    for op, args in cases:
        result = torch.library.opcheck(op, args)
        assert all(v == "SUCCESS" for v in result.values()), (op, result)


class EventModel(torch.nn.Module):
    """Sessions from timestamps, the best events, boosted and pooled per session and per user;
    semantic IDs of the pooled rows."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 4) * 0.5)
        self.table = torch.nn.Parameter(torch.rand(2, 3) + 0.5)
        self.codebooks = torch.nn.Parameter(torch.randn(2, 4, 4))

    def forward(self, x, ts, offsets, segment, cond):
        h = torch.tanh(x @ self.w)
        scores = h.sum(1).detach()
        session_offsets, user_offsets, dwell = ops.session_segment(ts, offsets, None, 30.0)
        boosted = ops.event_boost(h, offsets, segment, cond, self.table, torch.tensor([1, 1, 0, 1], dtype=torch.bool))
        sessions = ops.session_pool(boosted * (1 + dwell[:, None] / 100), session_offsets, "mean")
        users = ops.user_pool(sessions, user_offsets, "max")
        (kept,), idx, kept_offsets = ops.event_prune(scores, offsets, [boosted], None, 2)
        best = ops.session_pool(kept, kept_offsets, "sum")
        top, _ = ops.jagged_topk(scores, offsets, 1)
        codes = ops.residual_quantize(users.detach(), None, self.codebooks.detach())
        emb = ops.sid_embed(codes, None, self.codebooks)
        return users + best + emb + h[top].sum(), codes


def event_inputs(lengths, seed):
    g = torch.Generator().manual_seed(seed)
    t, b = sum(lengths), len(lengths)
    x = torch.randn(t, 4, generator=g)
    ts = torch.cumsum(torch.randint(0, 50, (t,), generator=g), 0).float()
    o = offsets_of(lengths)
    return x, ts, o, torch.randint(0, 3, (b,), generator=g), torch.randint(0, 4, (t,), generator=g)


def test_compile_fullgraph_dynamic():
    """Every new op in one module under torch.compile(fullgraph=True, dynamic=True): Dynamo, the fake
    implementations (data-dependent session and kept-row counts), AOTAutograd's forward and backward."""
    torch._dynamo.reset()
    model = EventModel()
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for k, lengths in enumerate([[3, 2, 6, 1], [2, 7, 4, 3, 5, 1]]):  # no empty user: top rows per user
        args = event_inputs(lengths, k)
        want, want_codes = model(*args)
        got, got_codes = compiled(*args)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(got_codes, want_codes)
        model.zero_grad()
        model(*args)[0].sum().backward()
        want_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        compiled(*args)[0].sum().backward()
        for p, w in zip(model.parameters(), want_grads):
            torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-5)


def test_inductor_fullgraph():
    """Inductor around a data-dependent op (jagged_topk), a pooling and the interactions."""
    torch._dynamo.reset()

    def f(scores, values, offsets):
        idx, new_offsets = ops.jagged_topk(scores, offsets, 2)
        pairs, _ = ops.jagged_pairwise_dot(values, offsets, 4)
        dense = ops.jagged_jagged_bmm(values, values, offsets, 4)
        h = ops.jagged_dense_bmm(values, offsets, dense, 4)
        return ops.session_pool(h[idx] * 2 + 1, new_offsets, "mean"), pairs.sum()

    compiled = torch.compile(f, fullgraph=True, dynamic=True)
    for lengths in ([3, 0, 6, 1], [2, 5]):
        o = offsets_of(lengths)
        t = int(o[-1])
        args = (rand(t), rand(t, 3), o)
        torch.testing.assert_close(compiled(*args), f(*args))
