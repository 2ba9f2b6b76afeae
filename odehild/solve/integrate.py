"""``solve``: integrate any model kind with SciPy's implicit solvers and the generated Jacobian.

The solve stage sees an :class:`OdeProblem` (the initial state, its :class:`StateMap` and compiled
callables) built by the model kind (:mod:`odehild.models`); it knows nothing of any kind's
internals."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional

import numpy as np
from .. import __version__
from ..checks import positive_float, positive_int
from ..errors import InputError, IntegrationError, StiffnessWarning
from ..threads import blas_threads, check_threads, compiled_threads
from .state import StateMap
from .radau import CompiledRadau

METHODS = ("Radau", "BDF", "LSODA", "RK45")  # SciPy's classes of these names, imported when used
STIFF_EPS = 1e-3  # below this an explicit method needs more than ~1e3 steps per unit time
STRUCTURED = ("Radau", "BDF")
# the structured Radau step: "compiled" (odehild.solve.radau) or "scipy" (SciPy's step with the same
# Woodbury solves, the baseline of benchmarks/bench_particles.py)
STRUCTURED_RADAU = "compiled"
IMPLICIT = ("Radau", "BDF", "LSODA")
ERROR_NORMS = ("state", "weighted")
OUTPUT_PRECISIONS = ("float64", "float32")
RTOL_MIN = 100 * np.finfo(float).eps
# below this many unknowns the compiled Radau keeps its serial passes whatever ``threads`` says:
# launching a parallel pass costs more than it saves (N = 1000: 0.94 s on 2 threads, 0.66 s on one)
PARALLEL_MIN_UNKNOWNS = 20000


def log_time_grid(t_end: float, points: int = 200, t_min=None, eps: float = 1.0) -> np.ndarray:
    """0 followed by ``points`` log-spaced times from t_min (default eps/100, at most t_end/1e3)."""
    points = positive_int("points", points)
    if t_min is None:
        t_min = min(1e-2 * min(eps, 1.0), 1e-3 * t_end)
    if not (0 < t_min < t_end):
        raise InputError(f"t_min must lie in (0, t_end = {t_end:g}), got {t_min!r}")
    grid = np.logspace(np.log10(t_min), np.log10(t_end), points)
    grid[-1] = t_end  # 10**log10(t_end) may round above t_end
    return np.concatenate([[0.0], grid])


class _Progress:
    """Progress in log-time (tqdm), on a terminal or in Jupyter."""

    def __init__(self, t0, t_end, enabled):
        from ..progress import progress_bar

        self.lo, self.hi = math.log10(max(t0, 1e-300)), math.log10(t_end)
        self.bar = progress_bar(100, "solve", enabled, unit="%",
                                bar_format="{desc}: {percentage:3.0f}%|{bar}| t={postfix}")

    def update(self, t):
        if self.bar is not None and t > 0:
            frac = (math.log10(t) - self.lo) / (self.hi - self.lo)
            self.bar.n = int(100 * min(max(frac, 0.0), 1.0))
            self.bar.set_postfix_str(f"{t:.3g}", refresh=False)
            self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass
class SolverRun:
    """What :func:`step_through` reached: outputs ``t`` (T,) and ``y`` (T, n) at the t_eval passed
    (views of one preallocated array), the status (0 reached
    t_end, 2 stopped by max_wall, -1 failed, -2 interrupted) and, on failure, where. ``observed``:
    {name: (T, ...)} the problem's observables at the output times, taken from the float64 state
    before it was stored (None: not asked for)."""

    t: np.ndarray
    y: np.ndarray
    status: int
    message: str
    t_fail: Optional[float]
    y_fail: Optional[np.ndarray]
    nsteps: int
    solve_seconds: float
    observed: Optional[dict] = None


class _Outputs:
    """The (T, n) output array in ``dtype`` and, with ``observe``, the observables of each row taken
    in float64 before the row is stored."""

    def __init__(self, T, n, dtype, observe):
        # one preallocated array: no list of rows stacked afterwards (at N = 10^5 particles and 200
        # times each copy is 320 MB)
        self.Y = np.empty((T, n), dtype=dtype)
        self.observe, self.observed = observe, None

    def store(self, idx, y):
        if self.observe is not None:
            values = self.observe(y[None])
            if self.observed is None:
                self.observed = {k: np.empty((self.Y.shape[0],) + v.shape[1:]) for k, v in values.items()}
            for k, v in values.items():
                self.observed[k][idx] = v[0]
        self.Y[idx] = y

    def first(self, idx):
        return self.Y[:idx], None if self.observed is None else {k: v[:idx] for k, v in self.observed.items()}


def step_through(solver, y0, t_eval, t_end, max_wall=None, progress=None, dtype=np.float64,
                 observe=None) -> SolverRun:
    """Step a SciPy OdeSolver to t_end, sampling its dense output at ``t_eval``; a failed step, a
    non-finite state, ``max_wall`` or Ctrl-C end the run with what was computed so far. The outputs
    are stored in ``dtype``; ``observe(Y)`` (float64 rows (1, n) to {name: (1, ...)}) is taken at
    each output time before the row is stored."""
    out = _Outputs(t_eval.size, np.size(y0), dtype, observe)
    idx = 0
    while idx < t_eval.size and t_eval[idx] <= 0.0:
        out.store(idx, y0)
        idx += 1
    status, message = 0, "reached t_end"
    t_fail = y_fail = None
    bar = _Progress(t_eval[min(idx, t_eval.size - 1)], t_end, progress)
    solve_start = time.perf_counter()
    nsteps = 0
    try:
        while solver.status == "running":
            try:
                msg = solver.step()
            except (np.linalg.LinAlgError, ArithmeticError, ValueError) as exc:
                # inside the supported range a failed factorisation is a solver failure, reported as one
                msg = f"{type(exc).__name__} in the step: {exc}"
                solver.status = "failed"
            nsteps += 1
            if solver.status == "failed" or not np.all(np.isfinite(solver.y)):
                status, t_fail, y_fail = -1, solver.t_old if solver.t_old is not None else 0.0, solver.y.copy()
                message = msg or "state became non-finite"
                break
            if idx < t_eval.size and t_eval[idx] <= solver.t:
                dense = solver.dense_output()
                while idx < t_eval.size and t_eval[idx] <= solver.t:
                    out.store(idx, dense(t_eval[idx]))
                    idx += 1
            if nsteps % 20 == 0:
                bar.update(solver.t)
            if max_wall is not None and time.perf_counter() - solve_start > max_wall:
                status, message = 2, f"stopped by max_wall = {max_wall:g} s at t = {solver.t:.6g}"
                break
    except KeyboardInterrupt:
        status, message, t_fail, y_fail = -2, "interrupted", solver.t, solver.y.copy()
    finally:
        bar.close()
    Y, observed = out.first(idx)
    return SolverRun(t_eval[:idx].copy(), Y, status, message, t_fail, y_fail, nsteps,
                     time.perf_counter() - solve_start, observed)


def check_output_times(t_eval, t_end) -> np.ndarray:
    """``t_eval`` as an increasing float array within [0, t_end] (a last time rounding above t_end is
    t_end, so the solver stops exactly there)."""
    t_eval = np.asarray(t_eval, dtype=float)
    if t_eval.ndim != 1 or t_eval.size < 1 or np.any(np.diff(t_eval) <= 0) or t_eval[0] < 0 \
            or t_eval[-1] > t_end * (1 + 1e-12):
        raise InputError("t_eval must be increasing, within [0, t_end]")
    t_eval = np.minimum(t_eval, t_end)
    if t_eval.size > 1 and t_eval[-1] <= t_eval[-2]:
        raise InputError("t_eval must be increasing, within [0, t_end]")
    return t_eval


def check_tolerances(rtol, atol) -> tuple:
    rtol = positive_float("rtol", rtol)
    if rtol < RTOL_MIN:
        raise InputError(f"rtol must be at least {RTOL_MIN:.2g} (100 machine epsilons, SciPy's floor), got {rtol!r}")
    return rtol, positive_float("atol", atol)




@dataclasses.dataclass
class OdeProblem:
    """What the solve stage integrates, as built by a model kind.

    ``rhs(t, y, out)`` fills dy/dt; ``jac(t, y, J)`` the dense analytic Jacobian;
    ``jac_parts(t, y, reuse=None)`` a :class:`~odehild.solve.structured.LowRankJacobian` for the
    structured Radau/BDF (None: dense only), written into the arrays of ``reuse`` (a Jacobian the
    caller discards) where they fit. ``compiled`` is the generated module (its derive time and
    cache status are reported).
    ``fast_eps``: the rate ratio of a fast layer, below which explicit methods are warned against.
    ``parallel_rhs()``: the right-hand side with its sums over particles on Numba's threads (None:
    the kind has none; its serial one is used); ``parallel_jac_parts()`` likewise ``jac_parts``.
    ``meta``: what the kind records about the declaration, the start and the runtime values.
    ``component_weights``: for a particle system, the weight of the particle each unknown belongs to
    (None: not one), for ``error_norm="weighted"``.
    ``observables(Y)``: float64 states (T, n) to the kind's {name: (T, ...)} sums over the whole
    state (moments, residuals, risk), for ``output_precision="float32"`` (None: the kind has none)."""

    y0: np.ndarray
    state: StateMap
    rhs: Callable
    jac: Optional[Callable]
    compiled: object
    meta: dict
    jac_parts: Optional[Callable] = None
    default_method: str = "Radau"
    default_t_min: Optional[float] = None
    fast_eps: float = 1.0
    time_name: str = "t"
    context: dict = dataclasses.field(default_factory=dict)  # kind-private values its result needs
    parallel_rhs: Optional[Callable] = None
    parallel_jac_parts: Optional[Callable] = None
    component_weights: Optional[np.ndarray] = None
    observables: Optional[Callable] = None


def _solver_class(method, structured):
    if structured and method == "Radau" and STRUCTURED_RADAU == "compiled":
        return CompiledRadau
    if structured:
        from . import structured_scipy

        return {"Radau": structured_scipy.StructuredRadau, "BDF": structured_scipy.StructuredBDF}[method]
    import scipy.integrate

    return getattr(scipy.integrate, method)


@dataclasses.dataclass
class Integration:
    """The outputs and counters of one integration (status as in :class:`SolverRun`)."""

    t: np.ndarray
    Y: np.ndarray
    stats: dict
    run: SolverRun
    structured: bool

    @property
    def observed(self) -> Optional[dict]:
        return self.run.observed


def integrate(problem: OdeProblem, t_end: float, t_eval: np.ndarray, method: str, rtol: float, atol: float, *,
              first_step=None, max_wall=None, progress=None, structured: bool = True, threads: int = 1,
              error_weights=None, output_dtype=np.float64) -> Integration:
    """Step a SciPy solver through ``problem`` (arguments already checked), counting the work, with
    ``threads`` BLAS threads and, for the compiled Radau, ``threads`` Numba threads for its passes
    (:mod:`odehild.threads`) and ``error_weights`` for its norms (:class:`CompiledRadau`). Outputs
    are stored in ``output_dtype``; below float64 the problem's observables are taken at each output
    time from the float64 state."""
    structured = bool(structured and method in STRUCTURED and problem.jac_parts is not None)
    if _solver_class(method, structured) is not CompiledRadau:
        with blas_threads(threads):
            return _integrate(problem, t_end, t_eval, method, rtol, atol, first_step, max_wall, progress, structured,
                              1, None, output_dtype)
    with compiled_threads(threads):
        passes = threads if problem.y0.size >= PARALLEL_MIN_UNKNOWNS else 1
        return _integrate(problem, t_end, t_eval, method, rtol, atol, first_step, max_wall, progress, structured,
                          passes, error_weights, output_dtype)


def _integrate(problem, t_end, t_eval, method, rtol, atol, first_step, max_wall, progress, structured, threads,
               error_weights, output_dtype):
    """``structured``: resolved by :func:`integrate` (the kind has the low-rank form and the method
    uses it); ``threads``: the compiled Radau's pass threads."""
    wall0 = time.perf_counter()
    n = problem.y0.size
    counters = {"nfev": 0, "njev": 0}

    def fun(t, y):
        out = np.empty(n)
        problem.rhs(t, y, out)
        counters["nfev"] += 1
        return out

    def jac(t, y):
        J = np.empty((n, n))
        problem.jac(t, y, J)
        counters["njev"] += 1
        return J

    solver_class = _solver_class(method, structured)
    on_threads = solver_class is CompiledRadau and threads > 1
    jac_parts = problem.parallel_jac_parts() if on_threads and problem.parallel_jac_parts else problem.jac_parts

    def jac_structured(t, y, reuse=None):
        counters["njev"] += 1
        return jac_parts(t, y, reuse)

    # compile (or load) before timing the solve; only the Jacobian form the solver will use
    compile_start = time.perf_counter()
    rhs = problem.rhs
    if on_threads and problem.parallel_rhs is not None:
        rhs = problem.parallel_rhs()
        rhs(0.0, problem.y0, np.empty(n))
    fun(0.0, problem.y0)
    if structured:
        jac_structured(0.0, problem.y0)
    elif method in IMPLICIT and problem.jac is not None:
        jac(0.0, problem.y0)
    counters.update(nfev=0, njev=0)
    compile_seconds = time.perf_counter() - compile_start

    kw = dict(rtol=rtol, atol=atol)
    if first_step is not None:
        kw["first_step"] = first_step
    if method in IMPLICIT and problem.jac is not None:
        kw["jac"] = jac
    if structured:
        kw["jac"] = jac_structured
    # the compiled Radau calls the generated rhs(t, y, out) into its own buffers and counts its calls
    if solver_class is CompiledRadau:
        solver = CompiledRadau(rhs, 0.0, problem.y0, t_end, threads=threads, error_weights=error_weights, **kw)
    else:
        solver = solver_class(fun, 0.0, problem.y0, t_end, **kw)
    observe = problem.observables if np.dtype(output_dtype) != np.float64 else None
    run = step_through(solver, problem.y0, t_eval, t_end, max_wall, progress, output_dtype, observe)
    if solver_class is CompiledRadau:
        counters["nfev"] = solver.nfev

    compiled = problem.compiled
    stats = {"nfev": counters["nfev"], "njev": counters["njev"], "nlu": int(getattr(solver, "nlu", 0)),
             "ndense": int(getattr(solver, "ndense", 0)), "nsteps": run.nsteps, "status": run.status,
             "message": run.message, "t_reached": float(solver.t), "solve_seconds": run.solve_seconds,
             "wall_seconds": time.perf_counter() - wall0, "derive_seconds": compiled.derive_seconds,
             "compile_seconds": compile_seconds, "from_cache": compiled.from_cache}
    return Integration(run.t, run.y, stats, run, structured)


