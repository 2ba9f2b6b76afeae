"""A solve next to other work: the same mean-field solve on a quiet machine and beside busy processes.

The case of issue 14: sigma = h0+h1+h2+h3, phi = h1+h2+h3, K = 3, N = 1000 particles, eps = 1e-12,
t in [0, 5], Radau with the structured Jacobian. Each row runs in this process, one after the other:
quiet with odehild's default (``threads=1``), then beside ``--busy`` CPU-bound processes. The same
pair is then run at ``--threads-particles`` (default 20000, where ``threads`` > 1 takes effect) with
``threads`` = 1 and = cores (the compiled step's passes on Numba's threads). Ratios are to the quiet
``threads=1`` run of the same N.

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


def main(busy=2, repeats=3, particles=1000, threads_particles=20000):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-12)
    cores = os.cpu_count() or 1
    cases = [(particles, 1), (threads_particles, 1), (threads_particles, cores)]
    inits = {n: initial_condition(n) for n in (particles, threads_particles)}
    for n, th in cases:
        solve(model, inits[n], 5.0, points=5, progress=False, threads=th)  # compile or load before timing
    quiet = {case: timed(model, inits[case[0]], case[1], repeats) for case in cases}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY.format(seconds=3600)]) for _ in range(busy)]
    try:
        time.sleep(0.5)
        loaded = {case: timed(model, inits[case[0]], case[1], repeats) for case in cases}
    finally:
        for p in procs:
            p.kill()
    print(f"mean-field staircase K = 3, eps = 1e-12, t in [0, 5], Radau (structured); {cores} cores, "
          f"median of {repeats}")
    print(f"{'case':52s} {'wall s':>8s} {'ratio':>7s} {'steps':>6s} {'final risk':>12s}")
    for (n, th) in cases:
        base = quiet[(n, 1)][0]
        for name, (wall, steps, risk) in ((f"N = {n}, threads = {th}, quiet", quiet[(n, th)]),
                                          (f"N = {n}, threads = {th}, {busy} busy processes", loaded[(n, th)])):
            print(f"{name:52s} {wall:8.2f} {wall / base:7.2f} {steps:6d} {risk:12.6g}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=2, help="CPU-bound background processes (default 2)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--threads-particles", type=int, default=20000)
    a = p.parse_args()
    main(a.busy, a.repeats, a.particles, a.threads_particles)
