"""A solve next to other work: the same mean-field solve on a quiet machine and beside busy processes.

The case of issue 14: sigma = h0+h1+h2+h3, phi = h1+h2+h3, K = 3, N = 1000 particles, eps = 1e-12,
t in [0, 5], Radau with the structured Jacobian. Each row runs in this process, one after the other:
quiet with odehild's default (one BLAS thread), beside ``--busy`` CPU-bound processes with the
default, and beside them with as many BLAS threads as cores (what OpenBLAS does unless told). The
ratios are to the quiet run.

    python benchmarks/bench_busy.py            # 2 busy processes, 3 repeats (the median is reported)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

from odehild.models import MeanFieldModel
from odehild.solve import initial_condition, solve

STAIR = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")
BUSY = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"


def timed(model, init, threads, repeats):
    walls, steps = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        tr = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, threads=threads)
        walls.append(time.perf_counter() - t0)
        steps = tr.stats["nsteps"]
    return float(np.median(walls)), steps, float(tr.risk[-1])


def main(busy=2, repeats=3, particles=1000):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-12)
    init = initial_condition(particles)
    solve(model, init, 5.0, points=5, progress=False)  # compile or load before timing
    cores = os.cpu_count() or 1
    rows = [("quiet, 1 BLAS thread (default)",) + timed(model, init, 1, repeats)]
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=3600)]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        rows.append((f"{busy} busy processes, 1 BLAS thread (default)",) + timed(model, init, 1, repeats))
        rows.append((f"{busy} busy processes, {cores} BLAS threads (OpenBLAS's own default)",)
                    + timed(model, init, cores, repeats))
    finally:
        for p in procs:
            p.kill()
    base = rows[0][1]
    print(f"mean-field staircase K = 3, N = {particles}, eps = 1e-12, t in [0, 5], Radau (structured); "
          f"{cores} cores, median of {repeats}")
    print(f"{'case':58s} {'wall s':>8s} {'ratio':>7s} {'steps':>6s} {'final risk':>12s}")
    for name, wall, steps, risk in rows:
        print(f"{name:58s} {wall:8.2f} {wall / base:7.2f} {steps:6d} {risk:12.6g}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=2, help="CPU-bound background processes (default 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--particles", type=int, default=1000)
    a = p.parse_args()
    main(a.busy, a.repeats, a.particles)
