"""Mean-field dynamics for a multi-index target phi(z1, .., zM) (docs/multi-index.md): declaration,
derivation from the risk, generated source, state map, initial conditions and observables.

Particles (a_j, s_j), s_j in R^M, interact only through the moments M_alpha = sum_j w_j a_j s_j^alpha
over the multi-indices alpha whose Hermite factor c_alpha = sigma_|alpha| sqrt(|alpha|!/alpha!) is
not zero. The risk R(M) = (1/2) sum_alpha (phi_alpha - c_alpha M_alpha)^2 + (1/2) floor is declared;
the flow eps da/dt = -dR/d(w a), ds/dt = -(I - s s^T) dR/d(w s) is derived from it, and so is the
Jacobian: one block per particle plus a correction through the moments, of rank their number, which
:mod:`odehild.solve.structured` solves by the Woodbury identity.

Each particle also carries v = sqrt(1 - |s|^2), the size of its neuron's part orthogonal to the target
directions: (s, v) is a unit vector of R^(M+1) moved by the sphere's tangent projection, written so
that |s|^2 + v^2 is conserved exactly and the radial motion of s carries the factor v^2 >= 0
(dv/dt = v (s . dR/ds) keeps the sign of v). Integrating s alone lets a particle that overshoots
|s| = 1 by rounding run away outside the ball, where 1 - |s|^2 < 0 turns the flow around (N = 10,
K = 4: |s| = 61 at t = 0.04); with v it cannot leave. This is the multi-direction form of the founding
model's artanh chart (:mod:`odehild.models.meanfield`); M = 1 gives the same dynamics.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import numpy as np
import sympy as sp

from .. import __version__
from ..codegen.numba_gen import HEADER, compile_model, compensated_moments, emit_block
from ..errors import InputError
from ..io import load_npz, save_npz
from ..solve.integrate import OdeProblem
from ..solve.state import Block, StateMap
from ..solve.structured import LowRankJacobian
from ..symbolic.founding import CODEGEN_FORMAT, _digest, as_function, check_eps, check_kmax, eps_sym
from ..symbolic.multi_hermite import MultiHermiteExpansion, as_target, monomial_name
from . import ModelKind, register
from ._founding import FoundingDeclaration

a_sym = sp.Symbol("a", real=True)
HALF = 0.5  # a multi-index is learned when |r_alpha| falls below this fraction of its start


def hermite_factor(sigma_k: float, alpha) -> float:
    """c_alpha = sigma_|alpha| sqrt(|alpha|! / alpha!): the kernel of docs/multi-index.md section 2."""
    k = sum(alpha)
    return sigma_k * math.sqrt(math.factorial(k) / math.prod(math.factorial(j) for j in alpha))


@dataclasses.dataclass(frozen=True)
class MultiIndexDerivation:
    """Symbolic objects derived from the declared risk R(M) (all SymPy), for the moments of
    ``alphas`` (the multi-indices with c_alpha != 0)."""

    M: int
    alphas: tuple
    s: tuple  # alignment symbols s1 .. sM
    v: sp.Symbol  # sqrt(1 - |s|^2)
    c: tuple  # symbols c_alpha
    phi: tuple  # symbols phi_alpha
    floor: sp.Symbol  # E[phi^2] minus the squares of the phi_alpha moved by the dynamics
    moments: tuple  # moment symbols
    g: tuple  # symbols for dR/dM_alpha
    moment_fns: tuple  # m_alpha(a, s) = a s^alpha
    risk: sp.Expr
    grad: tuple
    hess: tuple
    residuals: tuple
    rhs: tuple  # (da/dt, ds_1/dt, .., dv/dt): expressions in a, s, v, g, eps
    local_jac: tuple  # d rhs / d(a, s, v) at fixed g, (M+2) x (M+2)
    rhs_dg: tuple  # d rhs_p / d g_alpha
    moment_dy: tuple  # d m_alpha / d y_p

    def residual_polynomial(self) -> sp.Expr:
        """F(s) = sum_alpha c_alpha r_alpha s^alpha, in terms of residual symbols r_alpha."""
        r = sp.symbols(f"r_0:{len(self.alphas)}", real=True)
        return sp.Add(*[ci * ri * m / a_sym for ci, ri, m in zip(self.c, r, self.moment_fns)])


@functools.lru_cache(maxsize=16)
def derive_multi_index(M: int, alphas: tuple) -> MultiIndexDerivation:
    """Derive the particle flow of docs/multi-index.md section 3 from the risk in the moments."""
    s = sp.symbols(f"s1:{M + 1}", real=True)
    v = sp.Symbol("v", nonnegative=True)
    n = len(alphas)
    c = sp.symbols(f"c_0:{n}", real=True)
    phi = sp.symbols(f"phi_0:{n}", real=True)
    Ms = sp.symbols(f"M_0:{n}", real=True)
    g = sp.symbols(f"g_0:{n}", real=True)
    floor = sp.Symbol("tau", nonnegative=True)
    residuals = tuple(phi[i] - c[i] * Ms[i] for i in range(n))
    risk = sp.Rational(1, 2) * sp.Add(*[r**2 for r in residuals]) + floor / 2
    moment_fns = tuple(a_sym * sp.Mul(*[sj**k for sj, k in zip(s, al)]) for al in alphas)
    grad = tuple(sp.diff(risk, m) for m in Ms)
    hess = tuple(tuple(sp.diff(gi, m) for m in Ms) for gi in grad)
    # gradient of the per-particle risk through the moments, then the mobilities: 1/eps for a, the
    # projection I - p p^T onto the tangent space of the unit sphere for p = (s, v), with
    # |s|^2 + v^2 = 1 written out where the projection needs it (module docstring)
    dR = [sp.Add(*[g[i] * sp.diff(moment_fns[i], x) for i in range(n)]) for x in (a_sym, *s)]
    radial = sp.Add(*[sj * dj for sj, dj in zip(s, dR[1:])])
    norm2 = sp.Add(*[sj**2 for sj in s]) + v**2
    rhs = ((sp.expand(-dR[0] / eps_sym),) + tuple(sp.expand(-(dj * norm2 - sj * radial)) for sj, dj in zip(s, dR[1:]))
           + (sp.expand(v * radial),))
    y = (a_sym, *s, v)
    local_jac = tuple(tuple(sp.diff(f, v) for v in y) for f in rhs)
    rhs_dg = tuple(tuple(sp.diff(f, gi) for gi in g) for f in rhs)
    moment_dy = tuple(tuple(sp.diff(m, v) for m in moment_fns) for v in y)
    return MultiIndexDerivation(M, alphas, s, v, c, phi, floor, Ms, g, moment_fns, risk, grad, hess, residuals,
                                rhs, local_jac, rhs_dg, moment_dy)


# --------------------------------------------------------------------------- initial conditions


@dataclasses.dataclass
class MultiIndexInit:
    """Particles (a0 (N,), s0 (N, M)) with weights summing to 1."""

    a0: np.ndarray
    s0: np.ndarray
    weights: Optional[np.ndarray] = None
    description: str = "explicit arrays"

    def __post_init__(self):
        from ..solve.trajectory import InitialCondition

        s0 = np.asarray(self.s0, dtype=float) if not np.iscomplexobj(self.s0) else self.s0
        if np.iscomplexobj(s0) or s0.ndim != 2:
            raise InputError(f"s0 must be a real (N, M) array (one row of alignments per particle), got shape "
                             f"{np.shape(self.s0)}")
        # a0 and the weights through the single-index checks (finite, same length, weights sum to 1)
        one = InitialCondition(self.a0, np.zeros(np.size(self.a0)), self.weights)
        if s0.shape[0] != one.N:
            raise InputError(f"s0 has {s0.shape[0]} rows, a0 has {one.N} particles")
        bad = np.flatnonzero(~np.all(np.isfinite(s0), axis=1))
        if bad.size:
            raise InputError(f"s0 must be finite; row {bad[0]} is {s0[bad[0]]}")
        norm = np.linalg.norm(s0, axis=1)
        bad = np.flatnonzero(norm > 1)
        if bad.size:
            raise InputError(f"alignments must satisfy |s| <= 1; |s0[{bad[0]}]| = {norm[bad[0]]:.6g}")
        self.a0, self.s0, self.weights = one.a0, s0, one.weights

    @property
    def N(self) -> int:
        return self.a0.size

    @property
    def M(self) -> int:
        return self.s0.shape[1]


def multi_index_start(N: int, M: int, a0: str = "normal", seed=None, nodes: str = "quadrature",
                      s0_dim: Optional[int] = None, s0_seed: int = 0) -> MultiIndexInit:
    """a0 from a law as in :func:`odehild.solve.trajectory.initial_condition`; s0 = 0, or with
    ``s0_dim = d`` the alignment of a random unit vector in dimension d, s0 ~ N(0, 1/d) per
    coordinate (seed ``s0_seed``): the finite-d start that leaves an invariant subspace."""
    from ..solve.trajectory import initial_condition

    if isinstance(M, bool) or not isinstance(M, (int, np.integer)) or not 1 <= M <= 9:
        raise InputError(f"the number of directions M must be an integer in [1, 9], got {M!r}")
    one = initial_condition(N, a0, seed, nodes)
    if s0_dim is None:
        return MultiIndexInit(one.a0, np.zeros((N, M)), one.weights, one.description.replace("s0 = 0", f"s0 = 0 (M = {M})"))
    if isinstance(s0_dim, bool) or not isinstance(s0_dim, (int, np.integer)) or s0_dim < max(M, 2):
        raise InputError(f"--s0-dim (the input dimension d of the finite-d start) must be an integer >= {max(M, 2)}, "
                         f"got {s0_dim!r}")
    s0 = np.random.default_rng(s0_seed).standard_normal((N, M)) / math.sqrt(s0_dim)
    norm = np.linalg.norm(s0, axis=1)
    s0 /= np.maximum(norm, 1.0)[:, None]  # a draw beyond the unit ball (tiny d) is put on its boundary
    return MultiIndexInit(one.a0, s0, one.weights,
                          one.description.replace("s0 = 0", f"s0 ~ N(0, 1/{s0_dim}) per coordinate (seed {s0_seed})"))


# --------------------------------------------------------------------------- invariant subspace


def escaping_directions(moving: set, couplings: list) -> set:
    """Directions that leave s = 0, from the directions already moving and the multi-indices alpha
    with c_alpha phi_alpha != 0: direction j is pushed off 0 when some alpha has alpha_j = 1 and
    its other directions all move (d s_j/dt at s_j = 0 is a sum over those alpha of
    c_alpha phi_alpha s^(alpha - e_j)); otherwise {s_j = 0} is invariant (docs/multi-index.md 4)."""
    learned = set(moving)
    grew = True
    while grew:
        grew = False
        for alpha in couplings:
            for j, k in enumerate(alpha):
                if k == 1 and j not in learned and all(i in learned for i, ki in enumerate(alpha) if ki and i != j):
                    learned.add(j)
                    grew = True
    return learned


# --------------------------------------------------------------------------- result


@dataclasses.dataclass
class MultiIndexTrajectory:
    """A solved multi-index trajectory, time on the first axis: ``t`` (T,), ``a`` (T, N), ``s``
    (T, N, M), ``risk`` (T,), ``moments`` and ``residuals`` (T, P) with one column per multi-index of
    ``meta["multi_indices"]`` (every |alpha| <= K, in :func:`multi_indices` order)."""

    t: np.ndarray
    a: np.ndarray
    s: np.ndarray
    risk: np.ndarray
    weights: np.ndarray
    moments: np.ndarray
    residuals: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "a", "s", "risk", "weights", "moments", "residuals")

    @property
    def multi_indices(self) -> list:
        return [tuple(a) for a in self.meta["multi_indices"]]

    @property
    def M(self) -> int:
        return self.s.shape[2]

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, {**self.meta, "stats": self.stats})

    @classmethod
    def load(cls, path) -> "MultiIndexTrajectory":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        t, a, s = arrays["t"], arrays["a"], arrays["s"]
        if t.ndim != 1 or a.ndim != 2 or s.ndim != 3 or a.shape != s.shape[:2] or a.shape[0] != t.size:
            raise InputError(f"{path}: expected t (T,), a (T, N), s (T, N, M); got {t.shape}, {a.shape}, {s.shape}")
        P = len(meta.get("multi_indices", []))
        if arrays["moments"].shape != (t.size, P) or arrays["residuals"].shape != (t.size, P):
            raise InputError(f"{path}: moments and residuals must have shape (T, {P}) (one column per multi-index "
                             "in meta), got " f"{arrays['moments'].shape} and {arrays['residuals'].shape}")
        stats = meta.pop("stats", {})
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, stats=stats, meta=meta)

    def __len__(self):
        return self.t.size

    def learning_times(self, fraction: float = HALF) -> dict:
        """{alpha: first time |r_alpha| <= fraction |r_alpha(0)|} for the multi-indices the target
        has (NaN: not learned by the end)."""
        from ..solve.analysis import learning_times

        support = [tuple(a) for a in self.meta["support"]]
        cols = [self.multi_indices.index(a) for a in support]
        times = learning_times(self.t, self.residuals[:, cols], fraction) if cols else []
        return dict(zip(support, (float(x) for x in times)))

    def direction_times(self, fraction: float = HALF) -> np.ndarray:
        """Per direction j, the earliest learning time of a multi-index of the target that contains j
        (the staircase z1 + z1 z2 + z1 z2 z3: direction 2 with z1 z2); NaN when none is learned."""
        out = np.full(self.M, np.nan)
        for alpha, tl in self.learning_times(fraction).items():
            used = np.array(alpha) > 0
            out[used] = np.fmin(out[used], tl)  # fmin ignores NaN: not learned, or no time yet
        return out

    def alignment(self) -> np.ndarray:
        """(T, M): the root-mean-square alignment sqrt(sum_i w_i s_ij^2) of each direction."""
        return np.sqrt(np.einsum("i,tij->tj", self.weights, self.s**2))

    def unlearned(self, k: int, fraction: float = HALF) -> list:
        """The target's multi-indices not yet learned at output index k."""
        support = [tuple(a) for a in self.meta["support"]]
        out = []
        for alpha in support:
            col = self.multi_indices.index(alpha)
            if abs(self.residuals[k, col]) > fraction * abs(self.residuals[0, col]):
                out.append(alpha)
        return out

    def __repr__(self):
        return (f"MultiIndexTrajectory(T={self.t.size}, N={self.a.shape[1]}, M={self.M}, t=[{self.t[0]:g}, "
                f"{self.t[-1]:g}], risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g}, status={self.stats.get('status')})")


