"""Initial conditions and the Trajectory result of the solve stage."""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from ..checks import check_memory, seed_value
from ..errors import InputError
from ..io import load_npz, save_npz

A0_LAWS = ("normal", "uniform", "rademacher")
A0_NODES = ("quadrature", "quantiles")
# the normal law is truncated here for quadrature: mass beyond 8 standard deviations is 1.2e-15
NORMAL_CUTOFF = 8.0


@dataclasses.dataclass
class InitialCondition:
    """Particles (a0, s0) with weights summing to 1; ``r0`` (m, m) for finite-width overlaps.

    ``recipe`` (law, nodes, seed) says how a0 was built from its law, so that the same initial
    condition can be rebuilt at another number of particles (:meth:`at_resolution`); None for
    explicit arrays.
    """

    a0: np.ndarray
    s0: np.ndarray
    weights: np.ndarray
    r0: Optional[np.ndarray] = None
    description: str = "explicit arrays"
    recipe: Optional[dict] = None

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

    def at_resolution(self, N: int) -> Optional["InitialCondition"]:
        """The same initial condition with N particles, or None when it was given as arrays."""
        if self.recipe is None:
            return None
        return initial_condition(N, **self.recipe)


def _finite_vector(x, name) -> np.ndarray:
    raw = np.asarray(x)
    if np.iscomplexobj(raw):
        raise InputError(f"{name} must be real, got complex values (dtype {raw.dtype})")
    if raw.ndim != 1:
        raise InputError(f"{name} must be a 1-D array (one value per particle), got shape {raw.shape}")
    try:
        arr = np.array(raw, dtype=float)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be an array of numbers") from None
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name} must be finite; {name}[{bad[0]}] = {arr[bad[0]]}")
    return arr


def check_time_arrays(path, arrays: dict):
    """t (T,), a and s (T, N), risk (T,), all real and T, N >= 1: what every reader of a result assumes."""
    t = arrays["t"]
    T = t.shape[0] if t.ndim == 1 else -1
    if T < 1:
        raise InputError(f"{path}: 't' must be a non-empty 1-D array, has shape {t.shape}")
    for name in ("a", "s"):
        x = arrays[name]
        if x.ndim != 2 or x.shape[0] != T or x.shape[1] < 1:
            raise InputError(f"{path}: {name!r} must have shape (T, N) with T = {T}, has shape {x.shape}")
    if arrays["a"].shape != arrays["s"].shape or arrays["risk"].shape != (T,):
        raise InputError(f"{path}: 'a', 's' and 'risk' disagree in shape ({arrays['a'].shape}, "
                         f"{arrays['s'].shape}, {arrays['risk'].shape})")
    for name in ("t", "a", "s", "risk"):
        if not np.issubdtype(arrays[name].dtype, np.floating) and not np.issubdtype(arrays[name].dtype, np.integer):
            raise InputError(f"{path}: {name!r} must be real numbers, has dtype {arrays[name].dtype}")


def _check_law(law, N):
    if law not in A0_LAWS:
        raise InputError(f"unknown law for a0: {law!r} (allowed: {', '.join(A0_LAWS)})")
    if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
        raise InputError(f"number of particles must be a positive integer, got {N!r}")


def a0_law(law: str, N: int, seed=None) -> np.ndarray:
    """N equal-weight second-layer weights from a law of unit variance: by quantiles (j + 1/2)/N,
    or sampled with ``seed``.

    Laws: ``normal`` N(0, 1), ``uniform`` U(-sqrt 3, sqrt 3), ``rademacher`` +-1.
    """
    _check_law(law, N)
    if seed is None:
        q = (np.arange(N) + 0.5) / N
    else:
        q = np.random.default_rng(seed).random(N)
    if law == "normal":
        from scipy.special import ndtri

        a = ndtri(q)  # the N(0, 1) quantile function
    elif law == "uniform":
        a = np.sqrt(3) * (2 * q - 1)
    else:
        a = np.where(q < 0.5, -1.0, 1.0)
    if N > 1 and np.var(a) == 0:
        raise InputError(f"a0 drawn from {law!r} has zero variance; the symmetric state never breaks")
    return a


GLOBAL_RULE_MAX = 1000  # above this, panels: a global rule costs O(N^2) memory and O(N^3) time
PANEL = 20


