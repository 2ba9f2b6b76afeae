"""The Woodbury passes of this tree against those of an earlier commit, in one process.

The same mean-field solves as ``bench_particles.py`` (staircase K = 3, eps = 1e-12, t in [0, 5],
rtol 1e-8, quadrature nodes) run alternately with this tree's capacitance and solve passes
(``odehild/solve/structured.py``, and its fused Newton passes from ``radau.FUSED_MIN_UNKNOWNS``
unknowns on) and with those of ``--against`` (read with ``git show``; separate Newton passes),
everything else shared. ``--against separate`` compares this tree's fused Newton passes with its own
separate ones, at every N. Prints each wall time, the ratio of medians, and the largest difference
between the two trajectories (0 where the passes compute the same numbers).

``--kernel`` times one fused Newton iteration alone (``structured.newton_update``, rank 4, random
factors as in the tests): the generated pass that one thread takes (factors in rows) against the
pass that reads the factors as blocks (the threads' pass, on one thread), alternated in one
process; prints the median of each in ns a particle, their ratio, and how far one iteration's W
from each lies apart (relative to the increment).

    python benchmarks/bench_passes.py --against a43ecee --n 10000 --repeats 3
    python benchmarks/bench_passes.py --against separate --n 10000 100000 --repeats 1
    python benchmarks/bench_passes.py --kernel --n 1000 10000 100000
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_KEEP = []  # temporary folders alive until the process ends


def passes_of(rev):
    """The serial passes of ``odehild/solve/structured.py`` at ``rev``, as ``_passes(parallel, rank)``."""
    src = subprocess.run(["git", "show", f"{rev}:odehild/solve/structured.py"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    folder = tempfile.TemporaryDirectory()  # its Numba cache goes with it
    _KEEP.append(folder)
    path = Path(folder.name) / f"structured_at_{rev}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location("structured_at_" + rev, path)
    old = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(old)
    def inverses(fn):
        # the block inverses take the singular blocks' threshold (nineteenth session); while the fused
        # passes read P^-1 in rows (seventeenth session), they took a ``rows`` argument to write them to
        code = fn.py_func.__code__
        last = code.co_varnames[code.co_argcount - 1]
        if last == "cond_limit":
            return fn
        if last == "rows":
            return lambda D, c, sc, Pinv, cond_limit: fn(D, c, sc, Pinv, np.empty((0, 0)))
        return lambda D, c, sc, Pinv, cond_limit: fn(D, c, sc, Pinv)

    if hasattr(old, "_rank_passes"):
        def rank_passes(parallel, rank):
            o = old._passes(False, rank)
            return SimpleNamespace(**{**vars(o), "_shifted_inverses_2x2": inverses(o._shifted_inverses_2x2)})

        return rank_passes
    o = old._passes(False)  # before the rank-specialized and complex passes: one generic set
    ns = SimpleNamespace(_shifted_inverses_2x2=inverses(o._shifted_inverses_2x2), _capacitance=o._capacitance,
                         _woodbury_solve=o._woodbury_solve, _capacitance_complex=o._capacitance,
                         _woodbury_solve_complex=o._woodbury_solve)
    return lambda parallel, rank: ns


def main(rev, ns, norms, repeats):
    from odehild.models import MeanFieldModel
    from odehild.solve import initial_condition, radau, solve
    from odehild.solve import structured

    # (passes, the fewest unknowns at which Newton iterations take the fused passes)
    if rev == "separate":
        variants = {"this tree": (structured._passes, 0), rev: (structured._passes, np.inf)}
    else:
        variants = {"this tree": (structured._passes, radau.FUSED_MIN_UNKNOWNS), rev: (passes_of(rev), np.inf)}
    model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=1e-12)
    for passes, radau.FUSED_MIN_UNKNOWNS in variants.values():  # load (or compile) both sets before timing
        structured._passes = passes
        solve(model, initial_condition(200), 5.0, points=3, progress=False)
    print(f"{'N':>7} {'norm':>9} {'steps':>6} {'this tree: wall s':>24} {rev + ': wall s':>24} {'ratio':>6} "
          f"{'max |diff|':>10}")
    for N in ns:
        init = initial_condition(N)
        for norm in norms:
            walls, runs = {k: [] for k in variants}, {}
            for _ in range(repeats):
                for name in reversed(list(variants)):
                    structured._passes, radau.FUSED_MIN_UNKNOWNS = variants[name]
                    t0 = time.perf_counter()
                    runs[name] = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, error_norm=norm)
                    walls[name].append(time.perf_counter() - t0)
            new, old = runs["this tree"], runs[rev]
            diff = max(np.max(np.abs(new.a - old.a)), np.max(np.abs(new.s - old.s)))
            ratio = np.median(walls[rev]) / np.median(walls["this tree"])
            print(f"{N:>7} {norm:>9} {new.stats['nsteps']:>6} {', '.join(f'{w:.2f}' for w in walls['this tree']):>24} "
                  f"{', '.join(f'{w:.2f}' for w in walls[rev]):>24} {ratio:6.2f} {diff:10.1e}", flush=True)
    print(f"ratio: median wall time with {rev}'s passes over this tree's (above 1: this tree is faster)")


def kernel(ns, repeats):
    from odehild.solve import radau
    from odehild.solve.structured import IterationMatrix, LowRankJacobian, WoodburyFactor, newton_update

    rng = np.random.default_rng(0)
    print(f"{'N':>7} {'generated: ns a particle':>25} {'blocks: ns a particle':>22} {'ratio':>6} {'W diff, rel':>11}")
    for N in ns:
        n, r, h = 2 * N, 4, 1e-3
        J = LowRankJacobian(rng.normal(size=(N, 2, 2)), rng.normal(size=(n, r)) / N ** 0.5,
                            rng.normal(size=(r, n)) / N ** 0.5)
        F, W0, y = rng.normal(size=(3, n)), rng.normal(size=(3, n)), rng.normal(size=n)
        inv, Ys = rng.uniform(0.5, 2.0, size=n), np.empty((3, n))
        factors = {name: [WoodburyFactor(IterationMatrix(mu / h, J), rows=rows)
                          for mu in (radau.MU_REAL, radau.MU_COMPLEX)]
                   for name, rows in (("generated", True), ("blocks", False))}
        calls = max(3, int(2e6 / N))  # about 2e6 particles a timing
        times = {name: [] for name in factors}
        for _ in range(max(repeats, 5)):
            for name, (LR, LC) in factors.items():
                W = W0.copy()
                t0 = time.perf_counter()
                for _ in range(calls):
                    newton_update(LR, LC, F, W, radau.TI, radau.T, radau.MU_REAL / h, radau.MU_COMPLEX / h, y, inv,
                                  Ys)
                times[name].append((time.perf_counter() - t0) / calls / N * 1e9)
        gen, blocks = (np.median(times[k]) for k in ("generated", "blocks"))
        # one iteration of each from the same iterate: the same W to rounding (sums in another order)
        Ws = {name: W0.copy() for name in factors}
        for name, (LR, LC) in factors.items():
            newton_update(LR, LC, F, Ws[name], radau.TI, radau.T, radau.MU_REAL / h, radau.MU_COMPLEX / h, y, inv, Ys)
        diff = np.abs(Ws["generated"] - Ws["blocks"]).max() / np.abs(Ws["blocks"] - W0).max()
        print(f"{N:>7} {gen:>25.1f} {blocks:>22.1f} {blocks / gen:6.2f} {diff:11.1e}", flush=True)
    print("ratio: the blocks pass's median time over the generated pass's (above 1: the generated one is faster);"
          " W diff: the largest difference of one iteration's W, over the largest increment")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="a43ecee",
                   help="the commit whose passes to compare with, or 'separate' (this tree without fused passes)")
    p.add_argument("--n", type=int, nargs="+", default=[10000])
    p.add_argument("--norms", nargs="+", choices=("state", "weighted"), default=["state", "weighted"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kernel", action="store_true", help="time one fused Newton iteration alone (see above)")
    a = p.parse_args()
    if a.kernel:
        kernel(a.n, a.repeats)
    else:
        main(a.against, a.n, a.norms, a.repeats)
