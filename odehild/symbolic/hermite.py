"""Normalized Hermite coefficients c_k = E[f(G) He_k(G)] / sqrt(k!), exact where possible.

Exact path: after kinks are rewritten as Heaviside steps, f is expanded into terms
``coeff * z^n * exp(alpha z^2 + beta z + gamma) * [z > c]`` or ``coeff * z^n * erf(a z + b)``;
every Gaussian moment of such a term has a closed form (completed square, truncated-normal moment
recursion, Stein's lemma for erf). Anything else goes to mpmath quadrature split at the kinks,
checked by two quadrature rules against each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import pickle
import signal
import sys
import threading
import time
from typing import Optional

import mpmath as mp
import numpy as np
import sympy as sp

from ..errors import ExpressionError, OdehildError
from . import hermite_cache
from .parse import He_poly, parse_expression, z

#: Absolute error promised for numerically computed coefficients.
NUMERIC_TOL = 1e-10
_DPS = 30


# ----------------------------------------------------------------------------- rewriting


def _linear_coeffs(arg):
    """(a, b) with arg = a z + b and a, b numbers, or None."""
    poly = sp.Poly(arg, z) if arg.is_polynomial(z) else None
    if poly is None or poly.degree() > 1 or not all(c.is_number for c in poly.all_coeffs()):
        return None
    coeffs = poly.all_coeffs()
    return (coeffs[0], coeffs[1]) if len(coeffs) == 2 else (sp.Integer(0), coeffs[0])


def _step(arg):
    """1{arg > 0} as Heaviside(z - c) (upper form) for linear arg; None otherwise."""
    lin = _linear_coeffs(arg)
    if lin is None:
        return None
    a, b = lin
    if a == 0:
        return sp.Integer(1) if b > 0 else sp.Integer(0)
    c = -b / a
    return sp.Heaviside(z - c) if a > 0 else 1 - sp.Heaviside(z - c)


def _pairwise_max(x, y):
    st = _step(x - y)
    return None if st is None else y + (x - y) * st


def rewrite_kinks(f):
    """Rewrite Abs, sign, Max, Min and Heaviside of linear arguments as upper steps H(z - c).

    Returns the rewritten expression, or the input unchanged where an argument is not linear.
    """
    def rw_abs(x):
        st = _step(x)
        return sp.Abs(x) if st is None else x * (2 * st - 1)

    def rw_sign(x):
        st = _step(x)
        return sp.sign(x) if st is None else 2 * st - 1

    def rw_heaviside(x, *h0):
        st = _step(x)
        return sp.Heaviside(x, *h0) if st is None else st

    def rw_max(*args):
        out = args[0]
        for y in args[1:]:
            m = _pairwise_max(out, y)
            if m is None:
                return sp.Max(*args)
            out = m
        return out

    def rw_min(*args):
        out = args[0]
        for y in args[1:]:
            m = _pairwise_max(out, y)
            if m is None:
                return sp.Min(*args)
            out = out + y - m
        return out

    out = f
    for cls, fn in ((sp.Max, rw_max), (sp.Min, rw_min), (sp.Abs, rw_abs), (sp.sign, rw_sign),
                    (sp.Heaviside, rw_heaviside)):
        out = out.replace(lambda e, cls=cls: isinstance(e, cls) and e.has(z),
                          lambda e, fn=fn: fn(*e.args))
    return out


def kink_points(f) -> list:
    """Real points where f may have a kink or jump (arguments of Abs, sign, Max, Min, Heaviside)."""
    pts = set()
    for e in f.atoms(sp.Abs, sp.sign, sp.Heaviside, sp.Max, sp.Min):
        args = [e.args[0]] if not isinstance(e, (sp.Max, sp.Min)) else [
            x - y for i, x in enumerate(e.args) for y in e.args[i + 1:]]
        for arg in args:
            if arg.is_polynomial(z) and arg.has(z):
                pts.update(_real_roots(arg))
    return sorted(pts)


def _real_roots(poly_expr) -> list:
    """Real roots of a polynomial in z as floats: exact isolation over the rationals, numeric roots
    (30 digits) when the coefficients are irrational, as in h(2, z) = (z^2 - 1)/sqrt(2)."""
    poly = sp.Poly(poly_expr, z)
    try:
        return [float(r) for r in poly.real_roots()]
    except (NotImplementedError, sp.PolynomialError, sp.DomainError):
        pass
    scale = max(abs(complex(c)) for c in poly.all_coeffs())
    try:
        return sorted(float(sp.re(r)) for r in poly.nroots(n=30, maxsteps=200)
                      if abs(complex(r).imag) <= 1e-20 * max(1.0, abs(complex(r)), scale))
    except mp.libmp.libhyper.NoConvergence:  # huge coefficient ranges (1e308 - h(8, z)): double-precision roots
        coeffs = np.array([complex(c) for c in poly.all_coeffs()])
        with np.errstate(all="ignore"):
            roots = np.roots(coeffs / np.max(np.abs(coeffs))) if np.all(np.isfinite(coeffs)) else None
        if roots is None or not np.all(np.isfinite(roots)):
            raise ExpressionError(f"cannot locate the real roots of {str(poly_expr)[:80]} (kinks or poles of the expression)")
        return sorted(float(r.real) for r in roots if abs(r.imag) <= 1e-9 * max(1.0, abs(r)))


# ------------------------------------------------------------------- exact Gaussian moments


@dataclasses.dataclass(frozen=True)
class _Term:
    coeff: sp.Expr
    n: int
    alpha: sp.Expr = sp.Integer(0)  # exp(alpha z^2 + beta z + gamma)
    beta: sp.Expr = sp.Integer(0)
    gamma: sp.Expr = sp.Integer(0)
    step: Optional[sp.Expr] = None  # threshold c of 1{z > c}
    erf: Optional[tuple] = None  # (a, b) of erf(a z + b)
    erf2: bool = False  # erf(a z)**2 (only with n == 0 and no other factor)


def _split_term(term) -> Optional[_Term]:
    coeff, n = sp.Integer(1), 0
    expo = sp.Integer(0)
    step = None
    erf = None
    erf2 = False
    for fac in sp.Mul.make_args(term):
        base, ex = fac.as_base_exp()
        if not fac.has(z):
            coeff *= fac
        elif fac == z:
            n += 1
        elif base == z and ex.is_Integer and ex > 0:
            n += int(ex)
        elif isinstance(fac, sp.exp):
            expo += fac.args[0]
        elif isinstance(base, sp.Heaviside) and ex.is_Integer and ex > 0:
            lin = _linear_coeffs(base.args[0])
            if lin is None or lin[0] != 1:
                return None
            c = -lin[1]
            step = c if step is None else sp.Max(step, c)
        elif isinstance(base, sp.erf) and erf is None and ex in (1, 2):
            lin = _linear_coeffs(base.args[0])
            if lin is None or lin[0] == 0:
                return None
            erf = lin
            erf2 = ex == 2
        else:
            return None
    if expo != 0:
        if not expo.is_polynomial(z):
            return None
        poly = sp.Poly(sp.expand(expo), z)
        if poly.degree() > 2 or not all(c.is_number for c in poly.all_coeffs()):
            return None
        cs = [sp.Integer(0)] * (3 - len(poly.all_coeffs())) + poly.all_coeffs()
        alpha, beta, gamma = cs
    else:
        alpha = beta = gamma = sp.Integer(0)
    if erf is not None and (step is not None or expo != 0):
        return None
    if erf2 and (n > 0 or erf[1] != 0):
        return None
    if step is not None and not (beta.is_real and alpha.is_real):
        return None
    return _Term(coeff, n, alpha, beta, gamma, step, erf, erf2)


def decompose(f) -> Optional[list]:
    """Split f into closed-form Gaussian terms, or None if some term has no closed form."""
    g = rewrite_kinks(f)
    g = g.rewrite(sp.erfc, sp.erf) if g.has(sp.erfc) else g
    if g.has(sp.sin, sp.cos, sp.sinh, sp.cosh):
        g = g.rewrite(sp.exp)
    g = sp.expand(sp.powsimp(sp.expand(g), combine="exp"), power_base=False, mul=True)
    terms = []
    for t in sp.Add.make_args(g):
        if t == 0:
            continue
        split = _split_term(sp.powsimp(t, combine="exp"))
        if split is None:
            return None
        terms.append(split)
    return terms


def _std_half_moments(n: int, d):
    """T_k = E[X^k 1{X > d}], X ~ N(0,1), k = 0..n."""
    pdf = sp.exp(-d**2 / 2) / sp.sqrt(2 * sp.pi)
    out = [sp.erfc(d / sp.sqrt(2)) / 2, pdf]
    for k in range(2, n + 1):
        out.append(d ** (k - 1) * pdf + (k - 1) * out[k - 2])
    return out[: n + 1]


def _gauss_moment(n: int, alpha, beta, gamma, step):
    """E[G^n exp(alpha G^2 + beta G + gamma) 1{G > step}] for G ~ N(0, 1), exactly."""
    if not (sp.re(alpha) < sp.Rational(1, 2)):
        raise ExpressionError(
            f"exp({alpha}*z**2) grows too fast: the Gaussian moments diverge (need coefficient < 1/2)")
    v = 1 / (1 - 2 * alpha)
    mu = beta * v
    pre = sp.exp(gamma + mu**2 / (2 * v)) * sp.sqrt(v)
    sv = sp.sqrt(v)
    if step is None and mu == 0:  # centred: only the k = n term of the binomial sum survives
        return pre * (sp.Integer(0) if n % 2 else sv**n * sp.factorial2(n - 1))
    if step is None:
        std = [sp.Integer(0) if k % 2 else sp.factorial2(k - 1) for k in range(n + 1)]
    else:
        std = _std_half_moments(n, (step - mu) / sv)
    return pre * sum(sp.binomial(n, k) * mu ** (n - k) * sv**k * std[k] for k in range(n + 1))


def _erf_moment(n: int, a, b):
    """E[G^n erf(a G + b)] by Stein's lemma E[G h(G)] = E[h'(G)]."""
    if n == 0:
        return sp.erf(b / sp.sqrt(1 + 2 * a**2))
    # h = G^(n-1) erf: h' = (n-1) G^(n-2) erf + G^(n-1) (2a/sqrt(pi)) exp(-(aG+b)^2)
    rest = _gauss_moment(n - 1, -a**2, -2 * a * b, -b**2, None) * 2 * a / sp.sqrt(sp.pi)
    return (n - 1) * _erf_moment(n - 2, a, b) + rest if n >= 2 else rest


def _term_moment(t: _Term, j: int):
    """E[t(G) G^j]."""
    n = t.n + j
    if t.erf2:
        a = t.erf[0]
        if j:
            return None
        return t.coeff * 2 / sp.pi * sp.asin(2 * a**2 / (1 + 2 * a**2))
    if t.erf is not None:
        return t.coeff * _erf_moment(n, *t.erf)
    return t.coeff * _gauss_moment(n, t.alpha, t.beta, t.gamma, t.step)


def exact_moments(terms, jmax: int):
    """[E[f(G) G^j] for j = 0..jmax] from a decomposition, or None."""
    out = []
    for j in range(jmax + 1):
        parts = [_term_moment(t, j) for t in terms]
        if any(p is None for p in parts):
            return None
        out.append(sp.Add(*parts))
    return out


def _tidy(x):
    x = sp.expand(x)
    if x.has(sp.I):
        x = sp.re(sp.expand_complex(x))
    try:
        return sp.nsimplify(x) if x.is_Rational else sp.simplify(x) if sp.count_ops(x) < 400 else x
    except (TypeError, ValueError, RecursionError):
        return x


def _hermite_coeff_table(kmax: int):
    """He_k(z) = sum_j T[k][j] z^j as exact integers."""
    table = []
    for k in range(kmax + 1):
        p = sp.Poly(He_poly(k), z)
        row = [sp.Integer(0)] * (kmax + 1)
        for (j,), c in p.terms():
            row[j] = c
        table.append(row)
    return table


# ------------------------------------------------------------------------ numeric fallback


def _mp_function(f):
    def heaviside(x, h0=0.5):
        return mp.mpf(0) if x < 0 else (mp.mpf(1) if x > 0 else mp.mpf(h0))

    def sign(x):
        return mp.sign(x)

    modules = [{"Heaviside": heaviside, "sign": sign, "Max": max, "Min": min,
                "erf": mp.erf, "erfc": mp.erfc}, "mpmath"]
    fn = sp.lambdify(z, f, modules=modules)
    cache = {}

    def evaluate(x):
        val = cache.get(x)
        if val is None:
            val = fn(x)
            if isinstance(val, mp.mpc):
                if abs(val.imag) > mp.mpf(10) ** (-_DPS + 5) * max(1, abs(val.real)):
                    raise ExpressionError(f"{f} is not real-valued at z = {mp.nstr(x, 6)}")
                val = val.real
            val = mp.mpf(val)
            if not mp.isfinite(val):
                raise ExpressionError(f"{f} is not finite at z = {mp.nstr(x, 6)}")
            cache[x] = val
        return val

    return evaluate


def check_domain(f):
    """Refuse f that is undefined or singular somewhere on the real line."""
    smooth = f.replace(lambda e: isinstance(e, (sp.Heaviside, sp.sign)), lambda e: sp.Integer(1))
    smooth = smooth.replace(lambda e: isinstance(e, (sp.Max, sp.Min)), lambda e: e.args[0])
    # a polynomial denominator with a real root is a pole: cheap to find, while SymPy's general
    # singularity search can take minutes on a high-degree denominator
    numerator, denominator = sp.fraction(sp.together(smooth))
    if denominator.has(z) and denominator.is_polynomial(z):
        try:
            numerator = sp.lambdify(z, numerator, "mpmath")
            poles = [p for p in _real_roots(denominator) if abs(numerator(p)) > 1e-12]  # not removable
        except ExpressionError:
            raise
        except Exception:  # a shortcut only: the general search below decides
            poles = []
        if poles:
            raise ExpressionError(f"{f} has a pole at z = {poles[0]:.6g} on the real line: it is not "
                                  "square-integrable under N(0,1)")
    try:
        from sympy.calculus.util import continuous_domain
        dom = continuous_domain(smooth, z, sp.S.Reals)
    except Exception:  # SymPy cannot decide: the quadrature checks finiteness instead
        return
    if dom != sp.S.Reals:
        raise ExpressionError(f"{f} is not defined and continuous on the whole real line "
                              f"(domain of continuity: {dom})")


def _check_square_integrable(fn, f):
    with mp.workdps(_DPS):
        vals = {}
        for x in (8, 16, 32, 64):
            vals[x] = max(fn(mp.mpf(x)) ** 2, fn(mp.mpf(-x)) ** 2) * mp.exp(-mp.mpf(x) ** 2 / 2)
        if not (vals[64] < mp.mpf(10) ** -20 and vals[64] <= vals[32]):
            raise ExpressionError(
                f"{f} is not square-integrable under N(0,1): f(z)^2 exp(-z^2/2) does not decay "
                f"(= {mp.nstr(vals[64], 3)} at |z| = 64)")


# seconds of symbolic and quadrature work one expression may take (ODEHILD_SYMBOLIC_BUDGET overrides)
SYMBOLIC_BUDGET = float(os.environ.get("ODEHILD_SYMBOLIC_BUDGET", "60"))


@contextlib.contextmanager
def time_budget(seconds: float, what: str):
    """Raise ExpressionError when the block runs past ``seconds`` (SIGALRM: main thread on POSIX
    only; elsewhere the block runs unbounded)."""
    usable = (seconds > 0 and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    armed = [True]

    def expire(signum, frame):
        if armed[0]:
            raise _BudgetExpired  # not an Exception: SymPy's broad except clauses must not swallow it

    hook = sys.unraisablehook

    def quiet_hook(unraisable):
        # the repeated alarm stands in for one Python ignored: not an error to report (pytest
        # failed a test on it, and a user would see "Exception ignored in ...")
        if unraisable.exc_type is not _BudgetExpired:
            hook(unraisable)

    previous = signal.signal(signal.SIGALRM, expire)
    sys.unraisablehook = quiet_hook
    # the alarm repeats: one raised where Python ignores exceptions (a __del__ or a weakref callback
    # during garbage collection) would otherwise be lost and the work run on unbounded
    signal.setitimer(signal.ITIMER_REAL, seconds, ALARM_REPEAT)
    try:
        try:
            yield
        finally:
            while True:  # an alarm may fire during the cleanup itself: finish it regardless
                try:
                    armed[0] = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
                    signal.signal(signal.SIGALRM, previous)
                    sys.unraisablehook = hook
                    break
                except _BudgetExpired:
                    pass
    except _BudgetExpired:
        raise ExpressionError(f"{what} ran past its budget of {seconds:g} s (ODEHILD_SYMBOLIC_BUDGET); "
                              "simplify the expression") from None


ALARM_REPEAT = 0.25  # seconds between repeated alarms once the budget is spent


class _BudgetExpired(BaseException):
    """Raised by the budget's alarm inside symbolic work."""


