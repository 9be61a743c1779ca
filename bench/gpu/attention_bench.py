#!/usr/bin/env python3
"""Jagged flash attention benchmark: our generated kernels (forward and
backward) next to PyTorch's scaled_dot_product_attention on padded inputs
(flash backend), on nested jagged tensors, and the math path.

GPU mode (default): loads the PTX and launch metadata written by
`cargo run --release -p jagged-codegen --example attention_bench -- plan DIR`
(DIR defaults to bench/gpu/attention_prebuilt) with CuPy, launches on
tensors allocated by PyTorch, on PyTorch's current stream, times everything
with CUDA events recorded on that stream (--reps runs, default 50, after
--warmup runs, default 10; each cell is the median with [min-max]) and
prints TFLOP/s counting only valid (query, key) pairs: forward
4 * D * H * sum n_b^2 (half when causal), backward 2.5x that (five
products instead of two). Each configuration is first checked against
PyTorch on a few sequences (forward output and the three gradients).

--heads H (default 16, for every D): the number of heads. The kernels are
specialized for H, so the plan's specs must have been built with it: the
script stops before touching the GPU when a selected spec has another H.

Columns (besides ours):
  sdpa-flash-padded   flash backend on zero-padded [B, H, max_len, D] inputs
                      with NO padding mask: padded keys take part in the
                      softmax of the valid rows, so it is a speed bound, not
                      the op's result; its padded work is not credited in
                      TFLOP/s (valid pairs only).
  sdpa-padded-masked  the same padded inputs with a boolean attention mask for
                      the padding (and the causal mask): the padded
                      equivalent of the op; efficient-attention backend (the
                      flash backend takes no mask).
  sdpa-nested         nested jagged tensors (flash backend), eager: on short
                      or skewed batches its time is mostly host overhead.
  sdpa-nested-graph   the same under CUDA graphs (torch.cuda.graph; forward
                      graph, and the backward captured alone on the
                      forward's stream), "n/a" when capture fails.
  sdpa-math           math backend, padded, with the padding mask.

--dry-run: the same configurations, table and FLOP counting on tiny sizes
with the emulator as the backend (the Rust example's `emulate` mode, run
through cargo); no PyTorch, no CuPy, no NumPy needed. Fails when a forward
differs from jagged-ir's reference or a gradient is not finite.

--filter SUBSTR (repeatable or comma-separated): only the configurations
whose name (e.g. "d128_n4096_full H=16 uniform B=64") contains one of them.
--fwd-only: forward only (our backward and the torch backward columns are
skipped; the check compares the forward output alone), for quick A/B runs
of two plans.

usage: attention_bench.py [--dry-run] [--plan DIR] [--out FILE] [--heads H]
                          [--reps N] [--warmup N]
                          [--filter SUBSTR[,SUBSTR...]]... [--fwd-only]
"""
import argparse
import bisect
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADS, WARMUP, REPS = 16, 10, 50
COLUMNS = ["ours", "sdpa-flash-padded", "sdpa-padded-masked", "sdpa-nested", "sdpa-nested-graph",
           "sdpa-math"]


def zipf_lengths(batch, max_len, rng):
    """P(L = l) proportional to 1 / l on [1, max_len]."""
    cdf, total = [], 0.0
    for l in range(1, max_len + 1):
        total += 1.0 / l
        cdf.append(total)
    return [min(bisect.bisect_left(cdf, rng.random() * total) + 1, max_len) for _ in range(batch)]


def lengths_for(kind, batch, max_len, seed):
    rng = random.Random(seed)
    if kind == "uniform":
        return [rng.randint(1, max_len) for _ in range(batch)]
    return zipf_lengths(batch, max_len, rng)


def fwd_flops(lengths, max_len, heads, dim, causal):
    pairs = sum(min(l, max_len) ** 2 for l in lengths)
    return 4 * dim * heads * pairs / (2 if causal else 1)


