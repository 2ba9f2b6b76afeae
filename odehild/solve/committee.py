"""Initial conditions, integration and trajectories of the committee family
(:mod:`odehild.symbolic.committee`). Time is alpha = steps/d; output on the first axis."""

from __future__ import annotations

import dataclasses
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


def random_weights(K: int, M: int, d: int, *, scale: float = 1e-3, seed=None, orthonormal_teacher=True):
    """Student weights W (K, d) with i.i.d. N(0, scale^2) entries (Q close to scale^2 I) and teacher
    weights W* (M, d) with T = I exactly (orthonormal rows times sqrt(d)) or Gaussian rows."""
    K, M, d = positive_int("K", K), positive_int("M", M), positive_int("d", d)
    rng = np.random.default_rng(seed_value("seed", seed))
    teacher = rng.normal(size=(M, d))
    if orthonormal_teacher:
        if M > d:
            raise InputError(f"an orthonormal teacher needs M <= d, got M = {M}, d = {d}")
        teacher = np.linalg.qr(teacher.T)[0].T * np.sqrt(d)
    student = scale * rng.normal(size=(K, d))
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
                    method: str = "Radau", rtol: float = 1e-8, atol: float = 1e-10, max_wall=None,
                    progress=None) -> CommitteeTrajectory:
    """Integrate the overlap ODE of a committee declaration, SciPy style.

    ``lr`` is the first-layer rate eta, ``lr2`` the second layer's (0: fixed), ``noise`` the label
    noise's standard deviation. With ``dynamics="gf"`` the eta^2 terms are dropped (gradient flow in
    the same time alpha). Output at ``t_eval``, by default 0 and ``points`` log-spaced times from
    t_min (default 1e-3 t_end) to t_end. A failed solve raises :class:`IntegrationError` with the time,
    the state and the partial trajectory.
    """
    if not isinstance(model, CommitteeModel):
        raise InputError(f"model must be a CommitteeModel, got {type(model).__name__}")
    if not isinstance(init, CommitteeInit):
        raise InputError(f"init must be a CommitteeInit, got {type(init).__name__}")
    t_end = positive_float("t_end", t_end)
    lr, lr2 = _rate("lr", lr, allow_zero=False), _rate("lr2", lr2, allow_zero=True)
    noise = _rate("noise", noise, allow_zero=True)
    rtol, atol = check_tolerances(rtol, atol)
    if method not in METHODS:
        raise InputError(f"unknown method {method!r} (allowed: {', '.join(METHODS)})")
    t_eval = log_time_grid(t_end, points, t_min) if t_eval is None else t_eval
    t_eval = check_output_times(t_eval, t_end)

    wall0 = time.perf_counter()
    compiled = compile_committee(model)
    K, M = init.K, init.M
    n = state_size(K, M)
    c, ct = output_scale(model.output, K), output_scale(model.output, M)
    sgd = model.dynamics == "sgd"
    T, A = np.ascontiguousarray(init.T), np.ascontiguousarray(init.A)
    args = (K, M, T, A, lr, lr2, noise**2, c, ct, sgd)
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
    meta = {**model.meta(), "K": K, "M": M, "lr": lr, "lr2": lr2, "noise": noise, "method": method,
            "rtol": rtol, "atol": atol, "t_end": t_end, "init": init.description, "odehild": __version__}
    traj = CommitteeTrajectory(np.array(run.t), Q, R, v, risk, T, A, stats, meta)
    if run.status < 0:
        Qf, Rf, vf = unpack(run.y_fail[None], K, M)
        raise IntegrationError(
            f"{method} failed at alpha = {run.t_fail:.6g} ({run.message}); |Q| max = {np.max(np.abs(Qf)):.3g}, "
            f"|R| max = {np.max(np.abs(Rf)):.3g}, |v| max = {np.max(np.abs(vf)):.3g}; {len(traj)} of "
            f"{t_eval.size} output times were computed and are kept in .partial",
            t_fail=run.t_fail, state={"Q": Qf[0], "R": Rf[0], "v": vf[0]}, partial=traj,
            interrupted=run.status == -2)
    return traj
