"""Per-call host overhead of a small jagged op next to a trivial torch op (printed, not asserted)."""

import statistics
import time

import torch

import jagged
from jagged._tensors import to_native
from conftest import offsets_of, rand


def median_us(fn, repeat=300, warmup=20):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000.0


def test_host_overhead(capsys):
    o = offsets_of([3, 0, 2, 3])
    v = rand(8, 4)
    empty_o = offsets_of([])
    empty_v = rand(0, 4)
    scores = rand(8)
    codes = torch.randint(0, 4, (8, 2), dtype=torch.int32)
    codebooks = rand(2, 4, 4)
    native_args = [to_native("x", "values", v), to_native("x", "offsets", o)]
    rows = [
        ("torch.add(x, 1) [8, 4]", lambda: torch.add(v, 1)),
        ("torch.ops.jagged.jagged_reduce sum [8, 4], B=4", lambda: torch.ops.jagged.jagged_reduce(v, o, 4, "sum")),
        ("jagged.jagged_reduce (wrapper)", lambda: jagged.jagged_reduce(v, o, 4)),
        ("  _native.run_op only (Rust + emulator)", lambda: jagged._native.run_op("jagged_reduce", native_args, {"max_len": 4})),
        ("torch.ops.jagged.jagged_reduce, B=0, T=0", lambda: torch.ops.jagged.jagged_reduce(empty_v, empty_o, 4, "sum")),
        # The ops run through the Rust crate's front functions (upload,
        # front function, download).
        ("torch.ops.jagged.session_pool sum [8, 4], S=4", lambda: torch.ops.jagged.session_pool(v, o, "sum")),
        ("torch.ops.jagged.jagged_topk k=2 [8], B=4", lambda: torch.ops.jagged.jagged_topk(scores, o, 2)),
        ("torch.ops.jagged.sid_embed [8, 2] codes, 2x4x4", lambda: torch.ops.jagged.sid_embed(codes, None, codebooks)),
    ]
    with capsys.disabled():
        print(f"\nper-call time, median of 300 (device: {jagged.device_name()}):")
        for name, fn in rows:
            print(f"  {name:<52} {median_us(fn):9.1f} us")
