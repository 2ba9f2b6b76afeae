"""Start-up: whole-process wall time of `odehild --help` and of `odehild solve`, cold and warm.

Cold: an empty cache folder (derivation, Hermite expansions, code generation and Numba compilation
all happen). Warm: the same command again (everything loaded from the cache). K = 3 is the staircase
(exact Hermite coefficients); K = 8 takes sigma = tanh(z), phi = relu(z), whose tanh coefficients
come from certified mpmath quadrature, 50 particles. Each row is the median of ``--repeats`` runs.

The floor row is the least a warm Numba program takes on this machine, measured in the same run: a
process that imports NumPy and Numba, calls one cached ``@njit`` function (Numba's first call loads
its registries and, through its BLAS check, ``scipy.linalg``) and exits as odehild does.

    python benchmarks/bench_startup.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CASES = {"K = 3": ["--sigma", "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "--phi", "h(1,z)+h(2,z)+h(3,z)", "--kmax", "3"],
         "K = 8": ["--sigma", "tanh(z)", "--phi", "relu(z)", "--kmax", "8"]}


def wall(args, env):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "odehild", *args], env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


FLOOR = """
import os, sys
import numpy as np
from numba import njit


@njit(cache=True)
def total(x):
    s = 0.0
    for v in x:
        s += v
    return s


print(total(np.ones(3)))
sys.stdout.flush()
os._exit(0)
"""


def floor(folder, repeats):
    """Median wall time of the floor program (its first run, which compiles, is not counted)."""
    path = os.path.join(folder, "floor_program.py")
    with open(path, "w") as fh:
        fh.write(FLOOR)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, path], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return float(np.median(times[1:]))


def main(repeats=3):
    out = tempfile.mkdtemp(prefix="odehild-bench-")
    rows = [("odehild --help", float(np.median([wall(["--help"], os.environ) for _ in range(repeats)])))]
    rows.append(("floor: one cached @njit call (NumPy, Numba)", floor(out, repeats)))
    for name, model in CASES.items():
        solve = ["solve", *model, "--eps", "1e-4", "--particles", "50", "--t-end", "5", "--quiet",
                 "--out", os.path.join(out, "run.npz")]
        colds, warms = [], []
        for _ in range(repeats):
            env = {**os.environ, "ODEHILD_CACHE_DIR": tempfile.mkdtemp(prefix="cache-", dir=out)}
            colds.append(wall(solve, env))
            warms.append(wall(solve, env))
        rows += [(f"odehild solve {name}, 50 particles, cold", float(np.median(colds))),
                 (f"odehild solve {name}, 50 particles, warm", float(np.median(warms)))]
    print(f"whole-process wall time, median of {repeats} ({os.cpu_count()} cores)")
    for name, w in rows:
        print(f"{name:45s} {w:7.2f} s")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    main(p.parse_args().repeats)
