"""Multivariate Hermite coefficients of a multi-index target phi(z1, .., zM) (docs/multi-index.md).

phi_alpha = E[phi(z) h_alpha(z)], h_alpha(z) = prod_j h_(alpha_j)(z_j), z ~ N(0, I_M), for every
multi-index |alpha| <= K. Exact for polynomials (each monomial z^beta factors into one-variable
expansions of z_j^n) and for sums of products of one-variable functions (each factor through the
one-variable engine, :func:`odehild.symbolic.hermite.hermite`, exact or certified); any other
function by tensor Gauss-Hermite quadrature, certified by the agreement of two orders, its error
reported. E[phi^2] comes the same way from phi^2, so the tail beyond K is known.

The leap complexity (Abbe, Boix-Adsera, Misiakiewicz 2023) is computed on the support of the
coefficients up to K.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from typing import Optional

import numpy as np
import sympy as sp

from ..errors import ExpressionError
from .parse import MULTI_VARIABLES, parse_target, z

NUMERIC_TOL = 1e-10
QUADRATURE_ORDERS = (40, 80, 160, 320)  # nodes per variable, doubled until two orders agree
QUADRATURE_MAX_POINTS = 2_000_000
MAX_DIRECTIONS = len(MULTI_VARIABLES)


def multi_indices(M: int, K: int) -> list:
    """All alpha in N^M with |alpha| <= K, by degree, then lexicographically from the first direction:
    (0,0), (1,0), (0,1), (2,0), (1,1), (0,2), ..."""
    out = []
    for deg in range(K + 1):
        out += sorted((a for a in itertools.product(range(deg + 1), repeat=M) if sum(a) == deg), reverse=True)
    return out


def monomial_name(alpha, names=None) -> str:
    """``z1*z2`` for (1, 1, 0); ``He2(z1)`` for (2, 0); ``1`` for 0: the Hermite basis element h_alpha."""
    names = names or [f"z{j + 1}" for j in range(len(alpha))]
    parts = [names[j] if k == 1 else f"He{k}({names[j]})" for j, k in enumerate(alpha) if k]
    return "*".join(parts) or "1"


def leap_complexity(support) -> int:
    """min over orderings of the multi-indices in ``support`` of the largest number of new directions
    one of them adds (Abbe et al. 2023); 0 for an empty support. For a fixed leap l, adding every
    multi-index that is reachable only grows the set of learned directions, so a greedy pass decides
    whether l suffices."""
    sets = [frozenset(j for j, k in enumerate(a) if k) for a in support]
    sets = [s for s in sets if s]
    for leap in range(0, MAX_DIRECTIONS + 1):
        learned, left = set(), list(sets)
        grew = True
        while left and grew:
            grew = False
            for s in list(left):
                if len(s - learned) <= leap:
                    learned |= s
                    left.remove(s)
                    grew = True
        if not left:
            return leap
    return MAX_DIRECTIONS


def learning_order(support) -> list:
    """Directions (0-based) in the order a leap-minimising ordering learns them, grouped: one list per
    step that adds new directions."""
    sets = [frozenset(j for j, k in enumerate(a) if k) for a in support]
    sets = [s for s in sets if s]
    leap = leap_complexity(support)
    learned, steps, left = set(), [], list(sets)
    while left:
        # among the reachable, the one adding fewest new directions (ties: lowest directions first)
        s = min((s for s in left if len(s - learned) <= leap), key=lambda s: (len(s - learned), sorted(s - learned)))
        new = sorted(s - learned)
        if new:
            steps.append(new)
        learned |= s
        left.remove(s)
    return steps


@dataclasses.dataclass
class MultiHermiteExpansion:
    """Coefficients phi_alpha of a multi-index target for every |alpha| <= K (order of
    :func:`multi_indices`), their error bounds, E[phi^2], the tail and the leap complexity."""

    expression: str
    expr: sp.Expr
    M: int
    kmax: int
    multi_indices: list
    coefficients: np.ndarray
    exact: list
    errors: np.ndarray
    norm2: float
    norm2_error: float
    tail: float
    method: str  # "exact", "products" (one-variable engine per factor) or "quadrature"
    seconds: float = 0.0

    @property
    def support(self) -> list:
        """Multi-indices with a coefficient clearly non-zero."""
        return [a for a, c, e in zip(self.multi_indices, self.coefficients, self.errors)
                if abs(c) > max(10 * e, 1e-13)]

    @property
    def leap(self) -> int:
        return leap_complexity(self.support)

    @property
    def is_exact(self) -> bool:
        return all(e is not None for e in self.exact)

    def coefficient(self, alpha) -> float:
        return float(self.coefficients[self.multi_indices.index(tuple(alpha))])

    def to_dict(self) -> dict:
        return {"expression": self.expression, "M": self.M, "kmax": self.kmax,
                "multi_indices": [list(a) for a in self.multi_indices],
                "monomials": [monomial_name(a) for a in self.multi_indices],
                "coefficients": [float(c) for c in self.coefficients],
                "exact": [None if e is None else str(e) for e in self.exact],
                "errors": [float(e) for e in self.errors], "norm2": float(self.norm2),
                "norm2_error": float(self.norm2_error), "tail": float(self.tail),
                "leap_complexity": self.leap, "learning_order": [[j + 1 for j in s] for s in learning_order(self.support)],
                "method": self.method}

    def __repr__(self):
        terms = ", ".join(f"{monomial_name(a)}: {c:.6g}" for a, c in zip(self.multi_indices, self.coefficients)
                          if a in self.support)
        return (f"MultiHermiteExpansion({self.expression!r}, M={self.M}, kmax={self.kmax}, {{{terms}}}, "
                f"norm2={self.norm2:.6g}, tail={self.tail:.3g}, leap={self.leap})")


# ----------------------------------------------------------------------------- exact routes


def _power_series(n: int) -> dict:
    """z^n = sum_k c_k h_k(z): {k: c_k} with c_k = n! / (sqrt(k!) ((n-k)/2)! 2^((n-k)/2)), n - k even."""
    return {k: sp.factorial(n) / (sp.sqrt(sp.factorial(k)) * sp.factorial((n - k) // 2) * 2 ** ((n - k) // 2))
            for k in range(n % 2, n + 1, 2)}


def _polynomial_coefficients(poly: sp.Poly, M: int) -> dict:
    """{alpha: exact coefficient} of a polynomial in z1 .. zM, every alpha (no truncation)."""
    out: dict = {}
    for beta, c in poly.terms():
        factors = [_power_series(n) for n in beta]
        for ks in itertools.product(*(f.items() for f in factors)):
            alpha = tuple(k for k, _ in ks)
            out[alpha] = out.get(alpha, 0) + c * sp.Mul(*[v for _, v in ks])
    return {a: sp.simplify(v) for a, v in out.items()}


def _factor_by_variable(term, variables):
    """``(constant, {j: factor in z_j})`` for a product of one-variable factors, or None."""
    const, parts = sp.Integer(1), {}
    for f in sp.Mul.make_args(term):
        used = [j for j, v in enumerate(variables) if f.has(v)]
        if not used:
            const *= f
        elif len(used) == 1:
            parts[used[0]] = parts.get(used[0], sp.Integer(1)) * f
        else:
            return None
    return const, parts


def _separable_terms(f, variables):
    """f as a sum of products of one-variable functions, or None."""
    out = []
    for term in sp.Add.make_args(sp.expand(f, deep=False)):
        found = _factor_by_variable(term, variables)
        if found is None:
            found = _factor_by_variable(sp.expand(term), variables)
            if found is None:
                return None
        out.append(found)
    return out


def _one_variable(factor, variable, kmax):
    from .hermite import hermite

    return hermite(factor.xreplace({variable: z}), kmax)


def _product_coefficients(terms, variables, indices, kmax):
    """Coefficients of a sum of products of one-variable factors: exact values where every factor's
    are, errors bounded by the factors' errors."""
    M = len(variables)
    values = np.zeros(len(indices))
    errors = np.zeros(len(indices))
    exact = [sp.Integer(0)] * len(indices)
    for const, parts in terms:
        c = float(sp.N(const, 20))
        exps = {j: _one_variable(g, variables[j], kmax) for j, g in parts.items()}
        for i, alpha in enumerate(indices):
            val, bound, ex = abs(c), 0.0, const
            prod = c
            for j in range(M):
                if j in exps:
                    e = exps[j]
                    cj, ej = float(e.coefficients[alpha[j]]), float(e.errors[alpha[j]])
                    bound = bound * (abs(cj) + ej) + val * ej
                    val *= abs(cj)
                    prod *= cj
                    ex = None if ex is None or e.exact[alpha[j]] is None else ex * e.exact[alpha[j]]
                elif alpha[j] != 0:
                    prod, val, bound, ex = 0.0, 0.0, 0.0, (None if ex is None else sp.Integer(0))
                    break
            values[i] += prod
            errors[i] += bound
            exact[i] = None if (ex is None or exact[i] is None) else exact[i] + ex
    return values, errors, exact


