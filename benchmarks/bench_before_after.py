"""Issue 14's four benchmark groups for this tree and an earlier commit, in one run.

    python benchmarks/bench_before_after.py --against c9d84de                 # all four groups
    python benchmarks/bench_before_after.py --against c9d84de --groups particles --n 1000 10000

The earlier commit is extracted with ``git archive`` into a temporary folder and imported from
there (PYTHONPATH first), each tree with a cache folder of its own, warmed before anything is
timed. Every case runs in fresh processes, the two trees one after the other, and uses only what
both trees have: ``solve(model, init, t_end, rtol=, atol=, max_wall=)``, ``odehild solve``,
``odehild --help`` and ``online_sgd``. Groups:

- ``particles``: the staircase K = 3, eps = 1e-12, t in [0, 5], rtol 1e-8, atol 1e-10, the default
  quadrature nodes, 201 output times: wall time, steps, time per step and peak RSS of the default
  settings, and for this tree also with ``error_norm="weighted", threads=2,
  output_precision="float32"`` (the "options" row). ``--max-wall`` stops a solve (default 600 s).
- ``busy``: the same solve at N = 1000 quiet and beside two CPU-bound processes (median of
  ``--repeats``), each tree with its default threading (the earlier one: OpenBLAS's own).
- ``startup``: ``odehild --help``; ``odehild solve`` of 50 particles at eps = 1e-4, K = 3 (the
  staircase) and K = 8 (sigma = tanh, phi = relu), cold (an empty cache) and warm (again).
- ``sgd``: online SGD steps per second at (d, m) = (4096, 256), (16384, 1024), (32768, 512), as the
  difference of two runs of S and 2 S steps (so set-up and risk evaluations cancel), float64; and
  mini-batches of 64 at the two larger sizes, in samples per second (the earlier tree loops over
  the batch's samples, this one takes two GEMMs a step), each on one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_startup import CASES as STARTUP_CASES  # the same two models as bench_startup.py

ROOT = Path(__file__).resolve().parents[1]
SIG, PHI = "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)"
MEMORY_GB = 6  # address-space limit of a solve's process
OPTIONS = {"error_norm": "weighted", "threads": 2, "output_precision": "float32"}

PRELUDE = f"""
import json, resource, sys, time
# a tree that factors densely fails here with MemoryError instead of taking the machine down
resource.setrlimit(resource.RLIMIT_AS, (int(float(sys.argv[-1]) * 2**30),) * 2)
try:
    from odehild.models import MeanFieldModel
except ImportError:  # before the models package
    from odehild.symbolic.models import MeanFieldModel