# E[f^2] above this is refused: risks, moments and their squares must stay finite in doubles
MAX_NORM2 = 1e100
GAUSS_SPLITS = (-16.0, -8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0, 16.0)


def _quad(integrand, points):
    """Integral and error bound: tanh-sinh's own estimate, and its difference to tanh-sinh on the
    split points with every finite interval halved (other nodes everywhere). Gauss-Legendre as the
    second rule cost 30 s of node computation at a cusp (sqrt(Abs(z))) and was the less accurate."""
    with mp.workdps(_DPS):
        v1, e1 = mp.quad(integrand, points, method="tanh-sinh", error=True, maxdegree=10)
        finite = [p for p in points if mp.isfinite(p)]
        halves = [(a + b) / 2 for a, b in zip(finite, finite[1:])]
        refined = [points[0], *sorted(finite + halves), points[-1]]
        v2 = mp.quad(integrand, refined, method="tanh-sinh", maxdegree=10)
        return v1, max(abs(e1), abs(v1 - v2))


def numeric_coefficients(f, kmax: int):
    """Coefficients, their error bounds and E[f^2] by split mpmath quadrature."""
    check_domain(f)
    fn = _mp_function(f)
    _check_square_integrable(fn, f)
    # the Gaussian's bulk is always split out: with only a far kink (at z = 100, say) as a split
    # point, both rules would sample [-inf, 100] where the weight is ~0 and agree on a wrong 0
    inner = sorted({float(p) for p in kink_points(f)} | set(GAUSS_SPLITS))
    pts = [-mp.inf, *[mp.mpf(p) for p in inner], mp.inf]
    with mp.workdps(_DPS):
        norm = 1 / mp.sqrt(2 * mp.pi)

        def He(k, x):
            prev, cur = mp.mpf(1), x
            if k == 0:
                return prev
            for j in range(1, k):
                prev, cur = cur, x * cur - j * prev
            return cur

        coeffs, errs = [], []
        for k in range(kmax + 1):
            val, err = _quad(lambda x, k=k: fn(x) * He(k, x) * mp.exp(-x * x / 2) * norm, pts)
            scale = 1 / mp.sqrt(mp.factorial(k))
            coeffs.append(val * scale)
            errs.append(err * scale)
        n2, n2err = _quad(lambda x: fn(x) ** 2 * mp.exp(-x * x / 2) * norm, pts)
    return coeffs, errs, n2, n2err


