"""The founding model's shared symbolic pieces: activation and link functions through their Hermite
data (:class:`Function1D`), the per-particle symbols its derivations use, and the ranges of eps and
K the solvers support. The model kinds built on them are :mod:`odehild.models.meanfield` and
:mod:`odehild.models.finite_width`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
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
