"""Thread pools of the linear algebra inside a solve or a simulation.

The Newton systems of the solvers are small (the structured mean-field solves work on N x (K+1)
arrays, the committee's on a few hundred unknowns), so BLAS threads add nothing on a quiet machine
and, next to other work, fight for the cores: a 2.6 s solve took 89 s with OpenBLAS's default
threads on a busy 2-core machine. odehild therefore runs its linear algebra on one BLAS thread
unless told otherwise (threadpoolctl limits the pools of whatever BLAS NumPy and SciPy loaded, for
the duration of the call only).

The compiled structured Radau does its linear algebra without BLAS; there ``threads`` > 1 runs its
passes over the particles on Numba's threads instead (:func:`compiled_threads`,
:func:`parallel_variant`), which pays at large N on a machine of one's own and is a loss next to
other work, as BLAS threads were.
"""

from __future__ import annotations

import contextlib

from .errors import InputError


def check_threads(threads) -> int:
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer (threads for the compiled passes and linear algebra), "
                         f"got {threads!r}")
    return threads


@contextlib.contextmanager
def blas_threads(threads: int = 1):
    """Limit the BLAS thread pools to ``threads`` inside the block."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=check_threads(threads), user_api="blas"):
        yield


def check_compiled_threads(threads: int) -> int:
    """``threads`` for Numba's parallel passes, refused beyond the pool this process started with
    (NUMBA_NUM_THREADS: the CPU count, or 1 inside odehild's sweep workers)."""
    import numba

    threads = check_threads(threads)
    if threads > numba.config.NUMBA_NUM_THREADS:
        raise InputError(f"threads = {threads} exceeds this process's Numba pool of {numba.config.NUMBA_NUM_THREADS} "
                         "(NUMBA_NUM_THREADS; a sweep's workers run one thread each)")
    return threads


@contextlib.contextmanager
def compiled_threads(threads: int = 1):
    """Numba's parallel passes on ``threads`` inside the block, BLAS on one thread: the solver's
    BLAS calls are a few small products, and a second pool of spinning threads next to Numba's
    made a 2-thread solve slower than the serial one."""
    import numba

    threads = check_compiled_threads(threads)
    before = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        with blas_threads(1):
            yield
    finally:
        numba.set_num_threads(before)


_parallel = {}


def parallel_variant(dispatcher, **callees):
    """``dispatcher``'s function compiled with ``parallel=True``: its ``prange`` loops (plain loops in
    the serial dispatcher) split across Numba's threads. ``callees`` replaces globals the function
    calls, by their own parallel variants. The dispatcher's fastmath flags and error model carry
    over (a kernel compiled with reassociation vectorises its sums; without, it ran 10 to 20%
    slower; a loop with a division vectorises only without Numba's zero-division check). Cached on
    disk under its own name: Numba keys a cache entry by the function's name and bytecode, not by
    its flags, so the serial and parallel builds of one function would overwrite each other."""
    import types

    from numba import njit

    key = (id(dispatcher), tuple(sorted((name, id(f)) for name, f in callees.items())))
    if key not in _parallel:
        f = dispatcher.py_func
        name = f.__name__ + "_parallel"
        code = f.__code__.replace(co_name=name, co_qualname=f.__qualname__ + "_parallel")
        glb = {**f.__globals__, **callees} if callees else f.__globals__
        g = types.FunctionType(code, glb, name, f.__defaults__, f.__closure__)
        g.__qualname__, g.__module__, g.__doc__ = f.__qualname__ + "_parallel", f.__module__, f.__doc__
        # the dispatcher and callees are kept alive with their variant, so their ids stay unique
        options = {k: v for k, v in dispatcher.targetoptions.items() if k in ("fastmath", "error_model")}
        _parallel[key] = (njit(cache=True, parallel=True, **options)(g), dispatcher, callees)
    return _parallel[key][0]
