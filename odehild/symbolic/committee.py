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

Back ends: ``erf`` (closed forms for A erf(b z): I2, I4, J2) and ``polynomial``
(exact Isserlis moments). Kernels are SymPy expressions in the covariance symbols; codegen emits them
with their derivatives into the compiled right-hand side.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Optional

import sympy as sp

from ..errors import InputError
from .kernels import _erf_scale
from .parse import parse_expression, z

OUTPUTS = ("sum", "mean")
DYNAMICS = ("sgd", "gf")
BACKENDS = ("auto", "erf", "polynomial")
GEOMETRIES = ("free",)
COMMITTEE_FORMAT = 1  # bump when the generated committee code changes shape

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


# ------------------------------------------------------------------------------ declaration


@dataclasses.dataclass(frozen=True)
class CommitteeModel:
    """One member of the committee family; K and M come from the initial condition."""

    sigma: str
    phi: str
    output: str = "sum"
    dynamics: str = "sgd"
    backend: str = "auto"
    geometry: str = "free"
    kind = "committee"

    def __post_init__(self):
        for name, value, allowed in (("output", self.output, OUTPUTS), ("dynamics", self.dynamics, DYNAMICS),
                                     ("backend", self.backend, BACKENDS), ("geometry", self.geometry, GEOMETRIES)):
            if value not in allowed:
                hint = " (the sphere geometry is not built yet)" if name == "geometry" else ""
                raise InputError(f"{name} must be one of {', '.join(allowed)}{hint}, got {value!r}")
        object.__setattr__(self, "sigma", str(self.sigma))
        object.__setattr__(self, "phi", str(self.phi))
        object.__setattr__(self, "backend", self._resolve_backend())

    @functools.cached_property
    def sigma_expr(self) -> sp.Expr:
        return parse_expression(self.sigma)

    @functools.cached_property
    def phi_expr(self) -> sp.Expr:
        return parse_expression(self.phi)

    def _resolve_backend(self) -> str:
        s, p = self.sigma_expr, self.phi_expr
        usable = {"erf": _erf_form(s) is not None and _erf_form(p) is not None,
                  "polynomial": s.is_polynomial(z) and p.is_polynomial(z)}
        if self.backend != "auto":
            if not usable[self.backend]:
                raise InputError(f"the {self.backend} expectation back end needs "
                                 + ("sigma and phi of the form A*erf(b*z)" if self.backend == "erf" else
                                    "polynomial sigma and phi") + f"; got sigma = {self.sigma}, phi = {self.phi}")
            return self.backend
        for name in ("polynomial", "erf"):
            if usable[name]:
                return name
        raise InputError(f"no expectation back end for sigma = {self.sigma}, phi = {self.phi}: the committee "
                         "model supports sigma and phi both polynomial or both of the form A*erf(b*z); "
                         "ReLU and a numerical back end for any activation are not built yet")

    # ---- kernels

    def _expect2(self, f, g):
        if self.backend == "polynomial":
            return polynomial_expectation([f, g], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        (Af, sf), (Ag, sg) = _erf_form(f), _erf_form(g)
        return Af * Ag * _I2(sf**2 * a_sym, sg**2 * b_sym, sf * sg * c_sym)

    @functools.cached_property
    def pair_kernels(self) -> dict:
        """P_ss, P_sp, P_pp as functions of (a, b, c)."""
        s, p = self.sigma_expr, self.phi_expr
        return {"ss": self._expect2(s, s), "sp": self._expect2(s, p), "pp": self._expect2(p, p)}

    @functools.cached_property
    def J2_kernel(self) -> sp.Expr:
        """E[sigma'(u) sigma'(w)] as a function of (a, b, c)."""
        s = self.sigma_expr
        if self.backend == "polynomial":
            ds = sp.diff(s, z)
            return polynomial_expectation([ds, ds], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        A, sc = _erf_form(s)
        return A**2 * sc**2 * _J2(sc**2 * a_sym, sc**2 * b_sym, sc**2 * c_sym)

    @functools.cached_property
    def four_point_kernels(self) -> dict:
        """E4_ss, E4_sp, E4_pp = E[sigma'(x1) sigma'(x2) f(x3) g(x4)] in the symbols C4_SYMS."""
        s, p = self.sigma_expr, self.phi_expr
        C = _cov4()
        out = {}
        for name, (f, g) in {"ss": (s, s), "sp": (s, p), "pp": (p, p)}.items():
            if self.backend == "polynomial":
                ds = sp.diff(s, z)
                out[name] = polynomial_expectation([ds, ds, f, g], C)
            else:
                (As, ss), (Af, sf), (Ag, sg) = _erf_form(s), _erf_form(f), _erf_form(g)
                out[name] = As**2 * ss**2 * Af * Ag * _I4(_scaled(C, [ss, ss, sf, sg]))
        return out

    # ---- bookkeeping

    def meta(self) -> dict:
        return {"model": self.kind, "sigma": self.sigma, "phi": self.phi, "output": self.output,
                "dynamics": self.dynamics, "backend": self.backend, "geometry": self.geometry,
                "time": "alpha = steps/d (Goldt et al.); SGD learning rate lr/sqrt(d) on the first layer"
                        " per sample in units where lambda = w.x/sqrt(d), lr2/d on the second"}

    def cache_key(self) -> str:
        """Content hash of what the generated code depends on (K, M, rates and noise are runtime)."""
        payload = {"kind": self.kind, "format": COMMITTEE_FORMAT, "sigma": sp.srepr(self.sigma_expr),
                   "phi": sp.srepr(self.phi_expr), "backend": self.backend}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


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