# --------------------------------------------------------------------------- the declaration


@register
class MultiIndexModel(ModelKind):
    """The mean-field particle system for a target of M directions (docs/multi-index.md).

    ``sigma``: activation (expression in z, or Hermite coefficients); ``phi``: target, an expression
    in z1 .. zM or a :class:`~odehild.symbolic.multi_hermite.MultiHermiteExpansion`. Multi-indices
    up to |alpha| = K; the risk adds (1/2) the part of E[phi^2] the truncated network cannot move.
    """

    kind = "multi-index"
    cli_name = "multi-index"
    result_type = MultiIndexTrajectory
    default_t_end = 5.0

    def __init__(self, sigma, phi, K: int = 4, eps: float = 1e-4):
        self.K, self.eps = check_kmax(K), check_eps(eps)
        self.sigma = as_function(sigma, self.K, "sigma")
        self.phi: MultiHermiteExpansion = as_target(phi, self.K)
        self.M = self.phi.M
        self.all_alphas = list(self.phi.multi_indices)
        self.factors = np.array([hermite_factor(self.sigma.coefficients[sum(a)], a) for a in self.all_alphas])
        self.active = tuple(a for a, c in zip(self.all_alphas, self.factors) if c != 0)
        if not self.active:
            raise InputError(f"sigma = {self.sigma.name} has no Hermite coefficient up to K = {self.K}: "
                             "the network is zero")
        idx = [self.all_alphas.index(a) for a in self.active]
        phi_active = self.phi.coefficients[idx]
        self.floor = max(self.phi.norm2 - float(np.sum(phi_active**2)), 0.0)

    with_eps = FoundingDeclaration.with_eps  # the same declaration at another eps (shares the compiled code)

    @property
    def derivation(self) -> MultiIndexDerivation:
        return derive_multi_index(self.M, self.active)

    def _active_columns(self):
        return [self.all_alphas.index(a) for a in self.active]

    @property
    def parameters(self) -> np.ndarray:
        """The runtime numbers of the generated code: c_alpha and phi_alpha over the moments, then
        the floor (the code itself depends only on M and the moments' multi-indices, so targets and
        activations with the same structure share one compiled module)."""
        cols = self._active_columns()
        return np.concatenate([self.factors[cols], self.phi.coefficients[cols], [self.floor]])

    @property
    def support(self) -> list:
        """The target's multi-indices beyond the constant (those with phi_alpha != 0)."""
        return [a for a in self.phi.support if sum(a) > 0]

    def escaping(self, s0) -> list:
        """Directions (0-based) that leave s = 0 from ``s0`` (N, M)."""
        moving = {j for j in range(self.M) if np.any(np.asarray(s0)[:, j] != 0)}
        cols = dict(zip(self.all_alphas, self.factors))
        couplings = [a for a in self.support if cols[a] != 0]
        return sorted(escaping_directions(moving, couplings))

    def invariance_report(self, s0) -> str:
        """Empty when every direction the target uses can be learned from ``s0``; else what stays at 0
        and why (the invariant subspace of docs/multi-index.md section 4) and what to change."""
        used = sorted({j for a in self.support for j, k in enumerate(a) if k})
        stuck = [j for j in used if j not in self.escaping(s0)]
        if not stuck:
            return ""
        names = ", ".join(f"z{j + 1}" for j in stuck)
        blocked = [monomial_name(a) for a in self.support if any(a[j] for j in stuck)]
        return (f"directions {names} start at s = 0 and stay there: the subspace s_j = 0 is invariant under the "
                f"mean-field flow (no term of the target that couples them to a moving direction at degree one; "
                f"leap complexity {self.phi.leap}). Terms {', '.join(blocked)} are never learned in this limit; "
                "start from a finite-d alignment instead (--s0-dim d, or s0 in --init)")

    def cache_key(self) -> str:
        return _digest({"kind": self.kind, "M": self.M, "format": CODEGEN_FORMAT,
                        "active": [list(a) for a in self.active]})

    def source(self) -> str:
        return multi_index_source(self)

    def state_map(self, N: int) -> StateMap:
        """a (N,), then per particle (s_1 .. s_M, v), v = sqrt(1 - |s|^2) (module docstring), row by
        row: the layout of :class:`~odehild.solve.structured.LowRankJacobian`."""
        return StateMap(Block("a", (N,)), Block("s_v", (N, self.M + 1)))

    def meta(self) -> dict:
        return {"model": self.kind, "sigma": self.sigma.name, "phi": self.phi.expression,
                "sigma_coefficients": list(self.sigma.coefficients), "kmax": self.K, "eps": self.eps,
                "M": self.M, "multi_indices": [list(a) for a in self.all_alphas],
                "monomials": [monomial_name(a) for a in self.all_alphas],
                "phi_coefficients": [float(c) for c in self.phi.coefficients],
                "hermite_factors": [float(c) for c in self.factors], "phi_norm2": self.phi.norm2,
                "support": [list(a) for a in self.support], "leap_complexity": self.phi.leap,
                "risk_floor": 0.5 * self.floor}

    def problem(self, init=None) -> OdeProblem:
        """From ``init`` (default: 200 particles, s0 = 0, a0 at normal quadrature nodes)."""
        if init is None:
            init = multi_index_start(200, self.M)
        if not isinstance(init, MultiIndexInit):
            raise InputError(f"init must be a MultiIndexInit (multi_index_start), got {type(init).__name__}")
        if init.M != self.M:
            raise InputError(f"s0 has {init.M} columns, the target {self.phi.expression!r} has M = {self.M} directions")
        compiled = compile_model(self)
        state = self.state_map(init.N)
        v0 = np.sqrt(np.maximum(1.0 - np.sum(init.s0**2, axis=1), 0.0))
        y0 = state.pack({"a": init.a0, "s_v": np.column_stack([init.s0, v0])})
        w, inv_eps, n, nm, b = init.weights, 1.0 / self.eps, y0.size, len(self.active), self.M + 2
        rhs, jac, parts, par = compiled.rhs, compiled.jac, compiled.jac_parts, self.parameters

        def jac_parts(t, y, reuse=None):
            # reuse: a Jacobian the caller discards, whose arrays are overwritten
            arrays = reuse.buffers(init.N, b, nm) if reuse is not None else None
            D, A, VtT = arrays or (np.empty((init.N, b, b)), np.empty((n, nm)), np.empty((n, nm)))
            parts(t, y, w, inv_eps, par, D, A, VtT.T)
            return LowRankJacobian.from_transposed(D, A, VtT, reuse)

        meta = {**self.meta(), "init": init.description, "N": init.N,
                "stuck_directions": self.invariance_report(init.s0)}
        def observables(Y):
            values = state.unpack(Y)
            return self._observables(compiled, values["a"], values["s_v"][:, :, :self.M], w)

        return OdeProblem(y0, state, lambda t, y, out: rhs(t, y, w, inv_eps, par, out),
                          lambda t, y, J: jac(t, y, w, inv_eps, par, J), compiled, meta, jac_parts=jac_parts,
                          fast_eps=self.eps, context={"weights": w},
                          component_weights=np.concatenate([w, np.repeat(w, self.M + 1)]), observables=observables)

    def _observables(self, compiled, a, s, w) -> dict:
        mom = np.empty((a.shape[0], len(self.all_alphas)))
        compiled.all_moments(a, s, w, mom)
        res = self.phi.coefficients[None, :] - self.factors[None, :] * mom
        return {"moments": mom, "residuals": res, "risk": 0.5 * np.sum(res**2, axis=1) + 0.5 * self.phi.tail}

    def result(self, problem, t, Y, stats, meta, observed=None) -> MultiIndexTrajectory:
        values = problem.state.unpack(Y, consume=True)
        a, s, w = values["a"], values["s_v"][:, :, :self.M], problem.context["weights"]  # views: no (T, N, M) copy
        obs = observed if observed is not None else self._observables(problem.compiled, a, s, w)
        return MultiIndexTrajectory(t, a, s, obs["risk"], w, obs["moments"], obs["residuals"], stats, meta)

    @classmethod
    def solve_command(cls, args):
        return solve_multi_index_command(args)

    @classmethod
    def plot(cls, path, output):
        from ..solve.plot import plot_multi_index

        plot_multi_index(MultiIndexTrajectory.load(path), output)

    def __repr__(self):
        return (f"MultiIndexModel(sigma={self.sigma.name!r}, phi={self.phi.expression!r}, M={self.M}, K={self.K}, "
                f"eps={self.eps:g})")


