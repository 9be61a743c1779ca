"""Launch plans of `jagc emit --plan` and three ways to run them.

`jagc emit [OP | --graph FILE.jir] --plan` prints the code generator's plan
as PTX comments before the PTX; the lines after `// target ...` are the
launch plan (codegen/src/launch.rs, `Display for CompiledKernel`):

    // output0: T*4 x i32
    // output1: T*64 x f32 (capacity; rows used = output2[B])
    // scratch0: (B + 1)*8 bytes
    // ENTRY<<<clamp(ceil(ITEMS/PER), 1, MAX), BLOCK, SMEM>>>(PARAM, ...)

with PARAM one of `inputN` (the graph's N-th `input` node), `outputN`,
`scratchN` (device pointers), `u64 EXPR` (a size over B, T, max_len) or
`f32 attr NAME` (a float attribute's run-time value). `load_plan` reads
that and, from the `.jir` file next to it (same stem), the input names in
order. `Program` binds a plan to buffers and sizes; a backend runs it:

- `CupyBackend`: the PTX through CuPy's RawModule on PyTorch's current
  stream, buffers are CUDA torch tensors (the pattern of
  interactions_bench.py / attention_bench.py);
- `DriverBackend`: the same through libcuda with ctypes (cuModuleLoadData,
  cuLaunchKernel) when CuPy is missing;
- `EmuBackend`: every launch through `jagc emu` (the PTX emulator with its
  memory checker) on CPU torch tensors saved as .npy: the --dry-run path,
  which checks the plan, the bindings, the grids and the buffer sizes on
  the CPU exactly as the GPU run uses them.
"""
import ctypes
import os
import re
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

ELEM_BYTES = {"f32": 4, "i32": 4, "u32": 4, "i64": 8, "u64": 8, "f16": 2, "bf16": 2,
              "u8": 1, "bool": 1, "f64": 8}

# ------------------------------------------------------------------ sizes


def _tokens(text):
    return re.findall(r"\d+|max_len|[BT]|ceil|[()+*/]", text)


def parse_expr(text):
    """A SizeExpr as printed (`T*4`, `(B + 1)*8`, `ceil(T/1024)`) -> a
    nested tuple: ('const', n) | ('var', name) | ('add'|'mul', a, b) |
    ('ceil_div', a, k)."""
    toks = _tokens(text)
    if "".join(toks) != re.sub(r"\s+", "", text):
        raise ValueError(f"unparsable size expression {text!r}")
    pos = [0]

    def peek():
        return toks[pos[0]] if pos[0] < len(toks) else None

    def take(want=None):
        t = peek()
        if t is None or (want is not None and t != want):
            raise ValueError(f"size expression {text!r}: expected {want or 'a term'} at token {pos[0]}")
        pos[0] += 1
        return t

    def expr():
        e = term()
        while peek() == "+":
            take("+")
            e = ("add", e, term())
        return e

    def term():
        e = atom()
        while peek() == "*":
            take("*")
            e = ("mul", e, atom())
        return e

    def atom():
        t = take()
        if t.isdigit():
            return ("const", int(t))
        if t in ("B", "T", "max_len"):
            return ("var", t)
        if t == "(":
            e = expr()
            take(")")
            return e
        if t == "ceil":
            take("(")
            a = expr()
            take("/")
            k = int(take())
            take(")")
            return ("ceil_div", a, k)
        raise ValueError(f"size expression {text!r}: unexpected {t!r}")

    e = expr()
    if peek() is not None:
        raise ValueError(f"size expression {text!r}: trailing {toks[pos[0]:]}")
    return e


