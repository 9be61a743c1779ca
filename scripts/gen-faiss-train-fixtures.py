#!/usr/bin/env python3
"""FAISS training fixtures of rq_train / pq_train (tests/quantize_train.rs).

Writes, into tests/data/faiss_train/ (checked in, < 200 KB):

- x.npy   f32 [N, D] = [1024, 16]: clustered rows (256 Gaussian blobs of
  unequal spread and weight: more blobs than centroids, so that k-means
  lands within ~2% of the same MSE from any init), the training set of
  both quantizers;
- mse.npy f64 [2]: the reconstruction MSE, mean over the rows of
  |x - decode(encode(x))|^2, of FAISS's quantizers trained on x and
  encoding x:
  [0] ResidualQuantizer(d = 16, levels = 2, nbits = 4: K = 16),
      max_beam_size = 1 (greedy, as residual_quantize), train_type =
      Train_default (plain k-means per level, on the residuals), cp.niter
      = 10;
  [1] ProductQuantizer(d = 16, M = 4, nbits = 4: K = 16), cp.niter = 10.

The test trains rq_train / pq_train on the same rows with the same
levels / M, K and iterations and compares its MSE with these.

    .tools/venv/bin/python scripts/gen-faiss-train-fixtures.py
"""

import os

import faiss
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "faiss_train")

N, D, BLOBS = 1024, 16, 256
LEVELS, M, NBITS, NITER = 2, 4, 4, 10


def data(rng):
    centers = rng.standard_normal((BLOBS, D)) * 2.0
    spread = rng.uniform(0.2, 0.8, BLOBS)
    weight = rng.uniform(0.5, 2.0, BLOBS)
    blob = rng.choice(BLOBS, size=N, p=weight / weight.sum())
    x = centers[blob] + rng.standard_normal((N, D)) * spread[blob, None]
    return np.ascontiguousarray(x.astype("float32"))


def mse(x, y):
    return float(((x.astype("float64") - y.astype("float64")) ** 2).sum(axis=1).mean())


def rq_mse(x):
    rq = faiss.ResidualQuantizer(D, LEVELS, NBITS)
    rq.max_beam_size = 1
    rq.train_type = faiss.ResidualQuantizer.Train_default
    rq.cp.niter = NITER
    rq.train(x)
    return mse(x, rq.decode(rq.compute_codes(x)))


def pq_mse(x):
    pq = faiss.ProductQuantizer(D, M, NBITS)
    pq.cp.niter = NITER
    pq.train(x)
    return mse(x, pq.decode(pq.compute_codes(x)))


def main():
    faiss.omp_set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    x = data(np.random.default_rng(20261206))
    errors = np.array([rq_mse(x), pq_mse(x)], dtype="float64")
    np.save(os.path.join(OUT, "x.npy"), x)
    np.save(os.path.join(OUT, "mse.npy"), errors)
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in ("x.npy", "mse.npy"))
    print(f"rq mse {errors[0]:.6f}, pq mse {errors[1]:.6f}, |x|^2 mean {mse(x, 0 * x):.4f}")
    print(f"faiss {faiss.__version__}, numpy {np.__version__}: {total} bytes in {OUT}")


if __name__ == "__main__":
    main()
