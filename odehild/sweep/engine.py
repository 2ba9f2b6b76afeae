"""Running a sweep: each run one Dask task, results into the store as they finish.

The default engine is a Dask ``LocalCluster`` of single-threaded worker processes, one per core,
with BLAS, OpenMP and Numba threads pinned to one per worker (odehild's solves and simulations are
single-threaded by design: several processes on one node must not fight over the cores). Given a
scheduler address, the same tasks go to an existing cluster (dask-jobqueue on SLURM, Kubernetes).
``workers=0`` runs the same tasks one after the other in this process (tiny sweeps, tests).

A task runs the command exactly as ``odehild run`` would, writes its files and then its record
into the store; the driver only collects records and rewrites the index. Compiled code comes from
the shared on-disk cache, whose entries are written under temporary names and renamed.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
import traceback
from pathlib import Path

from ..errors import InputError, OdehildError
from ..io import write_text_atomic
from .spec import Sweep, resolved_argv
from .store import ResultStore

PINNED = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1",
          "VECLIB_MAXIMUM_THREADS": "1"}


def execute(command: str, config: dict, key: str, store_root: str) -> dict:
    """Run one configuration into the store (on a worker); returns its record, also written to the
    store. A run that raises is recorded as failed with its message."""
    from ..cli import build_parser
    from ..commands import check_outputs
    from ..config import used_config, write_used_config
    from ..threads import blas_threads

    store = ResultStore(store_root).create()
    stem = store.stem(key)
    start = time.perf_counter()
    record = {"key": key, "command": command, "config": config, "status": "failed", "message": "", "files": [],
              "figures": {}, "host": os.uname().nodename, "pid": os.getpid()}
    try:
        _pin_numba_threads()
        parser = build_parser()
        sub = parser.subcommands[command]
        argv = resolved_argv(config, command, stem, parser.subcommands)
        with open(stem.with_name(key + ".log"), "w") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log), blas_threads(1):
            args = parser.parse_args(argv)
            check_outputs(args)
            args.values = used_config(args, sub)
            written = args.func(args) or []
            files = []
            for result, overrides in written:
                files += [Path(result), write_used_config(args, sub, result, overrides)]
        record["files"] = [str(Path(f).resolve().relative_to(store.root.resolve())) for f in files]
        record["path"] = record["files"][0] if record["files"] else None
        record["figures"] = key_figures(command, [store.root / f for f in record["files"]])
        record["status"] = "done"
    except (OdehildError, SystemExit) as exc:
        record["message"] = str(exc) or type(exc).__name__
    except Exception as exc:  # a bug: recorded with where it happened, the other runs go on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        record["message"] = f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
    record["wall_seconds"] = time.perf_counter() - start
    store.write_record(record)
    return record


def _pin_numba_threads():
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass


def key_figures(command: str, files: list) -> dict:
    """The numbers a sweep's index shows for one run: final risk and learning times of a solve, the
    final risk and (with its ODE) the distances of a simulation, the fitted slopes of timescales."""
    import json

    import numpy as np

    from ..io import load_npz

    out = {}
    npz = [f for f in files if f.suffix == ".npz"]
    if command == "timescales":
        report = json.loads(next(f for f in files if f.suffix == ".json").read_text())
        for k, slope in zip(report.get("degrees", []), _slopes(report)):
            out[f"slope_{k}"] = slope
        return out
    arrays, meta = load_npz(npz[0])
    out["final_risk"] = float(arrays["risk"][-1])
    if command == "solve":
        out["steps"] = meta.get("stats", {}).get("nsteps")
        if arrays.get("residuals") is not None and arrays["residuals"].ndim == 2:
            from ..solve.analysis import learning_times

            for k, tk in enumerate(learning_times(arrays["t"], arrays["residuals"])):
                if np.isfinite(tk):
                    out[f"t_learn_{k}"] = float(tk)
    if command == "simulate" and len(npz) > 1:
        out.update(_distances(npz[0], npz[1]))
    return out


def _slopes(report):
    slope = report.get("slope") or []
    degrees = report.get("degrees", [])
    if len(slope) > max(degrees, default=-1):  # per degree 0..K
        return [slope[k] for k in degrees]
    return slope


def _distances(sim_path, ode_path) -> dict:
    from ..io import load_npz

    ode, meta = load_npz(ode_path)
    kind = meta.get("model")
    if kind == "finite_width":  # solved on the simulation's own record times (simulate --model finite-width)
        import numpy as np

        sim = load_npz(sim_path)[0]
        n = min(sim["risk"].size, ode["risk"].size)
        diff = np.abs(sim["risk"][:n] - ode["risk"][:n])
        return {"sup_risk_distance": float(diff.max()), "rms_risk_distance": float(np.sqrt(np.mean(diff ** 2)))}
    if kind == "multi-index":
        from ..models.multi_index import MultiIndexTrajectory
        from ..simulate.multi_index import MultiIndexSimulation, compare_multi_index

        d = compare_multi_index(MultiIndexTrajectory.load(ode_path), [MultiIndexSimulation.load(sim_path)]).to_dict()
    else:
        from ..simulate import Simulation
        from ..simulate.compare import compare
        from ..solve import Trajectory

        d = compare(Trajectory.load(ode_path), [Simulation.load(sim_path)]).to_dict()
    return {k: d[k] for k in ("sup_risk_distance", "l2_risk_distance", "law_distance") if k in d}


class _Tally:
    """The progress bar of a sweep: done / failed / running, with tqdm's ETA."""

    def __init__(self, total, enabled, running, desc="sweep"):
        from ..progress import progress_bar

        self.done = self.failed = 0
        self.running = running
        self.bar = progress_bar(total, desc, enabled, unit="run")
        self._show()

    def add(self, record):
        failed = isinstance(record, dict) and record.get("status") == "failed"
        self.done += not failed
        self.failed += failed
        if self.bar is not None:
            self.bar.update(1)
        self._show()

    def _show(self):
        if self.bar is not None:
            self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, running {self.running()}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