def eval_expr(e, sizes):
    kind = e[0]
    if kind == "const":
        return e[1]
    if kind == "var":
        if e[1] not in sizes:
            raise KeyError(f"size {e[1]} not given (have {sorted(sizes)})")
        return int(sizes[e[1]])
    if kind == "add":
        return eval_expr(e[1], sizes) + eval_expr(e[2], sizes)
    if kind == "mul":
        return eval_expr(e[1], sizes) * eval_expr(e[2], sizes)
    if kind == "ceil_div":
        return -(-eval_expr(e[1], sizes) // max(e[2], 1))
    raise ValueError(kind)


def show_expr(e):
    kind = e[0]
    if kind in ("const", "var"):
        return str(e[1])
    if kind == "add":
        return f"({show_expr(e[1])} + {show_expr(e[2])})"
    if kind == "mul":
        return f"{show_expr(e[1])}*{show_expr(e[2])}"
    return f"ceil({show_expr(e[1])}/{e[2]})"

# ------------------------------------------------------------------ plans


class Launch:
    def __init__(self, entry, items, per_block, max_blocks, block, smem, params):
        self.entry, self.items, self.per_block, self.max_blocks = entry, items, per_block, max_blocks
        self.block, self.smem, self.params = block, smem, params

    def grid(self, sizes):
        blocks = -(-eval_expr(self.items, sizes) // max(self.per_block, 1))
        return max(1, min(blocks, max(self.max_blocks, 1)))


class Plan:
    """One `jagc emit --plan` file: PTX, outputs, scratch, launches and (from
    the .jir next to it) the graph's input names in order."""

    def __init__(self, path, ptx, arch, outputs, scratch, launches, inputs, entry_params):
        self.path, self.ptx, self.arch = Path(path), ptx, arch
        self.outputs, self.scratch, self.launches = outputs, scratch, launches
        self.inputs, self.entry_params = inputs, entry_params

    @property
    def name(self):
        return self.path.stem

    def describe(self, sizes=None):
        lines = [f"{self.path.name}: {self.arch}, {len(self.ptx)} bytes of PTX, "
                 f"inputs {', '.join(f'input{i}={n}' for i, n in enumerate(self.inputs))}"]
        for i, (e, dt, used) in enumerate(self.outputs):
            v = f" = {eval_expr(e, sizes)}" if sizes else ""
            lines.append(f"  output{i}: {show_expr(e)}{v} x {dt}" + (f" (rows used = output{used}[B])" if used is not None else ""))
        for i, e in enumerate(self.scratch):
            v = f" = {eval_expr(e, sizes)}" if sizes else ""
            lines.append(f"  scratch{i}: {show_expr(e)}{v} bytes")
        for l in self.launches:
            g = f"{l.grid(sizes)}" if sizes else f"clamp(ceil({show_expr(l.items)}/{l.per_block}), 1, {l.max_blocks})"
            ps = ", ".join(_show_param(p) for p in l.params)
            lines.append(f"  {l.entry}<<<{g}, {l.block}, {l.smem}>>>({ps})")
        return "\n".join(lines)


def _show_param(p):
    kind, v = p
    if kind in ("input", "output", "scratch"):
        return f"{kind}{v}"
    if kind == "u64":
        return f"u64 {show_expr(v)}"
    return f"f32 attr {v}"


LAUNCH_RE = re.compile(r"^(\S+)<<<clamp\(ceil\((.*)/(\d+)\), 1, (\d+)\), (\d+), (\d+)>>>\((.*)\)$")


def _entry_params(ptx):
    """entry -> list of PTX parameter types (`u64`, `f32`, `u32`, ...)."""
    out = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\(([^)]*)\)", ptx):
        out[m.group(1)] = re.findall(r"\.param\s+\.(\w+)", m.group(2))
    return out


def load_plan(path, jir=None):
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    try:
        start = next(i for i, l in enumerate(lines) if l.startswith("// target "))
    except StopIteration:
        raise ValueError(f"{path}: no `// target` line: not written by `jagc emit --plan`")
    arch = lines[start].split()[2].rstrip(",")
    outputs, scratch, launches = [], [], []
    for line in lines[start + 1:]:
        if not line.startswith("//"):
            break
        body = line[2:].strip()
        if not body:
            break
        m = re.match(r"^output(\d+): (.*) x (\w+)( \(capacity; rows used = output(\d+)\[B\]\))?$", body)
        if m:
            assert int(m.group(1)) == len(outputs), body
            outputs.append((parse_expr(m.group(2)), m.group(3),
                            int(m.group(5)) if m.group(5) else None))
            continue
        m = re.match(r"^scratch(\d+): (.*) bytes$", body)
        if m:
            assert int(m.group(1)) == len(scratch), body
            scratch.append(parse_expr(m.group(2)))
            continue
        m = LAUNCH_RE.match(body)
        if m:
            params = []
            for p in m.group(7).split(", ") if m.group(7) else []:
                pm = re.match(r"^(input|output|scratch)(\d+)$", p)
                if pm:
                    params.append((pm.group(1), int(pm.group(2))))
                elif p.startswith("u64 "):
                    params.append(("u64", parse_expr(p[4:])))
                elif p.startswith("f32 attr "):
                    params.append(("f32", p[9:]))
                else:
                    raise ValueError(f"{path}: unknown parameter {p!r} in {body!r}")
            launches.append(Launch(m.group(1), parse_expr(m.group(2)), int(m.group(3)),
                                   int(m.group(4)), int(m.group(5)), int(m.group(6)), params))
            continue
        if body.startswith("Generated by"):
            break
        raise ValueError(f"{path}: unexpected plan line {body!r}")
    if not launches:
        raise ValueError(f"{path}: no launches in the plan")
    ptx_start = next((i for i, l in enumerate(lines) if l.startswith(".version")), None)
    if ptx_start is None:
        raise ValueError(f"{path}: no PTX after the plan")
    ptx = "\n".join(lines[ptx_start:]) + "\n"
    jir = Path(jir) if jir else path.with_suffix(".jir")
    jir_text = jir.read_text() if jir.exists() else ""
    inputs = re.findall(r"= input (\w+) :", jir_text)
    plan = Plan(path, ptx, arch, outputs, scratch, launches, inputs, _entry_params(ptx))
    plan.output_names = re.findall(r"^\s*output (\w+) = ", jir_text, re.M)
    if plan.output_names and len(plan.output_names) != len(outputs):
        raise ValueError(f"{path}: {len(outputs)} outputs in the plan, {len(plan.output_names)} in {jir}")
    check_plan(plan)
    return plan


def check_plan(plan):
    """Every launch's entry exists with one PTX parameter per binding, of the
    right type; every binding's index is in range."""
    for l in plan.launches:
        types = plan.entry_params.get(l.entry)
        if types is None:
            raise ValueError(f"{plan.path}: entry {l.entry} not in the PTX")
        if len(types) != len(l.params):
            raise ValueError(f"{plan.path}: {l.entry} has {len(types)} PTX parameters, "
                             f"the plan binds {len(l.params)}")
        for t, (kind, v) in zip(types, l.params):
            want = "f32" if kind == "f32" else "u64"
            if t != want:
                raise ValueError(f"{plan.path}: {l.entry}: a {kind} binding on a .{t} parameter")
            if kind == "input" and plan.inputs and v >= len(plan.inputs):
                raise ValueError(f"{plan.path}: {l.entry} binds input{v}, graph has {len(plan.inputs)}")
            if kind == "output" and v >= len(plan.outputs):
                raise ValueError(f"{plan.path}: {l.entry} binds output{v}")
            if kind == "scratch" and v >= len(plan.scratch):
                raise ValueError(f"{plan.path}: {l.entry} binds scratch{v}")

# ------------------------------------------------------------------ programs


def torch_dtype(name):
    import torch
    return {"f32": torch.float32, "i32": torch.int32, "i64": torch.int64, "u8": torch.uint8,
            "bool": torch.bool, "f16": torch.float16, "bf16": torch.bfloat16,
            "f64": torch.float64}[name]


class Program:
    """A plan bound to inputs (by the graph's input names), sizes (B, T,
    max_len) and float attributes; outputs and scratch allocated once by the
    backend (outputs zeroed, as the runtime does; scratch uninitialized).
    `run()` enqueues every launch in the plan's order."""

    def __init__(self, backend, plan, inputs, sizes, attrs=None):
        attrs = attrs or {}
        self.backend, self.plan, self.sizes = backend, plan, dict(sizes)
        if not plan.inputs:
            raise ValueError(f"{plan.path}: no .jir next to it: the input order is unknown")
        missing = [n for n in plan.inputs if n not in inputs]
        if missing:
            raise ValueError(f"{plan.name}: inputs {missing} not given (have {sorted(inputs)})")
        self.inputs = [inputs[n] for n in plan.inputs]
        self.outputs = [backend.zeros(max(eval_expr(e, sizes), 1), dt) for e, dt, _ in plan.outputs]
        self.scratch = [backend.empty_bytes(max(eval_expr(e, sizes), 16)) for e in plan.scratch]
        self.out = dict(zip(plan.output_names, self.outputs))  # by the graph's output names
        self.module = backend.load(plan)
        self.calls = []
        for l in plan.launches:
            args = []
            for kind, v in l.params:
                if kind == "input":
                    args.append(("ptr", self.inputs[v]))
                elif kind == "output":
                    args.append(("ptr", self.outputs[v]))
                elif kind == "scratch":
                    args.append(("ptr", self.scratch[v]))
                elif kind == "u64":
                    args.append(("u64", eval_expr(v, sizes)))
                else:
                    if v not in attrs:
                        raise ValueError(f"{plan.name}: attribute {v} not given")
                    args.append(("f32", float(attrs[v])))
            self.calls.append(backend.prepare(self.module, l, l.grid(sizes), args))

    def run(self):
        for c in self.calls:
            self.backend.launch(c)
        return self.outputs

    def bytes_allocated(self):
        return sum(t.numel() * t.element_size() for t in self.outputs + self.scratch)


class _TorchAlloc:
    def __init__(self, device):
        self.device = device

    def zeros(self, n, dtype):
        import torch
        return torch.zeros(n, dtype=torch_dtype(dtype), device=self.device)

    def empty_bytes(self, n):
        import torch
        return torch.empty(n, dtype=torch.uint8, device=self.device)


class CupyBackend(_TorchAlloc):
    """CuPy RawModule launches on PyTorch's current stream (CUDA tensors)."""
    name = "cupy"

    def __init__(self):
        import cupy as cp
        import numpy as np
        import torch
        super().__init__("cuda")
        self.cp, self.np = cp, np
        self.stream = cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream)
        self.modules = {}

    def load(self, plan):
        # RawModule(code=...) would compile CUDA C++: load the PTX from a
        # file (the plan comments left out), as the other bench scripts do.
        key = str(plan.path)
        if key not in self.modules:
            path = Path(tempfile.mkdtemp(prefix="jagc_ptx_")) / f"{plan.name}.ptx"
            path.write_text(plan.ptx)
            self.modules[key] = self.cp.RawModule(path=str(path))
        return self.modules[key]

    def prepare(self, module, launch, grid, args):
        np = self.np
        f = module.get_function(launch.entry)
        if launch.smem > 48 * 1024:
            f.max_dynamic_shared_size_bytes = launch.smem
        vals = []
        for kind, v in args:
            vals.append(np.uint64(v.data_ptr()) if kind == "ptr" else
                        np.uint64(v) if kind == "u64" else np.float32(v))
        return (f, (grid,), (launch.block,), tuple(vals), launch.smem)

    def launch(self, call):
        f, g, b, a, smem = call
        with self.stream:
            f(g, b, a, shared_mem=smem)


