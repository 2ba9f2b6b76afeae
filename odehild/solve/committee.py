"""Initial conditions, integration and trajectories of the committee family
(:mod:`odehild.symbolic.committee`). Time is alpha = steps/d; output on the first axis."""

from __future__ import annotations

import dataclasses
import functools
import time

import numpy as np

from .. import __version__
from ..checks import positive_float, positive_int, seed_value
from ..codegen.committee_gen import compile_committee
from ..errors import InputError, IntegrationError
from ..io import load_npz, save_npz
from ..symbolic.committee import CommitteeModel, output_scale, state_size
from .integrate import METHODS, check_output_times, check_tolerances, log_time_grid, step_through

# the learning rates and noise the committee solver is tested on
MAX_RATE = 1e3


@dataclasses.dataclass
class CommitteeInit:
    """Initial overlaps: Q (K, K), R (K, M), T (M, M), v (K,) and the teacher's A (M,)."""

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    A: np.ndarray
    description: str = "given"

    ARRAYS = ("Q", "R", "T", "v", "A")

    def __post_init__(self):
        for name in self.ARRAYS:
            value = getattr(self, name)
            try:
                arr = np.asarray(value)
                if np.iscomplexobj(arr):
                    raise InputError(f"initial {name} must be real, got a complex array")
                arr = arr.astype(float)
            except (TypeError, ValueError):
                raise InputError(f"initial {name} must be a real array, got {type(value).__name__}") from None
            if not np.all(np.isfinite(arr)):
                raise InputError(f"initial {name} has non-finite entries")
            setattr(self, name, arr)
        K, M = self.v.size, self.A.size
        shapes = {"Q": (K, K), "R": (K, M), "T": (M, M), "v": (K,), "A": (M,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise InputError(f"initial {name} must have shape {shape} (K = {K} from v, M = {M} from A), "
                                 f"got {getattr(self, name).shape}")
        if K < 1 or M < 1:
            raise InputError("the student and the teacher need at least one unit (v and A non-empty)")
        for name in ("Q", "T"):
            X = getattr(self, name)
            if not np.allclose(X, X.T, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(X)))):
                raise InputError(f"initial {name} must be symmetric")
        C = np.block([[self.Q, self.R], [self.R.T, self.T]])
        low = np.linalg.eigvalsh(C)[0]
        if low < -1e-10 * max(1.0, np.max(np.abs(C))):
            raise InputError(f"the overlaps [[Q, R], [R^T, T]] are not a covariance (smallest eigenvalue "
                             f"{low:.3g}): no weights have them")

    @property
    def K(self) -> int:
        return self.v.size

    @property
    def M(self) -> int:
        return self.A.size

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, {"description": self.description})

    @classmethod
    def load(cls, path) -> "CommitteeInit":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, description=f"file {path}")


def random_weights(K: int, M: int, d: int, *, scale: float = 1e-3, seed=None, orthonormal_teacher=True,
                   sphere=False):
    """Student weights W (K, d) with i.i.d. N(0, scale^2) entries (Q close to scale^2 I) and teacher
    weights W* (M, d) with T = I exactly (orthonormal rows times sqrt(d)) or Gaussian rows. With
    ``sphere`` every row has norm sqrt(d) (Q_ii = T_nn = 1, random directions)."""
    K, M, d = positive_int("K", K), positive_int("M", M), positive_int("d", d)
    rng = np.random.default_rng(seed_value("seed", seed))
    teacher = rng.normal(size=(M, d))
    if orthonormal_teacher:
        if M > d:
            raise InputError(f"an orthonormal teacher needs M <= d, got M = {M}, d = {d}")
        teacher = np.linalg.qr(teacher.T)[0].T * np.sqrt(d)
    student = scale * rng.normal(size=(K, d))
    if sphere:
        student *= np.sqrt(d) / np.linalg.norm(student, axis=1, keepdims=True)
        teacher *= np.sqrt(d) / np.linalg.norm(teacher, axis=1, keepdims=True)
    return student, teacher


