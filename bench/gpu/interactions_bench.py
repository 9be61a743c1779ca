#!/usr/bin/env python3
"""Jagged feature-interaction benchmark: our generated kernels for the ops of
`jagged::ops::interactions` (jagged_dense_bmm, jagged_jagged_bmm,
jagged_dense_dot, jagged_pairwise_dot and the two backward ops) next to
torch.bmm on zero-padded [B, max_len, D] tensors.

GPU mode (default): loads the PTX and launch metadata written by
`cargo run --release --example interactions_plan -- plan DIR [sm_80|sm_90a]`
(DIR defaults to bench/gpu/interactions_prebuilt) with CuPy, launches on
tensors allocated by PyTorch on its current stream, times both sides with
CUDA events recorded on that stream (--reps runs, default 50, after
--warmup runs, default 10; each cell is the median with [min-max] in ms)
and prints TFLOP/s counting only the valid rows (2 * D * D per valid row and
product; the padded side does the same useful work plus the padding).
Each configuration is first checked against the padded torch result on
the valid rows.

Columns:
  ours          the generated kernels (every launch of the op's plan)
  torch-padded  torch.bmm (or matmul) on zero-padded [B, max_len, D]
                inputs, padding included (the usual way to run these ops)
  pad+bmm       the same plus the jagged -> padded copy and back
                (torch.nested's to_padded_tensor / indexing), i.e. what a
                jagged op replaces end to end

--dry-run: the same configurations, table and FLOP counting on tiny sizes
with the emulator as the backend (the example's `emulate` mode, run through
cargo); no PyTorch, no CuPy, no NumPy needed. Fails when an output differs
from jagged-ir's f64 reference by more than the dtype's tolerance.

--filter SUBSTR (repeatable or comma-separated): only the configurations
whose name (e.g. "jagged_dense_bmm bf16 d128 n1024 zipf B=256") contains one.

usage: interactions_bench.py [--dry-run] [--plan DIR] [--out FILE]
                             [--reps N] [--warmup N]
                             [--filter SUBSTR[,SUBSTR...]]...
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
WARMUP, REPS = 10, 50
COLUMNS = ["ours", "torch-padded", "pad+bmm"]
TOLERANCE = {"f32": 1e-5, "tf32": 5e-3, "f16": 2e-3, "bf16": 1e-2}


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
    if kind == "zipf":
        return zipf_lengths(batch, max_len, rng)
    return [max_len] * batch


def flops(op, lengths, max_len, dim):
    """Useful FLOPs: the valid rows' products only."""
    n = [min(l, max_len) for l in lengths]
    rows = sum(n)
    if op == "jagged_pairwise_dot":
        return 2 * dim * sum(k * (k - 1) // 2 for k in n)
    per = 2 * dim * dim * rows
    return 2 * per if op.endswith("_backward") else per


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


CELL = 30


def fmt_cell(t, fl):
    if isinstance(t, str):
        return t[:CELL]
    return f"{t.median:.3f} [{t.min:.3f}-{t.max:.3f}] {fl / t.median / 1e9:6.1f}"


def emit(text, out):
    print(text, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(text + "\n")


def print_table(rows, columns, out):
    emit(f"{'configuration':<52}" + "".join(f"{c:>{CELL + 2}}" for c in columns), out)
    for name, fl, cells in rows:
        emit(f"{name:<52}" + "".join(f"{fmt_cell(cells.get(c, '-'), fl):>{CELL + 2}}"
                                     for c in columns), out)


def configs(ops, dtypes, dims, max_lens, batch, tiny, filters):
    out = []
    for op in ops:
        for dtype in dtypes:
            for dim in dims:
                for max_len in max_lens:
                    for kind in ("zipf", "uniform"):
                        seed = sum(map(ord, op + kind))
                        lengths = lengths_for(kind, batch, max_len, seed)
                        if tiny:
                            # An empty sequence and one past max_len.
                            lengths = lengths[:2] + [max_len + 3, 0]
                        name = f"{op} {dtype} d{dim} n{max_len} {kind} B={len(lengths)}"
                        if filters and not any(f in name for f in filters):
                            continue
                        out.append({"name": name, "op": op, "dtype": dtype, "dim": dim,
                                    "max_len": max_len, "lengths": lengths})
    return out


OPS = ["jagged_dense_bmm", "jagged_jagged_bmm", "jagged_dense_dot", "jagged_pairwise_dot",
       "jagged_dense_bmm_backward", "jagged_jagged_bmm_backward"]

# ------------------------------------------------------------------ dry run

DRY_REPS = 2


def dry_run(out, filters):
    cargo = os.environ.get("CARGO", "cargo")
    build = subprocess.run([cargo, "build", "-q", "--release", "--example", "interactions_plan"],
                           cwd=ROOT, capture_output=True, text=True)
    if build.returncode != 0:
        print(build.stderr)
        return 1
    rows, failures = [], []
    for cfg in configs(OPS, ["bf16", "f32", "tf32"], [16], [12], 4, tiny=True, filters=filters):
        cmd = [cargo, "run", "-q", "--release", "--example", "interactions_plan", "--", "emulate",
               cfg["op"], cfg["dtype"], str(cfg["dim"]), str(cfg["max_len"]),
               ",".join(map(str, cfg["lengths"])), str(DRY_REPS)]
        res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if res.returncode != 0:
            failures.append(f"{cfg['name']}: {res.stderr.strip()}")
            continue
        m = json.loads(res.stdout.strip().splitlines()[-1])
        if not m["rel_err"] <= TOLERANCE[cfg["dtype"]]:
            failures.append(f"{cfg['name']}: {m}")
        fl = flops(cfg["op"], cfg["lengths"], cfg["max_len"], cfg["dim"])
        cells = {"ours(emu)": Timing([x * 1e3 for x in m["emu_s"]]),
                 "tensor cores": "mma" if m["mma"] else "simt",
                 "kernels": str(m["kernels"])}
        rows.append((cfg["name"], fl, cells))
    emit("dry run: emulator backend, times are emulator wall times (not GPU)", out)
    print_table(rows, ["ours(emu)", "tensor cores", "kernels"], out)
    if failures:
        print("FAILED:\n" + "\n".join(failures))
        return 1
    print(f"dry run ok: {len(rows)} configurations")
    return 0

# ------------------------------------------------------------------ GPU


def gpu_run(plan, out, filters, warmup, reps):
    import cupy as cp
    import numpy as np
    import torch

    manifest = json.loads((plan / "manifest.json").read_text())
    dev = torch.device("cuda")
    torch_dtype = {"bf16": torch.bfloat16, "f16": torch.float16, "f32": torch.float32,
                   "tf32": torch.float32, "i32": torch.int32, "i64": torch.int64}
    stream = torch.cuda.current_stream()
    cp_stream = cp.cuda.ExternalStream(stream.cuda_stream)
    modules = {}

    def timed(fn):
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(reps):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            fn()
            b.record(stream)
            b.synchronize()
            times.append(a.elapsed_time(b))
        return Timing(times)

    def launcher(kernel, tensors, sizes):
        mod = modules.setdefault(kernel["ptx"], cp.RawModule(path=str(plan / kernel["ptx"])))
        outs = [torch.zeros(max(eval_size(o["elems"], sizes), 1), dtype=torch_dtype[o["dtype"]],
                            device=dev) for o in kernel["outputs"]]
        scratch = [torch.empty(max(eval_size(b, sizes), 16), dtype=torch.uint8, device=dev)
                   for b in kernel["scratch"]]
        inputs = [tensors[i["name"]] for i in kernel["inputs"]]
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
                    raise ValueError(f"attribute {v}")
            calls.append((f, (grid,), (l["block"],), tuple(args), l["smem"]))

        def run():
            with cp_stream:
                for f, g, b, a, smem in calls:
                    f(g, b, a, shared_mem=smem)
        return run, outs

    specs = {(s["op"], s["dtype"], s["dim"], s["max_len"]): s for s in manifest["specs"]}
    dims = sorted({s["dim"] for s in manifest["specs"]})
    max_lens = sorted({s["max_len"] for s in manifest["specs"]})
    rows = []
    for cfg in configs(OPS, ["bf16", "f16", "f32", "tf32"], dims, max_lens, 256, tiny=False,
                       filters=filters):
        spec = specs.get((cfg["op"], cfg["dtype"], cfg["dim"], cfg["max_len"]))
        if spec is None:
            continue
        lengths, n, d = cfg["lengths"], cfg["max_len"], cfg["dim"]
        torch.backends.cuda.matmul.allow_tf32 = cfg["dtype"] == "tf32"
        dt = torch_dtype[cfg["dtype"]]
        b = len(lengths)
        offsets = torch.tensor([0] + list(__import__("itertools").accumulate(lengths)),
                               dtype=torch.int64, device=dev)
        t = int(offsets[-1])
        valid = torch.tensor([min(l, n) for l in lengths], device=dev)
        rows_of = torch.arange(n, device=dev)[None, :] < valid[:, None]
        seq = torch.repeat_interleave(torch.arange(b, device=dev), torch.tensor(lengths, device=dev))
        pos = torch.arange(t, device=dev) - offsets[:-1][seq]

        def padded(x):
            p = torch.zeros((b, n) + tuple(x.shape[1:]), dtype=x.dtype, device=dev)
            keep = pos < n
            p[seq[keep], pos[keep]] = x[keep]
            return p

        x = torch.randn(t, d, device=dev).to(dt)
        op = cfg["op"]
        tensors = {"offsets": offsets, "x": x}
        if op in ("jagged_dense_bmm", "jagged_dense_bmm_backward", "jagged_dense_dot"):
            tensors["y"] = torch.randn(b, d, d, device=dev).to(dt) / d ** 0.5
        elif op in ("jagged_jagged_bmm", "jagged_jagged_bmm_backward"):
            tensors["y"] = torch.randn(t, d, device=dev).to(dt)
        if op == "jagged_dense_bmm_backward":
            tensors["dout"] = torch.randn(t, d, device=dev).to(dt)
        elif op == "jagged_jagged_bmm_backward":
            tensors["dout"] = torch.randn(b, d, d, device=dev).to(dt) / d ** 0.5
        sizes = {"B": b, "T": t, "N": n}
        ours, outs = launcher(spec["kernel"], tensors, sizes)
        xp = padded(x)
        # Jagged operands are padded; per-sequence ones are [B, ., .] already.
        y, dp = tensors.get("y"), tensors.get("dout")
        yp = padded(y) if op.startswith("jagged_jagged_bmm") else y
        dp = padded(dp) if op == "jagged_dense_bmm_backward" else dp
        torch_fn = {
            "jagged_dense_bmm": lambda: torch.bmm(xp, yp),
            "jagged_jagged_bmm": lambda: torch.bmm(xp.transpose(1, 2), yp),
            "jagged_dense_dot": lambda: torch.bmm(xp, yp.transpose(1, 2)),
            "jagged_pairwise_dot": lambda: torch.bmm(xp, xp.transpose(1, 2)),
            "jagged_dense_bmm_backward": lambda: (torch.bmm(dp, yp.transpose(1, 2)),
                                                  torch.bmm(xp.transpose(1, 2), dp)),
            "jagged_jagged_bmm_backward": lambda: (torch.bmm(yp, dp.transpose(1, 2)),
                                                   torch.bmm(xp, dp)),
        }[op]
        # Check the first output on the valid rows against torch.
        ours()
        torch.cuda.synchronize()
        ref = torch_fn()
        ref = ref[0] if isinstance(ref, tuple) else ref
        got = outs[0]
        if ref.dim() == 3 and op in ("jagged_jagged_bmm",):
            want, have = ref.float(), got[: ref.numel()].view_as(ref).float()
        elif op == "jagged_pairwise_dot":
            iu = torch.triu_indices(n, n, 1, device=dev)
            tri = ref[:, iu[0], iu[1]]
            ok = (iu[1][None, :] < valid[:, None])
            want, have = tri[ok].float(), got[: int(ok.sum())].float()
        else:
            keep = pos < n
            want = ref[seq[keep], pos[keep]].float()
            have = got[: t * want.shape[-1]].view(t, -1)[keep].float()
        err = float((have - want).norm() / want.norm().clamp_min(1e-30))
        tol = 10 * TOLERANCE[cfg["dtype"]]
        cells = {}
        if not err <= tol:
            cells["ours"] = f"MISMATCH {err:.1e}"
        else:
            cells["ours"] = timed(ours)
        cells["torch-padded"] = timed(torch_fn)

        def end_to_end():
            # Pad the jagged input, multiply, gather the valid rows back.
            xp2 = padded(x)
            if op == "jagged_dense_bmm":
                r = torch.bmm(xp2, yp)
            elif op == "jagged_pairwise_dot":
                r = torch.bmm(xp2, xp2.transpose(1, 2))
            else:
                r = torch_fn()
            r = r[0] if isinstance(r, tuple) else r
            if r.dim() == 3 and r.shape[1] == n:
                keep = pos < n
                return r[seq[keep], pos[keep]]
            return r
        cells["pad+bmm"] = timed(end_to_end)
        rows.append((cfg["name"], flops(op, lengths, n, d), cells))
    emit(f"GPU: {torch.cuda.get_device_name()}, plan arch {manifest['arch']}; "
         f"ms median [min-max] TFLOP/s over valid rows; {reps} reps after {warmup}", out)
    print_table(rows, COLUMNS, out)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--plan", default=str(ROOT / "bench/gpu/interactions_prebuilt"))
    ap.add_argument("--out")
    ap.add_argument("--reps", type=int, default=REPS)
    ap.add_argument("--warmup", type=int, default=WARMUP)
    ap.add_argument("--filter", action="append", default=[])
    args = ap.parse_args()
    filters = [f for arg in args.filter for f in arg.split(",") if f]
    if args.dry_run:
        return dry_run(args.out, filters)
    plan = Path(args.plan)
    if not (plan / "manifest.json").exists():
        print(f"no plan at {plan}: run `cargo run --release --example interactions_plan -- plan "
              f"{plan}` first (or --dry-run without a GPU)")
        return 2
    return gpu_run(plan, args.out, filters, args.warmup, args.reps)


if __name__ == "__main__":
    sys.exit(main())