class DriverBackend(_TorchAlloc):
    """The same through libcuda (ctypes) in PyTorch's context and stream."""
    name = "libcuda"

    def __init__(self):
        import torch
        super().__init__("cuda")
        torch.cuda.init()
        torch.zeros(1, device="cuda")  # makes the primary context current
        self.cuda = ctypes.CDLL("libcuda.so.1")
        self.stream = ctypes.c_void_p(torch.cuda.current_stream().cuda_stream)
        self.modules = {}

    def _check(self, rc, what):
        if rc != 0:
            msg = ctypes.c_char_p()
            self.cuda.cuGetErrorString(rc, ctypes.byref(msg))
            raise RuntimeError(f"{what}: CUDA error {rc} {msg.value}")

    def load(self, plan):
        key = str(plan.path)
        if key not in self.modules:
            mod = ctypes.c_void_p()
            self._check(self.cuda.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(plan.ptx.encode())),
                        f"cuModuleLoadData {plan.name}")
            self.modules[key] = mod
        return self.modules[key]

    def prepare(self, module, launch, grid, args):
        f = ctypes.c_void_p()
        self._check(self.cuda.cuModuleGetFunction(ctypes.byref(f), module, launch.entry.encode()),
                    f"cuModuleGetFunction {launch.entry}")
        if launch.smem > 48 * 1024:
            # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8
            self._check(self.cuda.cuFuncSetAttribute(f, 8, launch.smem), "cuFuncSetAttribute")
        holders = []
        for kind, v in args:
            holders.append(ctypes.c_uint64(v.data_ptr()) if kind == "ptr" else
                           ctypes.c_uint64(v) if kind == "u64" else ctypes.c_float(v))
        ptrs = (ctypes.c_void_p * len(holders))(*[ctypes.cast(ctypes.byref(h), ctypes.c_void_p) for h in holders])
        return (f, grid, launch.block, launch.smem, ptrs, holders, launch.entry)

    def launch(self, call):
        f, grid, block, smem, ptrs, _holders, entry = call
        c = ctypes.c_uint
        self._check(self.cuda.cuLaunchKernel(f, c(grid), c(1), c(1), c(block), c(1), c(1), c(smem),
                                             self.stream, ptrs, None), f"cuLaunchKernel {entry}")


