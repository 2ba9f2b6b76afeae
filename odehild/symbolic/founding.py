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

from ..checks import positive_float
from ..errors import ExpressionError, InputError
from . import hermite_cache

# Per-particle symbols (real: overlaps change sign), made on first use: this module's numeric half
# (Function1D, the checks, the Hermite numbers of a cached expression) serves a warm solve without
# importing SymPy.
_SYMBOLS = {"a_sym": ("a", {"real": True}), "s_sym": ("s", {"real": True}), "aj_sym": ("a_j", {"real": True}),
            "r_sym": ("r", {"real": True}), "eps_sym": ("epsilon", {"positive": True}),
            "m_sym": ("m", {"positive": True}), "x_sym": ("x", {"real": True}),
            # ds/du = 1 - s^2 for the state u = artanh(s)
            "dsdu_sym": ("dsdu", {"positive": True})}


def __getattr__(name):
    if name in _SYMBOLS:
        import sympy as sp

        text, assumptions = _SYMBOLS[name]
        globals()[name] = value = sp.Symbol(text, **assumptions)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CODEGEN_FORMAT = 13  # bump when generated code changes shape


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
    """An activation or link function through its Hermite data up to degree K.

    ``exact`` (SymPy values or None) and ``expr`` of an expression whose numbers came from the
    cache (:func:`odehild.symbolic.hermite_cache.load_numbers`) are derived again on first use, from
    ``source`` = (text, K): a solve never needs them."""

    name: str
    coefficients: tuple  # floats c_0..c_K
    norm2: float
    _exact: Optional[tuple] = dataclasses.field(default=None, repr=False, compare=False)
    _expr: Optional[object] = dataclasses.field(default=None, repr=False, compare=False)
    source: Optional[tuple] = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def exact(self) -> tuple:
        """The exact SymPy values c_0..c_K, None where only a certified number is known."""
        self._resolve()
        return self._exact

    @property
    def expr(self):
        """The SymPy expression in z."""
        self._resolve()
        return self._expr

    def _resolve(self):
        if self._exact is None and self.source is not None:
            from .hermite import hermite

            text, kmax = self.source
            h = hermite(text, kmax)
            object.__setattr__(self, "_exact", tuple(h.exact[: kmax + 1]))
            object.__setattr__(self, "_expr", h.expr)

    @property
    def tail(self) -> float:
        return max(self.norm2 - float(np.sum(np.square(self.coefficients))), 0.0)

    @property
    def symbolic_coefficients(self):
        import sympy as sp

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
        if f.source is not None and f._exact is None:
            return Function1D(f.name, f.coefficients[: kmax + 1], f.norm2, source=(f.source[0], kmax))
        return Function1D(f.name, f.coefficients[: kmax + 1], f.norm2, f.exact[: kmax + 1], f.expr)
    if isinstance(f, str):
        numbers = hermite_cache.load_numbers(f, kmax)
        if numbers is not None:  # expanded before: the numbers without SymPy
            return Function1D(numbers["expression"], tuple(numbers["coefficients"]), numbers["norm2"],
                              source=(f, kmax))
    import sympy as sp

    from .hermite import HermiteExpansion, hermite

    if isinstance(f, HermiteExpansion):
        if f.kmax < kmax:
            f = hermite(f.expr, kmax)
        return Function1D(f.expression, tuple(float(c) for c in f.coefficients[: kmax + 1]), float(f.norm2),
                          tuple(f.exact[: kmax + 1]), f.expr)
    if isinstance(f, (str, sp.Basic)):
        h = hermite(f, kmax)
        if isinstance(f, str):  # for the next declaration: its numbers were missing or damaged
            hermite_cache.store_numbers(f, h)
        return Function1D(h.expression, tuple(float(c) for c in h.coefficients), float(h.norm2), tuple(h.exact),
                          h.expr)
    try:
        coeffs = np.asarray(f, dtype=float).ravel()
    except (TypeError, ValueError):
        raise ExpressionError(f"{what} must be an expression in z or a sequence of Hermite "
                              f"coefficients, got {type(f).__name__}") from None
    if coeffs.size == 0 or not np.all(np.isfinite(coeffs)):
        raise InputError(f"{what} Hermite coefficients must be finite and non-empty, got {coeffs}")
    from .parse import z

    full = np.zeros(max(kmax + 1, coeffs.size))
    full[: coeffs.size] = coeffs
    expr = sp.Add(*[sp.Float(c, 17) * sp.hermite_prob(k, z) / sp.sqrt(sp.factorial(k))
                    for k, c in enumerate(coeffs) if c != 0])
    return Function1D("series[" + ", ".join(f"{c:.6g}" for c in coeffs) + "]",
                      tuple(full[: kmax + 1]), float(np.sum(full**2)), tuple([None] * (kmax + 1)), expr)


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
