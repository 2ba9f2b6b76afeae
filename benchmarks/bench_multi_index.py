"""Multi-index particles: wall time, steps, time per step and peak memory of a mean-field solve of the
staircase z1 + z1 z2 + z1 z2 z3 (M = 3) at growing N, structured (Woodbury on 4x4 blocks plus the
rank-35 moment term) against dense LU where it fits.

sigma = h0+h1+h2+h3+h4, K = 4 (all 35 multi-indices |alpha| <= 4 are moments), eps = 1e-8,
t in [0, 5], rtol 1e-8, Radau, a0 at quadrature nodes of the normal law, s0 = 0. Each N runs in a
fresh process (its peak resident memory is that process's) after one warm-up solve that loads the
compiled code, for at most --max-wall seconds of solving (a run stopped early reports the time it
reached; its steps and time per step stand).

    python benchmarks/bench_multi_index.py                    # N = 1e3, 1e4, 1e5; dense up to 1e3
    python benchmarks/bench_multi_index.py --n 1000 --dense-upto 1000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
from odehild.models.multi_index import MultiIndexModel, multi_index_start
from odehild.solve import solve
N, structured, max_wall = int(sys.argv[1]), sys.argv[2] == "1", float(sys.argv[3])
model = MultiIndexModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)+h(4,z)", "z1 + z1*z2 + z1*z2*z3", K=4, eps=1e-8)
solve(model, multi_index_start(10, 3), 5.0, points=3, progress=False, structured=structured)
init = multi_index_start(N, 3)
t0 = time.perf_counter()
tr = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, structured=structured, max_wall=max_wall)
wall = time.perf_counter() - t0
print(json.dumps({"N": N, "wall": wall, "steps": tr.stats["nsteps"], "nlu": tr.stats["nlu"],
                  "ndense": tr.stats["ndense"], "risk": float(tr.risk[-1]), "t_reached": tr.stats["t_reached"],
                  "times": [float(x) for x in tr.direction_times()],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(N, structured, max_wall):
    out = subprocess.run([sys.executable, "-c", CHILD, str(N), "1" if structured else "0", str(max_wall)],
                         capture_output=True, text=True)
    if out.returncode:
        return {"N": N, "error": (out.stderr.strip().splitlines() or ["killed"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(ns, dense_upto, max_wall):
    print("multi-index staircase M = 3, K = 4 (35 moments), eps = 1e-8, t in [0, 5], rtol 1e-8, Radau")
    print(f"{'N':>8} {'solver':>10} {'wall s':>8} {'steps':>6} {'ms/step':>8} {'peak MB':>8} {'nlu':>5} "
          f"{'learning times z1, z2, z3':>28}")
    base = {}
    for N in ns:
        for structured in (True, False):
            if not structured and N > dense_upto:
                continue
            r = run(N, structured, max_wall)
            name = "Woodbury" if structured else "dense LU"
            if "error" in r:
                print(f"{N:>8} {name:>10} failed: {r['error']}")
                continue
            times = ", ".join(f"{x:.4g}" for x in r["times"])
            print(f"{N:>8} {name:>10} {r['wall']:8.2f} {r['steps']:6d} {1e3 * r['wall'] / r['steps']:8.2f} "
                  f"{r['rss_mb']:8.0f} {r['nlu']:5d} {times:>28}"
                  + ("" if r["t_reached"] >= 5.0 else f"  stopped by --max-wall at t = {r['t_reached']:.3g} of 5"),
                  flush=True)
            if structured:
                base[N] = r["wall"] / r["steps"]
            elif N in base:
                print(f"{'':>8} dense / Woodbury time per step at N = {N}: {r['wall'] / r['steps'] / base[N]:.0f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--dense-upto", type=int, default=1000, help="also run dense LU up to this N (default 1000)")
    p.add_argument("--max-wall", type=float, default=300.0,
                   help="seconds of solving per run; a run stopped early reports how far it got (default 300)")
    a = p.parse_args()
    main(a.n, a.dense_upto, a.max_wall)
