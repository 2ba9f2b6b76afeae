"""Sweeps on Dask: the speed-up of a local cluster and the cost per task.

1. An SGD convergence sweep (online SGD, staircase K = 3, eps = 0.1, m = 16, t in [0, 1],
   d in {500, 1000, 2000, 4000}, 4 seeds: 16 runs) on a LocalCluster of 1 worker and of 2 workers;
   the ratio of the wall times (each into a fresh store).
2. 200 tiny runs (solve, 2 particles, eps = 0.1, t in [0, 0.01]): wall time on 2 workers, and the
   overhead per task, (workers x wall - sum of the runs' own wall times) / runs, with the cluster's
   start-up measured alone and taken out; the same runs in this process (workers = 0) for comparison.

    python benchmarks/bench_sweep.py            # about 3 minutes on 2 cores
    python benchmarks/bench_sweep.py --quick    # d in {250, 500}, 2 seeds, 40 tiny runs
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from odehild.sweep import load_sweep, run_sweep
from odehild.sweep.engine import dask_client

STAIR = 'sigma = "h(0,z)+h(1,z)+h(2,z)+h(3,z)"\nphi = "h(1,z)+h(2,z)+h(3,z)"\nkmax = 3\n'


def sweep_file(folder: Path, text: str) -> Path:
    path = folder / "sweep.toml"
    path.write_text(text)
    return path


def timed_sweep(path, workers, store):
    sweep = load_sweep(path, store=store)
    t0 = time.perf_counter()
    rows = run_sweep(sweep, workers=workers, progress=False)
    wall = time.perf_counter() - t0
    assert all(r["status"] == "done" for r in rows), [r["message"] for r in rows if r["status"] != "done"]
    return wall, sum(json.loads((Path(store) / "runs" / f"{r['key']}.record.json").read_text())["wall_seconds"]
                     for r in rows)


def main(quick):
    work = Path(tempfile.mkdtemp(prefix="odehild-bench-sweep-"))
    dims, seeds, tiny = ([250, 500], [0, 1], 40) if quick else ([500, 1000, 2000, 4000], [0, 1, 2, 3], 200)
    sgd = sweep_file(work, f'command = "simulate"\n{STAIR}eps = 0.1\nwidth = 16\nalgo = "sgd"\nt-end = 1.0\n'
                           f'points = 20\n[grid]\ndim = {dims}\nseed = {seeds}\n')
    walls = {}
    for workers in (1, 2):
        walls[workers], busy = timed_sweep(sgd, workers, work / f"sgd{workers}")
    print(f"SGD convergence sweep, {len(dims) * len(seeds)} runs (d in {dims}, {len(seeds)} seeds, m = 16, t in [0, 1]):")
    print(f"  1 worker {walls[1]:.1f} s, 2 workers {walls[2]:.1f} s: speed-up {walls[1] / walls[2]:.2f}x "
          f"(the runs themselves: {busy:.1f} s)")

    t0 = time.perf_counter()
    with dask_client(workers=2):
        pass
    startup = time.perf_counter() - t0
    tiny_file = sweep_file(work, f'command = "solve"\n{STAIR}particles = 2\nt-end = 0.01\n[grid]\n'
                                 f'eps = [0.1]\nrtol = {[1e-8 * (1 + i / tiny) for i in range(tiny)]}\n')
    wall, busy = timed_sweep(tiny_file, 2, work / "tiny2")
    overhead = (2 * (wall - startup) - busy) / tiny
    wall0, busy0 = timed_sweep(tiny_file, 0, work / "tiny0")
    print(f"{tiny} tiny runs on 2 workers: {wall:.1f} s (cluster start-up {startup:.1f} s, the runs themselves "
          f"{busy:.1f} s): overhead {1e3 * overhead:.0f} ms per task")
    print(f"  in this process (workers = 0): {wall0:.1f} s, {1e3 * (wall0 - busy0) / tiny:.0f} ms per run beyond "
          f"the runs themselves")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    main(p.parse_args().quick)