@dataclasses.dataclass
class DirectionSweep:
    """Learning times per direction (rows: eps) and their fitted exponents t ~ eps^slope."""

    eps: np.ndarray
    times: np.ndarray  # (n_eps, M)
    slopes: np.ndarray  # (M,)
    term_times: dict  # {monomial: (n_eps,)}
    meta: dict

    def to_dict(self) -> dict:
        from ..simulate.compare import finite_list

        return {"eps": finite_list(self.eps), "direction_times": [finite_list(r) for r in self.times],
                "slopes": finite_list(self.slopes), "term_times": {k: finite_list(v) for k, v in self.term_times.items()},
                "meta": self.meta}

    def plot(self, path=None):
        from ..solve.plot import finish_figure, pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for j in range(self.times.shape[1]):
            ok = np.isfinite(self.times[:, j])
            if ok.any():
                ax.loglog(self.eps[ok], self.times[ok, j], "o-", label=f"direction z{j + 1}: slope {self.slopes[j]:.3f}")
        ax.set_xlabel("eps")
        ax.set_ylabel("learning time")
        ax.legend(fontsize=8)
        ax.set_title(f"phi = {self.meta.get('phi')}: learning time per direction", fontsize=10)
        return finish_figure(fig, path)


def direction_sweep(model: MultiIndexModel, eps_list, init=None, t_end: float = 5.0, progress=None,
                    **solve_kw) -> DirectionSweep:
    """Solve at each eps (the compiled code is shared) and fit log t_j against log eps per direction."""
    from ..solve import solve

    eps = np.array([check_eps(e) for e in eps_list])
    rows, terms = [], {}
    for e in eps:
        tr = solve(model.with_eps(float(e)), init, t_end, progress=progress, **solve_kw)
        rows.append(tr.direction_times())
        for alpha, tl in tr.learning_times().items():
            terms.setdefault(monomial_name(alpha), []).append(tl)
    from ..simulate.compare import fit_slope

    times = np.array(rows)
    slopes = np.full(times.shape[1], np.nan)
    for j in range(times.shape[1]):
        ok = np.isfinite(times[:, j])
        if ok.sum() >= 2:
            slopes[j] = fit_slope(eps[ok], times[ok, j])[0]
    return DirectionSweep(eps, times, slopes, {k: np.array(v) for k, v in terms.items()},
                          {"phi": model.phi.expression, "sigma": model.sigma.name, "kmax": model.K,
                           "N": None if init is None else init.N})


