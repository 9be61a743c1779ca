"""Static SASS report of flash attention, ours next to Triton's, on the CPU.

    .tools/venv/bin/python bench/sass/attention.py [--jagc PATH]

Builds `jagc` (debug) unless --jagc is given (then the tree it was built
from is the one its caller says, not necessarily this script's), compiles Triton's tutorial
attention forward (triton_attention.py) for sm_80 and sm_90a, and counts
every kernel's steady-state loop with the same code, `jagc stats --sass`:
our forward (max_len 128 and 1024: two tile shapes) and backward kernels
(bf16, D = 64 and 128) from the op, Triton's
from its cubin (assembled by the ptxas Triton bundles), at 4 and 8 warps,
and on sm_80 from its PTX too (our ptxas rejects its sm_90a PTX's .version). No GPU is needed.
Next to our backward: Triton's tutorial backward (triton_attention_bwd.py),
its preprocess and the two unmasked inner loops of `_attn_bwd` (dk / dv
over query blocks, dq over key blocks), each loop its own kernel.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import triton

import triton_attention
import triton_attention_bwd

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLUMNS = ["instrs", "HMMA", "HGMMA", "LDSM", "LDGSTS", "UTMALDG", "BAR", "EX2", "SHFL",
           "FFMA", "FMUL", "FADD", "instr/MMA", "instr/16816"]


def jagc_rows(jagc, args):
    """(kernel, counts) per kernel row of `jagc stats --sass ARGS`."""
    out = subprocess.run([jagc, "stats", "--sass", *args], check=True, capture_output=True,
                         text=True).stdout
    rows = []
    for line in out.splitlines():
        if line.startswith("#") or line.startswith("loop"):
            continue
        fields = line.split()
        # span ("no loop" is two words), the columns, kernel name, "(N)"
        cells = fields[-2 - len(COLUMNS):-2]
        rows.append((fields[-2], cells))
    return rows


def short(kernel):
    """The kernel's role: fwd, bwd, bwd_pre, bwd_post; Triton's fwd, dkdv, dq, bwd_pre."""
    if kernel.startswith("jg_attn"):
        tail = kernel.split("_scaled")[-1].lstrip("_")
        return "ours " + ("fwd" if not tail else tail)
    triton_bwd = {"attn_bwd_dkdv": "dkdv", "attn_bwd_dq": "dq", "attn_bwd_preprocess": "bwd_pre"}
    return "triton " + triton_bwd.get(kernel, "fwd")


def source_rows(jagc, stem, arch):
    """Rows of one Triton compile: its cubin, and on sm_80 its PTX too."""
    warps = stem.rsplit("_w", 1)[1]
    rows = [(f"{short(k)} {warps}w", "cubin", c)
            for k, c in jagc_rows(jagc, ["--cubin", stem + ".cubin"])]
    if arch == "sm_80":
        rows += [(f"{short(k)} {warps}w", "ptx", c)
                 for k, c in jagc_rows(jagc, ["--ptx", stem + ".ptx", "--arch", arch])]
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--jagc", help="a built jagc (default: cargo build --bin jagc)")
    args = parser.parse_args()
    jagc = args.jagc
    if jagc is None:
        subprocess.run(["cargo", "build", "--quiet", "--bin", "jagc"], cwd=ROOT, check=True)
        jagc = os.path.join(ROOT, "target", "debug", "jagc")
    commit = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    tmp = tempfile.mkdtemp(prefix="jagged-sass-")
    command = " ".join([os.path.relpath(sys.executable, ROOT), *sys.argv])
    print(f"# {command}  (tree {commit}; triton {triton.__version__}, tutorial forward: "
          f"BLOCK_M {triton_attention.BLOCK_M}, BLOCK_N {triton_attention.BLOCK_N}, "
          f"{triton_attention.NUM_STAGES} stages, 4 and 8 warps; tutorial backward: dkdv "
          f"{triton_attention_bwd.BLOCK_M1} x {triton_attention_bwd.BLOCK_N1}, dq "
          f"{triton_attention_bwd.BLOCK_M2} x {triton_attention_bwd.BLOCK_N2}, "
          f"{triton_attention_bwd.NUM_STAGES} stages, 4 and 8 warps; bf16)")
    header = f"{'D':>3} {'arch':<6} {'kernel':<18} {'from':<6} " + " ".join(
        f"{c:>{max(len(c), 5)}}" for c in COLUMNS)
    for head_dim in (64, 128):
        for arch, capability in (("sm_80", 80), ("sm_90a", 90)):
            rows = []
            # max_len picks our tile (codegen/src/templates/attention/tiles.rs):
            # 128 -> 64 query rows per CTA, 16 per warp; 1024 -> 128 rows, as
            # Triton's BLOCK_M (D = 64: 32 per warp, 4 warps; D = 128: 16, 8).
            for max_len in (128, 1024):
                op = ["jagged_flash_attention", "--attr", f"head_dim={head_dim}",
                      "--attr", f"max_len={max_len}", "--arch", arch]
                rows += [(f"{short(k)} n{max_len}", "op", c) for k, c in jagc_rows(jagc, op)]
            # The backward's tiles do not depend on max_len.
            rows += [(short(k), "op", c) for k, c in jagc_rows(jagc, [*op, "--backward"])]
            for warps in (4, 8):
                stem = triton_attention.compile_one(head_dim, capability, tmp, warps)
                rows += source_rows(jagc, stem, arch)
            for warps in (4, 8):
                for stem in triton_attention_bwd.compile_all(head_dim, capability, tmp, warps):
                    rows += source_rows(jagc, stem, arch)
            print()
            print(header)
            for kernel, source, counts in rows:
                cells = " ".join(f"{v:>{max(len(c), 5)}}" for v, c in zip(counts, COLUMNS))
                print(f"{head_dim:>3} {arch:<6} {kernel:<18} {source:<6} {cells}")
    print_skips(jagc)


def print_skips(jagc):
    """The blocks our n1024 forward loops and backward loops may skip, as jagc prints them."""
    for backward in ([], ["--backward"]):
        for head_dim in (64, 128):
            print_skips_of(jagc, backward, head_dim)


def print_skips_of(jagc, backward, head_dim):
    """`jagc stats --sass --skips` of one op at max_len 1024, sm_80."""
    args = ["stats", "--sass", "--skips", *backward, "jagged_flash_attention", "--attr",
            f"head_dim={head_dim}", "--attr", "max_len=1024", "--arch", "sm_80"]
    print()
    print(f"$ jagc {' '.join(args)}")
    print(subprocess.run([jagc, *args], check=True, capture_output=True,
                         text=True).stdout, end="")


if __name__ == "__main__":
    main()