# ------------------------------------------------------------------------------ public API


@dataclasses.dataclass
class HermiteExpansion:
    """Normalized Hermite coefficients c_0..c_K of a function f of z (docs/conventions.md).

    ``exact[k]`` is the exact SymPy value or None; ``errors[k]`` bounds |coefficients[k] - c_k|
    (0 for exact values, below 1e-10 for quadrature). ``tail = norm2 - sum c_k^2`` is the squared
    L2(N(0,1)) error of the truncated series.
    """

    expression: str
    expr: sp.Expr
    kmax: int
    coefficients: np.ndarray
    exact: list
    errors: np.ndarray
    norm2: float
    norm2_exact: Optional[sp.Expr]
    tail: float
    information_exponent: Optional[int]
    seconds: float = 0.0

    @property
    def is_exact(self) -> bool:
        return all(e is not None for e in self.exact) and self.norm2_exact is not None

    def to_dict(self) -> dict:
        return {
            "expression": self.expression,
            "kmax": self.kmax,
            "coefficients": [float(c) for c in self.coefficients],
            "exact": [None if e is None else str(e) for e in self.exact],
            "norm2": float(self.norm2),
            "tail": float(self.tail),
            "information_exponent": self.information_exponent,
        }

    def to_json(self, **kw) -> str:
        return json.dumps(self.to_dict(), **kw)

    def __repr__(self):
        cs = ", ".join(f"{c:.6g}" for c in self.coefficients)
        return (f"HermiteExpansion({self.expression!r}, kmax={self.kmax}, coefficients=[{cs}], "
                f"norm2={self.norm2:.6g}, tail={self.tail:.3g}, "
                f"information_exponent={self.information_exponent})")


