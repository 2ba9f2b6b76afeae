"""Sweep files: a base run, a grid, explicit points, and the sweep's own settings.

A sweep file is a config file of ``odehild run`` (``command`` and that command's options) plus

* ``[grid]``: a table of non-empty lists; every combination is one run (their product, in the
  order the keys are written);
* ``[[points]]``: explicit combinations. Alone, each point is one run; with a grid, each point is
  crossed with every grid combination (``[[points]]`` of (dim, width) pairs times a grid of seeds).
  A file with ``[[points]]`` cannot also say ``points = 30`` (the output-time option of solve and
  simulate) at the top: give that inside [grid] (``points = [30]``);
* ``[sweep]``: ``store`` (the result folder, default FILE's name without .toml plus ``-store``,
  next to the file), ``scheduler`` (address of an existing Dask scheduler), ``workers`` (local
  worker processes, default one per core).

Output paths (``out``, ``report``, ``plot``) are set by the store and refused in the file; for
``simulate``, ``ode = true`` solves the mean-field ODE of the same run next to it and records the
distances to it. A run's identity is the content hash of its resolved configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from pathlib import Path

from ..config import config_to_argv, load_config
from ..errors import InputError

COMMANDS = ("solve", "simulate", "timescales")
OUTPUT_KEYS = {"out", "report", "plot", "output", "json"}
SWEEP_KEYS = {"store", "scheduler", "workers"}


@dataclasses.dataclass
class Run:
    """One resolved run: its configuration (as ``odehild run`` reads it, without output paths),
    the swept values that distinguish it, and its content hash."""

    config: dict
    params: dict
    key: str


@dataclasses.dataclass
class Sweep:
    path: Path
    command: str
    base: dict
    grid: dict
    points: list
    runs: list
    store: Path
    scheduler: str = None
    workers: int = None

    @property
    def swept(self) -> list:
        """The swept parameter names, grid first, in file order."""
        names = list(self.grid)
        for p in self.points:
            names += [k for k in p if k not in names]
        return names


def run_key(config: dict) -> str:
    """Content hash of a resolved configuration (key order and '-'/'_' spelling do not matter)."""
    canon = {k.replace("-", "_"): v for k, v in config.items()}
    return hashlib.sha256(json.dumps(canon, sort_keys=True).encode()).hexdigest()[:16]


def _subparsers():
    from ..cli import build_parser

    return build_parser().subcommands


def _check_table(name, table, allow_empty=False):
    if not isinstance(table, dict):
        raise InputError(f"[{name}] must be a table, got {table!r}")
    for key, values in table.items():
        if not isinstance(values, list):
            raise InputError(f"[{name}] key {key!r} must be a list of values, got {values!r}")
        if not values and not allow_empty:
            raise InputError(f"[{name}] key {key!r} is an empty list: a grid needs at least one value")


def load_sweep(path, store=None, scheduler=None, workers=None) -> Sweep:
    """Read and check a sweep file; every run is resolved and checked as ``odehild run`` would
    check it, so a misspelt key or a value of the wrong type is refused before anything runs."""
    path = Path(path)
    raw = load_config(path)
    raw = dict(raw)
    grid = raw.pop("grid", {})
    # 'points' is also an option of solve and simulate (output times): a number there, a list of
    # tables for explicit combinations
    points = raw.pop("points") if isinstance(raw.get("points"), list) else []
    settings = raw.pop("sweep", {})
    if not isinstance(settings, dict):
        raise InputError(f"[sweep] must be a table, got {settings!r}")
    unknown = sorted(set(settings) - SWEEP_KEYS)
    if unknown:
        raise InputError(f"unknown [sweep] key {unknown[0]!r} (allowed: {', '.join(sorted(SWEEP_KEYS))})")
    _check_table("grid", grid)
    if not isinstance(points, list) or not all(isinstance(p, dict) and p for p in points):
        raise InputError("[[points]] must be a list of non-empty tables")
    command = raw.get("command")
    if command not in COMMANDS:
        raise InputError(f"sweep command {command!r} is not one that writes results (allowed: {', '.join(COMMANDS)})")
    subparsers = _subparsers()
    options = {a.dest for a in subparsers[command]._actions}
    for where, keys in (("the base run", raw), ("[grid]", grid), *((f"[[points]] {i + 1}", p)
                                                                    for i, p in enumerate(points))):
        for key in keys:
            k = key.replace("-", "_")
            if k == "command":
                if where != "the base run":
                    raise InputError(f"{where} sets 'command': a sweep runs one command")
                continue
            if k in OUTPUT_KEYS:
                raise InputError(f"{where} sets {key!r}: a sweep writes each run's files into its store")
            if k == "seeds":
                raise InputError(f"{where} sets 'seeds': sweep over 'seed' instead (one run per seed)")
            if k == "ode" and command == "simulate":
                continue
            if k not in options:
                allowed = ", ".join(sorted(o.replace("_", "-") for o in options - {"help", "command", "func"}
                                           - OUTPUT_KEYS))
                raise InputError(f"unknown key {key!r} in {where} for command {command!r} (allowed: {allowed})")
    overlap = sorted({k.replace("-", "_") for k in grid} & {k.replace("-", "_") for p in points for k in p})
    if overlap:
        raise InputError(f"{overlap[0]!r} is both in [grid] and in [[points]]: give it in one of them")
    if "ode" in raw and not isinstance(raw["ode"], bool):
        raise InputError(f"'ode' in a sweep takes true or false (the store names the file), got {raw['ode']!r}")

    combos = [dict(zip(grid, values)) for values in itertools.product(*grid.values())] if grid else [{}]
    if points:
        combos = [{**c, **p} for c in combos for p in points]
    runs, seen = [], set()
    for params in combos:
        config = {**raw, **params, "quiet": True}
        resolved_argv(config, command, Path("check"), subparsers)  # refused here as `odehild run` would
        key = run_key(config)
        if key in seen:
            continue  # the same run twice (a point repeating a grid combination)
        seen.add(key)
        runs.append(Run(config, params, key))
    if not runs:
        raise InputError(f"{path} resolves to no runs")
    if store is None:  # the file's own setting is relative to the file, as the default
        store = path.parent / Path(settings.get("store") or path.stem + "-store")
    store = Path(store)
    workers = workers if workers is not None else settings.get("workers")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise InputError(f"[sweep] workers must be 0 (in the driver's process) or a positive integer, got {workers!r}")
    return Sweep(path, command, raw, grid, points, runs, store, scheduler or settings.get("scheduler"), workers)


def resolved_argv(config: dict, command: str, stem: Path, subparsers=None) -> list:
    """argv of one run writing into ``stem`` (+ .npz, .ode.npz or .json)."""
    subparsers = subparsers or _subparsers()
    config = dict(config)
    ode = bool(config.pop("ode", False))
    if command in ("solve", "simulate"):
        config["out"] = str(stem.with_name(stem.name + ".npz"))
    if command == "simulate" and ode:
        config["ode"] = str(stem.with_name(stem.name + ".ode.npz"))
    if command == "timescales":
        config["report"] = str(stem.with_name(stem.name + ".json"))
    return config_to_argv(config, subparsers)
