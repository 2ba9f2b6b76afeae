"""ODE pipeline benchmarks: ratios measured in one process (issue: derive, generate, integrate).

    python benchmarks/bench_ode.py            # full (several minutes on 2 cores)
    python benchmarks/bench_ode.py --quick    # small sizes
"""

from __future__ import annotations

import argparse
import time
import timeit

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

from odehild.codegen import compile_model
from odehild.solve import initial_condition, solve
from odehild.solve.analysis import learning_times
from odehild.models.meanfield import MeanFieldModel
from odehild.symbolic.founding import a_sym, eps_sym, s_sym

SIGMA, PHI = "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)"
RELU_TANH = ("relu(z)", "tanh(z)")


def lambdify_rhs(model):
    """Baseline: the same derived per-particle formulas through sympy.lambdify + NumPy."""
    d = model.derivation
    vals = model.values
    fa = sp.lambdify((a_sym, s_sym, d.g, eps_sym), d.rhs[0].xreplace(vals), "numpy")
    fs = sp.lambdify((a_sym, s_sym, d.g), d.rhs[1].xreplace(vals), "numpy")
    grad = sp.lambdify((d.M,), [gk.xreplace(vals) for gk in d.grad], "numpy")
    K = d.K

    def rhs(t, y, w, eps):
        N = w.size
        a, s = y[:N], y[N:]
        M = (w * a) @ (s[:, None] ** np.arange(K + 1))
        g = grad(M)
        return np.concatenate([np.broadcast_to(fa(a, s, g, eps), (N,)), np.broadcast_to(fs(a, s, g), (N,))])

    return rhs


