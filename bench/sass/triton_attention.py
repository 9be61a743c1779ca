"""Compiles a compact copy of Triton's tutorial fused attention forward
(python/tutorials/06-fused-attention.py, the non-causal inner loop) for a
CUDA target without a GPU, and writes its PTX (and Triton's own cubin).

    python bench/sass/triton_attention.py OUT_DIR

writes OUT_DIR/triton_attn_fwd_d{64,128}_sm{80,90}_w4.ptx and .cubin, and
prints the Triton version. BLOCK_M 128, BLOCK_N 64, bf16, 3 stages, 4 warps
(compile_one takes 8 too: at D = 128, 4 warps spill on sm_80).
"""

import os

os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BLOCK_M, BLOCK_N, NUM_STAGES = 128, 64, 3


@triton.jit
def attn_fwd(Q, K, V, Out, M, sm_scale, stride_qm, stride_kn, stride_vn, stride_om,
             N_CTX, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    start_m = tl.program_id(0)
    off_hz = tl.program_id(1)
    base = off_hz.to(tl.int64) * N_CTX
    offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(Q + (base + offs_m[:, None]) * stride_qm + offs_d[None, :])
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    qk_scale = sm_scale * 1.44269504
    for start_n in range(0, N_CTX, BLOCK_N):
        rows = base + start_n + offs_n
        k = tl.load(K + rows[None, :] * stride_kn + offs_d[:, None])
        qk = tl.dot(q, k)
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        qk = qk * qk_scale - m_ij[:, None]
        p = tl.math.exp2(qk)
        l_ij = tl.sum(p, 1)
        alpha = tl.math.exp2(m_i - m_ij)
        l_i = l_i * alpha + l_ij
        acc = acc * alpha[:, None]
        v = tl.load(V + rows[:, None] * stride_vn + offs_d[None, :])
        acc = tl.dot(p.to(tl.bfloat16), v, acc)
        m_i = m_ij
    m_i += tl.math.log2(l_i)
    acc = acc / l_i[:, None]
    tl.store(M + base + offs_m, m_i)
    tl.store(Out + (base + offs_m[:, None]) * stride_om + offs_d[None, :], acc.to(tl.bfloat16))


def compile_one(head_dim, capability, out_dir, num_warps=4):
    signature = {
        "Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "M": "*fp32",
        "sm_scale": "fp32", "stride_qm": "i32", "stride_kn": "i32", "stride_vn": "i32",
        "stride_om": "i32", "N_CTX": "i32",
        "HEAD_DIM": "constexpr", "BLOCK_M": "constexpr", "BLOCK_N": "constexpr",
    }
    constexprs = {"HEAD_DIM": head_dim, "BLOCK_M": BLOCK_M, "BLOCK_N": BLOCK_N}
    # What the launcher would specialize on for contiguous tensors: 16-byte
    # aligned pointers, strides and length multiples of 16 (as the tutorial's).
    names = list(signature)
    aligned = ["Q", "K", "V", "Out", "M", "stride_qm", "stride_kn", "stride_vn", "stride_om", "N_CTX"]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(attn_fwd, signature, constexprs, attrs)
    stem = os.path.join(out_dir, f"triton_attn_fwd_d{head_dim}_sm{capability}_w{num_warps}")
    return compile_to(src, capability, num_warps, NUM_STAGES, stem)


def compile_to(src, capability, num_warps, num_stages, stem):
    """Compiles `src` for sm_CAPABILITY and writes STEM.ptx and STEM.cubin; returns `stem`.
    Shared with triton_attention_bwd.py."""
    kernel = triton.compile(src, target=GPUTarget("cuda", capability, 32),
                            options={"num_warps": num_warps, "num_stages": num_stages})
    with open(stem + ".ptx", "w") as f:
        f.write(kernel.asm["ptx"])
    with open(stem + ".cubin", "wb") as f:
        f.write(kernel.asm["cubin"])
    return stem


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    print(f"triton {triton.__version__}")
    for head_dim in (64, 128):
        for capability in (80, 90):
            print(compile_one(head_dim, capability, out_dir))


if __name__ == "__main__":
    main()