def _check_kmax(kmax):
    if isinstance(kmax, bool) or not isinstance(kmax, (int, np.integer)) or not 0 <= kmax <= 60:
        raise ExpressionError(f"kmax must be an integer in [0, 60], got {kmax!r}")
    return int(kmax)


def _constant(f, text: str, kmax: int, start: float) -> HermiteExpansion:
    """A constant c: c_0 = c, the rest 0. Evaluated numerically, never simplified (simplifying
    sigmoid(1e10) = 1/(1 + exp(-10^10)) exactly does not finish)."""
    value = sp.N(f, 30)
    if not (value.is_real and value.is_finite):
        raise ExpressionError(f"{text} is the constant {value}, not a finite real number")
    c0 = float(value)
    if not math.isfinite(c0) or c0 * c0 > MAX_NORM2:
        raise ExpressionError(f"{text}: E[f^2] = {sp.N(value**2, 4)} is beyond what odehild computes with in "
                              f"double precision (at most {MAX_NORM2:g}); rescale the function")
    exact = [f] + [sp.Integer(0)] * kmax
    return HermiteExpansion(text, f, kmax, np.array([c0] + [0.0] * kmax), exact, np.zeros(kmax + 1), c0 * c0,
                            f**2, 0.0, None, time.perf_counter() - start)


