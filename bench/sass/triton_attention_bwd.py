"""Compiles a compact copy of Triton's tutorial fused attention backward
(python/tutorials/06-fused-attention.py: `_attn_bwd_preprocess`, and the
two inner loops of `_attn_bwd`, `_attn_bwd_dkdv` and `_attn_bwd_dq`) for a
CUDA target without a GPU, and writes its PTX (and Triton's own cubin).

    python bench/sass/triton_attention_bwd.py OUT_DIR

The tutorial's `_attn_bwd` runs both loops in one program (dk / dv of a
block of keys over the query blocks, then dq of a block of queries over
the key blocks), causal only (a masked diagonal part and an unmasked
part). Here each unmasked (non-causal) loop is its own kernel, so that
`jagc stats --sass` (which counts one loop per kernel) counts each:
`attn_bwd_dkdv` (a program per BLOCK_N1 keys, BLOCK_M1 queries per step)
and `attn_bwd_dq` (a program per BLOCK_M2 queries, BLOCK_N2 keys per
step). As in the tutorial, K arrives pre-scaled by sm_scale / ln 2 and M
is the forward's log2-domain row statistic, so P = exp2(q k - m); dk is
scaled by sm_scale and dq by ln 2 after the loops. The tutorial's blocks
(32 x 128 and 128 x 32), 5 stages, 4 warps as the tutorial or 8 (at D = 128
on sm_80, 4 warps spill dk / dv); bf16.
"""

import os

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import sys

import triton
import triton.language as tl
from triton.compiler import ASTSource

from triton_attention import compile_to

BLOCK_M1, BLOCK_N1, BLOCK_M2, BLOCK_N2 = 32, 128, 128, 32
PRE_BLOCK, NUM_STAGES = 128, 5


@triton.jit
def attn_bwd_preprocess(O, DO, Delta, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr):
    # delta_i = rowsum(o_i * do_i), rows of one (batch, head) contiguous.
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    at = rows[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :]
    o = tl.load(O + at).to(tl.float32)
    do = tl.load(DO + at).to(tl.float32)
    tl.store(Delta + rows, tl.sum(o * do, axis=1))


@triton.jit
def attn_bwd_dkdv(Q, K, V, DO, M, Delta, DK, DV, sm_scale, stride_tok, N_CTX,
                  HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_n = tl.program_id(0) * BLOCK_N
    base = tl.program_id(1).to(tl.int64) * N_CTX
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    k = tl.load(K + (base + offs_n[:, None]) * stride_tok + offs_d[None, :])
    v = tl.load(V + (base + offs_n[:, None]) * stride_tok + offs_d[None, :])
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    for start_m in range(0, N_CTX, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_t = tl.load(Q + (base + offs_m[None, :]) * stride_tok + offs_d[:, None])
        m = tl.load(M + base + offs_m)
        p_t = tl.math.exp2(tl.dot(k, q_t) - m[None, :])
        do = tl.load(DO + (base + offs_m[:, None]) * stride_tok + offs_d[None, :])
        dv = tl.dot(p_t.to(tl.bfloat16), do, dv)
        delta = tl.load(Delta + base + offs_m)
        dp_t = tl.dot(v, tl.trans(do))
        ds_t = p_t * (dp_t - delta[None, :])
        dk = tl.dot(ds_t.to(tl.bfloat16), tl.trans(q_t), dk)
    out = (base + offs_n[:, None]) * stride_tok + offs_d[None, :]
    tl.store(DV + out, dv.to(tl.bfloat16))
    tl.store(DK + out, (dk * sm_scale).to(tl.bfloat16))


@triton.jit
def attn_bwd_dq(Q, K, V, DO, M, Delta, DQ, stride_tok, N_CTX,
                HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0) * BLOCK_M
    base = tl.program_id(1).to(tl.int64) * N_CTX
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    rows = (base + offs_m[:, None]) * stride_tok + offs_d[None, :]
    q = tl.load(Q + rows)
    do = tl.load(DO + rows)
    m = tl.load(M + base + offs_m)[:, None]
    delta = tl.load(Delta + base + offs_m)[:, None]
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, N_CTX, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        cols = (base + offs_n[None, :]) * stride_tok + offs_d[:, None]
        k_t = tl.load(K + cols)
        v_t = tl.load(V + cols)
        p = tl.math.exp2(tl.dot(q, k_t) - m)
        dp = tl.dot(do, v_t)
        ds = p * (dp - delta)
        dq = tl.dot(ds.to(tl.bfloat16), tl.trans(k_t), dq)
    tl.store(DQ + rows, (dq * 0.6931471824645996).to(tl.bfloat16))


# (kernel, its name in the stems, pointer arguments, other arguments, constexprs)
KERNELS = [
    (attn_bwd_preprocess, "pre", ["O", "DO"], {"Delta": "*fp32"}, lambda d: {
        "HEAD_DIM": d, "BLOCK_M": PRE_BLOCK}),
    (attn_bwd_dkdv, "dkdv", ["Q", "K", "V", "DO", "DK", "DV"],
     {"M": "*fp32", "Delta": "*fp32", "sm_scale": "fp32", "stride_tok": "i32", "N_CTX": "i32"},
     lambda d: {"HEAD_DIM": d, "BLOCK_M": BLOCK_M1, "BLOCK_N": BLOCK_N1}),
    (attn_bwd_dq, "dq", ["Q", "K", "V", "DO", "DQ"],
     {"M": "*fp32", "Delta": "*fp32", "stride_tok": "i32", "N_CTX": "i32"},
     lambda d: {"HEAD_DIM": d, "BLOCK_M": BLOCK_M2, "BLOCK_N": BLOCK_N2}),
]


def compile_one(kernel, part, bf16_ptrs, others, constexprs, head_dim, capability, out_dir,
                num_warps):
    """Compiles one kernel; returns the stem of its .ptx / .cubin."""
    fn = kernel.fn if hasattr(kernel, "fn") else kernel
    names = list(fn.__code__.co_varnames[:fn.__code__.co_argcount])
    consts = constexprs(head_dim)
    signature = {}
    for n in names:
        if n in consts:
            signature[n] = "constexpr"
        elif n in bf16_ptrs:
            signature[n] = "*bf16"
        else:
            signature[n] = others[n]
    # What the launcher would specialize on for contiguous tensors: 16-byte
    # aligned pointers, strides and lengths multiples of 16.
    aligned = [n for n in names if signature[n].startswith("*") or n in ("stride_tok", "N_CTX")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(kernel, signature, consts, attrs)
    stem = os.path.join(out_dir, f"triton_attn_bwd_{part}_d{head_dim}_sm{capability}_w{num_warps}")
    return compile_to(src, capability, num_warps, NUM_STAGES, stem)


def compile_all(head_dim, capability, out_dir, num_warps=4):
    """Stems of the three backward kernels for one head dim and target."""
    return [compile_one(*k, head_dim, capability, out_dir, num_warps) for k in KERNELS]


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    print(f"triton {triton.__version__}")
    for head_dim in (64, 128):
        for capability in (80, 90):
            for warps in (4, 8):
                for stem in compile_all(head_dim, capability, out_dir, warps):
                    print(stem)


if __name__ == "__main__":
    main()