def overlaps(student, teacher, v, A, description="from weights") -> CommitteeInit:
    """The overlaps of given weights (rows are units; inputs of dimension d = number of columns)."""
    d = student.shape[1]
    return CommitteeInit(student @ student.T / d, student @ teacher.T / d, teacher @ teacher.T / d,
                         np.asarray(v, float), np.asarray(A, float), description)


def pack(init: CommitteeInit) -> np.ndarray:
    iu = np.triu_indices(init.K)
    return np.concatenate([init.Q[iu], init.R.ravel(), init.v])


def unpack(Y: np.ndarray, K: int, M: int) -> tuple:
    """(Q (T, K, K), R (T, K, M), v (T, K)) from packed states (T, n)."""
    Y = np.atleast_2d(Y)
    nq = K * (K + 1) // 2
    iu = np.triu_indices(K)
    Q = np.empty((Y.shape[0], K, K))
    Q[:, iu[0], iu[1]] = Y[:, :nq]
    Q[:, iu[1], iu[0]] = Y[:, :nq]
    return Q, Y[:, nq:nq + K * M].reshape(-1, K, M), Y[:, nq + K * M:]


@dataclasses.dataclass
class CommitteeTrajectory:
    """``t`` (T,), ``Q`` (T, K, K), ``R`` (T, K, M), ``v`` (T, K), ``risk`` (T,) (noise-free, in the
    declaration's output convention), the constant ``T`` (M, M) and ``A`` (M,); stats and meta."""

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    risk: np.ndarray
    T: np.ndarray
    A: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "Q", "R", "v", "risk", "T", "A")

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, {**self.meta, "stats": self.stats})

    @classmethod
    def load(cls, path) -> "CommitteeTrajectory":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        stats_ = meta.pop("stats", {})
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, stats=stats_, meta=meta)

    def __len__(self):
        return self.t.size

    def __repr__(self):
        return (f"CommitteeTrajectory(T={self.t.size}, K={self.v.shape[1]}, M={self.A.size}, "
                f"alpha=[{self.t[0]:g}, {self.t[-1]:g}], risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g}, "
                f"status={self.stats.get('status')})")


def _rate(name, value, allow_zero):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v <= MAX_RATE):
        span = "[0, " if allow_zero else "(0, "
        raise InputError(f"{name} must lie in {span}{MAX_RATE:g}], got {value!r}")
    return v


def solve_committee(model: CommitteeModel, init: CommitteeInit, t_end: float = 1000.0, *, lr: float = 0.5,
                    lr2: float = 0.0, noise: float = 0.0, t_eval=None, points: int = 200, t_min=None,
                    method: str = None, rtol: float = 1e-8, atol: float = 1e-10, max_wall=None,
                    progress=None) -> CommitteeTrajectory:
    """Integrate the overlap ODE of a committee declaration, SciPy style.

    ``lr`` is the first-layer rate eta, ``lr2`` the second layer's (0: fixed), ``noise`` the label
    noise's standard deviation. With ``dynamics="gf"`` the eta^2 terms are dropped (gradient flow in
    the same time alpha). Output at ``t_eval``, by default 0 and ``points`` log-spaced times from
    t_min (default 1e-3 t_end) to t_end. A failed solve raises :class:`IntegrationError` with the time,
    the state and the partial trajectory. On the sphere the diagonal of Q must be 1.

    ``method`` defaults to Radau, and to LSODA for the relu back end: where a student unit aligns
    with a teacher unit the overlap chart is singular (the relu kernels' second derivatives grow like
    1/sqrt(1 - rho^2)), Radau's Newton iterations stall there (K = M = 2, lr = 0.5: 10513 steps in 47 s
    to alpha = 157), while LSODA, which drops the Jacobian once the problem is not stiff, reaches
    alpha = 1000 in 885 steps, 0.3 s. The quadrature back end also defaults to LSODA: its Jacobian
    leaves out the SGD term's dependence on the overlaps, and its right-hand side is smooth only to
    the quadrature's accuracy (about 1e-12), which Radau's error control resolves with tiny steps
    once the risk is that small (erf, K = M = 2, lr = 0.5: LSODA reaches alpha = 1000 in 7 s; Radau
    had not in 12 minutes).
    """
    if not isinstance(model, CommitteeModel):
        raise InputError(f"model must be a CommitteeModel, got {type(model).__name__}")
    lr, lr2 = _rate("lr", lr, allow_zero=False), _rate("lr2", lr2, allow_zero=True)
    noise = _rate("noise", noise, allow_zero=True)
    K, M = _check_init(model, init)
    rates = {"lr": lr, "lr2": lr2, "lr_sq": lr**2 if model.dynamics == "sgd" else 0.0, "noise2": noise**2,
             "c": output_scale(model.output, K), "ct": output_scale(model.output, M)}
    meta = {"lr": lr, "lr2": lr2, "noise": noise}
    return integrate_overlaps(model, init, rates, meta, t_end, t_eval=t_eval, points=points, t_min=t_min,
                              method=method, rtol=rtol, atol=atol, max_wall=max_wall, progress=progress)