def _error_weights(problem, error_norm, method, structured, model):
    """sqrt(w_j / max w) per unknown for ``error_norm="weighted"``, None for "state"."""
    if error_norm == "state":
        return None
    w = problem.component_weights
    if w is None:
        raise InputError(f"error_norm='weighted' needs a particle system with weights; {type(model).__name__} "
                         "has none (use error_norm='state')")
    if not (method == "Radau" and structured and problem.jac_parts is not None and STRUCTURED_RADAU == "compiled"):
        raise InputError(f"error_norm='weighted' is implemented in the compiled structured Radau only (method='Radau', "
                         f"structured=True); got method={method!r}, structured={structured}")
    return np.sqrt(w / np.max(w))


def solve(model, init=None, t_end: float = None, *, t_eval=None, points: int = 200, t_min=None,
          method: str = None, rtol: float = 1e-8, atol: float = 1e-10, first_step=None,
          max_wall: float = None, progress=None, structured: bool = True, threads: int = 1,
          error_norm: str = "state", output_precision: str = "float64", **runtime):
    """Integrate ``model`` (any kind of :mod:`odehild.models`) from ``init`` to ``t_end``, SciPy style.

    ``method`` is one of Radau, BDF, LSODA (implicit, with the generated analytic Jacobian) or RK45
    (explicit, for comparison only); None takes the kind's default (Radau, or LSODA where the kind
    says so). Output is at ``t_eval``, by default 0 followed by ``points`` log-spaced times from
    ``t_min`` (default: eps/100 for a fast layer of rate ratio eps, at most t_end/1e3) to ``t_end``
    (default: the kind's). ``max_wall`` (seconds) stops the integration early, keeping what was
    computed (``stats['status'] == 2``). A solver failure raises :class:`IntegrationError` carrying
    the time reached, the state there ({name: array}) and the partial result. ``runtime`` holds the
    kind's runtime values (learning rates and noise for committees).

    With ``structured=True`` (default) Radau and BDF use a kind's block-plus-low-rank Jacobian where
    it has one (the mean-field particles: 2x2 blocks plus a rank-(K+1) term, solved by the Woodbury
    identity in O(N K) instead of O(N^3); see :mod:`odehild.solve.structured`), and Radau's step is
    compiled (:mod:`odehild.solve.radau`: SciPy's method and step control, the Newton iterations in
    fused Numba passes); ``False`` takes SciPy's solvers with the dense Jacobian.

    ``threads``: for the compiled structured Radau, Numba threads that share each pass over the
    particles (right-hand side, Newton updates, Woodbury solves); for the other solvers, BLAS threads.
    Default 1. Below PARALLEL_MIN_UNKNOWNS (20000: N = 1e4 particles of the founding model) the
    passes stay serial, as parallel ones cost more than they save there. On a quiet 2-core machine
    two threads solve the staircase 1.2 to 1.4x faster at N = 1e4 to 1e5; next to other work they
    cost several times over, as BLAS threads did (benchmarks/bench_particles.py, bench_busy.py,
    :mod:`odehild.threads`). The parallel passes sum over particles in per-thread chunks, so results
    agree with one thread's to the tolerance, not bit for bit.

    ``error_norm``: how the step-size control and Newton iteration measure an error. ``"state"``
    (default): SciPy's RMS over all unknowns, so rtol holds for every particle alike. ``"weighted"``
    (particle kinds, compiled structured Radau): the error of particle j's unknowns counts times
    sqrt(w_j / max w), a law's L2 norm scaled so that the heaviest particles are held as tightly as
    with "state" and light ones (the tail nodes of the default quadrature, weights down to 1e-19)
    less. Moments, risk and learning times stay at the tolerance's level; light particles' own
    trajectories do not (README, performance: figures).

    ``output_precision``: ``"float64"`` (default) or ``"float32"`` (particle kinds): the particles'
    states at the output times are kept in single precision, half the memory of the output (at
    N = 1e5 and 201 times: 161 MB instead of 321 MB). Moments, residuals and risk are still computed
    in double precision, from the integrator's state at each output time, so they (and learning
    times) are the same as with float64 to the last bit; a and s carry a relative rounding of 6e-8.
    """
    from ..models import check_model

    check_model(model)
    if t_end is None and model.default_t_end is None:
        raise InputError(f"{type(model).__name__} has no default t_end: give one")
    t_end = positive_float("t_end", model.default_t_end if t_end is None else t_end)
    threads = check_threads(threads)
    rtol, atol = check_tolerances(rtol, atol)
    if method is not None and method not in METHODS:
        raise InputError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    if error_norm not in ERROR_NORMS:
        raise InputError(f"unknown error_norm {error_norm!r} (allowed: {', '.join(ERROR_NORMS)})")
    if output_precision not in OUTPUT_PRECISIONS:
        raise InputError(f"unknown output_precision {output_precision!r} (allowed: {', '.join(OUTPUT_PRECISIONS)})")
    problem = model.problem(init, **runtime)
    if output_precision != "float64" and problem.observables is None:
        raise InputError(f"output_precision={output_precision!r} keeps particles' states in single precision; "
                         f"{type(model).__name__} has no particles (use 'float64')")
    method = method or problem.default_method
    if method not in IMPLICIT and problem.fast_eps < STIFF_EPS:
        import warnings

        warnings.warn(f"{method} is explicit: at eps = {problem.fast_eps:g} the fast second layer limits its step "
                      f"to about eps, so reaching t_end = {t_end:g} takes of order {t_end / problem.fast_eps:.0e} "
                      "steps; use Radau, BDF or LSODA", StiffnessWarning, stacklevel=2)
    if t_eval is None:
        t_eval = log_time_grid(t_end, points, problem.default_t_min if t_min is None else t_min, problem.fast_eps)
    t_eval = check_output_times(t_eval, t_end)

    error_weights = _error_weights(problem, error_norm, method, structured, model)
    out = integrate(problem, t_end, t_eval, method, rtol, atol, first_step=first_step, max_wall=max_wall,
                    progress=progress, structured=structured, threads=threads, error_weights=error_weights,
                    output_dtype=np.dtype(output_precision))
    meta = {**problem.meta, "method": method, "structured": out.structured, "rtol": rtol, "atol": atol,
            "error_norm": error_norm, "output_precision": output_precision, "t_end": t_end, "odehild": __version__}
    # observed only where asked for: a kind outside the package may take the five arguments alone
    extra = {} if out.observed is None else {"observed": out.observed}
    result = model.result(problem, out.t, out.Y, out.stats, meta, **extra)
    run = out.run
    if run.status < 0:
        where = f"{problem.time_name} = {run.t_fail:.6g}" if run.t_fail is not None else "start"
        state = problem.state.unpack(run.y_fail)
        raise IntegrationError(
            f"{method} failed at {where} ({run.message}); {problem.state.describe(run.y_fail)}"
            f"{model.failure_hint(problem, state)}; {len(result)} of {t_eval.size} output times were computed "
            "and are kept in .partial", t_fail=run.t_fail, state=state, partial=result,
            interrupted=run.status == -2)
    return result