from odehild.solve import initial_condition, solve
model = MeanFieldModel("{SIG}", "{PHI}", K=3, eps=1e-12)
"""

PARTICLES = PRELUDE + """
N, max_wall, options = int(sys.argv[1]), float(sys.argv[2]), json.loads(sys.argv[3])
# loads every kernel first; with threads, at enough unknowns that the parallel passes load too
warm, warm_t = (10000, 1e-6) if options.get("threads", 1) > 1 else (200, 5.0)
solve(model, initial_condition(warm), warm_t, points=3, progress=False, **options)
init = initial_condition(N)
t0 = time.perf_counter()
tr = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False, max_wall=max_wall or None, **options)
print(json.dumps({"wall": time.perf_counter() - t0, "steps": tr.stats["nsteps"], "t": tr.stats["t_reached"],
                  "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

BUSY = PRELUDE + """
repeats = int(sys.argv[1])
init = initial_condition(1000)
solve(model, init, 5.0, progress=False)
walls = []
for _ in range(repeats):
    t0 = time.perf_counter()
    solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False)
    walls.append(time.perf_counter() - t0)
print(json.dumps(sorted(walls)[len(walls) // 2]))
"""

SPIN = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"

SGD = """
import json, sys, time
from odehild.simulate import online_sgd
d, m, steps, batch = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
lr = 0.01 / d
kw = dict(sigma="{sig}", phi="{phi}", eps=0.01, width=m, dim=d, lr=lr, kmax=3, points=2, batch=batch)
online_sgd(t_end=2 * lr, **kw)  # compile / load
walls = {{}}
for n in (steps, 2 * steps):
    t0 = time.perf_counter()
    online_sgd(t_end=n * lr, **kw)
    walls[n] = time.perf_counter() - t0
print(json.dumps(batch * steps / (walls[2 * steps] - walls[steps])))
""".format(sig=SIG, phi=PHI)



class ChildFailed(RuntimeError):
    """A child process that exited with an error (its last line of stderr)."""


class Tree:
    """A source tree to import odehild from, with a cache folder of its own."""

    def __init__(self, name, path, scratch):
        self.name, self.path = name, str(path)
        self.cache = tempfile.mkdtemp(prefix=f"cache-{name}-", dir=scratch)

    def env(self, cache=None):
        cache = cache or self.cache
        return {**os.environ, "PYTHONPATH": self.path, "ODEHILD_CACHE_DIR": cache, "XDG_CACHE_HOME": cache}

    def run(self, program, *args, cache=None):
        out = subprocess.run([sys.executable, "-c", program, *map(str, args)], env=self.env(cache), cwd=self.path,
                             capture_output=True, text=True)
        if out.returncode:
            raise ChildFailed(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}")
        return json.loads(out.stdout.strip().splitlines()[-1])

    def wall(self, args, cache=None):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "odehild", *args], env=self.env(cache), cwd=self.path, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t0


def extract(rev, scratch):
    """The tree of ``rev`` (``git archive``) in a folder under ``scratch``."""
    folder = Path(scratch) / f"tree-{rev}"
    folder.mkdir()
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def particles(trees, ns, max_wall):
    print("solve at growing N (staircase K = 3, eps = 1e-12, t in [0, 5], rtol 1e-8, 201 output times)")
    print(f"{'N':>8} {'tree':>22} {'wall s':>8} {'steps':>6} {'ms/step':>8} {'peak MB':>8} {'t reached':>9} "
          f"{'before / this':>13}")
    for N in ns:
        rows = [(t, t.name, {}) for t in trees] + [(trees[-1], trees[-1].name + " + options", OPTIONS)]
        first = None
        for tree, label, options in rows:
            try:
                r = tree.run(PARTICLES, N, max_wall, json.dumps(options), MEMORY_GB)
            except ChildFailed as e:
                print(f"{N:8d} {label:>22} failed: {e}", flush=True)
                first = first or {"wall": np.inf, "t": 0.0}
                continue
            first = first or r
            ratio = "-" if r["t"] < 5 or not np.isfinite(first["wall"]) else \
                f"{'>' if first['t'] < 5 else ''}{first['wall'] / r['wall']:.2f}x"
            print(f"{N:8d} {label:>22} {r['wall']:8.2f} {r['steps']:6d} {1e3 * r['wall'] / r['steps']:8.2f} "
                  f"{r['rss_mb']:8.0f} {r['t']:9.3g} {ratio:>13}", flush=True)
    print(f"options: {OPTIONS}")


def busy(trees, repeats, nbusy=2):
    print(f"N = 1000, quiet and beside {nbusy} CPU-bound processes (median of {repeats})")
    print(f"{'tree':>16} {'quiet s':>8} {'busy s':>8} {'ratio':>6}")
    for tree in trees:
        quiet = tree.run(BUSY, repeats, MEMORY_GB)
        spinners = [subprocess.Popen([sys.executable, "-c", SPIN.format(seconds=3600)]) for _ in range(nbusy)]
        try:
            loaded = tree.run(BUSY, repeats, MEMORY_GB)
        finally:
            for p in spinners:
                p.kill()
                p.wait()
        print(f"{tree.name:>16} {quiet:8.2f} {loaded:8.2f} {loaded / quiet:5.2f}x", flush=True)


def startup(trees, repeats, scratch):
    print(f"whole-process wall time, median of {repeats}")
    print(f"{'case':>32} " + " ".join(f"{t.name:>16}" for t in trees))
    rows = {"odehild --help": [float(np.median([t.wall(["--help"]) for _ in range(repeats)])) for t in trees]}
    for name, model in STARTUP_CASES.items():
        colds, warms = [], []
        for tree in trees:
            c, w = [], []
            for _ in range(repeats):
                cache = tempfile.mkdtemp(prefix="cold-", dir=scratch)
                args = ["solve", *model, "--eps", "1e-4", "--particles", "50", "--t-end", "5", "--quiet",
                        "--out", os.path.join(cache, "run.npz")]
                c.append(tree.wall(args, cache))
                w.append(tree.wall(args, cache))
            colds.append(float(np.median(c)))
            warms.append(float(np.median(w)))
        rows[f"odehild solve, {name}, cold"] = colds
        rows[f"odehild solve, {name}, warm"] = warms
    for name, walls in rows.items():
        print(f"{name:>32} " + " ".join(f"{w:14.2f} s" for w in walls), flush=True)


def sgd(trees, sizes=((4096, 256, 400, 1), (16384, 1024, 300, 1), (32768, 512, 300, 1), (16384, 1024, 10, 64),
                     (32768, 512, 10, 64))):
    print("online SGD, float64, one thread: samples per second (one sample per step where batch = 1)")
    print(f"{'d':>6} {'m':>5} {'batch':>5} " + " ".join(f"{t.name:>16}" for t in trees) + f" {'this / before':>13}")
    for d, m, steps, batch in sizes:
        rates = [tree.run(SGD, d, m, steps, batch) for tree in trees]
        print(f"{d:6d} {m:5d} {batch:5d} " + " ".join(f"{r:16.0f}" for r in rates)
              + f" {rates[-1] / rates[0]:12.2f}x", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, help="the earlier commit (before issue 14: c9d84de)")
    p.add_argument("--groups", nargs="+", choices=("particles", "busy", "startup", "sgd"),
                   default=["particles", "busy", "startup", "sgd"])
    p.add_argument("--n", nargs="+", type=int, default=[1000, 10000, 100000])
    p.add_argument("--max-wall", type=float, default=600.0, help="stop each particle solve after this (s)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="odehild-before-after-") as scratch:
        rev = subprocess.run(["git", "rev-parse", "--short", args.against], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()
        trees = [Tree(f"before {rev}", extract(rev, scratch), scratch), Tree("this tree", ROOT, scratch)]
        print(f"{os.cpu_count()} cores; trees: {', '.join(t.name for t in trees)}", flush=True)
        for tree in trees:  # fills each tree's cache, so that no timed run compiles
            tree.run(PARTICLES, 200, 0, json.dumps({}), MEMORY_GB)
        if "particles" in args.groups:
            trees[-1].run(PARTICLES, 200, 0, json.dumps(OPTIONS), MEMORY_GB)
        for group in args.groups:
            print()
            if group == "particles":
                particles(trees, args.n, args.max_wall)
            elif group == "busy":
                busy(trees, args.repeats)
            elif group == "startup":
                startup(trees, args.repeats, scratch)
            else:
                sgd(trees)


if __name__ == "__main__":
    main()