def gpu_backend():
    """CuPy when importable, else libcuda through ctypes."""
    try:
        return CupyBackend()
    except Exception as e:  # not installed, or built for another CUDA
        print(f"CuPy unusable ({type(e).__name__}: {e}); launching through libcuda", flush=True)
        return DriverBackend()


class EmuBackend(_TorchAlloc):
    """Every launch through `jagc emu` (memory checker on): CPU torch
    tensors, each pointer argument passed as `inout:` .npy bytes."""
    name = "emu"

    def __init__(self, jagc, workdir=None):
        super().__init__("cpu")
        self.jagc = str(jagc)
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="jagc_emu_"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.launches = 0

    def load(self, plan):
        path = self.dir / f"{plan.name}.ptx"
        path.write_text(plan.ptx)
        return path

    def prepare(self, module, launch, grid, args):
        return (module, launch, grid, args)

    def launch(self, call):
        import numpy as np
        ptx, launch, grid, args = call
        cmd = [self.jagc, "emu", "--kernel", launch.entry, "--grid", str(grid), "--block",
               str(launch.block), "--shared", str(launch.smem)]
        files = []
        for i, (kind, v) in enumerate(args):
            if kind == "ptr":
                f = self.dir / f"arg{i}.npy"
                np.save(f, v.contiguous().view(-1).view(__import__("torch").uint8).numpy())
                files.append((f, v))
                cmd += ["--arg", f"inout:{f}:{f}"]
            elif kind == "u64":
                cmd += ["--arg", f"u64:{v}"]
            else:
                cmd += ["--arg", f"f32:{v!r}"]
        cmd.append(str(ptx))
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"jagc emu {launch.entry} grid {grid}: {res.stderr.strip()[-2000:]}")
        import torch
        for f, v in files:
            back = torch.from_numpy(np.load(f).copy())
            flat = v.view(-1).view(torch.uint8)
            if back.numel() != flat.numel():
                raise RuntimeError(f"jagc emu {launch.entry}: {f} came back with {back.numel()} bytes, "
                                   f"sent {flat.numel()}")
            flat.copy_(back)
        self.launches += 1


