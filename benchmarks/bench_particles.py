"""Particle count: wall time, steps, time per step and peak memory of a mean-field solve at growing N.

The case of issue 14: sigma = h0+h1+h2+h3, phi = h1+h2+h3, K = 3, eps = 1e-12, t in [0, 5],
rtol 1e-8, quadrature nodes of the normal a0 law, Radau with the structured (Woodbury) Jacobian.
Each N and solver runs in a fresh process (its peak resident memory is that process's), after one
warm-up solve that loads the compiled code. Solvers: ``compiled`` (odehild's Radau, the default),
``scipy`` (SciPy's Radau step with the same Woodbury solves: the baseline), ``dense`` (SciPy's Radau
with dense LU, only up to ``--dense-upto``), ``threads2`` (odehild's Radau with its passes on two Numba
threads, ``threads=2``), ``weighted`` (odehild's Radau with ``error_norm="weighted"``: each particle's
error counted times sqrt(w / max w)), ``weighted2`` (both: the weighted norm on two threads).

    python benchmarks/bench_particles.py    # N = 1e3, 1e4, 1e5; compiled, weighted, threads2, scipy
    python benchmarks/bench_particles.py --n 1000000 --solvers compiled weighted --max-wall 60
    python benchmarks/bench_particles.py --accuracy 1000   # errors against a state-norm run at rtol 1e-10
    python benchmarks/bench_particles.py --n 100000 --solvers weighted --output-precision float32

``--accuracy N`` runs, in one fresh process, a reference in the state norm at rtol 1e-10 and then the
state and weighted norms at rtol 1e-8 (and weighted at 1e-10), all on the same 400 log-spaced output
times, and prints each run's steps and its errors against the reference: learning times (relative),
moments M_k (max absolute), risk (max relative where the reference risk exceeds 1e-12; and its
value at t = 5), and the particles' own s (max absolute). ``--threads`` and ``--output-precision``
apply to these solves (the reference keeps float64 outputs). At N = 1e5 the rtol 1e-10 reference
takes 28290 steps, about 15 minutes on two threads (41540 before the Jacobian was taken ahead; before
the moments were compensated sums it had reached only t = 0.05 after 20 minutes, in steps of 6e-10);
``--reference-rtol 1e-8`` makes the state norm's rtol 1e-8 run the reference and measures how far
the weighted run lies from odehild's default:

    python benchmarks/bench_particles.py --accuracy 100000 --threads 2 --output-precision float32
    python benchmarks/bench_particles.py --accuracy 100000 --threads 2 --output-precision float32 \
        --reference-rtol 1e-8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from odehild.models import MeanFieldModel
from odehild.solve import initial_condition, integrate, radau, solve
N, solver, max_wall, precision = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]
threads = 2 if solver in ("threads2", "weighted2") else 1
if solver == "scipy":
    integrate.STRUCTURED_RADAU = "scipy"
structured = solver != "dense"
norm = "weighted" if solver in ("weighted", "weighted2") else "state"
model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=1e-12)
# loads every kernel: at enough unknowns that the parallel passes and the generated fused passes are
# loaded, or compiled, too; then the separate passes, which a factor that needs refinement takes
warm = (max(integrate.PARALLEL_MIN_UNKNOWNS, radau.FUSED_MIN_UNKNOWNS) if threads > 1 else radau.FUSED_MIN_UNKNOWNS) // 2
fused = radau.FUSED_MIN_UNKNOWNS
for radau.FUSED_MIN_UNKNOWNS in (fused, float("inf")):
    solve(model, initial_condition(warm), 5.0 if threads == 1 else 1e-6, points=3, progress=False,
          structured=structured, threads=threads, error_norm=norm, output_precision=precision)
radau.FUSED_MIN_UNKNOWNS = fused
# and the refined solves of factors in rows (an ill-conditioned capacitance, late in a run)
import numpy as np
from odehild.solve.structured import IterationMatrix, LowRankJacobian, WoodburyFactor
from odehild.threads import compiled_threads
J = LowRankJacobian.from_rows(np.eye(2).reshape(4, 1).repeat(50, 1), np.ones((4, 100)), np.ones((4, 100)) / 100)
with compiled_threads(threads):
    for mu in (radau.MU_REAL, radau.MU_COMPLEX):
        F = WoodburyFactor(IterationMatrix(mu, J), threads=threads, rows=True)
        F.refine = True
        F.solve(np.ones(100, dtype=F.dtype))
init = initial_condition(N)
t0 = time.perf_counter()
tr = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, structured=structured,
           max_wall=max_wall if max_wall > 0 else None, threads=threads, error_norm=norm,
           output_precision=precision)
wall = time.perf_counter() - t0
print(json.dumps({"N": N, "wall": wall, "steps": tr.stats["nsteps"], "nlu": tr.stats["nlu"],
                  "ndense": tr.stats["ndense"], "risk": float(tr.risk[-1]), "t": tr.stats["t_reached"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


ACCURACY = r"""
import json, sys, time
import numpy as np
from odehild.models import MeanFieldModel
from odehild.solve import initial_condition, solve
from odehild.solve.analysis import learning_times
N, threads, precision, ref_rtol = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=1e-12)
init = initial_condition(N)
t_eval = np.concatenate([[0.0], np.logspace(-14, np.log10(5.0), 400)])
solve(model, initial_condition(200), 5.0, points=3, progress=False, error_norm="weighted")
runs = []
# a run tighter than the reference, or the reference itself, measures nothing
cases = [("state", ref_rtol)] + [(n, r) for n, r in (("state", 1e-8), ("weighted", 1e-8), ("weighted", 1e-10))
                                 if r > ref_rtol or (n == "weighted" and r == ref_rtol)]
