"""The committee-machine family (docs/committee.md): a K-unit student learning an M-unit
teacher, free first-layer weights, sum or mean outputs, fixed or trained second layer, label noise,
online SGD at a finite learning rate or gradient flow.

The declaration fixes sigma, phi, the output scaling and the expectation back end. K, M, the
learning rates and the noise are runtime values, so one compiled module serves every width.

Everything numeric comes from Gaussian expectations of the fields, written as kernels of their
covariance entries:

* ``P_ss(a, b, c) = E[sigma(u) sigma(w)]``, ``P_sp``, ``P_pp`` with var u = a, var w = b, cov = c: the
  risk is a sum of these; the gradient-flow part of the dynamics is obtained by differentiating the
  risk in overlap coordinates (its gradient and Hessian follow from those of the kernels).
* ``E4_fg(C) = E[sigma'(x1) sigma'(x2) f(x3) g(x4)]`` over a 4x4 covariance (10 entries) and
  ``J2(a, b, c) = E[sigma'(u) sigma'(w)]``: the eta^2 term of online SGD and its noise part.

Back ends: ``erf`` (closed forms for A erf(b z): I2, I4, J2), ``polynomial`` (exact Isserlis
moments), ``relu`` (arc-cosine pair kernels; the four-point kernels are orthant moments that codegen
evaluates) and, on the sphere, ``hermite``: sigma and phi replaced by their Hermite series truncated at
``kmax``, which makes every expectation with unit variances a finite sum over pairings of the
Hermite degrees (the truncation tail is reported). Kernels are SymPy expressions in the covariance
symbols, or for the Hermite four-point kernels a table of monomials; codegen emits them with their
derivatives into the compiled right-hand side.

Geometry: ``free`` first-layer weights, or ``sphere`` (|u_i| = 1, renormalised after every SGD
step). The sphere's flow is the free flow projected on the constraint Q_ii = 1 (docs/committee.md):
dR_in -> dR_in - R_in dQ_ii/2, dQ_ik -> dQ_ik - Q_ik (dQ_ii + dQ_kk)/2, which produces the gamma
terms of the renormalised SGD from the free eta^2 term. The founding model's finite-width overlap ODE is the
sphere / mean-output member (:func:`odehild.models.finite_width.founding_member`).
The declaration, :class:`~odehild.models.committee.CommitteeModel`, lives with its kind.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import numpy as np
import sympy as sp

from ..errors import InputError
from .kernels import _erf_scale
from .parse import z

OUTPUTS = ("sum", "mean")
DYNAMICS = ("sgd", "gf")
BACKENDS = ("auto", "erf", "polynomial", "relu", "hermite", "quadrature")
GEOMETRIES = ("free", "sphere")
COMMITTEE_FORMAT = 3  # bump when the generated committee code changes shape
# measured in tests/test_quadrature.py (docs/committee.md)
QUADRATURE_ACCURACY = ("nested Gauss quadrature split at the kinks: pair kernels and J2 to 1e-9 relative, "
                       "the SGD term's four-point kernels to 5e-5 (4e-4 where two fields nearly coincide)")

# covariance symbols: two-point kernels take (var u, var w, cov); four-point kernels the upper
# triangle of a 4x4 covariance, row-major
a_sym, b_sym, c_sym = sp.symbols("a b c", real=True)
C4_SYMS = tuple(sp.Symbol(f"c{i}{j}", real=True) for i in range(1, 5) for j in range(i, 5))


def _cov4():
    it = iter(C4_SYMS)
    M = [[None] * 4 for _ in range(4)]
    for i in range(4):
        for j in range(i, 4):
            M[i][j] = M[j][i] = next(it)
    return sp.Matrix(M)


# ----------------------------------------------------------------------- polynomial back end


def gaussian_moment(powers: tuple, C: sp.Matrix) -> sp.Expr:
    """E[prod_i x_i^powers[i]] for zero-mean Gaussian x with covariance C (Isserlis' theorem)."""
    return _moment(tuple(powers), sp.ImmutableMatrix(C))


@functools.lru_cache(maxsize=None)
def _moment(powers: tuple, C) -> sp.Expr:
    if sum(powers) % 2:
        return sp.Integer(0)
    if sum(powers) == 0:
        return sp.Integer(1)
    i = next(k for k, p in enumerate(powers) if p)
    rest = list(powers)
    rest[i] -= 1
    total = sp.Integer(0)
    for j, p in enumerate(rest):
        if p:
            lower = list(rest)
            lower[j] -= 1
            total += p * C[i, j] * _moment(tuple(lower), C)
    return sp.expand(total)


def polynomial_expectation(functions: list, C: sp.Matrix) -> sp.Expr:
    """E[prod_i f_i(x_i)] for polynomials f_i of z and covariance C of the x_i."""
    xs = sp.symbols(f"x0:{len(functions)}", real=True)
    product = sp.Poly(sp.expand(sp.Mul(*[f.subs(z, x) for f, x in zip(functions, xs)])), *xs)
    return sp.expand(sp.Add(*[coeff * gaussian_moment(mon, C) for mon, coeff in product.terms()]))


# ------------------------------------------------------------------------------ erf back end


def _erf_form(f):
    """(A, s) with f = A erf(s z / sqrt(2)) = A g(s z), g(x) = erf(x/sqrt(2)), or None."""
    amp, rest = f.as_independent(z, as_Add=False)
    b = _erf_scale(rest)
    if b is None or not amp.is_number or amp == 0:
        return None
    return amp, sp.sqrt(2) * b


def _relu_form(f):
    """alpha with f = alpha relu(z) (A relu(b z) with b > 0 is A b relu(z)), or None."""
    amp, rest = f.as_independent(z, as_Add=False)
    if not amp.is_number or amp == 0 or not isinstance(rest, sp.Max) or len(rest.args) != 2 or 0 not in rest.args:
        return None
    inner = [a for a in rest.args if a != 0][0]
    scale = sp.simplify(inner / z)
    if not scale.is_number or not scale.is_positive:
        return None
    return amp * scale


def _vanishes(f, lo, hi) -> bool:
    """Whether f is identically 0 on (lo, hi) (None: unbounded), judged at four irregular points: the
    functions of the grammar are analytic between their kinks, so a zero at four points is a zero
    on the whole interval."""
    if lo is None and hi is None:
        points = [-2.3173, -0.4129, 0.7741, 1.9057]
    elif lo is None:
        points = [hi - d for d in (0.0371, 0.4129, 1.2917, 3.7043)]
    elif hi is None:
        points = [lo + d for d in (0.0371, 0.4129, 1.2917, 3.7043)]
    else:
        points = [lo + (hi - lo) * u for u in (0.1373, 0.4129, 0.6211, 0.8617)]
    return all(f.subs(z, sp.Rational(str(round(x, 9)))).is_zero for x in points)


def _arc_cosine(A, B, C):
    """E[relu(u) relu(w)] with var u = A, var w = B, cov = C (the arc-cosine kernel of Cho and Saul)."""
    return (sp.sqrt(A * B - C**2) + C * (sp.pi - sp.acos(C / sp.sqrt(A * B)))) / (2 * sp.pi)


def _I2(C11, C22, C12):
    return 2 / sp.pi * sp.asin(C12 / sp.sqrt((1 + C11) * (1 + C22)))


def _J2(C11, C22, C12):
    return 2 / sp.pi / sp.sqrt(1 + C11 + C22 + C11 * C22 - C12**2)


def _I4(C):
    """E[g'(x1) g'(x2) g(x3) g(x4)] for g = erf(x/sqrt(2)) (Saad and Solla 1995; docs/committee.md)."""
    L4 = (1 + C[0, 0]) * (1 + C[1, 1]) - C[0, 1] ** 2
    L0 = (L4 * C[2, 3] - C[1, 2] * C[1, 3] * (1 + C[0, 0]) - C[0, 2] * C[0, 3] * (1 + C[1, 1])
          + C[0, 1] * C[0, 2] * C[1, 3] + C[0, 1] * C[0, 3] * C[1, 2])
    L1 = L4 * (1 + C[2, 2]) - C[1, 2] ** 2 * (1 + C[0, 0]) - C[0, 2] ** 2 * (1 + C[1, 1]) + 2 * C[0, 1] * C[0, 2] * C[1, 2]
    L2 = L4 * (1 + C[3, 3]) - C[1, 3] ** 2 * (1 + C[0, 0]) - C[0, 3] ** 2 * (1 + C[1, 1]) + 2 * C[0, 1] * C[0, 3] * C[1, 3]
    return 4 / sp.pi**2 / sp.sqrt(L4) * sp.asin(L0 / sp.sqrt(L1 * L2))


def _scaled(C, scales):
    return sp.Matrix(C.shape[0], C.shape[1], lambda i, j: scales[i] * scales[j] * C[i, j])


# -------------------------------------------------------------------------- Hermite back end

# off-diagonal entries of a 4x4 correlation matrix, in the order of C4_SYMS without the diagonal
EDGES = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))
EDGE_SLOTS = tuple(i * 4 - i * (i - 1) // 2 + (j - i) for i, j in EDGES)  # index of c_ij in C4_SYMS


@dataclasses.dataclass(frozen=True)
class MonomialTable:
    """E[f1(x1) f2(x2) f3(x3) f4(x4)] for unit-variance Gaussians with correlations c12..c34, as
    sum_t coefficients[t] prod_e c_e^exponents[t, e] (edges in the order of EDGES)."""

    exponents: np.ndarray
    coefficients: np.ndarray


def four_point_table(coefficients: list) -> MonomialTable:
    """The pairing (diagram) expansion of E[prod_p f_p(x_p)] for f_p = sum_n c_n(f_p) He_n/sqrt(n!):
    E[prod_p He_{n_p}(x_p)] = sum over edge multiplicities k_e with degree n_p at vertex p of
    prod_p n_p! prod_e c_e^k_e / k_e!, hence the weight prod_p c_{n_p}(f_p) sqrt(n_p!) / prod_e k_e!."""
    from math import factorial, sqrt

    cs = [np.asarray(c, float) for c in coefficients]
    top = [c.size - 1 for c in cs]
    rows, weights = [], []
    k = [0] * 6

    def visit(e, deg):
        if e == 6:
            w = 1.0
            for p in range(4):
                w *= cs[p][deg[p]] * sqrt(factorial(deg[p]))
            if w != 0.0:
                for ke in k:
                    w /= factorial(ke)
                rows.append(list(k))
                weights.append(w)
            return
        i, j = EDGES[e]
        kk = 0
        while deg[i] + kk <= top[i] and deg[j] + kk <= top[j]:
            k[e] = kk
            d2 = list(deg)
            d2[i] += kk
            d2[j] += kk
            visit(e + 1, d2)
            kk += 1
        k[e] = 0

    visit(0, [0, 0, 0, 0])
    return MonomialTable(np.array(rows, dtype=np.int64).reshape(-1, 6), np.array(weights, float))


def output_scale(output: str, width: int) -> float:
    """c = 1 for sum outputs, 1/width for mean outputs."""
    return 1.0 if output == "sum" else 1.0 / width


def state_size(K: int, M: int) -> int:
    """Upper triangle of Q, then R (K x M) row-major, then v (K)."""
    return K * (K + 1) // 2 + K * M + K


def convert_time(alpha=None, *, t=None, lr: float, K: int, M: Optional[int] = None, to: str = "mean"):
    """Convert between Goldt et al.'s time alpha = steps/d (sum outputs, rate lr) and Arnaboldi et
    al.'s t = steps * gamma / (p d) (mean outputs over p = K units, rate gamma).

    The two SGD processes coincide when the mean-output rate is gamma = lr K^2 (the 1/K in the output
    enters the first-layer gradient once and the error once), and then t = alpha * lr * K. Give
    ``alpha`` with ``to="mean"`` or ``t`` with ``to="sum"``; returns (time, rate) in the target
    convention. Risks differ by the factor 1/K^2 when p = k = K (docs/committee.md)."""
    if to == "mean":
        if alpha is None:
            raise InputError("give alpha to convert to the mean convention")
        gamma = lr * K**2
        return alpha * gamma / K, gamma
    if to == "sum":
        if t is None:
            raise InputError("give t to convert to the sum convention")
        eta = lr / K**2
        return t * K / lr, eta
    raise InputError(f"to must be 'mean' or 'sum', got {to!r}")