def _check_init(model, init):
    if not isinstance(init, CommitteeInit):
        raise InputError(f"init must be a CommitteeInit, got {type(init).__name__}")
    if model.geometry == "sphere":
        for name, X in (("Q", init.Q), ("T", init.T)):
            dev = np.max(np.abs(np.diag(X) - 1.0))
            if dev > 1e-8:
                raise InputError(f"on the sphere every unit has norm 1: the diagonal of initial {name} must be 1, "
                                 f"it deviates by {dev:.3g}")
            np.fill_diagonal(X, 1.0)
    return init.K, init.M


def integrate_overlaps(model: CommitteeModel, init: CommitteeInit, rates: dict, meta: dict, t_end, *,
                       t_eval=None, points=200, t_min=None, method=None, rtol=1e-8, atol=1e-10,
                       max_wall=None, progress=None, time_name="alpha") -> CommitteeTrajectory:
    """Integrate the generated overlap flow with the coefficients ``rates`` (lr, lr2, lr_sq, noise2,
    c, ct; see ``rhs_jac``), already checked by the caller."""
    K, M = _check_init(model, init)
    if method is None:
        method = "LSODA" if model.backend in ("relu", "quadrature") else "Radau"
    t_end = positive_float("t_end", t_end)
    rtol, atol = check_tolerances(rtol, atol)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    t_eval = log_time_grid(t_end, points, t_min) if t_eval is None else t_eval
    t_eval = check_output_times(t_eval, t_end)

    wall0 = time.perf_counter()
    compiled = compile_committee(model)
    n = state_size(K, M)
    c, ct = rates["c"], rates["ct"]
    T, A = np.ascontiguousarray(init.T), np.ascontiguousarray(init.A)
    args = (K, M, T, A, rates["lr"], rates["lr2"], rates["lr_sq"], rates["noise2"], c, ct,
            model.geometry == "sphere")
    counters = {"nfev": 0, "njev": 0}
    spare = np.empty((1, 1))

    def fun(t, y):
        out = np.empty(n)
        compiled.rhs_jac(y, *args, False, out, spare)
        counters["nfev"] += 1
        return out

    def jac(t, y):
        out, J = np.empty(n), np.empty((n, n))
        compiled.rhs_jac(y, *args, True, out, J)
        counters["njev"] += 1
        return J

    y0 = pack(init)
    compile_start = time.perf_counter()
    fun(0.0, y0)
    jac(0.0, y0)
    counters.update(nfev=0, njev=0)
    compile_seconds = time.perf_counter() - compile_start
    kw = dict(rtol=rtol, atol=atol)
    if method != "RK45":
        kw["jac"] = jac
    solver = METHODS[method](fun, 0.0, y0, t_end, **kw)
    run = step_through(solver, y0, t_eval, t_end, max_wall, progress)

    Y = np.array(run.y) if run.y else np.empty((0, n))
    Q, R, v = unpack(Y, K, M)
    risk = compiled.risk_series(Y, K, M, T, A, c, ct) if len(Y) else np.empty(0)
    stats = {**counters, "nlu": int(getattr(solver, "nlu", 0)), "nsteps": run.nsteps, "status": run.status,
             "message": run.message, "t_reached": float(solver.t), "solve_seconds": run.solve_seconds,
             "wall_seconds": time.perf_counter() - wall0, "derive_seconds": compiled.derive_seconds,
             "compile_seconds": compile_seconds, "from_cache": compiled.from_cache}
    meta = {**model.meta(), "K": K, "M": M, **meta, "method": method,
            "rtol": rtol, "atol": atol, "t_end": t_end, "init": init.description, "odehild": __version__}
    traj = CommitteeTrajectory(np.array(run.t), Q, R, v, risk, T, A, stats, meta)
    if run.status < 0:
        Qf, Rf, vf = unpack(run.y_fail[None], K, M)
        grew = np.max(np.abs(Qf)) > 100 * max(np.max(np.abs(init.Q)), 1.0)
        hint = ("; Q grew without bound: at this learning rate the SGD term outgrows the gradient term and "
                "online SGD itself diverges, lower the learning rate" if grew and rates["lr_sq"] > 0 else "")
        raise IntegrationError(
            f"{method} failed at {time_name} = {run.t_fail:.6g} ({run.message}); |Q| max = {np.max(np.abs(Qf)):.3g}, "
            f"|R| max = {np.max(np.abs(Rf)):.3g}, |v| max = {np.max(np.abs(vf)):.3g}{hint}; {len(traj)} of "
            f"{t_eval.size} output times were computed and are kept in .partial",
            t_fail=run.t_fail, state={"Q": Qf[0], "R": Rf[0], "v": vf[0]}, partial=traj,
            interrupted=run.status == -2)
    return traj


