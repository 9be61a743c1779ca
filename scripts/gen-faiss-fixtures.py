#!/usr/bin/env python3
"""FAISS parity fixtures of the quantization ops (tests/quantize_faiss.rs).

Writes, into tests/data/faiss/ (checked in, < 200 KB), for each case NAME:

- NAME_x.npy         f32 [N, D], the rows to encode;
- NAME_codebooks.npy f32, the codebooks FAISS trained: [M, K, D / M] for a
  ProductQuantizer, [levels, K, D] for a ResidualQuantizer;
- NAME_codes.npy     i32, FAISS's codes of the rows: [N, M] or [N, levels]
  (compute_codes, unpacked with faiss.unpack_bitstrings).

The cases:

- pq_direct: d = 24, M = 4 (sub-vectors of 6 < 16: FAISS computes each
  distance directly), K = 256; after training, some centroids are copied
  over others (exact ties), and some rows sit next to a duplicated centroid.
- pq_blas: d = 64, M = 2 (sub-vectors of 32 >= 16: FAISS's BLAS distance
  tables, |x|^2 + |c|^2 - 2 x.c), K = 64.
- rq_greedy: d = 16, 4 levels of K = 64, ResidualQuantizer with
  max_beam_size = 1 (greedy), trained with that beam.
- rq_beam2, rq_beam5: d = 16, 3 levels of K = 32, ResidualQuantizer with
  max_beam_size = 2 and 5, trained and encoding with that beam (each case
  from its own seed, so that adding it left the others unchanged).

Run with the test venv's Python (scripts/test-python.sh installs numpy and
faiss-cpu into .tools/venv):

    .tools/venv/bin/python scripts/gen-faiss-fixtures.py           # write
    .tools/venv/bin/python scripts/gen-faiss-fixtures.py --check   # re-encode the
        checked-in rows with the checked-in codebooks and compare with the
        checked-in codes (what FAISS computes now, no training involved)
"""

import argparse
import os
import sys

import faiss
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "faiss")


def pq_codes(centroids, x):
    """FAISS ProductQuantizer codes of x with the given centroids [M, K, dsub]."""
    m, k, dsub = centroids.shape
    nbits = int(np.log2(k))
    assert 1 << nbits == k
    pq = faiss.ProductQuantizer(m * dsub, m, nbits)
    faiss.copy_array_to_vector(np.ascontiguousarray(centroids, dtype="float32").ravel(), pq.centroids)
    packed = pq.compute_codes(np.ascontiguousarray(x, dtype="float32"))
    return faiss.unpack_bitstrings(packed, m, nbits)


def rq_codes(codebooks, x, beam=1):
    """FAISS ResidualQuantizer codes (max_beam_size = beam) of x with codebooks [L, K, d]."""
    levels, k, d = codebooks.shape
    nbits = int(np.log2(k))
    assert 1 << nbits == k
    rq = faiss.ResidualQuantizer(d, levels, nbits)
    rq.max_beam_size = beam
    faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype="float32").ravel(), rq.codebooks)
    rq.is_trained = True
    packed = rq.compute_codes(np.ascontiguousarray(x, dtype="float32"))
    return faiss.unpack_bitstrings(packed, levels, nbits)


def gen_pq_direct(rng):
    d, m, nbits, n = 24, 4, 8, 256
    k, dsub = 1 << nbits, d // m
    train = rng.standard_normal((4000, d)).astype("float32")
    pq = faiss.ProductQuantizer(d, m, nbits)
    pq.train(train)
    c = faiss.vector_to_array(pq.centroids).reshape(m, k, dsub).copy()
    # Exact ties: centroid k - 1 - j repeats centroid j, every 5th j < k / 2.
    dups = list(range(0, k // 2, 5))
    for j in dups:
        c[:, k - 1 - j] = c[:, j]
    x = rng.standard_normal((n, d)).astype("float32")
    # A third of the rows next to duplicated centroids, sub-vector by sub-vector.
    for i in range(0, n, 3):
        for g in range(m):
            j = dups[rng.integers(len(dups))]
            x[i, g * dsub:(g + 1) * dsub] = c[g, j] + 0.01 * rng.standard_normal(dsub)
    return c, x, pq_codes(c, x)


def gen_pq_blas(rng):
    d, m, nbits, n = 64, 2, 6, 128
    k, dsub = 1 << nbits, d // m
    train = rng.standard_normal((3000, d)).astype("float32")
    pq = faiss.ProductQuantizer(d, m, nbits)
    pq.train(train)
    c = faiss.vector_to_array(pq.centroids).reshape(m, k, dsub).copy()
    x = rng.standard_normal((n, d)).astype("float32")
    return c, x, pq_codes(c, x)


def gen_rq_greedy(rng):
    d, levels, nbits, n = 16, 4, 6, 256
    k = 1 << nbits
    train = rng.standard_normal((4000, d)).astype("float32")
    rq = faiss.ResidualQuantizer(d, levels, nbits)
    rq.max_beam_size = 1
    rq.train(train)
    c = faiss.vector_to_array(rq.codebooks).reshape(levels, k, d).copy()
    x = rng.standard_normal((n, d)).astype("float32")
    return c, x, rq_codes(c, x)


def gen_rq_beam(beam):
    def gen(_shared_rng):
        rng = np.random.default_rng(20261206 + beam)
        d, levels, nbits, n = 16, 3, 5, 192
        k = 1 << nbits
        train = rng.standard_normal((3000, d)).astype("float32")
        rq = faiss.ResidualQuantizer(d, levels, nbits)
        rq.max_beam_size = beam
        rq.train(train)
        c = faiss.vector_to_array(rq.codebooks).reshape(levels, k, d).copy()
        x = rng.standard_normal((n, d)).astype("float32")
        return c, x, rq_codes(c, x, beam)
    return gen


CASES = {
    "pq_direct": (gen_pq_direct, pq_codes),
    "pq_blas": (gen_pq_blas, pq_codes),
    "rq_greedy": (gen_rq_greedy, rq_codes),
    "rq_beam2": (gen_rq_beam(2), lambda c, x: rq_codes(c, x, 2)),
    "rq_beam5": (gen_rq_beam(5), lambda c, x: rq_codes(c, x, 5)),
}


def path(name, what):
    return os.path.join(OUT, f"{name}_{what}.npy")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="re-encode and compare, write nothing")
    parser.add_argument("--only", nargs="*", help="write only these cases (the others' files stay)")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    if args.check:
        bad = 0
        for name, (_, encode) in CASES.items():
            c = np.load(path(name, "codebooks"))
            x = np.load(path(name, "x"))
            want = np.load(path(name, "codes"))
            got = encode(c, x)
            same = np.array_equal(got, want)
            print(f"{name}: {'same codes' if same else 'DIFFERENT codes'} ({x.shape[0]} rows)")
            bad += not same
        sys.exit(1 if bad else 0)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20261206)
    total = 0
    for name, (gen, _) in CASES.items():
        c, x, codes = gen(rng)
        if args.only and name not in args.only:
            continue
        for what, a in [("x", x.astype("float32")), ("codebooks", c.astype("float32")),
                        ("codes", codes.astype("int32"))]:
            np.save(path(name, what), np.ascontiguousarray(a))
            total += os.path.getsize(path(name, what))
        print(f"{name}: x {x.shape}, codebooks {c.shape}, codes {codes.shape}")
    print(f"faiss {faiss.__version__}, numpy {np.__version__}: {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