def init_from_args(args, M: int) -> MultiIndexInit:
    from ..io import load_npz

    if args.init:
        if getattr(args, "s0_dim", None) is not None:
            raise InputError("--s0-dim and --init both set s0: give one")
        arrays, _ = load_npz(args.init, required=("a0", "s0"))
        s0 = arrays["s0"]
        if s0.ndim == 1 and M == 1:
            s0 = s0[:, None]
        return MultiIndexInit(arrays["a0"], s0, arrays.get("weights"), description=f"from {args.init}")
    return multi_index_start(200 if args.particles is None else args.particles, M, args.a0 or "normal", args.seed,
                             args.nodes or "quadrature", getattr(args, "s0_dim", None),
                             0 if args.seed is None else args.seed)


def solve_multi_index_command(args):
    """``odehild solve`` with a target in z1 .. zM (or --model multi-index)."""
    from ..checks import positive_float
    from ..commands import keep_partial, refuse_committee_flags, solver_summary, stop_if_out_of_time
    from ..config import merge_values
    from ..solve import solve

    refuse_committee_flags(args, "multi-index mean-field model")
    args.t_end = 5.0 if args.t_end is None else args.t_end
    model = MultiIndexModel(args.sigma, args.phi, args.kmax, args.eps)
    init = init_from_args(args, model.M)
    terms = ", ".join(f"{monomial_name(a)} {model.phi.coefficient(a):.4g}" for a in model.support)
    print(f"target {model.phi.expression}: M = {model.M} directions, Hermite terms {terms}; leap complexity "
          f"{model.phi.leap}; {len(model.active)} moments", flush=True)
    stuck = model.invariance_report(init.s0)
    if stuck:
        print("warning: " + stuck, flush=True)
    info = {"sigma_expr_input": args.sigma, "phi_expr_input": args.phi, "seed": args.seed, "points": args.points}
    positive_float("--max-wall", args.max_wall)
    with keep_partial(args.out, info):
        traj = solve(model, init, args.t_end, points=args.points, t_min=args.t_min,
                     method=args.method or "Radau", rtol=args.rtol, atol=args.atol, max_wall=args.max_wall,
                     threads=args.threads, error_norm=args.error_norm,
                     output_precision=args.output_precision,
                     progress=False if args.quiet else None)
        stop_if_out_of_time(traj, args)
    resolved = {"t_min": float(traj.t[1]) if len(traj) > 1 else None, "t_end": args.t_end,
                "method": traj.meta["method"]}
    if not args.init:
        resolved.update(particles=init.N, a0=args.a0 or "normal", nodes=args.nodes or "quadrature",
                        s0_dim=getattr(args, "s0_dim", None))
    traj.meta.update(info, values=merge_values(args.values, resolved))
    path = traj.save(args.out)
    times = traj.direction_times()
    learned = ", ".join(f"z{j + 1} at t = {tj:.4g}" if np.isfinite(tj) else f"z{j + 1} not learned"
                        for j, tj in enumerate(times))
    print(f"{path}: T = {len(traj)}, N = {init.N}, M = {model.M}, risk {traj.risk[0]:.6g} -> {traj.risk[-1]:.3g}; "
          f"directions: {learned}; " + solver_summary(traj.stats))
    return [(path, resolved)]