def hermite(expr, kmax: int = 8) -> HermiteExpansion:
    """Normalized Hermite coefficients c_0..c_kmax of ``expr`` (string or SymPy expression in z).

    >>> hermite("relu(z)", 4).exact[4]
    -sqrt(3)/(12*sqrt(pi))
    """
    kmax = _check_kmax(kmax)
    text = expr if isinstance(expr, str) else str(expr)
    cached = _cache_entry(expr, kmax)
    found = _load_cached(cached)
    if found is not None:
        return found
    try:
        with time_budget(SYMBOLIC_BUDGET, f"the Hermite expansion of {text}"):
            out = _expand(parse_expression(expr), text, kmax)
        _store_cached(cached, out)
        return out
    except OdehildError:
        raise
    except (ArithmeticError, TypeError, ValueError, NotImplementedError, RecursionError, MemoryError) as exc:
        # SymPy or mpmath could not handle this expression: say so in one line, never a traceback
        raise ExpressionError(f"{text}: cannot compute its Hermite coefficients "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from None


# ------------------------------------------------------------------------------- disk cache
# (odehild.symbolic.hermite_cache): a numeric expansion (tanh, relu against erf) costs seconds of
# mpmath quadrature, a cached one a millisecond. Entries are pickles in odehild's own cache folder,
# trusted as much as the generated modules beside them; one that does not load is recomputed.


def _cache_entry(expr, kmax: int):
    return hermite_cache.entry(expr if isinstance(expr, str) else sp.srepr(expr), kmax).with_suffix(".pickle")


def _load_cached(path):
    try:
        with open(path, "rb") as fh:
            out = pickle.load(fh)
        return out if isinstance(out, HermiteExpansion) else None
    except Exception:  # missing, damaged or foreign: recompute
        return None


def _store_cached(path, expansion: HermiteExpansion):
    from ..io import atomic_write

    try:
        with atomic_write(path) as fh:
            pickle.dump(expansion, fh, protocol=pickle.HIGHEST_PROTOCOL)
    except (OdehildError, OSError, pickle.PicklingError, RecursionError):
        pass  # an unwritable cache only costs the next run the same work


def _expand(f, text: str, kmax: int) -> HermiteExpansion:
    start = time.perf_counter()
    if z not in f.free_symbols:
        return _constant(f, text, kmax, start)
    exact, exact_norm2 = None, None
    terms = decompose(f)
    if terms is not None:
        if any(t.erf is None and not t.erf2 and sp.re(t.alpha) >= sp.Rational(1, 4) for t in terms):
            raise ExpressionError(
                f"{text} is not square-integrable under N(0,1): exp(a*z**2) needs a < 1/4")
        check_domain(f)
        moments = exact_moments(terms, kmax)
        if moments is not None:
            table = _hermite_coeff_table(kmax)
            exact = [_tidy(sum(table[k][j] * moments[j] for j in range(k + 1)) / sp.sqrt(sp.factorial(k)))
                     for k in range(kmax + 1)]
        sq_terms = decompose(f**2)
        if sq_terms is not None:
            m0 = exact_moments(sq_terms, 0)
            exact_norm2 = None if m0 is None else _tidy(m0[0])

    if exact is None or exact_norm2 is None:
        nc, ne, n2, n2err = numeric_coefficients(f, kmax)
        bad = [k for k, e in enumerate(ne) if e > NUMERIC_TOL]
        if bad or n2err > NUMERIC_TOL:
            raise ExpressionError(
                f"quadrature for {text} could not certify |error| < {NUMERIC_TOL:g} "
                f"(coefficients {bad}, norm2 error {mp.nstr(n2err, 3)})")
    if exact is not None:
        coefficients = np.array([float(sp.N(e, 20)) for e in exact])
        errors = np.zeros(kmax + 1)
    else:
        exact = [None] * (kmax + 1)
        coefficients = np.array([float(c) for c in nc])
        errors = np.array([float(e) for e in ne])
    if exact_norm2 is not None:
        norm2 = float(sp.N(exact_norm2, 20))
        tail = float(sp.N(exact_norm2 - sum(e**2 for e in exact), 20)) if exact[0] is not None else None
    else:
        norm2 = float(n2)
        tail = None
    if tail is None:
        tail = norm2 - float(np.sum(coefficients**2))
    if -1e-9 < tail < 0:
        tail = 0.0
    if not (np.all(np.isfinite(coefficients)) and math.isfinite(norm2) and math.isfinite(tail)) \
            or norm2 > MAX_NORM2:
        shown = sp.N(exact_norm2, 4) if exact_norm2 is not None else f"{norm2:.4g}"
        raise ExpressionError(f"{text}: E[f^2] = {shown} is beyond what odehild computes with in double "
                              f"precision (at most {MAX_NORM2:g}); rescale the function")

    info = None
    for k in range(1, kmax + 1):
        nonzero = (exact[k] != 0) if exact[k] is not None else abs(coefficients[k]) > 10 * max(errors[k], 1e-13)
        if nonzero:
            info = k
            break
    return HermiteExpansion(text, f, kmax, coefficients, exact, errors, norm2, exact_norm2, tail,
                            info, time.perf_counter() - start)
