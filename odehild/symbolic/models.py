"""Model declarations and the derivation of their order-parameter ODEs from the risk.

A model is declared once, from sigma, phi, the truncation degree K and eps. Everything numeric is
derived from the declared risk by differentiation; nothing here is hand-differentiated.

* :class:`MeanFieldModel` (docs/model.md 2b): particles (a_j, s_j) with weights w_j interact only
  through the moments M_k = sum_j w_j a_j s_j^k. The risk R(M) is declared; the flow is
  eps da/dt = -dR/d(w a), ds/dt = -(1 - s^2) dR/d(w s) (sphere mobility), and the Jacobian is a
  2x2-block diagonal plus the rank <= 2(K+1) correction through the moments.
* :class:`FiniteWidthModel` (docs/model.md 2a): overlaps (a_i, s_i, r_ij) of m neurons. The risk is
  declared as a sum of one-neuron terms A(a_i, s_i) and pair terms B(a_i, a_j, r_ij); the flow on
  the sphere follows from the gradients of A and B.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from functools import cached_property
from typing import Optional

import numpy as np
import sympy as sp

from ..checks import positive_float
from ..errors import ExpressionError, InputError
from .hermite import HermiteExpansion, hermite
from .parse import z

# Per-particle symbols (real: overlaps change sign).
a_sym, s_sym = sp.symbols("a s", real=True)
aj_sym, r_sym = sp.symbols("a_j r", real=True)
eps_sym = sp.Symbol("epsilon", positive=True)
m_sym = sp.Symbol("m", positive=True)
x_sym = sp.Symbol("x", real=True)
dsdu_sym = sp.Symbol("dsdu", positive=True)  # ds/du = 1 - s^2 for the state u = artanh(s)

CODEGEN_FORMAT = 7  # bump when generated code changes shape


# the range of eps the solvers are tested on. Below EPS_MIN the fast layer's rates (~ sigma_0^2 / eps)
# stand 1e18 above the O(1) terms and double precision cannot resolve both: Radau needs 25346 steps
# at 1e-20 against 2815 at 1e-18, and at 1e-30 it does not finish
EPS_MIN, EPS_MAX = 1e-18, 1e6
MAX_FUNCTION_NORM2 = 1e12


def check_eps(eps) -> float:
    eps = positive_float("eps", eps, " (eps = 0 is singular)")
    if not EPS_MIN <= eps <= EPS_MAX:
        raise InputError(f"eps must lie in [{EPS_MIN:g}, {EPS_MAX:g}], the range the solvers support, got {eps!r}")
    return eps


def check_kmax(kmax) -> int:
    if isinstance(kmax, bool) or not isinstance(kmax, (int, np.integer)) or not 1 <= kmax <= 40:
        raise InputError(f"K (kmax) must be an integer in [1, 40], got {kmax!r}")
    return int(kmax)


@dataclasses.dataclass(frozen=True)
class Function1D:
    """An activation or link function through its Hermite data up to degree K."""

    name: str
    coefficients: tuple  # floats c_0..c_K
    exact: tuple  # SymPy values or None
    norm2: float
    expr: Optional[sp.Expr] = None

    @property
    def tail(self) -> float:
        return max(self.norm2 - float(np.sum(np.square(self.coefficients))), 0.0)

    @property
    def symbolic_coefficients(self):
        return [e if e is not None else sp.Float(c, 17) for e, c in zip(self.exact, self.coefficients)]


def as_function(f, kmax: int, what: str) -> Function1D:
    """Hermite data of an expression, a HermiteExpansion, or a coefficient sequence (finite series),
    with E[f^2] in the range the solvers support."""
    out = _as_function(f, kmax, what)
    if not out.norm2 <= MAX_FUNCTION_NORM2:
        raise InputError(f"{what} = {out.name} has E[{what}^2] = {out.norm2:.3g}; odehild's solvers support at most "
                         f"{MAX_FUNCTION_NORM2:g} (coefficients of size 1e6): rescale it")
    return out


def _as_function(f, kmax: int, what: str) -> Function1D:
    if isinstance(f, Function1D):
        if len(f.coefficients) < kmax + 1:
            raise InputError(f"{what} has {len(f.coefficients)} coefficients, K = {kmax} needs {kmax + 1}")
        return Function1D(f.name, f.coefficients[: kmax + 1], f.exact[: kmax + 1], f.norm2, f.expr)
    if isinstance(f, HermiteExpansion):
        if f.kmax < kmax:
            f = hermite(f.expr, kmax)
        return Function1D(f.expression, tuple(float(c) for c in f.coefficients[: kmax + 1]),
                          tuple(f.exact[: kmax + 1]), float(f.norm2), f.expr)
    if isinstance(f, (str, sp.Basic)):
        h = hermite(f, kmax)
        return Function1D(h.expression, tuple(float(c) for c in h.coefficients), tuple(h.exact),
                          float(h.norm2), h.expr)
    try:
        coeffs = np.asarray(f, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ExpressionError(f"{what} must be an expression in z or a sequence of Hermite "
                              f"coefficients, got {type(f).__name__}") from None
    if coeffs.size == 0 or not np.all(np.isfinite(coeffs)):
        raise InputError(f"{what} Hermite coefficients must be finite and non-empty, got {coeffs}")
    full = np.zeros(max(kmax + 1, coeffs.size))
    full[: coeffs.size] = coeffs
    expr = sp.Add(*[sp.Float(c, 17) * sp.hermite_prob(k, z) / sp.sqrt(sp.factorial(k))
                    for k, c in enumerate(coeffs) if c != 0])
    return Function1D("series[" + ", ".join(f"{c:.6g}" for c in coeffs) + "]",
                      tuple(full[: kmax + 1]), tuple([None] * (kmax + 1)), float(np.sum(full**2)), expr)


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------ mean field


@dataclasses.dataclass(frozen=True)
class MeanFieldDerivation:
    """Symbolic objects derived from the declared risk R(M) (all SymPy)."""

    K: int
    sigma: tuple  # symbols sigma_k
    phi: tuple  # symbols phi_k
    tail: sp.Symbol  # tail of phi beyond K
    M: tuple  # moment symbols
    g: tuple  # symbols for dR/dM_k
    moment_fns: tuple  # m_k(a, s)
    risk: sp.Expr  # R(M)
    grad: tuple  # dR/dM_k (expressions in M)
    hess: tuple  # d^2R/dM_k dM_l
    residuals: tuple  # r_k(M)
    rhs: tuple  # (da/dt, ds/dt) per particle, in a, s, g, eps
    local_jac: tuple  # d rhs / d(a, s) at fixed g: ((faa, fas), (fsa, fss))
    rhs_dg: tuple  # d rhs / d g_k: (tuple over k for f_a, tuple over k for f_s)
    moment_dy: tuple  # d m_k / d(a, s): ((dm_k/da for k), (dm_k/ds for k))
    # the integrated state is (a, u) with s = tanh(u): du/dt = (ds/dt) / (1 - s^2) has no factor
    # that pins s to +-1, so a particle that comes within rounding of |s| = 1 can still leave it
    # and |s| < 1 holds by construction. Expressions in a, s, g and ``dsdu`` = 1 - s^2.
    state_rhs: tuple  # (da/dt, du/dt)
    state_jac: tuple  # d state_rhs / d(a, u) at fixed g
    state_rhs_dg: tuple  # d state_rhs / d g_k
    state_moment_dy: tuple  # d m_k / d(a, u)

    def substitutions(self, sigma_vals, phi_vals, tail_val) -> dict:
        sub = {self.tail: tail_val}
        sub.update(zip(self.sigma, sigma_vals))
        sub.update(zip(self.phi, phi_vals))
        return sub

    def residual_polynomial(self, x=x_sym) -> sp.Expr:
        """F(x) = sum_k sigma_k r_k x^k, in terms of the residuals."""
        r = sp.symbols(f"r_0:{self.K + 1}", real=True)
        return sp.Add(*[self.sigma[k] * r[k] * x**k for k in range(self.K + 1)])


def derive_meanfield(K: int) -> MeanFieldDerivation:
    """Derive the mean-field particle flow of docs/model.md 2b from its risk."""
    sigma = sp.symbols(f"sigma_0:{K + 1}", real=True)
    phi = sp.symbols(f"phi_0:{K + 1}", real=True)
    M = sp.symbols(f"M_0:{K + 1}", real=True)
    g = sp.symbols(f"g_0:{K + 1}", real=True)
    tail = sp.Symbol("tau", nonnegative=True)
    residuals = tuple(phi[k] - sigma[k] * M[k] for k in range(K + 1))
    risk = sp.Rational(1, 2) * sp.Add(*[r**2 for r in residuals]) + tail / 2
    moment_fns = tuple(a_sym * s_sym**k for k in range(K + 1))
    grad = tuple(sp.diff(risk, Mk) for Mk in M)
    hess = tuple(tuple(sp.diff(gk, Ml) for Ml in M) for gk in grad)
    # gradient flow of the particle measure: per-particle gradient of R through the moments
    mobility = (1 / eps_sym, 1 - s_sym**2)
    f = tuple(-mob * sp.Add(*[g[k] * sp.diff(moment_fns[k], v) for k in range(K + 1)])
              for mob, v in zip(mobility, (a_sym, s_sym)))
    f = tuple(sp.expand(fi) for fi in f)
    local_jac = tuple(tuple(sp.diff(fi, v) for v in (a_sym, s_sym)) for fi in f)
    rhs_dg = tuple(tuple(sp.diff(fi, gk) for gk in g) for fi in f)
    moment_dy = tuple(tuple(sp.diff(mk, v) for mk in moment_fns) for v in (a_sym, s_sym))
    # state (a, u), s = tanh u: d/du = (1 - s^2) d/ds
    fu = sp.expand(sp.cancel(f[1] / (1 - s_sym**2)))
    if sp.denom(sp.together(fu)) != 1:  # an internal invariant of the derivation
        raise RuntimeError("the s-flow has no factor 1 - s^2: the state u = artanh(s) does not apply")
    state_rhs = (f[0], fu)
    state_jac = tuple((sp.diff(fi, a_sym), sp.expand(dsdu_sym * sp.diff(fi, s_sym))) for fi in state_rhs)
    state_rhs_dg = tuple(tuple(sp.diff(fi, gk) for gk in g) for fi in state_rhs)
    state_moment_dy = (moment_dy[0], tuple(dsdu_sym * dm for dm in moment_dy[1]))
    return MeanFieldDerivation(K, sigma, phi, tail, M, g, moment_fns, risk, grad, hess, residuals,
                               f, local_jac, rhs_dg, moment_dy, state_rhs, state_jac, state_rhs_dg,
                               state_moment_dy)


class _ModelBase:
    kind = ""

    def _check_common(self):
        self.eps = check_eps(self.eps)
        self.K = check_kmax(self.K)

    def learnability(self, s0_zero: bool = True):
        """Which target degrees the dynamics can learn, the risk levels between phases and the floor
        (:mod:`odehild.symbolic.learnability`), from s0 = 0 or from s0 != 0."""
        from .learnability import learnability

        return learnability(self.sigma.coefficients, self.phi.coefficients, self.phi.norm2, s0_zero)

    def meta(self) -> dict:
        return {"model": self.kind, "sigma": self.sigma.name, "phi": self.phi.name,
                "sigma_coefficients": list(self.sigma.coefficients),
                "phi_coefficients": list(self.phi.coefficients), "kmax": self.K, "eps": self.eps,
                "phi_norm2": self.phi.norm2, "sigma_norm2": self.sigma.norm2}


class MeanFieldModel(_ModelBase):
    """The mean-field (m -> inf, d -> inf) particle system of docs/model.md section 2b.

    ``sigma`` and ``phi`` are expressions in z, HermiteExpansions, or sequences of normalized
    Hermite coefficients. The dynamics uses sigma and phi truncated at degree K; the risk adds
    (1/2) of phi's tail beyond K, so it is the risk of the truncated network on the true target.
    """

    kind = "meanfield"

    def __init__(self, sigma, phi, K: int = 6, eps: float = 1e-4):
        self.K, self.eps = K, eps
        self._check_common()
        self.sigma = as_function(sigma, self.K, "sigma")
        self.phi = as_function(phi, self.K, "phi")

    def with_eps(self, eps) -> "MeanFieldModel":
        """The same declaration at another eps (shares the compiled code)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.pop("compiled", None)
        new.eps = check_eps(eps)
        return new

    @cached_property
    def derivation(self) -> MeanFieldDerivation:
        return derive_meanfield(self.K)

    @property
    def values(self) -> dict:
        return self.derivation.substitutions(self.sigma.coefficients, self.phi.coefficients,
                                             self.phi.tail)

    def cache_key(self) -> str:
        """Content hash of what the generated code depends on (eps is a runtime argument)."""
        return _digest({"kind": self.kind, "K": self.K, "format": CODEGEN_FORMAT,
                        "sigma": [repr(float(c)) for c in self.sigma.coefficients],
                        "phi": [repr(float(c)) for c in self.phi.coefficients],
                        "tail": repr(float(self.phi.tail))})

    @property
    def state_names(self):
        return ("a", "s")

    def __repr__(self):
        return f"MeanFieldModel(sigma={self.sigma.name!r}, phi={self.phi.name!r}, K={self.K}, eps={self.eps:g})"


