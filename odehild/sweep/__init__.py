"""Sweeps: many runs of one command from a TOML file, on Dask, into a result store that survives
the driver (:mod:`.spec`, :mod:`.engine`, :mod:`.store`, :mod:`.report`)."""

from .engine import execute, run_sweep
from .report import summarize
from .spec import Run, Sweep, load_sweep, run_key
from .store import ResultStore

__all__ = ["Run", "Sweep", "ResultStore", "execute", "load_sweep", "run_key", "run_sweep", "summarize"]
