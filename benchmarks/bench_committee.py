"""Committee machines: odehild's adaptive solve against fixed-step explicit Euler on the same
generated right-hand side (compiled, as in nn2pp's scmpp_ode), erf activations, eta = 0.5, sum
outputs, alpha in [0, 1000]; errors against a tight-tolerance reference. Then the cost of one
right-hand side as K = M grows. Ratios are measured in one process.

    python benchmarks/bench_committee.py            # dt down to 1e-4 (a few minutes)
    python benchmarks/bench_committee.py --quick    # dt down to 1e-3
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numba import njit

from odehild.codegen import compile_model
from odehild.models.committee import CommitteeInit, CommitteeModel, pack, solve_committee, unpack

ERF = "erf(z/sqrt(2))"


@njit
def euler(rhs_jac, y0, K, M, T, A, lr, dt, nsteps, record_every):
    y = y0.copy()
    dy = np.empty(y.size)
    spare = np.empty((1, 1))
    out = np.empty((nsteps // record_every + 1, y.size))
    out[0] = y
    r = 1
    for step in range(1, nsteps + 1):
        rhs_jac(y, K, M, T, A, lr, 0.0, lr * lr, 0.0, 1.0, 1.0, False, False, dy, spare)
        for j in range(y.size):
            y[j] += dt * dy[j]
        if step % record_every == 0:
            out[r] = y
            r += 1
    return out


def start(K, seed=0):
    rng = np.random.default_rng(seed)
    return CommitteeInit(0.25 * np.eye(K) + 1e-3 * np.diag(rng.normal(size=K)), 1e-3 * rng.normal(size=(K, K)),
                         np.eye(K), np.ones(K), np.ones(K), "benchmark start")


def sphere_start(K, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(K, 50))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    return CommitteeInit(W @ W.T, W[:, :K] * 0.1, np.eye(K), np.ones(K), np.ones(K), "benchmark sphere start")


def main(quick=False):
    model = CommitteeModel(ERF, ERF)
    compiled = compile_model(model)
    alpha_end, grid = 1000.0, np.arange(0, 1001, 10.0)
    print("| K = M | method | wall (s) | sup error of Q, R | ratio of Euler's wall to odehild's |")
    print("|---|---|---|---|---|")
    for K in (2, 4):
        init = start(K)
        ref = solve_committee(model, init, alpha_end, lr=0.5, t_eval=grid, rtol=1e-12, atol=1e-14)
        y_ref = np.concatenate([ref.Q.reshape(len(grid), -1), ref.R.reshape(len(grid), -1)], axis=1)
        t0 = time.perf_counter()
        ours = solve_committee(model, init, alpha_end, lr=0.5, t_eval=grid, rtol=1e-8, atol=1e-10)
        wall_ours = time.perf_counter() - t0
        err_ours = np.max(np.abs(np.concatenate([ours.Q.reshape(len(grid), -1), ours.R.reshape(len(grid), -1)], 1)
                                 - y_ref))
        print(f"| {K} | odehild Radau rtol 1e-8 | {wall_ours:.3f} | {err_ours:.1e} | 1 |")
        y0 = pack(init)
        euler(compiled.rhs_jac, y0, K, K, init.T, init.A, 0.5, 1e-2, 10, 10)  # compile
        for dt in ((1e-2, 1e-3) if quick else (1e-2, 1e-3, 1e-4)):
            nsteps = int(round(alpha_end / dt))
            every = int(round(10.0 / dt))
            t0 = time.perf_counter()
            Y = euler(compiled.rhs_jac, y0, K, K, init.T, init.A, 0.5, dt, nsteps, every)
            wall = time.perf_counter() - t0
            Q, R, _ = unpack(Y, K, K)
            err = np.max(np.abs(np.concatenate([Q.reshape(len(grid), -1), R.reshape(len(grid), -1)], 1) - y_ref))
            print(f"| {K} | Euler dt = {dt:g} | {wall:.3f} | {err:.1e} | {wall / wall_ours:.1f} |")

    print("\ncost of one right-hand side (with the eta^2 term), microseconds")
    print("| K = M | erf closed forms | polynomial (Wick) | relu (orthant moments) | Hermite series, sphere, "
          "tanh, kmax = 6 | quadrature, erf | quadrature, tanh |")
    print("|---|---|---|---|---|---|---|")
    poly = compile_model(CommitteeModel("z + 0.3*z**3", "z + 0.3*z**3"))
    relu = compile_model(CommitteeModel("relu(z)", "relu(z)"))
    herm = compile_model(CommitteeModel("tanh(z)", "tanh(z)", geometry="sphere", kmax=6))
    quad_erf = compile_model(CommitteeModel(ERF, ERF, backend="quadrature"))
    quad_tanh = compile_model(CommitteeModel("tanh(z)", "tanh(z)"))
    for K in (2, 4, 8, 12, 20):
        init = start(K)
        on_sphere = sphere_start(K)
        row = []
        cases = [(compiled, init, False), (poly, init, False), (relu, init, False), (herm, on_sphere, True)]
        if K <= (2 if quick else 4):  # the quadrature back end: milliseconds at K = 2, seconds at K = 8
            cases += [(quad_erf, init, False), (quad_tanh, init, False)]
        for cm, st, sphere in cases:
            y = pack(st)
            dy, spare = np.empty(y.size), np.empty((1, 1))
            args = (K, K, st.T, st.A, 0.5, 0.0, 0.25, 0.0, 1.0, 1.0, sphere, False, dy, spare)
            cm.rhs_jac(y, *args)
            reps = max(3, int(2000 / K**3))
            t0 = time.perf_counter()
            for _ in range(reps):
                cm.rhs_jac(y, *args)
            row.append((time.perf_counter() - t0) / reps * 1e6)
        print(f"| {K} | " + " | ".join(f"{x:.0f}" for x in row) + " |" + " - |" * (6 - len(row)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    main(ap.parse_args().quick)
