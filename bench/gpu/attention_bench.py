#!/usr/bin/env python3
"""Jagged flash attention benchmark: our kernels, launched through the Python
package (`torch.ops.jagged.jagged_flash_attention` and
`torch.ops.jagged.jagged_flash_attention_backward`), next to PyTorch's
scaled_dot_product_attention on padded inputs (flash backend), with a padding
mask, on nested jagged tensors (varlen flash), the math path, and Triton's
tutorial fused attention forward.

GPU mode (default): CUDA tensors; the package compiles our kernels for the
device (sm_90a on 9.x, else sm_80) on first use and launches them in place
on PyTorch's current stream, where every column runs and where the CUDA
events that time them are recorded (--reps runs, default 50, after --warmup
runs, default 10; each cell is the median with [min-max]). TFLOP/s count
only valid (query, key) pairs: forward 4 * D * H * sum n_b^2 (half when
causal), backward 2.5x that (five products instead of two). Each
configuration is first checked against torch's math SDPA (f32, per
sequence) on a few sequences: the forward output, and the three gradients
through autograd of our op (which calls the backward op timed below).

  ours        forward: jagged_flash_attention(q, k, v, offsets, max_len,
              scale, causal) -> (out, lse); backward:
              jagged_flash_attention_backward(q, k, v, offsets, out, dout,
              lse, ...) -> (dq, dk, dv), the kernels autograd runs. Each
              call includes the package's host work (checks, allocation of
              zeroed outputs and scratch by torch, the async offsets check).
  ours-graph  the same two calls replayed from CUDA graphs (no host work),
              "n/a" when capture fails.
  ours-sm80   our forward compiled for sm_80 (jagged.set_arch("sm_80")) on
              the same device: on a Hopper the mma.sync kernel next to the
              sm_90a one in "ours"; forward only, its output checked against
              ours'. In --dry-run both are the emulator's sm_80 default.

Columns (anchors):
  triton-padded       Triton's tutorial fused attention forward
                      (bench/sass/triton_attention.py, shared with the SASS
                      report) on the zero-padded [B, H, max_len, D] inputs,
                      no padding mask: a speed bound like sdpa-flash-padded;
                      non-causal only (the compact kernel has no causal
                      mask), forward only.
  sdpa-flash-padded   flash backend on zero-padded [B, H, max_len, D] inputs
                      with NO padding mask: padded keys take part in the
                      softmax of the valid rows, so it is a speed bound, not
                      the op's result; its padded work is not credited in
                      TFLOP/s (valid pairs only).
  sdpa-padded-masked  the same padded inputs with a boolean attention mask for
                      the padding (and the causal mask): the padded
                      equivalent of the op; efficient-attention backend (the
                      flash backend takes no mask).
  sdpa-nested         nested jagged tensors (flash backend, varlen), eager:
                      on short or skewed batches its time is mostly host
                      overhead.
  sdpa-nested-graph   the same under CUDA graphs (torch.cuda.graph; forward
                      graph, and the backward captured alone on the
                      forward's stream), "n/a" when capture fails.
  sdpa-math           math backend, padded, with the padding mask.

--dry-run: the same code on CPU tensors at tiny sizes: our op runs through
the package's emulator path (PTX emulator), the torch columns through
torch's CPU kernels (those that have one), timed with the host clock; the
CUDA-graph and Triton columns say "n/a (no GPU)". Every time printed is a
CPU wall time, not a GPU time. Fails (exit 1) when our forward or a
gradient is off torch's math reference by more than the dtype's tolerance.

--filter SUBSTR (repeatable or comma-separated): only the configurations
whose name (e.g. "d128_n4096_full H=16 uniform B=64") contains one of them.
--fwd-only: forward only (backward columns skipped, the check compares the
forward output alone).

Needs `import jagged` (PYTHONPATH=python with the built
python/jagged/_native.abi3.so; bench/gpu/run_attention_bench.sh sets it).

usage: attention_bench.py [--dry-run] [--out FILE] [--heads H] [--dtype bf16|f16]
                          [--reps N] [--warmup N]
                          [--filter SUBSTR[,SUBSTR...]]... [--fwd-only]
"""
import argparse
import bisect
import itertools
import logging
import random
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEADS, WARMUP, REPS = 16, 10, 50
# The scale of every configuration (as the earlier plan-based runs used, for
# comparable numbers; not 1/sqrt(D)).
SCALE = 0.125
# Relative l2 error allowed against the f32 math reference, per dtype (bf16:
# what this script has always used).
TOLERANCE = {"bf16": 2e-2, "f16": 1e-2}
GPU_HEAD_DIMS, GPU_MAX_LENS = (64, 128), (256, 1024, 4096)
DRY_HEAD_DIMS, DRY_MAX_LENS = (64, 128), (40,)
DRY_REPS, DRY_WARMUP = 2, 1
COLUMNS = ["ours", "ours-graph", "ours-sm80", "triton-padded", "sdpa-flash-padded", "sdpa-padded-masked",
           "sdpa-nested", "sdpa-nested-graph", "sdpa-math"]