# --------------------------------------------------------------------------- finite width


@dataclasses.dataclass(frozen=True)
class FiniteWidthDerivation:
    """Symbolic pieces of the exact finite-width overlap ODE (docs/model.md 2a).

    R = |phi|^2/2 + sum_i A(a_i, s_i) + sum_{i != j} B(a_i, a_j, r_ij). With the mobility m of
    the paper, the sphere-projected flow is
      eps da_i/dt = self_a(a_i, s_i) + sum_{j != i} pair_a(a_i, a_j, r_ij),
      du_i/dt = alpha(a_i, s_i) (u* - s_i u_i) + sum_{j != i} beta(a_i, a_j, r_ij) (u_j - r_ij u_i).
    """

    V: sp.Expr  # V(s)
    U: sp.Expr  # U(r)
    A: sp.Expr
    B: sp.Expr
    self_a: sp.Expr
    pair_a: sp.Expr
    alpha: sp.Expr
    beta: sp.Expr
    self_partials: tuple  # d(self_a, alpha)/d(a_i, s_i): ((sa_a, sa_s), (al_a, al_s))
    pair_partials: tuple  # d(pair_a, beta)/d(a_i, a_j, r_ij): ((pa_ai, pa_aj, pa_r), (be_ai, be_aj, be_r))


