"""Online SGD throughput: generated Numba kernel against plain NumPy of the same update, in one run,
and against the memory-bandwidth bound of one pass over the weights.

    python benchmarks/bench_sgd.py [--dim 4096 --width 256]

Bandwidth is measured in the same process as the best of 5 ``np.copyto`` of a 256 MiB array
(read + write). One online step must read and write W (m x d) once (the kernel applies each update
inside the next step's pass for h = W x): at least 2 * 8 * m * d bytes, so the bound is
bandwidth / (16 m d) steps per second. A kernel that reads W for h and then reads and writes it for
the update moves 24 m d bytes; its bound is two thirds of that.

    python benchmarks/bench_sgd.py --dim 16384 --width 1024 --steps 100   # sizes papers use

Also measured: float32 weights (bound: 8 m d bytes per step), the float64 step on two threads
(``online_sgd(threads=2)``: the pass over W's rows split across Numba's threads; same bound), the
GEMM mini-batch step in samples per second against one-sample steps (on one BLAS thread and, as
``online_sgd(batch=..., threads=2)`` runs it, on two), and float32's effect on a risk curve against
float64.
"""

import argparse
import time

import numba
import numpy as np

from odehild.simulate import Network, online_sgd
from odehild.simulate.networks import random_start
from odehild.threads import blas_threads, compiled_threads, parallel_variant

SIG, PHI = "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)"


def numpy_steps(W, a, nsteps, eta, inv_eps, rng):
    """The same update as the kernel, vectorised with NumPy (sigma, phi the polynomials above)."""
    m, d = W.shape
    s2, s6 = np.sqrt(2.0), np.sqrt(6.0)
    sigma = lambda h: 1 + h + (h * h - 1) / s2 + (h**3 - 3 * h) / s6
    dsigma = lambda h: 1 + 2 * h / s2 + (3 * h * h - 3) / s6
    for _ in range(nsteps):
        x = rng.standard_normal(d)
        y = x[0] + (x[0] ** 2 - 1) / s2 + (x[0] ** 3 - 3 * x[0]) / s6
        h = W @ x
        e = y - np.mean(a * sigma(h))
        c = eta * e * a * dsigma(h)
        a += eta * inv_eps * e * sigma(h)
        W += c[:, None] * (x[None, :] - h[:, None] * W)
        W /= np.linalg.norm(W, axis=1, keepdims=True)


def bandwidth():
    src = np.ones(2**25)
    dst = np.empty_like(src)
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(5))
    return 2 * src.nbytes / best


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def risk_curve_difference(precision, dim=512, width=64, t_end=2.0):
    """Largest relative difference of the recorded risk between float64 and ``precision`` weights,
    same seed and samples."""
    kw = dict(sigma=SIG, phi=PHI, eps=0.1, width=width, dim=dim, t_end=t_end, kmax=3, points=30)
    r64 = online_sgd(**kw).risk
    r = online_sgd(precision=precision, **kw).risk
    return float(np.max(np.abs(r - r64) / r64)), float(r64[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dim", type=int, default=4096)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--batch", type=int, default=32, help="mini-batch size of the GEMM row (default 32)")
    args = p.parse_args()
    d, m = args.dim, args.width
    eps, eta = 0.01, 0.01 / d
    k = Network(SIG, PHI, eps, kmax=3).compiled()
    W, a = random_start(m, d, 0)
    rng = np.random.default_rng(0)
    rates = {}
    with blas_threads(1):
        for name, dtype in (("float64", np.float64), ("float32", np.float32)):
            Wp = W.astype(dtype)
            k.sgd_steps(Wp.copy(), a.copy(), 2, eta, 1 / eps, 0.0, rng)  # compile / load
            t = min(_timed(lambda: k.sgd_steps(Wp, a.copy(), args.steps, eta, 1 / eps, 0.0, rng)) for _ in range(3))
            rates[name + " weights"] = args.steps / t
        if numba.config.NUMBA_NUM_THREADS >= 2:
            with compiled_threads(2):  # online_sgd(threads=2): the pass over W's rows on two threads
                par = parallel_variant(k.sgd_steps)
                par(W.copy(), a.copy(), 2, eta, 1 / eps, 0.0, rng)
                t = min(_timed(lambda: par(W.copy(), a.copy(), args.steps, eta, 1 / eps, 0.0, rng)) for _ in range(3))
                rates["float64 weights, 2 threads"] = args.steps / t
        nb = max(2, args.steps // args.batch)
        k.minibatch_steps(W.copy(), a.copy(), 1, eta, 1 / eps, args.batch, 0.0, rng)
        t_batch = min(_timed(lambda: k.minibatch_steps(W.copy(), a.copy(), nb, eta, 1 / eps, args.batch, 0.0, rng))
                      for _ in range(3))
        t_batch2 = None
        if numba.config.NUMBA_NUM_THREADS >= 2:
            with blas_threads(2):  # online_sgd(batch > 1, threads=2): the GEMMs on two BLAS threads
                t_batch2 = min(_timed(lambda: k.minibatch_steps(W.copy(), a.copy(), nb, eta, 1 / eps, args.batch, 0.0, rng))
                               for _ in range(3))
        rng = np.random.default_rng(0)
        W2, a2 = random_start(m, d, 0)
        t_numpy = min(_timed(lambda: numpy_steps(W2, a2, args.steps // 4, eta, 1 / eps, rng)) for _ in range(3)) * 4
    bw = bandwidth()
    bound = {name: bw / ((8 if name.startswith("float32") else 16) * m * d) for name in rates}
    sps_numpy = args.steps / t_numpy
    print(f"online SGD, d = {d}, m = {m}, one sample per step")
    print(f"  NumPy baseline {sps_numpy:.0f} steps/s; memory bandwidth {bw / 1e9:.1f} GB/s (np.copyto)")
    for name, sps in rates.items():
        print(f"  {name}: {sps:.0f} steps/s = {sps / sps_numpy:.1f}x NumPy, {100 * sps / bound[name]:.0f}% "
              f"of the bound {bound[name]:.0f} steps/s (one read and one write of W per step; np.copyto's "
              "bandwidth is one thread's)")
    one = rates["float64 weights"]
    print(f"  float32 / float64: {rates['float32 weights'] / one:.2f}x")
    if "float64 weights, 2 threads" in rates:
        print(f"  two threads / one (float64): {rates['float64 weights, 2 threads'] / one:.2f}x")
    per_sample = nb * args.batch / t_batch
    print(f"  mini-batch {args.batch} through GEMM: {per_sample:.0f} samples/s = "
          f"{per_sample / one:.1f}x the one-sample steps' samples/s")
    if t_batch2 is not None:
        print(f"  mini-batch {args.batch} with its GEMMs on two BLAS threads (threads=2): {nb * args.batch / t_batch2:.0f} "
              f"samples/s = {t_batch / t_batch2:.2f}x one thread")
    diff, final = risk_curve_difference("float32")
    print(f"  float32 accuracy (d = 512, m = 64, eps = 0.1, t in [0, 2], same seed): largest relative "
          f"difference of the risk curve from float64 {diff:.1e} (final risk {final:.3g})")


if __name__ == "__main__":
    main()
