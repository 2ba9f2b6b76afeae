"""Initial conditions and the Trajectory result of the solve stage."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from scipy import stats

from ..errors import InputError
from ..io import load_npz, save_npz

A0_LAWS = ("normal", "uniform", "rademacher")


@dataclasses.dataclass
class InitialCondition:
    """Particles (a0, s0) with weights summing to 1; ``r0`` (m, m) for finite-width overlaps."""

    a0: np.ndarray
    s0: np.ndarray
    weights: np.ndarray
    r0: Optional[np.ndarray] = None
    description: str = "explicit arrays"

    def __post_init__(self):
        self.a0 = _finite_vector(self.a0, "a0")
        self.s0 = _finite_vector(self.s0, "s0")
        if self.a0.shape != self.s0.shape:
            raise InputError(f"a0 and s0 must have the same shape, got {self.a0.shape} and {self.s0.shape}")
        if self.a0.size < 1:
            raise InputError("the initial condition needs at least one particle")
        bad = np.flatnonzero(np.abs(self.s0) > 1)
        if bad.size:
            raise InputError(f"alignments must satisfy |s| <= 1; s0[{bad[0]}] = {self.s0[bad[0]]}")
        if self.weights is None:
            self.weights = np.full(self.a0.size, 1.0 / self.a0.size)
        w = _finite_vector(self.weights, "weights")
        if w.shape != self.a0.shape or np.any(w < 0) or w.sum() <= 0:
            raise InputError(f"weights must be {self.a0.size} non-negative numbers with positive sum")
        if abs(w.sum() - 1) > 1e-12:
            raise InputError(f"weights must sum to 1 (they sum to {w.sum():.15g})")
        self.weights = w
        if self.r0 is not None:
            r = np.asarray(self.r0, dtype=float)
            m = self.a0.size
            if r.shape != (m, m) or not np.all(np.isfinite(r)):
                raise InputError(f"r0 must be a finite ({m}, {m}) matrix, got shape {r.shape}")
            if not np.allclose(r, r.T, atol=1e-12) or not np.allclose(np.diag(r), 1, atol=1e-12):
                raise InputError("r0 must be symmetric with unit diagonal (r_ii = 1)")
            if np.any(np.abs(r) > 1 + 1e-12):
                raise InputError("overlaps must satisfy |r_ij| <= 1")
            self.r0 = r

    @property
    def N(self) -> int:
        return self.a0.size


def _finite_vector(x, name) -> np.ndarray:
    try:
        arr = np.array(x, dtype=float).ravel()
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an array of numbers") from None
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name} must be finite; {name}[{bad[0]}] = {arr[bad[0]]}")
    return arr


def a0_law(law: str, N: int, seed=None) -> np.ndarray:
    """N second-layer weights from a law of unit variance: by quantiles (j + 1/2)/N, or sampled.

    Laws: ``normal`` N(0, 1), ``uniform`` U(-sqrt 3, sqrt 3), ``rademacher`` +-1.
    """
    if law not in A0_LAWS:
        raise InputError(f"unknown law for a0: {law!r} (allowed: {', '.join(A0_LAWS)})")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise InputError(f"number of particles must be a positive integer, got {N!r}")
    if seed is None:
        q = (np.arange(N) + 0.5) / N
    else:
        q = np.random.default_rng(seed).random(N)
    if law == "normal":
        a = stats.norm.ppf(q)
    elif law == "uniform":
        a = np.sqrt(3) * (2 * q - 1)
    else:
        a = np.where(q < 0.5, -1.0, 1.0)
    if N > 1 and np.var(a) == 0:
        raise InputError(f"a0 drawn from {law!r} has zero variance; the symmetric state never breaks")
    return a


def initial_condition(N: int = 200, a0: str = "normal", seed=None) -> InitialCondition:
    """The paper's initial condition: s = 0, a from a law (quantiles, or sampled with ``seed``)."""
    a = a0_law(a0, N, seed)
    how = "quantiles" if seed is None else f"samples, seed {seed}"
    return InitialCondition(a, np.zeros(N), None, None, f"s0 = 0, a0 ~ {a0} ({how}), N = {N}")


@dataclasses.dataclass
class Trajectory:
    """A solved trajectory, time on the first axis (conventions.md).

    ``t`` (T,), ``a`` and ``s`` (T, N), ``risk`` (T,), ``moments`` and ``residuals`` (T, K+1) for
    mean-field models, ``r`` (T, m, m) for finite-width models. ``stats`` holds the solver counters
    (nfev, njev, nlu, nsteps, status, message) and wall, derivation and compile times.
    """

    t: np.ndarray
    a: np.ndarray
    s: np.ndarray
    risk: np.ndarray
    weights: np.ndarray
    moments: Optional[np.ndarray] = None
    residuals: Optional[np.ndarray] = None
    r: Optional[np.ndarray] = None
    stats: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "a", "s", "risk", "weights", "moments", "residuals", "r")

    def save(self, path):
        arrays = {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}
        return save_npz(path, arrays, {**self.meta, "stats": self.stats})

    @classmethod
    def load(cls, path) -> "Trajectory":
        arrays, meta = load_npz(path, required=("t", "a", "s", "risk"))
        if "step" in arrays:
            raise InputError(f"{path} is a simulation, not an ODE trajectory")
        stats_ = meta.pop("stats", {})
        kw = {k: arrays.get(k) for k in cls.ARRAYS}
        if kw["weights"] is None:
            kw["weights"] = np.full(arrays["a"].shape[1], 1.0 / arrays["a"].shape[1])
        return cls(**kw, stats=stats_, meta=meta)

    def __len__(self):
        return self.t.size

    def __repr__(self):
        return (f"Trajectory(T={self.t.size}, N={self.a.shape[1]}, t=[{self.t[0]:g}, {self.t[-1]:g}], "
                f"risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g}, status={self.stats.get('status')})")