@functools.lru_cache(maxsize=32)  # one declaration per member: its Hermite expansions are derived once
def founding_member(sigma, phi, *, backend: str = "auto", kmax: int = 6, gamma: float = 0.0) -> CommitteeModel:
    """The founding model's finite-width network as a committee member: units on the sphere, mean
    output, one teacher direction with link phi (docs/committee.md)."""
    return CommitteeModel(sigma, phi, output="mean", dynamics="sgd" if gamma > 0 else "gf", backend=backend,
                          geometry="sphere", kmax=kmax)


def solve_finite_width(sigma, phi, init, eps: float, t_end: float = 5.0, *, gamma: float = 0.0,
                       noise: float = 0.0, backend: str = "auto", kmax: int = 6, **solver):
    """The founding model's finite-width overlaps (a, s, r) at SGD rate gamma = eta d
    (docs/committee.md), in the founding model's time t = steps * eta.

    gamma = 0 is the exact population gradient flow (docs/model.md 2a); gamma > 0 adds the terms of
    online SGD's renormalisation, exact as d -> infinity at fixed width m. ``init`` is an
    :class:`InitialCondition` with ``r0``. ``solver`` takes the keywords of :func:`solve_committee`
    (t_eval, points, t_min, method, rtol, atol, max_wall, progress). Returns a :class:`Trajectory`
    with ``a``, ``s`` (T, m), ``r`` (T, m, m) and the noise-free ``risk``.
    """
    from ..symbolic.models import check_eps
    from .trajectory import InitialCondition, Trajectory

    eps = check_eps(eps)
    gamma = _rate("gamma", gamma, allow_zero=True)
    noise = _rate("noise", noise, allow_zero=True)
    if not isinstance(init, InitialCondition) or init.r0 is None:
        raise InputError("the finite-width model needs an InitialCondition with a0, s0 and r0 (m, m)")
    model = founding_member(sigma, phi, backend=backend, kmax=kmax, gamma=gamma)
    m = init.N
    cinit = CommitteeInit(init.r0, init.s0[:, None], np.ones((1, 1)), init.a0, np.ones(1), init.description)
    # time t = alpha * lr * c with c = 1/m: lr = m makes t = alpha; gamma = lr_sq c^2 / (lr c)
    rates = {"lr": float(m), "lr2": m / eps, "lr_sq": gamma * m**2, "noise2": noise**2, "c": 1.0 / m, "ct": 1.0}
    meta = {"model": "finite_width", "eps": eps, "gamma": gamma, "noise": noise, "m": m,
            "time": "t = steps * eta (founding model); gamma = eta d"}
    kw = {"t_min": eps / 100, **solver}

    def as_trajectory(traj):
        return Trajectory(traj.t, traj.v, traj.R[:, :, 0], traj.risk, init.weights, None, None, traj.Q,
                          traj.stats, traj.meta)

    try:
        return as_trajectory(integrate_overlaps(model, cinit, rates, meta, t_end, time_name="t", **kw))
    except IntegrationError as exc:
        exc.partial = as_trajectory(exc.partial)
        exc.state = {"a": exc.state["v"], "s": exc.state["R"][:, 0], "r": exc.state["Q"]}
        raise


