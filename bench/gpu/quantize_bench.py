#!/usr/bin/env python3
"""Semantic-ID quantization benchmark: encode throughput (vectors/s) of our
generated kernels for residual_quantize (greedy and beam search) and
product_quantize next to a PyTorch baseline on the same data, with a check
that the codes agree and a roofline ratio.

Ours: the PTX and launch plans `jagc emit --graph FILE.jir --plan` wrote
into bench/gpu/side_events_prebuilt (bench/gpu/prepare_side_events.sh, run
where Rust is), launched through jagc_plan.py (CuPy on PyTorch's current
stream, else libcuda via ctypes) exactly as the front functions of
src/ops/quantize.rs do: a dense [N, D] input as sequences of 16 rows
(offsets [0, 16, .., N] i32); greedy RQ one residual_quantize_level graph
per level (4 kernels each: |c|^2, the argmin with the contraction in its
loop, the codes, the new residual), the codebook and its transpose per
level and the one-hot level vector prepared once outside the timing (they
are weights); beam search one residual_quantize_beam_level graph per level
(1 then min(beam, K^l) kept encodings) then residual_quantize_best;
product_quantize one graph (|c|^2, the argmin) on centroids_t [M, S, K].
Outputs and scratch buffers are allocated once, outside the timing.

Baselines (PyTorch, same data, same device):
  greedy RQ   torch.cdist(r, codebook[l]).argmin(1), r -= codebook[l][code]
  beam RQ     cdist(r_b, c)^2 over every (kept encoding, codeword), topk
              smallest `beam`, gather of the survivors' residuals and codes
  PQ          per sub-space torch.cdist + argmin (M launches of each)

Checks: codes compared row by row; a row that differs must be a near-tie
(greedy / PQ: at the first differing level or sub-space the two choices'
squared distances, in f64, within 1e-5 relative of each other); beam: the
final reconstruction errors of differing rows within 1e-4 relative, and the
mean error no worse than torch's. A failing check prints MISMATCH and the
script exits 1.

Each cell: median [min-max] ms of --reps runs after --warmup (CUDA events
on the current stream), vectors/s at the median, TFLOP/s (2 N K D per level,
the distance products only; beam: kept x K candidates), and the roofline
ratio: minimum bytes (x read once, codes written once, codebooks read once)
/ time over the copy bandwidth measured in the same run (dst.copy_(src) of
1 GiB, read + write).

--dry-run (no GPU): the same code on the CPU at tiny N: our plans run in
the PTX emulator (`jagc emu` per launch, memory checker on), the baselines
in torch on the CPU, the same checks; then prints what the GPU run would
do (sizes, every launch with its grid, bytes allocated).

usage: quantize_bench.py [--dry-run] [--plan DIR] [--out FILE] [--n N]
                         [--beam-n N] [--reps N] [--warmup N] [--only rq,beam,pq]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import jagc_plan as jp  # noqa: E402

K, D, LEVELS, BEAM = 256, 128, 4, 4
PQ_M = (8, 16)
MAX_S = 12  # seconds of timed runs per cell at most (fewer reps, >= 3)
DENSE_ROWS = 16  # src/ops/quantize.rs: a dense input as sequences of 16 rows


def plan_names():
    names = [f"rq_level_k{K}_d{D}_l{LEVELS}", f"rq_beam_best_bo{BEAM}_l{LEVELS}"]
    kept = 1
    for _ in range(LEVELS):
        nxt = min(BEAM, kept * K)
        n = f"rq_beam_k{K}_d{D}_l{LEVELS}_bi{kept}_bo{nxt}"
        if n not in names:
            names.append(n)
        kept = nxt
    names += [f"pq_m{m}_k{K}_s{D // m}" for m in PQ_M]
    return names


def dense_offsets(n, dev):
    import torch
    o = list(range(0, n, DENSE_ROWS)) + [n]
    return torch.tensor(o, dtype=torch.int32, device=dev)


def sizes_for(n):
    return {"B": -(-n // DENSE_ROWS), "T": n, "max_len": 128}

# ------------------------------------------------------------------ data


def kmeans(rows, k, g, iters=6):
    """Lloyd iterations from k sampled rows (an empty cluster keeps its
    centroid): codebooks shaped like trained ones, with no duplicates."""
    import torch
    c = rows[torch.randperm(rows.shape[0], generator=g)[:k].to(rows.device)].clone()
    for _ in range(iters):
        a = torch.cdist(rows, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, a, rows)
        cnt = torch.bincount(a, minlength=k).to(rows.dtype)[:, None]
        c = torch.where(cnt > 0, sums / cnt.clamp_min(1), c)
    return c


def make_data(n, dev, seed, train=1 << 16):
    """x [n, D] (a Gaussian mixture: rows near 4096 random centers) and
    codebooks [LEVELS, K, D] by k-means on the greedy residuals of a
    training set of 2^16 other rows, PQ centroids [M, K, D / M] by k-means
    per sub-space of the same rows."""
    import torch
    g = torch.Generator(device="cpu").manual_seed(seed)
    centers = torch.randn(4096, D, generator=g)
    pick = torch.randint(0, 4096, (n,), generator=g)
    x = (centers[pick] + 0.5 * torch.randn(n, D, generator=g)).to(dev)
    # A training set of the same distribution, not the rows encoded.
    train_pick = torch.randint(0, 4096, (train,), generator=g)
    sub = (centers[train_pick] + 0.5 * torch.randn(train, D, generator=g)).to(dev)
    books = []
    r = sub
    for _ in range(LEVELS):
        c = kmeans(r, K, g)
        books.append(c)
        r = r - c[torch.cdist(r, c).argmin(1)]
    pq = {}
    for m in PQ_M:
        s = D // m
        pq[m] = torch.stack([kmeans(sub[:, i * s:(i + 1) * s].contiguous(), K, g) for i in range(m)])
    return x, torch.stack(books), pq

# ------------------------------------------------------------------ torch


def torch_rq(x, books):
    import torch
    r, codes = x, []
    for c in books:
        code = torch.cdist(r, c).argmin(1)
        codes.append(code)
        r = r - c[code]
    return torch.stack(codes, 1)


def torch_beam(x, books, beam):
    import torch
    n, d = x.shape
    k = books.shape[1]
    r = x[:, None, :]
    codes = torch.zeros(n, 1, 0, dtype=torch.long, device=x.device)
    for c in books:
        bi = r.shape[1]
        dist = torch.cdist(r.reshape(n * bi, d), c).square().view(n, bi * k)
        bo = min(beam, bi * k)
        _, m = torch.topk(dist, bo, dim=1, largest=False, sorted=True)
        parent, code = m // k, m % k
        codes = torch.cat([codes.gather(1, parent[..., None].expand(-1, -1, codes.shape[2])),
                           code[..., None]], 2)
        r = r.gather(1, parent[..., None].expand(-1, -1, d)) - c[code]
    return codes[:, 0, :]


def torch_pq(x, cents):
    import torch
    m, _, s = cents.shape
    return torch.stack([torch.cdist(x[:, i * s:(i + 1) * s], cents[i]).argmin(1) for i in range(m)], 1)

# ------------------------------------------------------------------ ours


class OursRQ:
    """Greedy residual_quantize: one Program per level, chained."""

    def __init__(self, backend, plans, x, books, dev):
        import torch
        n = x.shape[0]
        plan = plans[f"rq_level_k{K}_d{D}_l{LEVELS}"]
        offsets = dense_offsets(n, dev)
        zeros = torch.zeros(n, LEVELS, dtype=torch.int32, device=dev)
        self.progs, residual, codes = [], x, zeros
        self.keep = [offsets, zeros]
        for l in range(LEVELS):
            level = torch.tensor([int(j == l) for j in range(LEVELS)], dtype=torch.int32, device=dev)
            c = books[l].contiguous()
            ins = {"offsets": offsets, "residual": residual, "codebook": c,
                   "codebook_t": c.t().contiguous(), "codes": codes, "level": level}
            p = jp.Program(backend, plan, ins, sizes_for(n))
            self.keep.append(ins)
            self.progs.append(p)
            codes, residual = p.outputs[0], p.outputs[1]
        self.codes = codes

    def __call__(self):
        for p in self.progs:
            p.run()
        return self.codes


class OursBeam:
    def __init__(self, backend, plans, x, books, beam, dev):
        import torch
        n = x.shape[0]
        offsets = dense_offsets(n, dev)
        i32 = dict(dtype=torch.int32, device=dev)
        self.progs, self.keep = [], [offsets]
        residual = x
        codes = torch.zeros(n, LEVELS, **i32)
        kept = 1
        for l in range(LEVELS):
            cand = kept * K
            nxt = min(beam, cand)
            plan = plans[f"rq_beam_k{K}_d{D}_l{LEVELS}_bi{kept}_bo{nxt}"]
            m = torch.arange(cand, **i32)
            e = torch.arange(nxt * LEVELS, **i32)
            ins = {"offsets": offsets, "residual": residual, "codebook": books[l].contiguous(),
                   "codes": codes, "parent_of": m // K, "code_of": m % K,
                   "slot_of": e // LEVELS, "level": (e % LEVELS == l).to(torch.int32)}
            p = jp.Program(backend, plan, ins, sizes_for(n))
            self.keep.append(ins)
            self.progs.append(p)
            codes, residual = p.outputs[0], p.outputs[1]
            kept = nxt
        best = jp.Program(backend, plans[f"rq_beam_best_bo{kept}_l{LEVELS}"],
                          {"offsets": offsets, "codes": codes,
                           "first": torch.zeros(1, **i32)}, sizes_for(n))
        self.progs.append(best)
        self.codes = best.outputs[0]

    def __call__(self):
        for p in self.progs:
            p.run()
        return self.codes


class OursPQ:
    def __init__(self, backend, plans, x, cents, dev):
        n = x.shape[0]
        m, _, s = cents.shape
        offsets = dense_offsets(n, dev)
        ins = {"offsets": offsets, "x": x, "centroids": cents,
               "centroids_t": cents.transpose(1, 2).contiguous()}
        self.keep = ins
        self.prog = jp.Program(backend, plans[f"pq_m{m}_k{K}_s{s}"], ins, sizes_for(n))

    def __call__(self):
        return self.prog.run()[0]

# ------------------------------------------------------------------ checks


def check_greedy(x, books, ours, ref, rel=1e-5):
    """(rows equal, rows differing, rows differing beyond a near-tie, max
    relative gap of the differing ones)."""
    import torch
    n = x.shape[0]
    ours = ours.view(n, -1).long()
    diff = (ours != ref).any(1)
    rows = diff.nonzero().flatten()
    bad, worst = 0, 0.0
    if rows.numel():
        xs = x[rows].double()
        o, t = ours[rows], ref[rows]
        first = (o != t).int().argmax(1)
        r = xs.clone()
        for l in range(books.shape[0]):
            c = books[l].double()
            here = first == l
            if here.any():
                ro = r[here]
                do = (ro - c[o[here, l]]).square().sum(1)
                dt = (ro - c[t[here, l]]).square().sum(1)
                scale = ro.square().sum(1) + c[o[here, l]].square().sum(1)
                gap = (do - dt).abs() / scale.clamp_min(1e-30)
                worst = max(worst, float(gap.max()))
                bad += int((gap > rel).sum())
            r = r - c[o[:, l]]
    return n - rows.numel(), rows.numel(), bad, worst


def check_pq(x, cents, ours, ref, rel=1e-5):
    import torch
    n = x.shape[0]
    m, _, s = cents.shape
    ours = ours.view(n, m).long()
    diff = ours != ref
    rows = diff.any(1).nonzero().flatten()
    bad, worst = 0, 0.0
    if rows.numel():
        r, mm = diff.nonzero(as_tuple=True)
        xs = x.view(n, m, s)[r, mm].double()
        c = cents.double()
        do = (xs - c[mm, ours[r, mm]]).square().sum(1)
        dt = (xs - c[mm, ref[r, mm]]).square().sum(1)
        gap = (do - dt).abs() / (xs.square().sum(1) + c[mm, ours[r, mm]].square().sum(1)).clamp_min(1e-30)
        worst = float(gap.max())
        bad = int((gap > rel).sum())
    return n - rows.numel(), rows.numel(), bad, worst


def recon_error(x, books, codes):
    """Per row |x - sum_l c_l[code_l]|^2 in f64."""
    r = x.double()
    for l in range(books.shape[0]):
        r = r - books[l].double()[codes[:, l].long()]
    return r.square().sum(1)


def check_beam(x, books, ours, ref, rel=1e-4):
    n = x.shape[0]
    ours = ours.view(n, -1).long()
    diff = (ours != ref).any(1)
    eo, et = recon_error(x, books, ours), recon_error(x, books, ref)
    gap = ((eo - et) / et.clamp_min(1e-30))[diff]
    worse = int((gap > rel).sum()) if gap.numel() else 0
    worst = float(gap.abs().max()) if gap.numel() else 0.0
    return n - int(diff.sum()), int(diff.sum()), worse, worst, float(eo.mean()), float(et.mean())

# ------------------------------------------------------------------ run


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--plan", default=str(jp.ROOT / "bench/gpu/side_events_prebuilt"))
    ap.add_argument("--out")
    ap.add_argument("--n", type=int, default=1 << 20, help="rows for greedy RQ and PQ")
    ap.add_argument("--beam-n", type=int, default=1 << 17, help="rows for beam search")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default="rq,beam,pq")
    args = ap.parse_args()
    only = set(args.only.split(","))
    import torch
    out = args.out
    plans = jp.load_plans(args.plan, plan_names())
    build = Path(args.plan) / "BUILD.txt"
    gpu_n, gpu_beam_n = args.n, args.beam_n
    if args.dry_run:
        jagc = jp.find_jagc()
        if jagc is None:
            raise SystemExit("--dry-run needs jagc (cargo build --release --bin jagc)")
        backend = jp.EmuBackend(jagc)
        dev, cuda = "cpu", False
        n, beam_n, reps, warmup = 40, 24, 1, 0  # 3 sequences, the last one partial
        torch.set_num_threads(2)
        jp.emit(f"quantize_bench --dry-run: our plans in the PTX emulator ({jagc}), torch "
                f"{torch.__version__} on the CPU; N = {n} (beam N = {beam_n}); times are CPU wall "
                f"times, not GPU ones", out)
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: use --dry-run")
        backend = jp.gpu_backend()
        dev, cuda = "cuda", True
        n, beam_n, reps, warmup = gpu_n, gpu_beam_n, args.reps, args.warmup
        jp.emit(f"quantize_bench: {torch.cuda.get_device_name()}, torch {torch.__version__}, "
                f"launcher {backend.name}; N = {n}, beam N = {beam_n}; {reps} reps after {warmup}", out)
    jp.emit(f"plans: {args.plan} ({build.read_text().strip().replace(chr(10), '; ') if build.exists() else 'no BUILD.txt'})", out)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    bw, bwt = jp.copy_bandwidth(cuda, nbytes=(1 << 30) if cuda else (1 << 24), reps=reps, warmup=warmup)
    jp.emit(f"copy bandwidth: {bw:.0f} GB/s (dst.copy_(src), read + write; best of {max(reps, 1)}: {bwt})", out)
    failures = []
    header = f"{'configuration':<34} {'impl':<10} {'time':>32} {'Mvec/s':>9} {'TFLOP/s':>8} {'min GB/s':>9} {'roof':>6}"
    jp.emit(header, out)

    speedups = []

    def speedup(name, t_ours, t_torch, target=None):
        x = t_torch.median / t_ours.median
        speedups.append((name, x, target))
        goal = ""
        if target:
            goal = f" (issue 10's target >= {target}x on an H100: {'met' if x >= target else 'NOT met'})"
        jp.emit(f"  speedup ours vs torch: {x:.2f}x{goal}", out)

    def row(name, impl, t, rows, flops, min_bytes):
        s = t.median * 1e-3
        jp.emit(f"{name:<34} {impl:<10} {str(t):>32} {rows / s / 1e6:9.2f} {flops / s / 1e12:8.2f} "
                f"{min_bytes / s / 1e9:9.1f} {min_bytes / s / 1e9 / bw:6.3f}", out)
        return t

    x, books, pq = make_data(max(n, beam_n), dev, seed=7, train=(1 << 16) if cuda else 4096)

    def run_rq():
        xs = x[:n].contiguous()
        name = f"rq greedy K={K} D={D} L={LEVELS} N={n}"
        t0 = time.perf_counter()
        ours = OursRQ(backend, plans, xs, books, dev)
        codes = ours()
        ref = torch_rq(xs, books)
        eq, ne, bad, worst = check_greedy(xs, books, codes, ref)
        flops = 2 * n * K * D * LEVELS
        mb = n * D * 4 + n * LEVELS * 4 + LEVELS * K * D * 4
        verdict = "ok" if bad == 0 else "MISMATCH"
        jp.emit(f"{name}: check: {eq}/{n} rows equal, {ne} differ ({bad} beyond a near-tie, max rel "
                f"gap {worst:.1e}): {verdict}  [{time.perf_counter() - t0:.1f} s]", out)
        if bad:
            failures.append(name)
        to = row(name, "ours", jp.timed(ours, warmup, reps, cuda, MAX_S), n, flops, mb)
        tt = row(name, "torch", jp.timed(lambda: torch_rq(xs, books), warmup, reps, cuda, MAX_S), n, flops, mb)
        speedup(name, to, tt, target=None if args.dry_run else 10)
        del ours

    def run_beam():
        xb = x[:beam_n].contiguous()
        name = f"rq beam={BEAM} K={K} D={D} L={LEVELS} N={beam_n}"
        t0 = time.perf_counter()
        ours = OursBeam(backend, plans, xb, books, BEAM, dev)
        codes = ours()
        ref = torch_beam(xb, books, BEAM)
        eq, ne, worse, worst, eo, et = check_beam(xb, books, codes, ref)
        greedy_err = float(recon_error(xb, books, torch_rq(xb, books)).mean())
        kept, flops = 1, 0
        for _ in range(LEVELS):
            flops += 3 * beam_n * kept * K * D  # sub, square, add per candidate feature
            kept = min(BEAM, kept * K)
        mb = beam_n * D * 4 + beam_n * LEVELS * 4 + LEVELS * K * D * 4
        ok = worse == 0 and eo <= et * (1 + 1e-4)
        jp.emit(f"{name}: check: {eq}/{beam_n} rows equal, {ne} differ ({worse} with a worse error "
                f"beyond 1e-4, max rel {worst:.1e}); mean error ours {eo:.6g} torch {et:.6g} (greedy "
                f"{greedy_err:.6g}): {'ok' if ok else 'MISMATCH'}  [{time.perf_counter() - t0:.1f} s]", out)
        if not ok:
            failures.append(name)
        to = row(name, "ours", jp.timed(ours, warmup, reps, cuda, MAX_S), beam_n, flops, mb)
        tt = row(name, "torch", jp.timed(lambda: torch_beam(xb, books, BEAM), warmup, reps, cuda, MAX_S),
                 beam_n, flops, mb)
        speedup(name, to, tt)
        del ours

    def run_pq():
        xs = x[:n].contiguous()
        for m in PQ_M:
            name = f"pq M={m} K={K} D={D} N={n}"
            t0 = time.perf_counter()
            ours = OursPQ(backend, plans, xs, pq[m], dev)
            codes = ours()
            ref = torch_pq(xs, pq[m])
            eq, ne, bad, worst = check_pq(xs, pq[m], codes, ref)
            flops = 2 * n * K * D
            mb = n * D * 4 + n * m * 4 + K * D * 4
            jp.emit(f"{name}: check: {eq}/{n} rows equal, {ne} differ ({bad} beyond a near-tie, max "
                    f"rel gap {worst:.1e}): {'ok' if bad == 0 else 'MISMATCH'}  "
                    f"[{time.perf_counter() - t0:.1f} s]", out)
            if bad:
                failures.append(name)
            to = row(name, "ours", jp.timed(ours, warmup, reps, cuda, MAX_S), n, flops, mb)
            tt = row(name, "torch", jp.timed(lambda: torch_pq(xs, pq[m]), warmup, reps, cuda, MAX_S), n, flops, mb)
            speedup(name, to, tt)
            del ours

    # Greedy RQ first (issue 10's target), then PQ, then beam search: a
    # timeout cuts the least important. A config that fails is reported
    # and the others still run.
    for key, fn in (("rq", run_rq), ("pq", run_pq), ("beam", run_beam)):
        if key not in only:
            continue
        try:
            fn()
        except Exception as e:  # report, go on with the next
            import traceback
            traceback.print_exc()
            jp.emit(f"ERROR in {key}: {type(e).__name__}: {e}", out)
            failures.append(f"{key} (error)")
        if cuda:
            torch.cuda.empty_cache()
    jp.emit("roof = (minimum bytes / time) / copy bandwidth; TFLOP/s count the distance "
            "products only (beam: 3 flops per candidate feature)", out)
    jp.emit("summary, torch / ours: " + ", ".join(f"{n}: {x:.2f}x" for n, x, _ in speedups)
            + (" (emulator vs CPU torch: not a GPU comparison)" if args.dry_run else ""), out)
    if args.dry_run:
        jp.emit(f"emulator launches: {backend.launches}", out)
        describe_gpu_run(plans, gpu_n, gpu_beam_n, args, out)
    if failures:
        jp.emit("FAILED: " + ", ".join(failures), out)
        return 1
    jp.emit("quantize_bench: all checks ok", out)
    return 0


def describe_gpu_run(plans, n, beam_n, args, out):
    """What the GPU run launches, per configuration, at its sizes."""
    jp.emit(f"\n== the GPU run: python3 bench/gpu/quantize_bench.py --n {n} --beam-n {beam_n} "
            f"--reps {args.reps} --warmup {args.warmup}", out)
    total = 0
    for name, p in plans.items():
        nn = beam_n if "beam" in name else n
        sizes = sizes_for(nn)
        per = sum(jp.eval_expr(e, sizes) * jp.ELEM_BYTES[dt] for e, dt, _ in p.outputs) + \
            sum(jp.eval_expr(e, sizes) for e in p.scratch)
        copies = LEVELS if name.startswith("rq_level") else (
            (LEVELS - 1) if name.endswith(f"bi{BEAM}_bo{BEAM}") else 1)
        total += per * copies
        jp.emit(f"-- {name} x{copies} at N={nn} (B={sizes['B']}): {per / 2**20:.1f} MiB outputs+scratch each", out)
        jp.emit(p.describe(sizes), out)
    jp.emit(f"our buffers: {total / 2**30:.2f} GiB besides x ({n * D * 4 / 2**30:.2f} GiB); torch's cdist "
            f"[N, K] f32 per level: {n * K * 4 / 2**30:.2f} GiB, beam [N*beam, K]: "
            f"{beam_n * BEAM * K * 4 / 2**30:.2f} GiB", out)


if __name__ == "__main__":
    sys.exit(main())