# Issue 12's targets.
TARGET_FWD_TFLOPS = {128: 600.0, 64: 450.0}
TARGET_SM80_FWD_TFLOPS = 330.0
TARGET_BWD_VS_NESTED = 1.5
TARGET_VS_PADDED_SKEWED = 3.0


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


class Timing:
    """Milliseconds of repeated runs: min, median and max."""

    def __init__(self, ms):
        ms = sorted(ms)
        self.min, self.median, self.max = ms[0], statistics.median(ms), ms[-1]


class Row:
    """One configuration's measurements: column -> (fwd, bwd), each a Timing or a note."""

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


def col_label(col, dry):
    return f"{col}(emu)" if dry and col in ("ours", "ours-sm80") else col


def table_header(columns, dry=False):
    labels = [col_label(c, dry) for c in columns]
    widths = [max(CELL, len(c) + 4) for c in labels]
    head = f"{'config':<40}" + "".join(
        f" | {c + ' fwd':>{w}} | {c + ' bwd':>{w}}" for c, w in zip(labels, widths))
    return head + "\n" + "-" * len(head)


def table_row(r, columns, dry=False):
    widths = [max(CELL, len(col_label(c, dry)) + 4) for c in columns]
    f = r.config["flops"]
    line = f"{r.config['name']:<40}"
    for col, w in zip(columns, widths):
        fwd, bwd = r.cells.get(col, ("-", "-"))
        line += f" | {fmt_cell(fwd, f):>{w}} | {fmt_cell(bwd, 2.5 * f):>{w}}"
    return line


def targets_text():
    return (f"issue 12 targets: forward d128 >= {TARGET_FWD_TFLOPS[128]:.0f}, d64 >= {TARGET_FWD_TFLOPS[64]:.0f}"
            f" TFLOP/s (the sm_80 path on the same card, ours-sm80: >= {TARGET_SM80_FWD_TFLOPS:.0f}); backward >= {TARGET_BWD_VS_NESTED}x nested SDPA's (the faster of sdpa-nested and"
            f" sdpa-nested-graph); >= {TARGET_VS_PADDED_SKEWED:.0f}x sdpa-flash-padded on skewed lengths at every"
            " max_len including 256 (forward and backward)")


def notes(heads, warmup, reps, dtype, dry):
    """What the cells measure, printed above every table."""
    lines = []
    if dry:
        lines += [
            "DRY RUN on the CPU: 'ours(emu)' is our PTX run by the emulator (the package's CPU path),"
            " the torch columns are torch's CPU kernels; every time is a CPU wall time (perf_counter),"
            " NOT a GPU time, and its TFLOP/s mean nothing for the GPU",
        ]
    lines += [
        f"cells: median [min-max] ms of {reps} runs after {warmup} warm-up runs, TFLOP/s at the median",
        f"H = {heads} heads for every D (--heads), {dtype}, scale {SCALE}",
        "TFLOP/s count valid (query, key) pairs only: forward 4 * D * H * sum n_b^2 (half when causal),"
        " backward 2.5x that; the padded columns do more work than they are credited for",
        "ours: torch.ops.jagged.jagged_flash_attention (fwd) and jagged_flash_attention_backward (bwd),"
        " host work of the package included; ours-graph: the same replayed from CUDA graphs;"
        " ours-sm80: our forward compiled for sm_80 on the same device (jagged.set_arch)",
        "triton-padded: Triton's tutorial fused attention forward (bench/sass/triton_attention.py) on the"
        " zero-padded inputs, no padding mask, non-causal only, forward only: a speed bound",
        "sdpa-flash-padded: zero-padded inputs and NO padding mask (padded keys enter the softmax"
        " of valid rows): a speed bound, not the op's result",
        "sdpa-padded-masked: the padded inputs with a boolean padding (and causal) mask,"
        " efficient-attention backend (flash takes no mask)",
        "sdpa-nested: nested jagged tensors (varlen flash), eager; on short or skewed batches mostly host overhead",
        "sdpa-nested-graph: sdpa-nested replayed from CUDA graphs (n/a: capture failed)",
        targets_text(),
    ]
    return "\n".join(lines)


