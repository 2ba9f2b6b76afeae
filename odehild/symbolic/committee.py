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
sphere / mean-output member (:func:`founding_member`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Optional

import numpy as np
import sympy as sp

from ..errors import ExpressionError, InputError
from .hermite import hermite, kink_points
from .kernels import _erf_scale
from .parse import parse_expression, z

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


# ------------------------------------------------------------------------------ declaration


@dataclasses.dataclass(frozen=True)
class CommitteeModel:
    """One member of the committee family; K and M come from the initial condition.

    ``kmax`` is the Hermite truncation of the ``hermite`` back end (sphere only); the other back
    ends are exact and ignore it."""

    sigma: str
    phi: str
    output: str = "sum"
    dynamics: str = "sgd"
    backend: str = "auto"
    geometry: str = "free"
    kmax: int = 6
    kind = "committee"

    def __post_init__(self):
        for name, value, allowed in (("output", self.output, OUTPUTS), ("dynamics", self.dynamics, DYNAMICS),
                                     ("backend", self.backend, BACKENDS), ("geometry", self.geometry, GEOMETRIES)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(self.kmax, bool) or not isinstance(self.kmax, (int, np.integer)) or not 1 <= self.kmax <= 12:
            raise InputError(f"kmax (the Hermite truncation) must be an integer in [1, 12], got {self.kmax!r}")
        object.__setattr__(self, "kmax", int(self.kmax))
        object.__setattr__(self, "sigma", str(self.sigma))
        object.__setattr__(self, "phi", str(self.phi))
        object.__setattr__(self, "backend", self._resolve_backend())
        if self.backend in ("hermite", "quadrature"):
            self.dsigma_expr  # noqa: B018 -- refuse a sigma without a derivative at declaration
        if self.backend == "quadrature":
            self.pieces  # noqa: B018 -- and a phi without one

    @functools.cached_property
    def sigma_expr(self) -> sp.Expr:
        return parse_expression(self.sigma)

    @functools.cached_property
    def phi_expr(self) -> sp.Expr:
        return parse_expression(self.phi)

    @functools.cached_property
    def dsigma_expr(self) -> sp.Expr:
        ds = sp.diff(self.sigma_expr, z)
        if ds.has(sp.DiracDelta):
            raise ExpressionError(f"sigma = {self.sigma} has a jump: sigma' is not a function, and online SGD "
                                  "and the flow need it")
        return ds

    def _resolve_backend(self) -> str:
        s, p = self.sigma_expr, self.phi_expr
        sphere = self.geometry == "sphere"
        usable = {"erf": _erf_form(s) is not None and _erf_form(p) is not None,
                  "polynomial": s.is_polynomial(z) and p.is_polynomial(z),
                  "relu": _relu_form(s) is not None and _relu_form(p) is not None, "hermite": sphere,
                  "quadrature": True}
        needs = {"erf": "sigma and phi of the form A*erf(b*z)", "polynomial": "polynomial sigma and phi",
                 "relu": "sigma and phi of the form A*relu(b*z), b > 0",
                 "hermite": "the sphere geometry (unit variances), --geometry sphere"}
        if self.backend != "auto":
            if not usable[self.backend]:
                raise InputError(f"the {self.backend} expectation back end needs {needs[self.backend]}; "
                                 f"got sigma = {self.sigma}, phi = {self.phi}, geometry = {self.geometry}")
            return self.backend
        for name in ("polynomial", "erf", "relu"):
            if usable[name]:
                return name
        # the Hermite series of a kinked sigma' converges slowly in the SGD term (series_warning)
        smooth = not kink_points(self.sigma_expr) and not kink_points(sp.diff(self.sigma_expr, z))
        return "hermite" if sphere and smooth else "quadrature"

    # ---- Hermite back end

    @functools.cached_property
    def expansions(self) -> dict:
        """Hermite expansions of sigma (to kmax), sigma' (to kmax - 1) and phi (to kmax)."""
        ds = self.dsigma_expr
        out = {"sigma": hermite(self.sigma_expr, self.kmax), "phi": hermite(self.phi_expr, self.kmax)}
        out["dsigma"] = hermite(ds, self.kmax - 1) if self.kmax > 1 else None
        return out

    def tails(self) -> dict:
        """Squared L2 errors of the truncated series of sigma, sigma' and phi (0 for exact back ends):
        a pair kernel's truncation error is at most sqrt(tail_f tail_g)."""
        if self.backend != "hermite":
            return {"sigma": 0.0, "dsigma": 0.0, "phi": 0.0}
        return {k: (float(v.tail) if v is not None else float("nan")) for k, v in self.expansions.items()}

    def series_warning(self) -> Optional[str]:
        """A caution when the Hermite back end's SGD term rests on a slowly converging sigma'."""
        if self.backend != "hermite" or self.dynamics == "gf" or self.tails()["dsigma"] <= 1e-3:
            return None
        return (f"sigma' is truncated at degree {self.kmax - 1} with squared L2 tail {self.tails()['dsigma']:.2g}: "
                "the SGD term's four-point expectations (products of four truncated series) converge more slowly "
                "than that tail suggests (relu' at kmax 6 and 10: 19% and 15% low on E[relu'(x)^2 relu(y) relu(w)]); "
                "prefer a smooth activation, the relu back end for relu, or --dynamics gf")

    # ---- quadrature back end

    def _symbolic_kernels(self):
        if self.backend == "quadrature":
            raise InputError("the quadrature back end has no symbolic pair kernels: the generated code integrates them")

    @functools.cached_property
    def pieces(self) -> dict:
        """For sigma', sigma and phi (the functions the quadrature back end integrates), the points
        where the function or its derivative has a kink or jump, and for each interval between them
        whether the function vanishes there identically (relu below 0): the quadrature splits its
        panels at the points and skips those intervals."""
        dphi = sp.diff(self.phi_expr, z)
        if dphi.has(sp.DiracDelta):
            raise ExpressionError(f"phi = {self.phi} has a jump: the flow needs phi' under the quadrature back end")
        out = {}
        for name, f, df in (("dsigma", self.dsigma_expr, sp.diff(self.dsigma_expr, z)),
                            ("sigma", self.sigma_expr, self.dsigma_expr), ("phi", self.phi_expr, dphi)):
            points = sorted(set(kink_points(f)) | set(p for p in kink_points(df.replace(
                lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0)))))
            out[name] = (points, [_vanishes(f, lo, hi) for lo, hi in zip([None] + points, points + [None])])
        return out

    # ---- kernels

    def _expect2(self, f, g):
        if self.backend == "polynomial":
            return polynomial_expectation([f, g], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        (Af, sf), (Ag, sg) = _erf_form(f), _erf_form(g)
        return Af * Ag * _I2(sf**2 * a_sym, sg**2 * b_sym, sf * sg * c_sym)

    @functools.cached_property
    def pair_kernels(self) -> dict:
        """P_ss, P_sp, P_pp as functions of (a, b, c)."""
        self._symbolic_kernels()
        if self.backend == "hermite":
            # on the sphere only the correlation varies: sum_k c_k(f) c_k(g) c^k
            cs, cp = self.expansions["sigma"].coefficients, self.expansions["phi"].coefficients
            series = lambda x, y: sp.Add(*[sp.Float(float(u * w), 17) * c_sym**k for k, (u, w) in enumerate(zip(x, y))])
            return {"ss": series(cs, cs), "sp": series(cs, cp), "pp": series(cp, cp)}
        s, p = self.sigma_expr, self.phi_expr
        if self.backend == "relu":
            al, be = _relu_form(s), _relu_form(p)
            k = _arc_cosine(a_sym, b_sym, c_sym)
            return {"ss": al * al * k, "sp": al * be * k, "pp": be * be * k}
        return {"ss": self._expect2(s, s), "sp": self._expect2(s, p), "pp": self._expect2(p, p)}

    def derivative(self, expr, *variables) -> sp.Expr:
        """d expr / d variables, simplified where the back end's kernels need it: the relu kernels'
        derivatives cancel terms like sqrt(1 - c^2/(a b)) against sqrt(a b - c^2), which SymPy
        leaves apart (their difference is 0 - 0 = nan on the diagonal, inf - inf near it)."""
        d = sp.diff(expr, *variables)
        if self.backend != "relu":
            return d
        A, B = sp.symbols("A B", positive=True)
        d = d.subs({a_sym: A, b_sym: B})
        d = d.subs(sp.sqrt(1 - c_sym**2 / (A * B)), sp.sqrt(A * B - c_sym**2) / sp.sqrt(A * B))
        return sp.simplify(d).subs({A: a_sym, B: b_sym})

    @functools.cached_property
    def pair_diagonals(self) -> Optional[dict]:
        """For kernels not smooth where c^2 = a b (relu: the square root and arccos), the value on
        the diagonal P(a, a, a) as a function of a; None where the general form is smooth there."""
        if self.backend != "relu":
            return None
        A = sp.Symbol("A", positive=True)
        kernels = {**self.pair_kernels, "J2": self.J2_kernel}
        return {name: sp.simplify(e.subs({a_sym: A, b_sym: A, c_sym: A})).subs(A, a_sym)
                for name, e in kernels.items()}

    @functools.cached_property
    def J2_kernel(self) -> sp.Expr:
        """E[sigma'(u) sigma'(w)] as a function of (a, b, c)."""
        self._symbolic_kernels()
        s = self.sigma_expr
        if self.backend == "hermite":
            cd = self.expansions["dsigma"].coefficients if self.kmax > 1 else [0.0]
            return sp.Add(*[sp.Float(float(u * u), 17) * c_sym**k for k, u in enumerate(cd)])
        if self.backend == "polynomial":
            ds = sp.diff(s, z)
            return polynomial_expectation([ds, ds], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        if self.backend == "relu":
            return _relu_form(s) ** 2 * (sp.pi - sp.acos(c_sym / sp.sqrt(a_sym * b_sym))) / (2 * sp.pi)
        A, sc = _erf_form(s)
        return A**2 * sc**2 * _J2(sc**2 * a_sym, sc**2 * b_sym, sc**2 * c_sym)

    @functools.cached_property
    def four_point_kernels(self) -> dict:
        """E4_ss, E4_sp, E4_pp = E[sigma'(x1) sigma'(x2) f(x3) g(x4)]: SymPy expressions in the symbols
        C4_SYMS, or (Hermite back end) :class:`MonomialTable` of the correlations, or (relu back end)
        the prefactor of E[x3 x4 1(x > 0)], an orthant moment computed in the generated code."""
        s, p = self.sigma_expr, self.phi_expr
        C = _cov4()
        out = {}
        if self.backend == "quadrature":  # which functions f, g (act codes: 1 sigma, 2 phi) codegen integrates
            return {"ss": (1, 1), "sp": (1, 2), "pp": (2, 2)}
        if self.backend == "relu":
            # prefactors of x3 x4 over the positive orthant (codegen evaluates that expectation)
            al, be = _relu_form(s), _relu_form(p)
            return {"ss": al**4, "sp": al**3 * be, "pp": al**2 * be**2}
        if self.backend == "hermite":
            e = self.expansions
            cd = e["dsigma"].coefficients if self.kmax > 1 else np.zeros(1)
            cs, cp = e["sigma"].coefficients, e["phi"].coefficients
            for name, (f, g) in {"ss": (cs, cs), "sp": (cs, cp), "pp": (cp, cp)}.items():
                out[name] = four_point_table([cd, cd, f, g])
            return out
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
        extra = ({"kmax": self.kmax, "tails": self.tails(), "caution": self.series_warning()}
                 if self.backend == "hermite" else {})
        if self.backend == "quadrature":
            extra = {"accuracy": QUADRATURE_ACCURACY}
        return {"model": self.kind, "sigma": self.sigma, "phi": self.phi, "output": self.output,
                "dynamics": self.dynamics, "backend": self.backend, "geometry": self.geometry, **extra,
                "time": "alpha = steps/d (Goldt et al.); SGD learning rate lr/sqrt(d) on the first layer"
                        " per sample in units where lambda = w.x/sqrt(d), lr2/d on the second"}

    def cache_key(self) -> str:
        """Content hash of what the generated code depends on (K, M, rates and noise are runtime)."""
        payload = {"kind": self.kind, "format": COMMITTEE_FORMAT, "sigma": sp.srepr(self.sigma_expr),
                   "phi": sp.srepr(self.phi_expr), "backend": self.backend,
                   "kmax": self.kmax if self.backend == "hermite" else None}
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
