"""Particle count: wall time, steps, time per step and peak memory of a mean-field solve at growing N.

The case of issue 14: sigma = h0+h1+h2+h3, phi = h1+h2+h3, K = 3, eps = 1e-12, t in [0, 5],
rtol 1e-8, quadrature nodes of the normal a0 law, Radau with the structured (Woodbury) Jacobian.
Each N runs in a fresh process (its peak resident memory is that process's), after one warm-up
solve that loads the compiled code. With ``--dense-upto`` the dense-LU Radau runs too, where it fits,
for the ratio in the same conditions.

    python benchmarks/bench_particles.py                      # N = 1e3, 1e4, 1e5
    python benchmarks/bench_particles.py --n 1000 1000000     # up to 1e6 (about 15 minutes)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from odehild.models import MeanFieldModel
from odehild.solve import initial_condition, solve
N, structured = int(sys.argv[1]), sys.argv[2] == "1"
model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=1e-12)
solve(model, initial_condition(10), 5.0, points=3, progress=False, structured=structured)
init = initial_condition(N)
t0 = time.perf_counter()
tr = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, structured=structured)
wall = time.perf_counter() - t0
print(json.dumps({"N": N, "wall": wall, "steps": tr.stats["nsteps"], "nlu": tr.stats["nlu"],
                  "ndense": tr.stats["ndense"], "risk": float(tr.risk[-1]),
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(N, structured):
    out = subprocess.run([sys.executable, "-c", CHILD, str(N), "1" if structured else "0"], capture_output=True,
                         text=True)
    if out.returncode:
        return {"N": N, "error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(ns, dense_upto):
    print("mean-field staircase K = 3, eps = 1e-12, t in [0, 5], rtol 1e-8, Radau")
    print(f"{'N':>8} {'solver':>10} {'wall s':>8} {'steps':>6} {'ms/step':>8} {'peak MB':>8} {'nlu':>5} "
          f"{'dense LU':>8}")
    for N in ns:
        for structured in (True, False):
            if not structured and N > dense_upto:
                continue
            r = run(N, structured)
            name = "Woodbury" if structured else "dense LU"
            if "error" in r:
                print(f"{N:>8} {name:>10} failed: {r['error']}")
                continue
            print(f"{N:>8} {name:>10} {r['wall']:8.2f} {r['steps']:6d} {1e3 * r['wall'] / r['steps']:8.2f} "
                  f"{r['rss_mb']:8.0f} {r['nlu']:5d} {r['ndense']:8d}", flush=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dense-upto", type=int, default=0, help="also run dense LU up to this N (default: none)")
    a = p.parse_args()
    main(a.n, a.dense_upto)