def find_jagc():
    for c in [os.environ.get("JAGC"), ROOT / "bench/gpu/bin/jagc", ROOT / "target/release/jagc",
              ROOT / "target/debug/jagc"]:
        if c and Path(c).exists():
            return Path(c)
    return None

# ------------------------------------------------------------------ timing


class Timing:
    """Milliseconds of repeated runs: min, median and max."""

    def __init__(self, ms):
        import statistics
        ms = sorted(ms)
        self.min, self.median, self.max = ms[0], statistics.median(ms), ms[-1]

    def __str__(self):
        return f"{self.median:.3f} [{self.min:.3f}-{self.max:.3f}] ms"


def timed(fn, warmup, reps, cuda, max_s=None):
    """CUDA events on the current stream (cuda) or wall time (CPU). With
    max_s, fewer reps (at least 3) when the first would overrun it."""
    import time
    import torch
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        # A slow function: one warm-up run is enough.
        if i == 0 and max_s and (time.perf_counter() - t0) * (warmup + reps) > max_s:
            break
    ms = []
    reps = max(reps, 1)
    while len(ms) < reps:
        if len(ms) == 1 and max_s and ms[0] * reps > max_s * 1e3:
            reps = max(3, min(reps, int(max_s * 1e3 / max(ms[0], 1e-3))))
        if cuda:
            stream = torch.cuda.current_stream()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record(stream)
            fn()
            b.record(stream)
            b.synchronize()
            ms.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            ms.append((time.perf_counter() - t0) * 1e3)
    return Timing(ms)


def copy_bandwidth(cuda, nbytes=1 << 30, warmup=3, reps=10):
    """GB/s of `dst.copy_(src)` (bytes read + written) on `nbytes`; the
    roofline the memory-bound kernels are compared with."""
    import torch
    dev = "cuda" if cuda else "cpu"
    n = nbytes // 4
    src = torch.rand(n, device=dev)
    dst = torch.empty_like(src)
    t = timed(lambda: dst.copy_(src), warmup, reps, cuda)
    del src, dst
    return 2 * nbytes / (t.min * 1e-3) / 1e9, t


def emit(text, out=None):
    print(text, flush=True)
    if out:
        with open(out, "a") as fh:
            fh.write(text + "\n")


def load_plans(plan_dir, names):
    """name -> Plan for every NAME.ptx of plan_dir; a missing one is an
    error naming the prepare script."""
    plan_dir = Path(plan_dir)
    missing = [n for n in names if not (plan_dir / f"{n}.ptx").exists()]
    if missing:
        raise SystemExit(f"missing plans {missing} in {plan_dir}: run "
                         f"`bash bench/gpu/prepare_side_events.sh` first (needs Rust)")
    return {n: load_plan(plan_dir / f"{n}.ptx") for n in names}
