"""The two kernels of the founding model (docs/model.md section 1).

V(s) = E[phi(G) sigma(G_s)] = sum_k phi_k sigma_k s^k and U(r) = E[sigma(G) sigma(G_r)] =
sum_k sigma_k^2 r^k, as truncated series with a bound on the truncation error, and in closed form
where one is known (erf(a z), ReLU, polynomials).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import sympy as sp

from .hermite import HermiteExpansion, hermite
from .parse import z

s_sym = sp.Symbol("s", real=True)
r_sym = sp.Symbol("r", real=True)


@dataclasses.dataclass
class Kernel:
    """E[f(G) g(G_x)] as a function of the correlation x.

    ``series`` is the truncated Hermite series (exact coefficients where available); ``tail_bound``
    bounds |kernel(x) - series(x)| for |x| <= 1 (Cauchy-Schwarz on the two coefficient tails);
    ``closed_form`` is the exact kernel or None.
    """

    series: sp.Expr
    variable: sp.Symbol
    kmax: int
    tail_bound: float
    closed_form: Optional[sp.Expr]

    @property
    def best(self) -> sp.Expr:
        """The closed form where known, else the truncated series."""
        return self.closed_form if self.closed_form is not None else self.series


def _coeff_values(h: HermiteExpansion):
    return [e if e is not None else sp.Float(c, 17) for e, c in zip(h.exact, h.coefficients)]


def _erf_scale(f):
    """a if f == erf(a z) with a a nonzero number, else None."""
    if isinstance(f, sp.erf):
        a = sp.simplify(f.args[0] / z)
        if a.is_number and a != 0 and not a.has(z):
            return a
    return None


def _is_relu(f):
    return f == sp.Max(z, 0)


def closed_form_kernel(f, g, x):
    """Closed form of E[f(G) g(G_x)] where odehild knows one, else None."""
    a, b = _erf_scale(f), _erf_scale(g)
    if a is not None and b is not None:
        return 2 / sp.pi * sp.asin(2 * a * b * x / sp.sqrt((1 + 2 * a**2) * (1 + 2 * b**2)))
    if _is_relu(f) and _is_relu(g):
        return (sp.sqrt(1 - x**2) + (sp.pi - sp.acos(x)) * x) / (2 * sp.pi)
    if f.is_polynomial(z) and g.is_polynomial(z):
        deg = min(sp.degree(f, z), sp.degree(g, z))
        hf, hg = hermite(f, int(deg)), hermite(g, int(deg))
        return sp.expand(sum(cf * cg * x**k for k, (cf, cg) in enumerate(zip(hf.exact, hg.exact))))
    return None


def kernel(f, g, kmax: int = 8, variable=s_sym) -> Kernel:
    """E[f(G) g(G_x)] for two expressions (or HermiteExpansions) of z."""
    hf = f if isinstance(f, HermiteExpansion) else hermite(f, kmax)
    hg = g if isinstance(g, HermiteExpansion) else hermite(g, kmax)
    kmax = min(hf.kmax, hg.kmax)
    cf, cg = _coeff_values(hf)[: kmax + 1], _coeff_values(hg)[: kmax + 1]
    series = sp.Add(*[a * b * variable**k for k, (a, b) in enumerate(zip(cf, cg))])
    tf = hf.norm2 - sum(float(c) ** 2 for c in hf.coefficients[: kmax + 1])
    tg = hg.norm2 - sum(float(c) ** 2 for c in hg.coefficients[: kmax + 1])
    bound = max(tf, 0.0) ** 0.5 * max(tg, 0.0) ** 0.5
    return Kernel(series, variable, kmax, bound, closed_form_kernel(hf.expr, hg.expr, variable))


def V_kernel(phi, sigma, kmax: int = 8) -> Kernel:
    """V(s) = E[phi(G) sigma(G_s)]."""
    return kernel(phi, sigma, kmax, s_sym)


def U_kernel(sigma, kmax: int = 8) -> Kernel:
    """U(r) = E[sigma(G) sigma(G_r)]."""
    h = sigma if isinstance(sigma, HermiteExpansion) else hermite(sigma, kmax)
    return kernel(h, h, kmax, r_sym)