def print_table(rows, columns, out, dry=False):
    emit("\n".join([table_header(columns, dry)] + [table_row(r, columns, dry) for r in rows]), out)


def specs_for(head_dims, max_lens, heads):
    return [{"id": f"d{d}_n{n}_{'causal' if c else 'full'}", "head_dim": d, "heads": heads, "max_len": n,
             "causal": c, "scale": SCALE}
            for d in head_dims for n in max_lens for c in (False, True)]


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
                # An empty sequence and one longer than max_len (truncated).
                lengths = lengths + [0, n + 5]
            yield {
                "name": f"{spec['id']} H={spec['heads']} {kind} B={len(lengths)}",
                "kind": kind,
                "spec": spec,
                "lengths": lengths,
                "flops": fwd_flops(lengths, n, spec["heads"], spec["head_dim"], spec["causal"]),
            }


def target_lines(rows):
    """Issue 12's targets against a GPU run's rows: one line per measured ratio."""
    def ms(row, col, i):
        cell = row.cells.get(col, ("-", "-"))[i]
        return cell.median if isinstance(cell, Timing) else None

    lines = ["targets (issue 12):"]
    for r in rows:
        s, name = r.config["spec"], r.config["name"]
        parts = []
        f = ms(r, "ours", 0)
        if f is not None:
            tf = r.config["flops"] / f / 1e9
            want = TARGET_FWD_TFLOPS.get(s["head_dim"])
            if want:
                parts.append(f"fwd {tf:.0f} TFLOP/s vs >= {want:.0f}: {'met' if tf >= want else 'NOT met'}")
        f = ms(r, "ours-sm80", 0)
        if f is not None:
            tf = r.config["flops"] / f / 1e9
            parts.append(f"fwd sm80 {tf:.0f} TFLOP/s vs >= {TARGET_SM80_FWD_TFLOPS:.0f}: "
                         f"{'met' if tf >= TARGET_SM80_FWD_TFLOPS else 'NOT met'}")
        b = ms(r, "ours", 1)
        nested = [t for t in (ms(r, "sdpa-nested", 1), ms(r, "sdpa-nested-graph", 1)) if t is not None]
        if b is not None and nested:
            x = min(nested) / b
            parts.append(f"bwd {x:.2f}x nested vs >= {TARGET_BWD_VS_NESTED}: "
                         f"{'met' if x >= TARGET_BWD_VS_NESTED else 'NOT met'}")
        if r.config["kind"] == "skewed":
            for i, what in ((0, "fwd"), (1, "bwd")):
                ours, pad = ms(r, "ours", i), ms(r, "sdpa-flash-padded", i)
                if ours is not None and pad is not None:
                    x = pad / ours
                    parts.append(f"{what} {x:.2f}x padded flash vs >= {TARGET_VS_PADDED_SKEWED:.0f}: "
                                 f"{'met' if x >= TARGET_VS_PADDED_SKEWED else 'NOT met'}")
        lines.append(f"  {name}: " + ("; ".join(parts) if parts else "nothing measured"))
    return lines


# ------------------------------------------------------------------ the run


def load_triton(dev):
    """(module, None) with bench/sass/triton_attention.py imported, or (None, why not)."""
    if dev.type != "cuda":
        return None, "n/a (no GPU)"
    try:
        sys.path.insert(0, str(ROOT / "bench" / "sass"))
        import triton_attention  # noqa: PLC0415 - Triton and the GPU only here
        return triton_attention, None
    except Exception as e:  # noqa: BLE001
        return None, f"n/a (no triton: {type(e).__name__})"