# ------------------------------------------------------------------ generated source


def _monomial_block(M, alphas, target, indent, prefix):
    s = [sp.Symbol(f"s{j + 1}") for j in range(M)]
    return emit_block([(target.format(k=k), sp.Mul(*[sj**e for sj, e in zip(s, al)]))
                       for k, al in enumerate(alphas)], indent, prefix)


def multi_index_source(model: MultiIndexModel) -> str:
    d = model.derivation
    M, n, b = d.M, len(d.alphas), d.M + 2
    local = {a_sym: sp.Symbol("ai"), eps_sym: 1 / sp.Symbol("inv_eps"), d.floor: sp.Symbol("tau"), d.v: sp.Symbol("v")}
    local.update({ci: sp.Symbol(f"c_{i}") for i, ci in enumerate(d.c)})
    local.update({pi: sp.Symbol(f"phi_{i}") for i, pi in enumerate(d.phi)})
    local.update({sj: sp.Symbol(f"s{j + 1}") for j, sj in enumerate(d.s)})
    local.update({gi: sp.Symbol(f"g_{i}") for i, gi in enumerate(d.g)})
    local.update({mi: sp.Symbol(f"M_{i}") for i, mi in enumerate(d.moments)})

    def sub(e):
        return sp.sympify(e).xreplace(local)

    load_s = "\n".join([f"        s{j + 1} = y[N + i * NSLOT + {j}]" for j in range(M)]
                       + [f"        v = y[N + i * NSLOT + {M}]"])
    load_s_obs = "\n".join(f"            s{j + 1} = s[t, i, {j}]" for j in range(M))
    unpack_M = "\n".join(f"    M_{i} = M[{i}]" for i in range(n))
    unpack_g = "\n".join(f"    g_{i} = g[{i}]" for i in range(n))
    unpack_par = "\n".join([f"    c_{i} = par[{i}]" for i in range(n)] + [f"    phi_{i} = par[{n + i}]" for i in range(n)]
                           + [f"    tau = par[{2 * n}]"])
    moments = compensated_moments(
        "moments(y, w, M)", "M_alpha = sum_j w_j a_j s_j^alpha over the moved multi-indices, compensated "
        "(codegen.numba_gen.MOMENT_LANES).", n,
        [("w", "wi"), ("y_a", "ai")] + [(f"y_s{j + 1}", f"s{j + 1}") for j in range(M)],
        _monomial_block(M, d.alphas, "m_{k}", 0, "xm"), "(wi * ai)",
        "\n".join(["    y_a = y[:N]"] + [f"    y_s{j + 1} = y[N + {j}:N + NSLOT * N:NSLOT]" for j in range(M)]))
    grad = emit_block([(f"g[{i}]", sub(d.grad[i])) for i in range(n)], 4, "xg")
    hess = emit_block([(f"H[{i}, {j}]", sub(d.hess[i][j])) for i in range(n) for j in range(n)
                       if d.hess[i][j] != 0], 4, "xh")
    risk = emit_block([("val", sub(d.risk))], 4, "xk")
    rhs = emit_block([(f"f_{p}", sub(d.rhs[p])) for p in range(b)], 8, "xf")
    store_rhs = "\n".join(["        dy[i] = f_0"] + [f"        dy[N + i * NSLOT + {j}] = f_{j + 1}" for j in range(M + 1)])
    row = ["i"] + [f"N + i * NSLOT + {j}" for j in range(M + 1)]
    jac_local = emit_block(
        [(f"D[i, {p}, {q}]", sub(d.local_jac[p][q])) for p in range(b) for q in range(b)]
        + [(f"A[{row[p]}, {k}]", sub(d.rhs_dg[p][k])) for p in range(b) for k in range(n)]
        + [(f"B[{row[p]}, {k}]", sub(d.moment_dy[p][k]) * sp.Symbol("wi")) for p in range(b) for k in range(n)],
        8, "xj")
    P = len(model.all_alphas)
    mono_all = _monomial_block(M, model.all_alphas, "mo[{k}]", 12, "xo")

    return HEADER.format(version=__version__, kind=model.kind, key=model.cache_key()) + f'''
NDIR = {M}
NSLOT = {M + 1}  # s_1 .. s_M, v per particle
NM = {n}
NALL = {P}


{moments}

@njit(cache=True)
def grad_moments(M, par, g):
{unpack_M}
{unpack_par}
{grad}


@njit(cache=True)
def hess_moments(M, par, H):
    H[:, :] = 0.0
{unpack_M}
{unpack_par}
{hess}


@njit(cache=True)
def risk(M, par):
{unpack_M}
{unpack_par}
{risk}
    return val


@njit(cache=True)
def rhs(t, y, w, inv_eps, par, dy):
    """dy/dt for y = [a_0..a_(N-1), (s_1..s_M, v) of particle 0, of particle 1, ...]."""
    N = w.shape[0]
    M = np.empty(NM)
    g = np.empty(NM)
    moments(y, w, M)
    grad_moments(M, par, g)
{unpack_g}
    for i in range(N):
        ai = y[i]
{load_s}
{rhs}
{store_rhs}


@njit(cache=True)
def jac_parts(t, y, w, inv_eps, par, D, A, Vt):
    """dF/dy = D + A Vt: D (N, M+2, M+2) the per-particle blocks at fixed moments, A = dF/dM and
    Vt = H dM/dy, of rank <= NM."""
    N = w.shape[0]
    M = np.empty(NM)
    g = np.empty(NM)
    H = np.empty((NM, NM))
    B = np.empty(((NSLOT + 1) * N, NM))
    moments(y, w, M)
    grad_moments(M, par, g)
    hess_moments(M, par, H)
{unpack_g}
    for i in range(N):
        ai = y[i]
        wi = w[i]
{load_s}
{jac_local}
    # loops, not Vt[:, :] = H @ B.T: Numba compiles an array-to-slice assignment with its
    # shape-mismatch message, about 3 s of a cold start (Vt may be a transposed view)
    HB = H @ B.T
    for k in range(HB.shape[0]):
        for j in range(HB.shape[1]):
            Vt[k, j] = HB[k, j]


@njit(cache=True)
def jac(t, y, w, inv_eps, par, J):
    """Dense dF/dy (the same parts, assembled)."""
    N = w.shape[0]
    D = np.empty((N, NSLOT + 1, NSLOT + 1))
    A = np.empty(((NSLOT + 1) * N, NM))
    Vt = np.empty((NM, (NSLOT + 1) * N))
    jac_parts(t, y, w, inv_eps, par, D, A, Vt)
    np.dot(A, Vt, J)  # not J[:, :] = A @ Vt: see jac_parts
    for i in range(N):
        for p in range(NSLOT + 1):
            rp = i if p == 0 else N + i * NSLOT + p - 1
            for q in range(NSLOT + 1):
                rq = i if q == 0 else N + i * NSLOT + q - 1
                J[rp, rq] += D[i, p, q]


@njit(cache=True)
def all_moments(a, s, w, out):
    """M_alpha(t) for every |alpha| <= K, a (T, N), s (T, N, M): out (T, NALL)."""
    mo = np.empty(NALL)
    for t in range(a.shape[0]):
        out[t, :] = 0.0
        for i in range(a.shape[1]):
            wa = w[i] * a[t, i]
{load_s_obs}
{mono_all}
            for k in range(NALL):
                out[t, k] += wa * mo[k]
'''
