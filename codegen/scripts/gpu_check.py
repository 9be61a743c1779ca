#!/usr/bin/env python3
"""Runs the cases written by `cargo run -p jagged-codegen --example gpu_cases -- DIR`
on a real GPU through CuPy (cuModuleLoad of the generated PTX): correctness
cases are compared with jagged-ir's f64 reference outputs (outputs poisoned
with 0xFF bytes first), performance cases are timed with CUDA events and
reported as GB/s of bytes read + written, next to a device-to-device copy.

usage: python3 gpu_check.py DIR
"""
import json
import sys
from pathlib import Path

import cupy as cp
import numpy as np

NP = {"f32": np.float32, "f16": np.float16, "i32": np.int32, "i64": np.int64, "u8": np.uint8}
SIZE = {"f32": 4, "f16": 2, "bf16": 2, "i32": 4, "i64": 8, "u8": 1, "bool": 1}


def random_input(dtype, elems):
    if dtype in ("u8", "bool"):
        return cp.random.randint(0, 2, elems, dtype=cp.uint8)
    x = cp.random.standard_normal(elems, dtype=cp.float32)
    if dtype == "f32":
        return x.view(cp.uint8)
    if dtype == "f16":
        return x.astype(cp.float16).view(cp.uint8)
    if dtype == "bf16":
        return (x.view(cp.uint32) >> 16).astype(cp.uint16).view(cp.uint8)
    raise ValueError(dtype)


def decode(raw, dtype):
    if dtype == "bf16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return raw.view(NP[dtype]).astype(np.float64)


def run_case(d, case, modules):
    mod = modules.setdefault(case["ptx"], cp.RawModule(path=str(d / case["ptx"])))
    inputs = []
    for spec in case["inputs"]:
        if "file" in spec:
            host = np.fromfile(d / spec["file"], dtype=np.uint8)
            inputs.append(cp.asarray(host) if host.size else cp.zeros(16, cp.uint8))
        else:
            inputs.append(random_input(spec["random"], max(spec["elems"], 16)))
    outs = [cp.full(max(o["elems"] * SIZE[o["dtype"]], 16), 0xFF, cp.uint8) for o in case["outputs"]]
    scratch = [cp.full(max(b, 16), 0xFF, cp.uint8) for b in case["scratch"]]
    calls = []
    for l in case["launches"]:
        args = []
        for kind, v in l["params"]:
            args.append({"in": lambda: inputs[v], "out": lambda: outs[v], "scratch": lambda: scratch[v],
                         "u64": lambda: np.uint64(v), "f32": lambda: np.float32(v)}[kind]())
        calls.append((mod.get_function(l["entry"]), (l["grid"],), (l["block"],), tuple(args)))

    def launch_all():
        for f, g, b, a in calls:
            f(g, b, a)

    launch_all()
    cp.cuda.runtime.deviceSynchronize()
    if case["check"]:
        worst = 0.0
        for o, buf in zip(case["outputs"], outs):
            ref = np.fromfile(d / o["ref"], dtype=np.float64)
            got = decode(cp.asnumpy(buf)[: o["elems"] * SIZE[o["dtype"]]], o["dtype"])[: ref.size]
            if not np.all(np.isfinite(got)):
                return f"FAIL non-finite output ({np.sum(~np.isfinite(got))} elements)"
            if o["dtype"] in ("i32", "i64"):
                if not np.array_equal(got, ref):
                    return f"FAIL integer mismatch at {np.argmax(got != ref)}"
                continue
            norm = np.linalg.norm(ref)
            err = np.linalg.norm(got - ref) / (norm if norm > 0 else 1.0)
            worst = max(worst, err)
            if err > case["tol"]:
                return f"FAIL rel err {err:.3e} > {case['tol']}"
        return f"ok (rel err {worst:.1e})"
    start, end = cp.cuda.Event(), cp.cuda.Event()
    for _ in range(3):
        launch_all()
    reps = 20
    start.record()
    for _ in range(reps):
        launch_all()
    end.record()
    end.synchronize()
    us = cp.cuda.get_elapsed_time(start, end) * 1000 / reps
    return f"{us:9.1f} us  {case['bytes'] / us / 1e3:7.1f} GB/s"


def copy_bandwidth():
    n = 1 << 30
    a = cp.empty(n, cp.uint8)
    b = cp.empty(n, cp.uint8)
    b[...] = a
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(10):
        b[...] = a
    end.record()
    end.synchronize()
    us = cp.cuda.get_elapsed_time(start, end) * 100
    return 2 * n / us / 1e3


def main():
    d = Path(sys.argv[1])
    cases = json.loads((d / "cases.json").read_text())
    print(cp.cuda.runtime.getDeviceProperties(0)["name"].decode(), flush=True)
    print(f"device copy: {copy_bandwidth():.0f} GB/s (read + write)", flush=True)
    modules, failures = {}, 0
    for case in cases:
        try:
            result = run_case(d, case, modules)
        except Exception as e:  # report and go on: one broken case must not hide the others
            result = f"FAIL {type(e).__name__}: {e}"
        failures += result.startswith("FAIL")
        print(f"{case['name']:<70} {result}", flush=True)
    print(f"{len(cases)} cases, {failures} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