# ------------------------------------------------------------------------------ analysis


def specialisation(traj) -> np.ndarray:
    """How far the student units have split among the teacher units, at each time (T,): the largest
    over teacher units n of max_i cos_in - min_i cos_in, cos_in = R_in / sqrt(Q_ii T_nn). 0 on the
    symmetric (unspecialised) plateau of Saad and Solla, where every student unit has the same overlap
    with a teacher unit; close to 1 once each student unit has taken one teacher unit (K = M)."""
    Q, R, T = np.asarray(traj.Q), np.asarray(traj.R), np.asarray(traj.T)
    qd = np.sqrt(np.maximum(np.diagonal(Q, axis1=1, axis2=2), 1e-300))
    cos = R / qd[:, :, None] / np.sqrt(np.maximum(np.diag(T), 1e-300))[None, None, :]
    if R.shape[1] < 2:
        return np.zeros(R.shape[0])
    return np.max(cos.max(axis=1) - cos.min(axis=1), axis=1)


def specialisation_time(traj, level: float = 0.5) -> float:
    """First output time at which :func:`specialisation` reaches ``level`` (inf if it never does;
    with one student unit there is nothing to split and the answer is nan)."""
    if np.asarray(traj.R).shape[1] < 2:
        return float("nan")
    hit = np.flatnonzero(specialisation(traj) >= level)
    return float(traj.t[hit[0]]) if hit.size else float("inf")


@dataclasses.dataclass
class CommitteePlateau:
    """An interval of log-time where log(risk) stays flat. ``kind``: "start" (nothing learned yet),
    "symmetric" (the unspecialised plateau: median specialisation below 0.1), "converged" (the risk
    at rounding level, below 1e-10 of its largest value) or "other"."""

    t_start: float
    t_end: float
    level: float
    kind: str


def committee_plateaus(traj, tol: float = 0.02, min_decades: float = 0.5) -> list:
    """Plateaus of a committee trajectory: flat stretches of log10(risk) against log10(alpha) (the
    criterion of :func:`odehild.solve.analysis.find_plateaus`, on the log of the risk, so that the
    final exponential approach to zero is not called flat), each labelled."""
    from .analysis import find_plateaus

    risk = np.asarray(traj.risk, float)
    top = max(np.max(np.abs(risk)), 1e-300)
    spec = specialisation(traj)
    t = np.asarray(traj.t, float)
    out = []
    for p in find_plateaus(t, np.log10(np.maximum(risk, 1e-14 * top)), tol=tol, min_decades=min_decades):
        inside = (t >= p.t_start) & (t <= p.t_end)
        if p.t_start <= t[t > 0][0]:
            kind = "start"
        elif np.median(risk[inside]) <= 1e-10 * top:
            kind = "converged"
        elif np.asarray(traj.R).shape[1] >= 2 and np.median(spec[inside]) < 0.1:
            kind = "symmetric"
        else:
            kind = "other"
        out.append(CommitteePlateau(p.t_start, p.t_end, float(np.median(risk[inside])), kind))
    return out