def eval_size(e, sizes):
    if isinstance(e, str):
        return sizes[e]
    (op, arg), = e.items()
    if op == "const":
        return arg
    if op == "add":
        return eval_size(arg[0], sizes) + eval_size(arg[1], sizes)
    if op == "mul":
        return eval_size(arg[0], sizes) * eval_size(arg[1], sizes)
    if op == "ceil_div":
        return -(-eval_size(arg[0], sizes) // arg[1])
    raise ValueError(op)


class Timing:
    """Milliseconds of repeated runs: min, median and max."""

    def __init__(self, ms):
        ms = sorted(ms)
        self.min, self.median, self.max = ms[0], statistics.median(ms), ms[-1]


class Row:
    """One configuration's measurements: name -> (fwd ms, bwd ms) or a note."""

    def __init__(self, config):
        self.config = config
        self.cells = {}


CELL = 30


def fmt_cell(t, flops):
    """`median [min-max] TFLOP/s` (at the median), or a note."""
    if isinstance(t, str):
        return t[:CELL]
    return f"{t.median:.3f} [{t.min:.3f}-{t.max:.3f}] {flops / t.median / 1e9:6.1f}"


def emit(text, out):
    print(text, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(text + "\n")


def table_header(columns):
    widths = [max(CELL, len(c) + 4) for c in columns]
    head = f"{'config':<40}" + "".join(
        f" | {c + ' fwd':>{w}} | {c + ' bwd':>{w}}" for c, w in zip(columns, widths))
    return head + "\n" + "-" * len(head)


def table_row(r, columns):
    widths = [max(CELL, len(c) + 4) for c in columns]
    f = r.config["flops"]
    line = f"{r.config['name']:<40}"
    for col, w in zip(columns, widths):
        fwd, bwd = r.cells.get(col, ("-", "-"))
        line += f" | {fmt_cell(fwd, f):>{w}} | {fmt_cell(bwd, 2.5 * f):>{w}}"
    return line


def notes(heads, warmup, reps):
    """What the cells measure, printed above every table."""
    return "\n".join([
        f"cells: median [min-max] ms of {reps} runs after {warmup} warm-up runs, TFLOP/s at the median",
        f"H = {heads} heads for every D (--heads), bf16",
        "TFLOP/s count valid (query, key) pairs only: forward 4 * D * H * sum n_b^2 (half when causal),"
        " backward 2.5x that; the padded columns do more work than they are credited for",
        "sdpa-flash-padded: zero-padded inputs and NO padding mask (padded keys enter the softmax"
        " of valid rows): a speed bound, not the op's result",
        "sdpa-padded-masked: the padded inputs with a boolean padding (and causal) mask,"
        " efficient-attention backend (flash takes no mask)",
        "sdpa-nested: nested jagged tensors, eager; on short or skewed batches mostly host overhead",
        "sdpa-nested-graph: sdpa-nested replayed from CUDA graphs (n/a: capture failed)",
    ])


def print_table(rows, columns, out):
    emit("\n".join([table_header(columns)] + [table_row(r, columns) for r in rows]), out)


def configs(specs, tiny, filters=()):
    """The configurations of `specs`; with `filters`, only those whose name
    contains one of the substrings."""
    for cfg in all_configs(specs, tiny):
        if not filters or any(f in cfg["name"] for f in filters):
            yield cfg


def all_configs(specs, tiny):
    for spec in specs:
        for kind in ("uniform", "skewed"):
            n = spec["max_len"]
            batch = 3 if tiny else (1 << 18) // n
            lengths = lengths_for(kind, batch, n, seed=2 * n + (kind == "skewed"))
            if tiny:
                lengths = lengths + [0, n + 5]
            yield {
                "name": f"{spec['id']} H={spec['heads']} {kind} B={len(lengths)}",
                "spec": spec,
                "lengths": lengths,
                "flops": fwd_flops(lengths, n, spec["heads"], spec["head_dim"], spec["causal"]),
            }


# ------------------------------------------------------------------ dry run


DRY_REPS = 2


def dry_run(out, filters, fwd_only, heads):
    specs = [
        {"id": f"d64_n40_{m}", "head_dim": 64, "heads": heads, "max_len": 40, "causal": m == "causal"}
        for m in ("full", "causal")
    ]
    cargo = os.environ.get("CARGO", "cargo")
    rows, failures = [], []
    for cfg in configs(specs, tiny=True, filters=filters):
        s = cfg["spec"]
        cmd = [cargo, "run", "-q", "-p", "jagged-codegen", "--example", "attention_bench", "--",
               "emulate", str(s["head_dim"]), str(s["heads"]), str(s["max_len"]),
               "1" if s["causal"] else "0", ",".join(map(str, cfg["lengths"])), str(DRY_REPS)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            failures.append(f"{cfg['name']}: {res.stderr.strip()}")
            continue
        m = json.loads(res.stdout.strip().splitlines()[-1])
        if not (m["fwd_rel_err"] <= 1e-2 and (fwd_only or m["grads_finite"])):
            failures.append(f"{cfg['name']}: {m}")
        row = Row(cfg)
        ms = lambda secs: Timing([x * 1e3 for x in secs])  # noqa: E731
        row.cells["ours(emu)"] = (ms(m["fwd_s"]), "-" if fwd_only else ms(m["bwd_s"]))
        rows.append(row)
    emit("dry run: emulator backend, times are emulator wall times (not GPU)", out)
    emit(notes(heads, 0, DRY_REPS), out)
    print_table(rows, ["ours(emu)"] + COLUMNS[1:], out)
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        return 1
    print(f"dry run ok: {len(rows)} configurations")
    return 0


# ------------------------------------------------------------------ GPU


class PlanError(Exception):
    """The plan cannot run the requested configurations."""


def plan_configs(plan, heads, filters):
    """The configurations of the plan's specs built for `heads` that `filters`
    select. PlanError when a selected spec exists only for another number of
    heads (the kernels are specialized for H), or when nothing is selected."""
    manifest = json.loads((plan / "manifest.json").read_text())
    selected = list(configs(manifest["specs"], tiny=False, filters=filters))
    have = {c["spec"]["id"] for c in selected if c["spec"]["heads"] == heads}
    lacking = sorted({f"{c['spec']['id']} (H={c['spec']['heads']})"
                      for c in selected if c["spec"]["id"] not in have})
    if lacking:
        raise PlanError(f"plan {plan} has no H={heads} build of {', '.join(lacking)}: rebuild the plan "
                        f"for H={heads}, or pass --heads to match it")
    chosen = [c for c in selected if c["spec"]["heads"] == heads]
    if not chosen:
        raise PlanError(f"plan {plan}: no configuration selected")
    return chosen


def gpu_run(plan, cfgs, out, fwd_only, heads, warmup, reps):
    import cupy as cp
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name()
    banner = f"device: {name}; torch {torch.__version__}; cupy {cp.__version__}"
    emit(banner, out)
    emit(notes(heads, warmup, reps), out)
    emit(table_header(COLUMNS), out)
    modules = {}
    # Everything (our CuPy launches included) runs on this stream, and the
    # timing events are recorded on it.
    stream = torch.cuda.current_stream()
    cp_stream = cp.cuda.ExternalStream(stream.cuda_stream) if stream.cuda_stream else cp.cuda.Stream.null

    def timed(fn, on=None):
        on = on or stream
        with torch.cuda.stream(on):
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(reps):
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record(on)
                fn()
                b.record(on)
                b.synchronize()
                times.append(a.elapsed_time(b))
        return Timing(times)

    def launcher(kernel, tensors, sizes, scale):
        mod = modules.setdefault(kernel["ptx"], cp.RawModule(path=str(plan / kernel["ptx"])))
        outs = [torch.empty(max(eval_size(o["elems"], sizes), 1),
                            dtype=torch.bfloat16 if o["dtype"] == "bf16" else torch.float32, device=dev)
                for o in kernel["outputs"]]
        scratch = [torch.empty(max(eval_size(b, sizes), 16), dtype=torch.uint8, device=dev)
                   for b in kernel["scratch"]]
        inputs = [tensors[n] for n in kernel["inputs"]]
        calls = []
        for l in kernel["launches"]:
            f = mod.get_function(l["entry"])
            if l["smem"] > 48 * 1024:
                f.max_dynamic_shared_size_bytes = l["smem"]
            items = eval_size(l["grid"]["items"], sizes)
            grid = max(1, min(-(-items // l["grid"]["per_block"]), l["grid"]["max"]))
            args = []
            for kind, v in l["params"]:
                if kind == "in":
                    args.append(np.uint64(inputs[v].data_ptr()))
                elif kind == "out":
                    args.append(np.uint64(outs[v].data_ptr()))
                elif kind == "scratch":
                    args.append(np.uint64(scratch[v].data_ptr()))
                elif kind == "u64":
                    args.append(np.uint64(eval_size(v, sizes)))
                else:
                    args.append(np.float32(scale))
            calls.append((f, (grid,), (l["block"],), tuple(args), l["smem"]))

        def run():
            with cp_stream:
                for f, g, b, a, smem in calls:
                    f(g, b, a, shared_mem=smem)
        return run, outs

    def cuda_graph(fn, side):
        """`fn` captured into a CUDA graph on the stream `side` after three
        warm-up runs there; returns the graph's replay."""
        side.wait_stream(stream)
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        side.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=side):
            fn()
        return g.replay

    rows = []
    for cfg in cfgs:
        s = cfg["spec"]
        H, D, N, causal, scale = s["heads"], s["head_dim"], s["max_len"], s["causal"], s["scale"]
        lengths = cfg["lengths"]
        B, T = len(lengths), sum(lengths)
        row = Row(cfg)
        torch.manual_seed(0)
        q, k, v, dout = (torch.randn(T, H, D, device=dev, dtype=torch.bfloat16) for _ in range(4))
        offs = torch.tensor([0] + list(np.cumsum(lengths)), device=dev, dtype=torch.int32)
        sizes = {"B": B, "T": T, "N": N}
        tensors = {"q": q, "k": k, "v": v, "offsets": offs, "dout": dout}
        try:
            fwd, (o, lse) = launcher(s["fwd"], tensors, sizes, scale)
            fwd()
            torch.cuda.synchronize()
            tensors["out"], tensors["lse"] = o, lse
            if not fwd_only:
                bwd, (dq, dk, dv) = launcher(s["bwd"], tensors, sizes, scale)
                bwd()
                torch.cuda.synchronize()
            # Check some sequences against PyTorch (f32 math, per sequence): the
            # first 8 and the longest. Errors are ||got - want|| / ||want|| per
            # tensor over all checked rows together: a single short sequence can
            # have an all-zero reference gradient (length 1: dq = 0), where a
            # per-sequence ratio would divide rounding noise by zero.
            starts = [0] + list(np.cumsum(lengths))
            longest = max(range(B), key=lambda b: lengths[b])
            checked = sorted(set(range(min(B, 8))) | {longest})
            err2, ref2 = [0.0] * 4, [0.0] * 4
            for b in checked:
                n = min(lengths[b], N)
                sl = slice(int(starts[b]), int(starts[b]) + n)
                qs, ks, vs = (x[sl].float().transpose(0, 1).clone().requires_grad_() for x in (q, k, v))
                ref = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale)
                pairs = [(o.view(T, H, D)[sl], ref.transpose(0, 1))]
                if not fwd_only:
                    ref.backward(dout[sl].float().transpose(0, 1))
                    pairs += [(dq.view(T, H, D)[sl], qs.grad.transpose(0, 1)),
                              (dk.view(T, H, D)[sl], ks.grad.transpose(0, 1)),
                              (dv.view(T, H, D)[sl], vs.grad.transpose(0, 1))]
                for i, (got, want) in enumerate(pairs):
                    err2[i] += ((got.float() - want).norm() ** 2).item()
                    ref2[i] += (want.norm() ** 2).item()
            errs = [(e / max(r, 1e-30)) ** 0.5 for e, r in zip(err2[:len(pairs)], ref2)]
            worst = max(errs)
            detail = " ".join(f"{name} {e:.1e}" for name, e in zip(("out", "dq", "dk", "dv"), errs))
            note = f"check {'ok' if worst <= 2e-2 else 'FAIL'} {worst:.1e} ({detail}; {len(checked)} seqs)"
            row.cells["ours"] = (timed(fwd), "-" if fwd_only else timed(bwd))
        except Exception as e:  # noqa: BLE001 - report and go on
            note = f"ours failed: {type(e).__name__}: {e}"
            row.cells["ours"] = ("error", "error")
        emit(f"{cfg['name']}: {note}", out)

        def padded(x):
            p = torch.zeros(B, N, H, D, device=dev, dtype=x.dtype)
            start = 0
            for b, l in enumerate(lengths):
                n = min(l, N)
                p[b, :n] = x[start:start + n]
                start += l
            return p.transpose(1, 2).contiguous().requires_grad_()

        def padding_mask():
            """[B, 1, 1, N] (or [B, 1, N, N] when causal) bool: key j of row i
            takes part (j < n_b, and j <= i when causal)."""
            valid = torch.zeros(B, N, dtype=torch.bool, device=dev)
            for b, l in enumerate(lengths):
                valid[b, :min(l, N)] = True
            mask = valid[:, None, None, :]
            if causal:
                mask = mask & torch.ones(N, N, dtype=torch.bool, device=dev).tril()
            return mask

        def report_failure(label, e):
            msg = str(e).splitlines()[0] if str(e) else ""
            emit(f"  {label}: {type(e).__name__}: {msg[:160]}", out)

        def torch_case(label, make, backend, prep=lambda x: x):
            try:
                qq, kk, vv, mask = make()
                with sdpa_kernel(backend):
                    def f():
                        return F.scaled_dot_product_attention(prep(qq), prep(kk), prep(vv), attn_mask=mask,
                                                              is_causal=causal and mask is None, scale=scale)
                    t_f = timed(f)
                    y = f()
                    g = torch.ones_like(y) if y.is_nested else torch.randn_like(y)
                    t_b = "-" if fwd_only else timed(
                        lambda: torch.autograd.grad(y, (qq, kk, vv), g, retain_graph=True))
                row.cells[label] = (t_f, t_b)
            except Exception as e:  # noqa: BLE001
                row.cells[label] = (f"n/a {type(e).__name__}", "n/a")
                report_failure(label, e)
            torch.cuda.empty_cache()

        torch_case("sdpa-flash-padded", lambda: (padded(q), padded(k), padded(v), None),
                   SDPBackend.FLASH_ATTENTION)
        torch_case("sdpa-padded-masked", lambda: (padded(q), padded(k), padded(v), padding_mask()),
                   SDPBackend.EFFICIENT_ATTENTION)

        cut = [min(l, N) for l in lengths]

        def nested(hints=False):
            # Truncate each sequence to max_len, as the op does. With `hints`
            # the sequence-length bounds are given (no device-to-host read of
            # the offsets, which a CUDA graph capture cannot do).
            idx = torch.cat([torch.arange(int(o), int(o) + c, device=dev)
                             for o, c in zip(offs[:-1].tolist(), cut)])
            offc = torch.tensor([0] + list(np.cumsum(cut)), device=dev, dtype=torch.int64)
            kw = {"min_seqlen": min(cut), "max_seqlen": max(cut)} if hints else {}
            make = lambda x: torch.nested.nested_tensor_from_jagged(  # noqa: E731
                x[idx].contiguous(), offc, **kw).requires_grad_()
            return make(q), make(k), make(v), None
        nested_prep = lambda x: x.transpose(1, 2)  # noqa: E731
        torch_case("sdpa-nested", nested, SDPBackend.FLASH_ATTENTION, prep=nested_prep)

        if B * H * N * N <= (1 << 32):
            torch_case("sdpa-math", lambda: (padded(q), padded(k), padded(v), padding_mask()),
                       SDPBackend.MATH)
        else:
            row.cells["sdpa-math"] = ("skip (memory)", "skip")

        # Nested SDPA replayed from CUDA graphs: no host work per call. The
        # forward graph, then the backward alone: the forward runs on the
        # capture stream, so autograd puts the backward kernels on it.
        label, t_f, t_b = "sdpa-nested-graph", "n/a", "-" if fwd_only else "n/a"
        side = torch.cuda.Stream()
        try:
            qq, kk, vv, _ = nested(hints=True)
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                def f():
                    return F.scaled_dot_product_attention(nested_prep(qq), nested_prep(kk), nested_prep(vv),
                                                          is_causal=causal, scale=scale)
                t_f = timed(cuda_graph(f, side))
                if not fwd_only:
                    side.wait_stream(stream)
                    with torch.cuda.stream(side):
                        y = f()
                        g = torch.ones_like(y)
                    t_b = timed(cuda_graph(
                        lambda: torch.autograd.grad(y, (qq, kk, vv), g, retain_graph=True), side))
        except Exception as e:  # noqa: BLE001
            t_f = t_f if isinstance(t_f, Timing) else f"n/a {type(e).__name__}"
            report_failure(label, e)
        row.cells[label] = (t_f, t_b)
        torch.cuda.synchronize()
        torch.cuda.empty_cache()

        rows.append(row)
        emit(table_row(row, COLUMNS), out)
        del q, k, v, dout
        tensors.clear()
        torch.cuda.empty_cache()
    emit("\nall configurations:", out)
    emit(notes(heads, warmup, reps), out)
    print_table(rows, COLUMNS, out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--plan", default=str(ROOT / "bench" / "gpu" / "attention_prebuilt"))
    ap.add_argument("--out", default=None, help="also append the output to this file")
    ap.add_argument("--heads", type=int, default=HEADS,
                    help=f"number of heads, for every D (default {HEADS}); the plan must be built for it")
    ap.add_argument("--reps", type=int, default=REPS, help=f"timed runs per cell (default {REPS})")
    ap.add_argument("--warmup", type=int, default=WARMUP, help=f"untimed runs first (default {WARMUP})")
    ap.add_argument("--filter", action="append", default=[],
                    help="only configurations whose name contains this (repeatable or comma-separated)")
    ap.add_argument("--fwd-only", action="store_true",
                    help="skip our backward and the torch backward columns")
    args = ap.parse_args()
    if args.heads < 1 or args.reps < 1 or args.warmup < 0:
        ap.error("--heads and --reps must be at least 1, --warmup at least 0")
    filters = [f for arg in args.filter for f in arg.split(",") if f]
    if args.dry_run:
        return dry_run(args.out, filters, args.fwd_only, args.heads)
    plan = Path(args.plan)
    try:
        cfgs = plan_configs(plan, args.heads, filters)
    except (PlanError, OSError) as e:
        print(f"attention_bench: {e}", file=sys.stderr)
        return 2
    return gpu_run(plan, cfgs, args.out, args.fwd_only, args.heads, args.warmup, args.reps)


if __name__ == "__main__":
    sys.exit(main())