@contextlib.contextmanager
def dask_client(scheduler=None, workers=None):
    """A Dask client: to ``scheduler`` if given, else to a LocalCluster of ``workers`` single-threaded
    processes (default: one per core) with every thread pool pinned to one."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:  # declared in pyproject.toml; a broken install says so
        raise InputError("odehild sweep needs dask.distributed (pip install 'dask[distributed]')") from None
    if scheduler:
        _check_reachable(scheduler)
        try:
            client = Client(scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from None
        with client:
            yield client
        return
    n = workers or os.cpu_count() or 1
    saved = {k: os.environ.get(k) for k in PINNED}
    os.environ.update(PINNED)  # inherited by the worker processes
    try:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                          silence_logs=50) as cluster, Client(cluster) as client:
            yield client
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def map_tasks(fn, items, *, workers=0, scheduler=None, progress=None, desc="runs", on_result=None,
              on_lost=None) -> list:
    """[fn(item) for item in items], in this process (``workers=0``, the default: tiny jobs) or as
    Dask tasks (``scheduler``, else a LocalCluster of ``workers`` single-threaded processes, None:
    one per core). ``on_result(item, result)`` is called in the driver as each finishes; a task
    whose worker died gives ``on_lost(item, exc)`` (which returns its stand-in result) or raises.
    ``fn`` must be importable by the workers (a module-level function or a partial of one)."""
    items = list(items)
    results = [None] * len(items)
    if not items:
        return results
    if workers == 0 and not scheduler:
        running = [0]
        tally = _Tally(len(items), progress, lambda: running[0], desc)
        try:
            for i, item in enumerate(items):
                running[0] = 1
                results[i] = fn(item)
                running[0] = 0
                tally.add(results[i])
                if on_result is not None:
                    on_result(item, results[i])
        finally:
            tally.close()
        return results

    from distributed import as_completed

    with dask_client(scheduler, workers) as client:
        futures = [client.submit(fn, item, pure=False) for item in items]
        index = {f.key: i for i, f in enumerate(futures)}
        pending = set(index)
        tally = _Tally(len(items), progress, lambda: min(len(pending), _slots(client)), desc)
        try:
            for fut in as_completed(futures):
                i = index[fut.key]
                pending.discard(fut.key)
                try:
                    results[i] = fut.result()
                except Exception as exc:
                    if on_lost is None:
                        raise
                    results[i] = on_lost(items[i], exc)
                tally.add(results[i])
                if on_result is not None:
                    on_result(items[i], results[i])
        finally:
            tally.close()
    return results


def _check_reachable(address: str):
    """A refused or unresolvable tcp:// address fails in a second, not after Dask's 30 s of retries."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else "tcp://" + address)
    if parts.scheme != "tcp" or parts.port is None:
        return  # tls://, ucx:// and the like: left to Dask
    try:
        socket.create_connection((parts.hostname, parts.port), timeout=5).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Dask scheduler at {address!r}: {exc}") from None


def run_sweep(sweep: Sweep, retry_failed: bool = False, progress=None, scheduler=None, workers=None,
              on_record=None) -> list:
    """Run every run of ``sweep`` not finished in its store; returns the index rows.

    Finished runs (record done, files intact) are skipped; failed ones too unless ``retry_failed``.
    ``workers=0`` runs in this process; otherwise Dask (``scheduler`` or the sweep file's, else a
    LocalCluster of ``workers`` or the file's, else one per core)."""
    store = ResultStore(sweep.store).create()
    write_text_atomic(store.root / "sweep.json", json.dumps(
        {"file": str(sweep.path), "command": sweep.command, "swept": sweep.swept, "runs": len(sweep.runs)}, indent=1))
    records, todo = {}, []
    for run in sweep.runs:
        rec = store.finished(run.key)
        if rec is not None and not (retry_failed and rec["status"] == "failed"):
            records[run.key] = rec
        else:
            todo.append(run)
    store.write_index(sweep.runs, records, sweep.swept)
    scheduler = scheduler or sweep.scheduler
    workers = workers if workers is not None else sweep.workers

    def finish(run, rec):
        records[rec["key"]] = rec
        store.write_index(sweep.runs, records, sweep.swept)
        if on_record is not None:
            on_record(rec)

    def lost(run, exc):  # the worker died under the task (killed, out of memory)
        rec = {"key": run.key, "status": "failed", "message": f"worker lost: {exc}", "files": [], "figures": {},
               "wall_seconds": None}
        store.write_record(rec)
        return rec

    root = str(Path(sweep.store).resolve())
    map_tasks(functools.partial(_execute_run, sweep.command, root), todo, workers=workers, scheduler=scheduler,
              progress=progress, desc="sweep", on_result=finish, on_lost=lost)
    return store.write_index(sweep.runs, records, sweep.swept)


def _execute_run(command, root, run):
    return execute(command, run.config, run.key, root)


def _slots(client) -> int:
    try:
        return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
    except Exception:
        return 1