# ----------------------------------------------------------------------------- quadrature


def _tensor_quadrature(fn, M, n, indices):
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    grids = np.meshgrid(*([x] * M), indexing="ij")
    weight = np.ones([n] * M)
    for j in range(M):
        shape = [1] * M
        shape[j] = n
        weight = weight * w.reshape(shape)
    with np.errstate(all="ignore"):
        vals = np.broadcast_to(np.asarray(fn(*grids), dtype=float), weight.shape)
    if not np.all(np.isfinite(vals)):
        raise ExpressionError("the target is not finite at every quadrature node")
    K = max(sum(a) for a in indices)
    # h_k(x) for k <= K by the normalized recurrence
    H = np.empty((K + 1, n))
    H[0] = 1.0
    if K >= 1:
        H[1] = x
    for k in range(2, K + 1):
        H[k] = (x * H[k - 1] - math.sqrt(k - 1) * H[k - 2]) / math.sqrt(k)
    fw = vals * weight
    coeffs = np.empty(len(indices))
    for i, alpha in enumerate(indices):
        t = fw
        for j in reversed(range(M)):
            t = t @ H[alpha[j]]
        coeffs[i] = t
    return coeffs, float(np.sum(vals**2 * weight))


def _numeric(f, variables, indices):
    """Tensor Gauss-Hermite at doubling orders; the error bound is the change from the previous
    order (certified when every coefficient has settled to NUMERIC_TOL)."""
    M = len(variables)
    orders = [n for n in QUADRATURE_ORDERS if n**M <= QUADRATURE_MAX_POINTS]
    if len(orders) < 2:
        raise ExpressionError(f"a target of {M} directions that is not a sum of products of one-variable "
                              "functions is beyond tensor quadrature; write it as such a sum")
    fn = sp.lambdify(variables, f, modules=[{"Heaviside": lambda x, h0=0.5: np.heaviside(x, h0)}, "numpy"])
    prev = None
    for n in orders:
        c, n2 = _tensor_quadrature(fn, M, n, indices)
        if prev is not None:
            err, n2err = np.abs(c - prev[0]), abs(n2 - prev[1])
            if np.all(err <= NUMERIC_TOL) and n2err <= NUMERIC_TOL:
                break
        prev = (c, n2)
    return c, err, n2, n2err


