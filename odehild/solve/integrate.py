"""``solve``: integrate a model with SciPy's implicit solvers and the generated Jacobian."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional

import numpy as np
from scipy.integrate import BDF, LSODA, RK45, Radau

from .. import __version__
from ..checks import positive_float, positive_int
from ..codegen import compile_model
from ..errors import InputError, IntegrationError
from ..symbolic.models import FiniteWidthModel, MeanFieldModel
from .structured import LowRankJacobian, StructuredBDF, StructuredRadau
from .trajectory import InitialCondition, Trajectory, initial_condition

METHODS = {"Radau": Radau, "BDF": BDF, "LSODA": LSODA, "RK45": RK45}
STIFF_EPS = 1e-3  # below this an explicit method needs more than ~1e3 steps per unit time
STRUCTURED = {"Radau": StructuredRadau, "BDF": StructuredBDF}
IMPLICIT = ("Radau", "BDF", "LSODA")
RTOL_MIN = 100 * np.finfo(float).eps


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


# the mean-field state holds u = artanh(s) (see MeanFieldDerivation); |s| = 1 is a fixed point,
# kept as the u whose tanh rounds to +-1
U_AT_UNIT_OVERLAP = 20.0


def pack_state(model, init: InitialCondition) -> np.ndarray:
    if isinstance(model, FiniteWidthModel):
        m = init.N
        r0 = init.r0 if init.r0 is not None else np.eye(m)
        return np.concatenate([init.a0, init.s0, r0[np.triu_indices(m, 1)]])
    unit = np.abs(init.s0) >= 1
    with np.errstate(divide="ignore"):
        u0 = np.where(unit, np.sign(init.s0) * U_AT_UNIT_OVERLAP, np.arctanh(np.where(unit, 0.0, init.s0)))
    return np.concatenate([init.a0, u0])


def unpack_state(model, Y: np.ndarray, N: int) -> tuple:
    """(a, s) from packed states (..., n): the mean-field state stores u = artanh(s)."""
    a, x = Y[..., :N], Y[..., N:2 * N]
    return a, (np.tanh(x) if isinstance(model, MeanFieldModel) else x)


def unpack_overlaps(Y: np.ndarray, m: int) -> np.ndarray:
    """(T, m, m) overlap matrices from packed states (T, n)."""
    iu = np.triu_indices(m, 1)
    R = np.repeat(np.eye(m)[None], Y.shape[0], axis=0)
    R[:, iu[0], iu[1]] = Y[:, 2 * m:]
    R[:, iu[1], iu[0]] = Y[:, 2 * m:]
    return R


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
    """What :func:`step_through` reached: outputs at the t_eval passed, the status (0 reached
    t_end, 2 stopped by max_wall, -1 failed, -2 interrupted) and, on failure, where."""

    t: list
    y: list
    status: int
    message: str
    t_fail: Optional[float]
    y_fail: Optional[np.ndarray]
    nsteps: int
    solve_seconds: float


def step_through(solver, y0, t_eval, t_end, max_wall=None, progress=None) -> SolverRun:
    """Step a SciPy OdeSolver to t_end, sampling its dense output at ``t_eval``; a failed step, a
    non-finite state, ``max_wall`` or Ctrl-C end the run with what was computed so far."""
    ts, ys = [], []
    idx = 0
    while idx < t_eval.size and t_eval[idx] <= 0.0:
        ts.append(t_eval[idx])
        ys.append(np.array(y0, dtype=float))
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
                    ts.append(t_eval[idx])
                    ys.append(dense(t_eval[idx]))
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
    return SolverRun(ts, ys, status, message, t_fail, y_fail, nsteps, time.perf_counter() - solve_start)


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


def solve(model, init=None, t_end: float = 5.0, *, t_eval=None, points: int = 200, t_min=None,
          method: str = "Radau", rtol: float = 1e-8, atol: float = 1e-10, first_step=None,
          max_wall: float = None, progress=None, structured: bool = True) -> Trajectory:
    """Integrate ``model`` from ``init`` to ``t_end``, SciPy style.

    ``method`` is one of Radau (default), BDF, LSODA (implicit, with the generated analytic
    Jacobian) or RK45 (explicit, for comparison only). Output is at ``t_eval``, by default 0
    followed by ``points`` log-spaced times from ``t_min`` (default eps/100) to ``t_end``.
    ``max_wall`` (seconds) stops the integration early, keeping what was computed
    (``stats['status'] == 2``). A solver failure raises :class:`IntegrationError` carrying the time
    reached, the state there and the partial trajectory.

    With ``structured=True`` (default) Radau and BDF on a mean-field model keep the Jacobian as
    2x2 blocks plus a rank-(K+1) term and solve their linear systems by the Woodbury identity,
    O(N K) instead of O(N^3) (see :mod:`odehild.solve.structured`); ``False`` factors it densely.
    """
    if not isinstance(model, (MeanFieldModel, FiniteWidthModel)):
        raise InputError(f"model must be a MeanFieldModel or FiniteWidthModel, got {type(model).__name__}")
    t_end = positive_float("t_end", t_end)
    rtol, atol = check_tolerances(rtol, atol)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    if method not in IMPLICIT and model.eps < STIFF_EPS:
        import warnings

        from ..errors import StiffnessWarning

        warnings.warn(f"{method} is explicit: at eps = {model.eps:g} the fast second layer limits its step to "
                      f"about eps, so reaching t_end = {t_end:g} takes of order {t_end / model.eps:.0e} steps; "
                      "use Radau, BDF or LSODA", StiffnessWarning, stacklevel=2)
    if init is None:
        if isinstance(model, FiniteWidthModel):
            raise InputError("a finite-width model needs an explicit initial condition with r0")
        init = initial_condition()
    if not isinstance(init, InitialCondition):
        raise InputError(f"init must be an InitialCondition, got {type(init).__name__}")
    if t_eval is None:
        t_eval = log_time_grid(t_end, points, t_min, model.eps)
    t_eval = check_output_times(t_eval, t_end)

    wall0 = time.perf_counter()
    compiled = compile_model(model)
    compile_start = time.perf_counter()
    y0 = pack_state(model, init)
    n = y0.size
    inv_eps = 1.0 / model.eps
    arg = init.weights if isinstance(model, MeanFieldModel) else init.N
    counters = {"nfev": 0, "njev": 0}
    crhs, cjac = compiled.rhs, compiled.jac
    structured = bool(structured and method in STRUCTURED and isinstance(model, MeanFieldModel))
    cjac_parts = compiled.jac_parts if structured else None

    def fun(t, y):
        out = np.empty(n)
        crhs(t, y, arg, inv_eps, out)
        counters["nfev"] += 1
        return out

    def jac(t, y):
        J = np.empty((n, n))
        cjac(t, y, arg, inv_eps, J)
        counters["njev"] += 1
        return J

    def jac_structured(t, y):
        D, A, Vt = np.empty((4, init.N)), np.empty((n, model.K + 1)), np.empty((model.K + 1, n))
        cjac_parts(t, y, arg, inv_eps, D, A, Vt)
        counters["njev"] += 1
        return LowRankJacobian(D, A, Vt)

    # compile (or load) before timing the solve; only the Jacobian form the solver will use
    fun(0.0, y0)
    if structured:
        jac_structured(0.0, y0)
    elif method in IMPLICIT:
        jac(0.0, y0)
    counters.update(nfev=0, njev=0)
    compile_seconds = time.perf_counter() - compile_start

    kw = dict(rtol=rtol, atol=atol)
    if first_step is not None:
        kw["first_step"] = first_step
    solver_class = METHODS[method]
    if method in IMPLICIT:
        kw["jac"] = jac
    if structured:
        kw["jac"] = jac_structured
        solver_class = STRUCTURED[method]
    solver = solver_class(fun, 0.0, y0, t_end, **kw)

    run = step_through(solver, y0, t_eval, t_end, max_wall, progress)
    ts, ys, status, message, t_fail, y_fail = run.t, run.y, run.status, run.message, run.t_fail, run.y_fail
    nsteps, solve_seconds = run.nsteps, run.solve_seconds

    Y = np.array(ys) if ys else np.empty((0, n))
    stats = {"nfev": counters["nfev"], "njev": counters["njev"], "nlu": int(getattr(solver, "nlu", 0)),
             "ndense": int(getattr(solver, "ndense", 0)),
             "nsteps": nsteps, "status": status, "message": message, "t_reached": float(solver.t),
             "solve_seconds": solve_seconds, "wall_seconds": time.perf_counter() - wall0,
             "derive_seconds": compiled.derive_seconds, "compile_seconds": compile_seconds,
             "from_cache": compiled.from_cache}
    meta = {**model.meta(), "method": method, "structured": structured, "rtol": rtol, "atol": atol, "t_end": t_end,
            "init": init.description, "N": init.N, "odehild": __version__}
    if isinstance(model, MeanFieldModel):
        meta["learnability"] = model.learnability(s0_zero=not np.any(init.s0)).to_dict()
    traj = _trajectory(model, compiled, np.array(ts), Y, init, stats, meta)
    if status < 0:
        where = f"t = {t_fail:.6g}" if t_fail is not None else "start"
        a_fail, s_fail = unpack_state(model, y_fail, init.N)
        y_fail = np.concatenate([a_fail, s_fail, y_fail[2 * init.N:]])  # reported as (a, s, ...)
        raise IntegrationError(
            f"{method} failed at {where} ({message}); |a| max = {np.max(np.abs(a_fail)):.3g}, "
            f"|s| max = {np.max(np.abs(s_fail)):.3g}; "
            f"{len(traj)} of {t_eval.size} output times were computed and are kept in .partial",
            t_fail=t_fail, state=y_fail, partial=traj, interrupted=status == -2)
    return traj


def _trajectory(model, compiled, t, Y, init, stats, meta) -> Trajectory:
    N = init.N
    a, s = unpack_state(model, Y, N)
    if isinstance(model, MeanFieldModel):
        T, nm = t.size, model.K + 1
        M, r, R = np.empty((T, nm)), np.empty((T, nm)), np.empty(T)
        compiled.observables(np.ascontiguousarray(a), np.ascontiguousarray(s), init.weights, M, r, R)
        return Trajectory(t, a, s, R, init.weights, M, r, None, stats, meta)
    overl = unpack_overlaps(Y, N)
    risk = np.array([compiled.risk(a[i].copy(), s[i].copy(), overl[i], model.phi.norm2,
                                    model.sigma.norm2) for i in range(t.size)])
    return Trajectory(t, a, s, risk, init.weights, None, None, overl, stats, meta)
