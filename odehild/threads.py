"""Thread pools of the linear algebra inside a solve or a simulation.

The Newton systems of the solvers are small (the structured mean-field solves work on N x (K+1)
arrays, the committee's on a few hundred unknowns), so BLAS threads add nothing on a quiet machine
and, next to other work, fight for the cores: a 2.6 s solve took 89 s with OpenBLAS's default
threads on a busy 2-core machine. odehild therefore runs its linear algebra on one BLAS thread
unless told otherwise (threadpoolctl limits the pools of whatever BLAS NumPy and SciPy loaded, for
the duration of the call only).
"""

from __future__ import annotations

import contextlib

from .errors import InputError


def check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer (BLAS threads for the solver's linear algebra), "
                         f"got {threads!r}")
    return threads


@contextlib.contextmanager
def blas_threads(threads: int = 1):
    """Limit the BLAS thread pools to ``threads`` inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=check_threads(threads), user_api="blas"):
        yield