for norm, rtol in cases:
    t0 = time.perf_counter()
    # the reference keeps float64 outputs; the others the precision asked for
    tr = solve(model, init, 5.0, t_eval=t_eval, rtol=rtol, atol=1e-2 * rtol, progress=False, error_norm=norm,
               threads=threads, output_precision=precision if runs else "float64")
    runs.append((norm, rtol, time.perf_counter() - t0, tr))
ref = runs[0][3]
lt_ref = learning_times(ref.t, ref.residuals)[1:]
big = ref.risk > 1e-12
for norm, rtol, wall, tr in runs[1:]:
    lt = learning_times(tr.t, tr.residuals)[1:]
    print(json.dumps({"norm": norm, "rtol": rtol, "wall": wall, "steps": tr.stats["nsteps"],
                      "lt": (np.abs(lt / lt_ref - 1)).tolist(),
                      "moments": float(np.max(np.abs(tr.moments - ref.moments))),
                      "risk": float(np.max(np.abs(tr.risk[big] / ref.risk[big] - 1))),
                      "risk_end": float(tr.risk[-1]),
                      "s": float(np.max(np.abs(tr.s - ref.s)))}))
print(json.dumps({"reference_steps": ref.stats["nsteps"], "lt_ref": lt_ref.tolist(),
                  "risk_end": float(ref.risk[-1])}))
"""


def accuracy(N, threads, precision, ref_rtol):
    print(f"accuracy at N = {N}: errors against the state norm at rtol {ref_rtol:g} (atol = rtol / 100), "
          f"400 log-spaced output times, {threads} thread(s), outputs other than the reference's in {precision}")
    out = subprocess.run([sys.executable, "-c", ACCURACY, str(N), str(threads), precision, repr(ref_rtol)],
                         capture_output=True, text=True)
    if out.returncode:
        sys.exit("accuracy run failed: " + (out.stderr.strip().splitlines() or ["killed"])[-1])
    rows = [json.loads(line) for line in out.stdout.strip().splitlines()]
    ref = rows.pop()
    print(f"reference: {ref['reference_steps']} steps, learning times "
          + ", ".join(f"{x:.6g}" for x in ref["lt_ref"]) + f", risk at t = 5 {ref['risk_end']:.3e}")
    print(f"{'norm':>9} {'rtol':>6} {'wall s':>7} {'steps':>6} {'learning times, rel':>30} {'M_k, abs':>9} "
          f"{'risk, rel':>9} {'risk at 5':>10} {'s, abs':>9}")
    for r in rows:
        lt = ", ".join(f"{x:.1e}" for x in r["lt"])
        print(f"{r['norm']:>9} {r['rtol']:6.0e} {r['wall']:7.2f} {r['steps']:6d} {lt:>30} {r['moments']:9.1e} "
              f"{r['risk']:9.1e} {r['risk_end']:10.3e} {r['s']:9.1e}")


def run(N, solver, max_wall, precision):
    out = subprocess.run([sys.executable, "-c", CHILD, str(N), solver, str(max_wall), precision],
                         capture_output=True, text=True)
    if out.returncode:
        return {"N": N, "error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(ns, solvers, dense_upto, max_wall, precision):
    print(f"mean-field staircase K = 3, eps = 1e-12, t in [0, 5], rtol 1e-8, Radau, 201 output times in {precision}")
    print(f"{'N':>8} {'solver':>9} {'wall s':>8} {'steps':>6} {'ms/step':>8} {'peak MB':>8} {'t reached':>9} "
          f"{'step ratio':>10} {'wall ratio':>10}")
    for N in ns:
        base = None
        for solver in solvers:
            if solver == "dense" and N > dense_upto:
                continue
            r = run(N, solver, max_wall, precision)
            if "error" in r:
                print(f"{N:>8} {solver:>9} failed: {r['error']}")
                continue
            per_step = 1e3 * r["wall"] / r["steps"]
            base = base or (per_step, r["wall"])
            print(f"{N:>8} {solver:>9} {r['wall']:8.2f} {r['steps']:6d} {per_step:8.2f} {r['rss_mb']:8.0f} "
                  f"{r['t']:9.3g} {per_step / base[0]:10.2f} {r['wall'] / base[1]:10.2f}", flush=True)
    print("ratios: time per step and wall time against the first solver of the same N")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--solvers", nargs="+", choices=("compiled", "weighted", "threads2", "weighted2", "scipy", "dense"),
                   default=["compiled", "weighted", "threads2", "scipy"])
    p.add_argument("--dense-upto", type=int, default=4000, help="run the dense solver only up to this N")
    p.add_argument("--max-wall", type=float, default=0, help="stop each solve after this many seconds (0: never)")
    p.add_argument("--output-precision", default="float64", choices=("float64", "float32"),
                   help="how the particles' states at the output times are kept (solve's output_precision)")
    p.add_argument("--accuracy", type=int, metavar="N", default=0,
                   help="instead of the timings, errors of each norm at this N against a tight run")
    p.add_argument("--threads", type=int, default=1, help="with --accuracy: the solves' threads")
    p.add_argument("--reference-rtol", type=float, default=1e-10,
                   help="with --accuracy: the state-norm reference's rtol (runs tighter than it, and the "
                        "state-norm run at it, are left out)")
    a = p.parse_args()
    if a.accuracy:
        accuracy(a.accuracy, a.threads, a.output_precision, a.reference_rtol)
    else:
        main(a.n, a.solvers, a.dense_upto, a.max_wall, a.output_precision)