def run(cfgs, out, fwd_only, heads, warmup, reps, dtype_name, dry):
    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError as e:
        emit(f"attention_bench: needs PyTorch ({e}), in --dry-run too", out)
        return 2

    # torch's warnings (prototype nested tensors, backends turned off, the
    # reasons nested SDPA gives for each backend it rejects) are noise here:
    # a column that fails prints its own error.
    warnings.filterwarnings("ignore")
    logging.getLogger("torch").setLevel(logging.ERROR)
    try:
        import jagged  # noqa: F401 - registers torch.ops.jagged.*
    except ImportError as e:
        emit(f"attention_bench: cannot import jagged ({e}): set PYTHONPATH=python with the built "
             "python/jagged/_native.abi3.so (bench/gpu/run_attention_bench.sh does)", out)
        return 2
    ops = torch.ops.jagged
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype_name]
    tol = TOLERANCE[dtype_name]

    if dry:
        dev = torch.device("cpu")
        emit(f"device: CPU (dry run, emulator); torch {torch.__version__}; jagged from "
             f"{Path(jagged.__file__).parent}", out)
    else:
        if not torch.cuda.is_available():
            emit("attention_bench: torch sees no CUDA device (use --dry-run on a machine without a GPU)", out)
            return 2
        dev = torch.device("cuda")
        emit(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__} (cuda {torch.version.cuda}); "
             f"jagged from {Path(jagged.__file__).parent}", out)
    triton_mod, triton_na = load_triton(dev)
    if triton_mod is not None:
        emit(f"triton {triton_mod.triton.__version__} (tutorial forward: BLOCK_M {triton_mod.BLOCK_M}, "
             f"BLOCK_N {triton_mod.BLOCK_N}, {triton_mod.NUM_STAGES} stages)", out)
    emit(notes(heads, warmup, reps, dtype_name, dry), out)
    emit(table_header(COLUMNS, dry), out)

    cuda = dev.type == "cuda"
    stream = torch.cuda.current_stream() if cuda else None
    na_gpu = "n/a (no GPU)"

    def timed(fn, on=None):
        if not cuda:
            for _ in range(warmup):
                fn()
            times = []
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            return Timing(times)
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

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def empty_cache():
        if cuda:
            torch.cuda.empty_cache()

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

    rows, failures = [], []
    ours_graph_broken = None
    for cfg in cfgs:
        s = cfg["spec"]
        H, D, N, causal, scale = s["heads"], s["head_dim"], s["max_len"], s["causal"], s["scale"]
        lengths = cfg["lengths"]
        B, T = len(lengths), sum(lengths)
        row = Row(cfg)
        torch.manual_seed(0)
        q, k, v, dout = (torch.randn(T, H, D, device=dev, dtype=dtype) for _ in range(4))
        starts = [0] + list(itertools.accumulate(lengths))
        offs = torch.tensor(starts, device=dev, dtype=torch.int32)

        def fwd():
            return ops.jagged_flash_attention(q, k, v, offs, N, scale, causal, "softmax", None)

        def report_failure(label, e):
            msg = str(e).splitlines()[0] if str(e) else ""
            emit(f"  {label}: {type(e).__name__}: {msg[:160]}", out)

        try:
            o, lse = fwd()
            sync()

            def bwd():
                return ops.jagged_flash_attention_backward(q, k, v, offs, o, dout, lse, N, scale, causal,
                                                           "softmax")

            # Gradients through autograd of our op (it calls the backward op).
            if not fwd_only:
                leaves = [x.detach().clone().requires_grad_() for x in (q, k, v)]
                ya, _ = ops.jagged_flash_attention(*leaves, offs, N, scale, causal, "softmax", None)
                dq, dk, dv = torch.autograd.grad(ya, leaves, dout)
                del ya, leaves
                sync()
            # Check some sequences against torch's math SDPA (f32, per
            # sequence): the first 8 and the longest. Errors are
            # ||got - want|| / ||want|| per tensor over all checked rows
            # together: a single short sequence can have an all-zero reference
            # gradient (length 1: dq = 0), where a per-sequence ratio would
            # divide rounding noise by zero. Rows past max_len are not compared.
            longest = max(range(B), key=lambda b: lengths[b])
            checked = sorted(set(range(min(B, 8))) | {longest})
            npairs = 1 if fwd_only else 4
            err2, ref2 = [0.0] * npairs, [0.0] * npairs
            for b in checked:
                n = min(lengths[b], N)
                if n == 0:
                    continue
                sl = slice(starts[b], starts[b] + n)
                qs, ks, vs = (x[sl].float().transpose(0, 1).clone().requires_grad_() for x in (q, k, v))
                with sdpa_kernel(SDPBackend.MATH):
                    ref = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale)
                pairs = [(o[sl], ref.transpose(0, 1))]
                if not fwd_only:
                    ref.backward(dout[sl].float().transpose(0, 1))
                    pairs += [(dq[sl], qs.grad.transpose(0, 1)), (dk[sl], ks.grad.transpose(0, 1)),
                              (dv[sl], vs.grad.transpose(0, 1))]
                for i, (got, want) in enumerate(pairs):
                    err2[i] += ((got.float() - want).norm() ** 2).item()
                    ref2[i] += (want.norm() ** 2).item()
            errs = [(e / max(r, 1e-30)) ** 0.5 for e, r in zip(err2, ref2)]
            worst = max(errs)
            ok = worst <= tol and all(e == e for e in errs)
            detail = " ".join(f"{name} {e:.1e}" for name, e in zip(("out", "dq", "dk", "dv"), errs))
            note = (f"check {'ok' if ok else 'FAIL'} {worst:.1e} <= {tol:g} ({detail}; "
                    f"{len(checked)} seqs vs math SDPA f32)")
            if not ok:
                failures.append(f"{cfg['name']}: {note}")
            if not fwd_only:
                del dq, dk, dv
            row.cells["ours"] = (timed(fwd), "-" if fwd_only else timed(bwd))
        except Exception as e:  # noqa: BLE001 - report and go on
            note = f"ours failed: {type(e).__name__}: {str(e)[:300]}"
            failures.append(f"{cfg['name']}: {note}")
            row.cells["ours"] = ("error", "error")
            o = lse = None
        emit(f"{cfg['name']}: {note}", out)

        # Ours compiled for sm_80 on the same device; forward only.
        if o is None:
            row.cells["ours-sm80"] = ("-", "-")
        else:
            try:
                jagged.set_arch("sm_80")
                o80, _ = fwd()
                err = ((o80.float() - o.float()).norm() / o.float().norm().clamp_min(1e-30)).item()
                if not err <= tol:
                    failures.append(f"{cfg['name']}: ours-sm80 output off ours by {err:.1e} > {tol:g}")
                del o80
                row.cells["ours-sm80"] = (timed(fwd), "-")
            except Exception as e:  # noqa: BLE001 - report and go on
                report_failure("ours-sm80", e)
                failures.append(f"{cfg['name']}: ours-sm80 failed: {type(e).__name__}: {str(e)[:300]}")
                row.cells["ours-sm80"] = ("error", "-")
            finally:
                jagged.set_arch(None)
            sync()

        # Ours replayed from CUDA graphs (no host work per call).
        if not cuda:
            row.cells["ours-graph"] = (na_gpu, na_gpu)
        elif o is None:
            row.cells["ours-graph"] = ("-", "-")
        elif ours_graph_broken:
            row.cells["ours-graph"] = (ours_graph_broken, ours_graph_broken)
        else:
            side = torch.cuda.Stream()
            t_f, t_b = "n/a", "-" if fwd_only else "n/a"
            try:
                t_f = timed(cuda_graph(fwd, side))
                if not fwd_only:
                    t_b = timed(cuda_graph(bwd, side))
            except Exception as e:  # noqa: BLE001
                t_f = t_f if isinstance(t_f, Timing) else f"n/a {type(e).__name__}"
                report_failure("ours-graph", e)
                # Not retried on the next configurations: a failed capture
                # once is enough risk to the context.
                ours_graph_broken = "n/a (capture failed before)"
            row.cells["ours-graph"] = (t_f, t_b)
            sync()
            empty_cache()

        def padded(x):
            p = torch.zeros(B, N, H, D, device=dev, dtype=x.dtype)
            for b, l in enumerate(lengths):
                n = min(l, N)
                p[b, :n] = x[starts[b]:starts[b] + n]
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
            empty_cache()

        # Triton's tutorial forward on the padded inputs (no mask, non-causal).
        if triton_mod is None:
            row.cells["triton-padded"] = (triton_na, "-")
        elif causal:
            row.cells["triton-padded"] = ("n/a (non-causal kernel)", "-")
        elif N % triton_mod.BLOCK_M:
            row.cells["triton-padded"] = (f"n/a (max_len % {triton_mod.BLOCK_M})", "-")
        else:
            try:
                qp, kp, vp = (padded(x).detach() for x in (q, k, v))
                op_ = torch.empty_like(qp)
                m = torch.empty(B * H * N, device=dev, dtype=torch.float32)
                warps = 8 if D >= 128 else 4
                grid = (N // triton_mod.BLOCK_M, B * H)

                def tri():
                    triton_mod.attn_fwd[grid](qp, kp, vp, op_, m, scale, D, D, D, D, N, HEAD_DIM=D,
                                              BLOCK_M=triton_mod.BLOCK_M, BLOCK_N=triton_mod.BLOCK_N,
                                              num_warps=warps, num_stages=triton_mod.NUM_STAGES)
                tri()
                with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                    want = F.scaled_dot_product_attention(qp[:2], kp[:2], vp[:2], scale=scale)
                err = ((op_[:2].float() - want.float()).norm() / want.float().norm()).item()
                t = timed(tri)
                row.cells["triton-padded"] = (t if err <= tol else f"FAIL {err:.1e}", "-")
                emit(f"  triton-padded: {warps} warps, vs flash SDPA on the same padded inputs "
                     f"{err:.1e} ({'ok' if err <= tol else 'FAIL'})", out)
                del qp, kp, vp, op_, m
            except Exception as e:  # noqa: BLE001
                row.cells["triton-padded"] = (f"n/a {type(e).__name__}", "-")
                report_failure("triton-padded", e)
            empty_cache()

        torch_case("sdpa-flash-padded", lambda: (padded(q), padded(k), padded(v), None),
                   SDPBackend.FLASH_ATTENTION)
        torch_case("sdpa-padded-masked", lambda: (padded(q), padded(k), padded(v), padding_mask()),
                   SDPBackend.EFFICIENT_ATTENTION)

        cut = [min(l, N) for l in lengths]

        def nested(hints=False):
            # Truncate each sequence to max_len, as the op does. With `hints`
            # the sequence-length bounds are given (no device-to-host read of
            # the offsets, which a CUDA graph capture cannot do).
            idx = torch.cat([torch.arange(o, o + c, device=dev) for o, c in zip(starts[:-1], cut)])
            offc = torch.tensor([0] + list(itertools.accumulate(cut)), device=dev, dtype=torch.int64)
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
        label = "sdpa-nested-graph"
        if not cuda:
            row.cells[label] = (na_gpu, na_gpu)
        else:
            t_f, t_b = "n/a", "-" if fwd_only else "n/a"
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
            sync()
            empty_cache()

        rows.append(row)
        emit(table_row(row, COLUMNS, dry), out)
        del q, k, v, dout, o, lse
        empty_cache()
    emit("\nall configurations:", out)
    emit(notes(heads, warmup, reps, dtype_name, dry), out)
    print_table(rows, COLUMNS, out, dry)
    if dry:
        emit("targets (issue 12): not evaluated in a dry run (CPU wall times)", out)
    else:
        emit("\n".join(target_lines(rows)), out)
    if failures:
        emit("FAILED:\n" + "\n".join(failures), out)
        return 1
    emit(f"{'dry run' if dry else 'run'} ok: {len(rows)} configurations, every check passed", out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU tensors (emulator) at tiny sizes; CPU wall times")
    ap.add_argument("--out", default=None, help="also append the output to this file")
    ap.add_argument("--heads", type=int, default=HEADS, help=f"number of heads, for every D (default {HEADS})")
    ap.add_argument("--dtype", choices=sorted(TOLERANCE), default="bf16", help="q, k, v dtype (default bf16)")
    ap.add_argument("--reps", type=int, default=None,
                    help=f"timed runs per cell (default {REPS}; {DRY_REPS} in a dry run)")
    ap.add_argument("--warmup", type=int, default=None,
                    help=f"untimed runs first (default {WARMUP}; {DRY_WARMUP} in a dry run)")
    ap.add_argument("--filter", action="append", default=[],
                    help="only configurations whose name contains this (repeatable or comma-separated)")
    ap.add_argument("--fwd-only", action="store_true",
                    help="skip our backward and the torch backward columns")
    args = ap.parse_args()
    reps = args.reps if args.reps is not None else (DRY_REPS if args.dry_run else REPS)
    warmup = args.warmup if args.warmup is not None else (DRY_WARMUP if args.dry_run else WARMUP)
    if args.heads < 1 or reps < 1 or warmup < 0:
        ap.error("--heads and --reps must be at least 1, --warmup at least 0")
    filters = [f for arg in args.filter for f in arg.split(",") if f]
    if args.dry_run:
        specs = specs_for(DRY_HEAD_DIMS, DRY_MAX_LENS, args.heads)
    else:
        specs = specs_for(GPU_HEAD_DIMS, GPU_MAX_LENS, args.heads)
    cfgs = list(configs(specs, tiny=args.dry_run, filters=filters))
    if not cfgs:
        print("attention_bench: no configuration selected", file=sys.stderr)
        return 2
    return run(cfgs, args.out, args.fwd_only, args.heads, warmup, reps, args.dtype, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