def bench_rhs(N=64, K=6):
    model = MeanFieldModel(*RELU_TANH, K=K, eps=1e-4)
    c = compile_model(model)
    init = initial_condition(N)
    rng = np.random.default_rng(0)
    y = np.concatenate([init.a0, rng.uniform(-0.5, 0.5, N)])
    w = init.weights
    dy = np.empty(2 * N)
    base = lambdify_rhs(model)
    c.rhs(0.0, y, w, 1e4, dy)
    assert np.allclose(base(0.0, y, w, 1e-4), dy)
    n = 20000
    t_gen = min(timeit.repeat(lambda: c.rhs(0.0, y, w, 1e4, dy), number=n, repeat=3)) / n
    t_lam = min(timeit.repeat(lambda: base(0.0, y, w, 1e-4), number=n // 10, repeat=3)) / (n // 10)
    print(f"RHS per call, N = {N}, K = {K}: generated Numba {t_gen * 1e6:.2f} us, "
          f"lambdify+NumPy {t_lam * 1e6:.1f} us  -> ratio {t_lam / t_gen:.0f}x")
    return t_lam / t_gen


def plain_scipy(model, init, t_end, rtol, atol, t_eval, budget):
    """Baseline: solve_ivp(Radau) on a NumPy RHS, finite-difference Jacobian."""
    sig = np.array(model.sigma.coefficients)
    phi = np.array(model.phi.coefficients)
    w, eps, N, K = init.weights, model.eps, init.N, model.K
    powers = np.arange(K + 1)
    dF = np.polynomial.polynomial
    start = time.perf_counter()

    def f(t, y):
        if time.perf_counter() - start > budget:
            raise TimeoutError(t)
        a, s = y[:N], y[N:]
        M = (w * a) @ (s[:, None] ** powers)
        c = sig * (phi - sig * M)
        return np.concatenate([dF.polyval(s, c) / eps, (1 - s * s) * a * dF.polyval(s, dF.polyder(c))])

    try:
        sol = solve_ivp(f, (0, t_end), np.concatenate([init.a0, init.s0]), method="Radau", rtol=rtol,
                        atol=atol, t_eval=t_eval)
        return sol, time.perf_counter() - start, None
    except TimeoutError as exc:
        return None, time.perf_counter() - start, float(exc.args[0])


def bench_end_to_end(N=100, eps=1e-8, t_end=5.0, budget=600.0):
    model = MeanFieldModel(SIGMA, PHI, K=3, eps=eps)
    init = initial_condition(N)
    rtol, atol = 1e-8, 1e-10
    ref = solve(model, init, t_end, rtol=1e-11, atol=1e-13, progress=False)
    ours = solve(model, init, t_end, rtol=rtol, atol=atol, progress=False)
    dense = solve(model, init, t_end, rtol=rtol, atol=atol, progress=False, structured=False)
    sol, t_plain, reached = plain_scipy(model, init, t_end, rtol, atol, ours.t, budget)
    lt_ref = learning_times(ref.t, ref.residuals)
    lt_ours = learning_times(ours.t, ours.residuals)
    err_ours = np.nanmax(np.abs(lt_ours / lt_ref - 1))
    t_ours = ours.stats["solve_seconds"]
    print(f"odehild Woodbury solves {t_ours:.2f} s against dense LU {dense.stats['solve_seconds']:.2f} s "
          f"-> {dense.stats['solve_seconds'] / t_ours:.1f}x")
    if sol is None:
        print(f"end to end N = {N}, eps = {eps:g}: odehild {t_ours:.2f} s; plain SciPy Radau + FD "
              f"Jacobian reached t = {reached:.3g} of {t_end} in its {budget:.0f} s budget -> ratio > {t_plain / t_ours:.0f}x")
        return t_plain / t_ours
    M = np.array([(init.weights * sol.y[:N, i]) @ (sol.y[N:, i, None] ** np.arange(4)) for i in range(sol.t.size)])
    res = np.array(model.phi.coefficients) - np.array(model.sigma.coefficients) * M
    err_plain = np.nanmax(np.abs(learning_times(sol.t, res) / lt_ref - 1))
    print(f"end to end N = {N}, eps = {eps:g}, rtol = {rtol:g}: odehild {t_ours:.2f} s "
          f"(nfev {ours.stats['nfev']}, njev {ours.stats['njev']}, nlu {ours.stats['nlu']}), plain SciPy "
          f"{t_plain:.2f} s (nfev {sol.nfev}, njev {sol.njev}, nlu {sol.nlu}) -> ratio {t_plain / t_ours:.1f}x; "
          f"learning-time rel. error vs rtol=1e-11: odehild {err_ours:.1e}, plain {err_plain:.1e}")
    return t_plain / t_ours


def bench_explicit(N=100, eps=1e-3, budget=20.0):
    model = MeanFieldModel(SIGMA, PHI, K=3, eps=eps)
    init = initial_condition(N)
    out = {}
    for method in ("Radau", "BDF", "RK45"):
        tr = solve(model, init, 5.0, method=method, max_wall=budget, progress=False)
        out[method] = tr
        print(f"eps = {eps:g}, N = {N}, {method}: reached t = {tr.stats['t_reached']:.3g} of 5 in "
              f"{tr.stats['solve_seconds']:.2f} s ({tr.stats['nsteps']} steps, nfev {tr.stats['nfev']})")
    return out


def bench_grid(eps_list, N_list, budget):
    print(f"{'N':>6} {'eps':>8} {'wall s':>8} {'steps':>7} {'nfev':>7} {'njev':>6} {'nlu':>6}  t reached")
    for N in N_list:
        for eps in eps_list:
            model = MeanFieldModel(SIGMA, PHI, K=3, eps=eps)
            tr = solve(model, initial_condition(N), 5.0, max_wall=budget, progress=False)
            st = tr.stats
            print(f"{N:>6} {eps:>8.0e} {st['solve_seconds']:>8.2f} {st['nsteps']:>7} {st['nfev']:>7} "
                  f"{st['njev']:>6} {st['nlu']:>6}  {st['t_reached']:.3g}", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    bench_rhs()
    if args.quick:
        bench_end_to_end(N=20, eps=1e-6, budget=60)
        bench_explicit(N=20, budget=5)
        bench_grid([1e-4, 1e-8], [50], 60)
    else:
        bench_end_to_end()
        bench_explicit()
        bench_grid([1e-4, 1e-8, 1e-12], [100, 1000, 10000], 300)


if __name__ == "__main__":
    main()