def _split_kinks(f):
    """sign and Abs of a product as products of one-variable factors (sign(z1 z2) = sign(z1) sign(z2))."""
    def split(fn):
        return lambda x: sp.Mul(*[fn(a) for a in sp.Mul.make_args(x)]) if x.is_Mul else fn(x)

    return f.replace(sp.sign, split(sp.sign)).replace(sp.Abs, split(sp.Abs))


# ----------------------------------------------------------------------------- public API


def multi_hermite(expr, kmax: int = 4) -> MultiHermiteExpansion:
    """Hermite coefficients phi_alpha, |alpha| <= kmax, of a target in z1 .. zM (string or SymPy).

    >>> multi_hermite("z1 + z1*z2", 2).coefficient((1, 1))
    1.0
    """
    from .hermite import _check_kmax

    kmax = _check_kmax(kmax)
    text = expr if isinstance(expr, str) else str(expr)
    start = time.perf_counter()
    f, variables = parse_target(expr)
    if not variables:  # a function of z: one direction
        f, variables = f.xreplace({z: MULTI_VARIABLES[0]}), MULTI_VARIABLES[:1]
    M = len(variables)
    indices = multi_indices(M, kmax)
    try:
        return _expand(f, text, variables, indices, kmax, start)
    except ExpressionError:
        raise
    except (ArithmeticError, TypeError, ValueError, NotImplementedError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"{text}: cannot compute its Hermite coefficients "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None


def _expand(f, text, variables, indices, kmax, start):
    M = len(variables)
    f = _split_kinks(f)
    poly = None
    if f.is_polynomial(*variables):
        poly = sp.Poly(f, *variables)
    if poly is not None:
        full = _polynomial_coefficients(poly, M)
        exact = [full.get(a, sp.Integer(0)) for a in indices]
        norm2_exact = sp.Add(*[v**2 for v in full.values()])
        coeffs = np.array([float(sp.N(e, 20)) for e in exact])
        norm2 = float(sp.N(norm2_exact, 20))
        tail = float(sp.N(norm2_exact - sp.Add(*[e**2 for e in exact]), 20))
        return MultiHermiteExpansion(text, f, M, kmax, indices, coeffs, exact, np.zeros(len(indices)), norm2, 0.0,
                                     max(tail, 0.0), "exact", time.perf_counter() - start)
    terms = _separable_terms(f, variables)
    square = _separable_terms(sp.expand(f**2), variables) if terms is not None else None
    if terms is not None and square is not None:
        coeffs, errors, exact = _product_coefficients(terms, variables, indices, kmax)
        n2, n2err, _ = _product_coefficients(square, variables, [(0,) * M], 0)
        norm2, norm2_error = float(n2[0]), float(n2err[0])
        method = "exact" if all(e is not None for e in exact) and norm2_error == 0 else "products"
    else:
        coeffs, errors, norm2, norm2_error = _numeric(f, variables, indices)
        exact = [None] * len(indices)
        method = "quadrature"
    bad = [monomial_name(a) for a, e in zip(indices, errors) if e > NUMERIC_TOL]
    if bad or norm2_error > NUMERIC_TOL:
        raise ExpressionError(f"{text}: could not certify the Hermite coefficients to {NUMERIC_TOL:g} "
                              f"(error {max([norm2_error, *errors]):.2g} on {', '.join(bad[:5]) or 'E[phi^2]'}); "
                              "write the target as a sum of products of one-variable functions")
    tail = norm2 - float(np.sum(coeffs**2))
    if -1e-9 < tail < 0:
        tail = 0.0
    if not (np.all(np.isfinite(coeffs)) and math.isfinite(norm2)):
        raise ExpressionError(f"{text}: its Hermite coefficients are not finite")
    return MultiHermiteExpansion(text, f, M, kmax, indices, coeffs, exact, errors, norm2, norm2_error, tail,
                                 method, time.perf_counter() - start)


def as_target(phi, kmax: int) -> MultiHermiteExpansion:
    """A target given as an expression or a MultiHermiteExpansion, at truncation kmax."""
    if isinstance(phi, MultiHermiteExpansion):
        return phi if phi.kmax == kmax else multi_hermite(phi.expr, kmax)
    if isinstance(phi, (str, sp.Basic)):
        return multi_hermite(phi, kmax)
    raise ExpressionError(f"phi must be an expression in z1 .. z9, got {type(phi).__name__}")


def single_index_form(expansion: MultiHermiteExpansion) -> Optional[str]:
    """The same target as a function of z when it has one direction, else None."""
    if expansion.M != 1:
        return None
    return str(expansion.expr.xreplace({MULTI_VARIABLES[0]: z}))