def derive_finite_width(V: sp.Expr, U: sp.Expr) -> FiniteWidthDerivation:
    U1 = U.subs(r_sym, 1)
    A = -a_sym * V / m_sym + a_sym**2 * U1 / (2 * m_sym**2)
    B = a_sym * aj_sym * U / (2 * m_sym**2)
    # B is symmetric in (i, j) and appears for both ordered pairs, hence the factor 2
    self_a = sp.expand(-m_sym * sp.diff(A, a_sym))
    pair_a = sp.expand(-m_sym * 2 * sp.diff(B, a_sym))
    alpha = sp.expand(-m_sym * sp.diff(A, s_sym))
    beta = sp.expand(-m_sym * 2 * sp.diff(B, r_sym))
    # analytic partials for the Jacobian: closed-form kernels (asin, acos) admit no complex step
    self_partials = tuple(tuple(sp.diff(f, v) for v in (a_sym, s_sym)) for f in (self_a, alpha))
    pair_partials = tuple(tuple(sp.diff(f, v) for v in (a_sym, aj_sym, r_sym)) for f in (pair_a, beta))
    return FiniteWidthDerivation(V, U, A, B, self_a, pair_a, alpha, beta, self_partials, pair_partials)


class FiniteWidthModel(_ModelBase):
    """Exact population gradient flow of m neurons in overlap coordinates (any d > m).

    The kernels V and U are the Hermite series truncated at K (exact when sigma and phi are
    polynomials of degree <= K), or their closed forms with ``kernels="closed"`` where known.
    """

    kind = "finite_width"

    def __init__(self, sigma, phi, K: int = 6, eps: float = 1e-2, kernels: str = "series"):
        self.K, self.eps = K, eps
        self._check_common()
        if kernels not in ("series", "closed"):
            raise InputError(f"kernels must be 'series' or 'closed', got {kernels!r}")
        self.kernels = kernels
        self.sigma = as_function(sigma, self.K, "sigma")
        self.phi = as_function(phi, self.K, "phi")

    with_eps = MeanFieldModel.with_eps

    @cached_property
    def kernel_exprs(self):
        cs, cp = self.sigma.symbolic_coefficients, self.phi.symbolic_coefficients
        V = sp.Add(*[cp[k] * cs[k] * s_sym**k for k in range(self.K + 1)])
        U = sp.Add(*[cs[k] ** 2 * r_sym**k for k in range(self.K + 1)])
        if self.kernels == "closed":
            from .kernels import closed_form_kernel, r_sym as kr, s_sym as ks

            if self.sigma.expr is None or self.phi.expr is None:
                raise InputError("closed-form kernels need sigma and phi given as expressions")
            Vc = closed_form_kernel(self.phi.expr, self.sigma.expr, ks)
            Uc = closed_form_kernel(self.sigma.expr, self.sigma.expr, kr)
            if Vc is None or Uc is None:
                raise InputError(f"no closed-form kernel known for sigma={self.sigma.name!r}, "
                                 f"phi={self.phi.name!r}; use kernels='series'")
            V, U = Vc.subs(ks, s_sym), Uc.subs(kr, r_sym)
        return V, U

    @cached_property
    def derivation(self) -> FiniteWidthDerivation:
        return derive_finite_width(*self.kernel_exprs)

    def cache_key(self) -> str:
        return _digest({"kind": self.kind, "K": self.K, "format": CODEGEN_FORMAT,
                        "kernels": self.kernels,
                        "sigma": [repr(float(c)) for c in self.sigma.coefficients],
                        "phi": [repr(float(c)) for c in self.phi.coefficients],
                        "sigma_expr": str(self.sigma.expr) if self.kernels == "closed" else None,
                        "phi_expr": str(self.phi.expr) if self.kernels == "closed" else None})

    def meta(self) -> dict:
        return {**super().meta(), "kernels": self.kernels}

    def __repr__(self):
        return (f"FiniteWidthModel(sigma={self.sigma.name!r}, phi={self.phi.name!r}, K={self.K}, "
                f"eps={self.eps:g}, kernels={self.kernels!r})")