def gauss_legendre(N: int):
    """N nodes and weights on [-1, 1]: one Gauss-Legendre rule up to GLOBAL_RULE_MAX nodes, beyond
    that equal panels of about PANEL nodes each (O(N); for the smooth integrands here as exact as
    the global rule: for the normal law, E a^k for k <= 12 with N = 1001 in panels and N = 1000 in one
    rule agree to 2e-15 relative)."""
    if N <= GLOBAL_RULE_MAX:
        return np.polynomial.legendre.leggauss(N)
    panels = -(-N // PANEL)
    sizes = np.full(panels, N // panels)
    sizes[: N - sizes.sum()] += 1
    edges = np.linspace(-1.0, 1.0, panels + 1)
    xs, ws = [], []
    for n in np.unique(sizes):
        x, w = np.polynomial.legendre.leggauss(int(n))
        which = np.flatnonzero(sizes == n)
        lo, hi = edges[which][:, None], edges[which + 1][:, None]
        xs.append((lo + hi) / 2 + (hi - lo) / 2 * x[None, :])
        ws.append((hi - lo) / 2 * w[None, :] * np.ones_like(lo))
    x, w = np.concatenate([v.ravel() for v in xs]), np.concatenate([v.ravel() for v in ws])
    order = np.argsort(x)
    return x[order], w[order]


def a0_quadrature(law: str, N: int):
    """N weighted nodes (a_j, w_j) representing the law of a0, tails included.

    With s0 = 0 every particle's path depends on a0 alone, so the moments are integrals over the
    law of a0, and a quadrature rule converges where equal-weight quantiles do not: late phases are
    driven by |a0| of 3 to 5 standard deviations, which N quantiles reach only as sqrt(2 log N).

    - ``normal``: Gauss-Legendre nodes on [-8, 8], weights the Gauss-Legendre weights times the
      N(0, 1) density (mass beyond 8 standard deviations: 1.2e-15);
    - ``uniform`` on [-sqrt 3, sqrt 3]: Gauss-Legendre, exact for polynomials of degree < 2N;
    - ``rademacher``: the two atoms +-1, each of mass 1/2 shared by its nodes.
    """
    _check_law(law, N)
    if N < 2:
        raise InputError(f"a quadrature of the a0 law needs at least 2 nodes, got N = {N}")
    if law == "rademacher":
        a = np.where(np.arange(N) < N // 2, -1.0, 1.0)
        w = np.where(a < 0, 0.5 / (N // 2), 0.5 / (N - N // 2))
        return a, w
    x, gw = gauss_legendre(N)
    if law == "normal":
        a = NORMAL_CUTOFF * x
        w = gw * np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)  # the N(0, 1) density
    else:
        a = np.sqrt(3) * x
        w = gw.copy()
    return a, w / w.sum()


def initial_condition(N: int = 200, a0: str = "normal", seed=None, nodes: str = "quadrature") -> InitialCondition:
    """The paper's initial condition: s = 0, a from a law.

    ``nodes="quadrature"`` (default) places weighted nodes that represent the tails
    (:func:`a0_quadrature`); ``"quantiles"`` gives equal-weight quantiles (j + 1/2)/N, which
    converge slowly in N for unbounded laws; a ``seed`` samples N equal-weight particles instead.
    """
    if nodes not in A0_NODES:
        raise InputError(f"unknown a0 nodes {nodes!r} (allowed: {', '.join(A0_NODES)})")
    seed = seed_value("seed", seed)
    _check_law(a0, N)
    # the solve keeps (T, N) arrays of a, s (and u) at the default 200 output times
    check_memory(N * 8 * 40 * 1.0 + 3 * 201 * N * 8, f"N = {N} particles")
    recipe = {"a0": a0, "seed": seed, "nodes": nodes}
    if seed is not None:
        a, w = a0_law(a0, N, seed), None
        how = f"samples, seed {seed}"
    elif nodes == "quantiles":
        a, w = a0_law(a0, N), None
        how = "quantiles"
    else:
        a, w = a0_quadrature(a0, N)
        how = "quadrature nodes"
    return InitialCondition(a, np.zeros(N), w, None, f"s0 = 0, a0 ~ {a0} ({how}), N = {N}", recipe)


@dataclasses.dataclass
class Trajectory:
    """A solved trajectory, time on the first axis (docs/conventions.md).

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
        check_time_arrays(path, arrays)
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
