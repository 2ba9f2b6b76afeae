"""Hermite coefficients against independent computations: SciPy adaptive quadrature split at the
kinks (a different library and algorithm from the mpmath fallback), published closed forms, and
Parseval."""

import importlib
import math
import re

import numpy as np
import pytest
import sympy as sp
from scipy import integrate, special

from odehild import ExpressionError, hermite


def scipy_coefficients(f, kmax, kinks=()):
    """c_k by scipy.quad of f He_k phi on pieces split at the kinks."""
    pts = [-np.inf, *kinks, np.inf]
    out = []
    for k in range(kmax + 1):
        He = lambda x, k=k: special.eval_hermitenorm(k, x)
        total = 0.0
        for lo, hi in zip(pts[:-1], pts[1:]):
            val, _ = integrate.quad(lambda x: f(x) * He(x) * np.exp(-x * x / 2) / math.sqrt(2 * math.pi),
                                    lo, hi, epsabs=1e-13, epsrel=1e-13, limit=400)
            total += val
        out.append(total / math.sqrt(math.factorial(k)))
    return np.array(out)


CASES = [
    # expression, numpy function, kinks
    ("relu(z)", lambda x: max(x, 0.0), [0.0]),
    ("Abs(z)", abs, [0.0]),
    ("sign(z)", np.sign, [0.0]),
    ("Heaviside(z)", lambda x: float(x > 0), [0.0]),
    ("relu(z - 0.5)", lambda x: max(x - 0.5, 0.0), [0.5]),
    ("Min(z, 1) + 2*Heaviside(-z-1)", lambda x: min(x, 1.0) + 2 * float(-x - 1 > 0), [-1.0, 1.0]),
    ("erf(z/sqrt(2))", lambda x: math.erf(x / math.sqrt(2)), []),
    ("erf(2*z + 1)", lambda x: math.erf(2 * x + 1), []),
    ("exp(-z**2)", lambda x: math.exp(-x * x), []),
    ("exp(z/2 - z**2/8)", lambda x: math.exp(x / 2 - x * x / 8), []),
    ("cos(z) + sin(2*z)", lambda x: math.cos(x) + math.sin(2 * x), []),
    ("He(4, z) - 3*h(2, z) + z**5", lambda x: x**4 - 6 * x**2 + 3 - 3 * (x * x - 1) / math.sqrt(2) + x**5, []),
    ("tanh(z)", math.tanh, []),
    ("sigmoid(z)", special.expit, []),
    ("softplus(z)", lambda x: math.log1p(math.exp(x)) if x < 30 else x, []),
    ("tanh(z)*relu(z)", lambda x: math.tanh(x) * max(x, 0.0), [0.0]),
    ("sign(z)*exp(-Abs(z))", lambda x: np.sign(x) * math.exp(-abs(x)), [0.0]),
]


@pytest.mark.parametrize("expr, fn, kinks", CASES, ids=[c[0] for c in CASES])
def test_coefficients_against_scipy_quadrature(expr, fn, kinks):
    h = hermite(expr, 7)
    ref = scipy_coefficients(fn, 7, kinks)
    np.testing.assert_allclose(h.coefficients, ref, atol=2e-9, rtol=0)
    assert np.all(h.errors <= 1e-10)


@pytest.mark.parametrize("expr", ["relu(z)", "Abs(z)", "sign(z)", "Heaviside(z)", "erf(3*z)",
                                  "exp(-2*z**2)", "He(3, z)", "h(5, z) + 1", "relu(z-1)"])
def test_closed_form_functions_are_exact(expr):
    h = hermite(expr, 6)
    assert h.is_exact and np.all(h.errors == 0)


def test_relu_published_values():
    h = hermite("relu(z)", 12)
    expect = {0: 1 / sp.sqrt(2 * sp.pi), 1: sp.Rational(1, 2), 2: 1 / (2 * sp.sqrt(sp.pi)),
              3: 0, 4: -1 / sp.sqrt(48 * sp.pi)}
    for k, v in expect.items():
        assert sp.simplify(h.exact[k] - v) == 0
    # references.md: unnormalized E[relu He_k] = He_{k-2}(0)/sqrt(2 pi) for k >= 2
    for k in range(2, 13):
        ref = special.eval_hermitenorm(k - 2, 0.0) / math.sqrt(2 * math.pi) / math.sqrt(math.factorial(k))
        assert h.coefficients[k] == pytest.approx(ref, abs=1e-15)
    assert h.norm2_exact == sp.Rational(1, 2)


def test_sign_and_erf_published_values():
    assert sp.simplify(hermite("sign(z)", 1).exact[1] - sp.sqrt(2 / sp.pi)) == 0
    h = hermite("erf(z/sqrt(2))", 11)
    assert sp.simplify(h.exact[1] - 1 / sp.sqrt(sp.pi)) == 0
    for m in range(6):  # E[f He_{2m+1}] = (-1)^m (2m-1)!! / (2^m sqrt(pi))
        k = 2 * m + 1
        ref = (-1) ** m * math.prod(range(1, 2 * m, 2)) / (2**m * math.sqrt(math.pi)) / math.sqrt(math.factorial(k))
        assert h.coefficients[k] == pytest.approx(ref, abs=1e-15)
        assert h.coefficients[k - 1] == 0
    assert h.norm2 == pytest.approx(1 / 3, abs=1e-15)  # (2/pi) arcsin(1/2)


@pytest.mark.parametrize("expr", ["relu(z)", "tanh(z)", "erf(2*z+1)", "sign(z)", "cos(z)"])
def test_parseval(expr):
    h = hermite(expr, 10)
    assert h.norm2 == pytest.approx(np.sum(h.coefficients**2) + h.tail, abs=1e-12)
    assert h.tail >= 0


@pytest.mark.parametrize("expr", ["tanh(z)", "erf(z/sqrt(2))", "exp(-z**2)", "cos(z)"])
def test_tail_vanishes_for_smooth_functions(expr):
    tails = [hermite(expr, k).tail for k in (3, 9, 15)]
    assert tails[0] > tails[1] > tails[2] >= 0
    assert tails[2] < 1e-2 * tails[0]


def test_polynomial_tail_is_exactly_zero():
    h = hermite("z**3 - 2*z + 1", 3)
    assert h.tail == 0 and h.norm2_exact == sp.Integer(15 - 12 + 4 + 1)


def test_information_exponent():
    assert hermite("relu(z)", 4).information_exponent == 1
    assert hermite("Abs(z)", 4).information_exponent == 2
    assert hermite("h(3,z) + 1", 5).information_exponent == 3
    assert hermite("h(3,z)", 2).information_exponent is None
    assert hermite("7", 3).information_exponent is None


@pytest.mark.parametrize("expr, msg", [
    ("exp(z**2)", "square-integrable"),
    ("exp(z**2/4)", "square-integrable"),
    ("exp(z**2/3)*tanh(z)", "square-integrable"),
    ("log(z)", "whole real line"),
    ("1/z", "pole at z = 0"),
    ("tan(z)", "whole real line"),
])
def test_refuses_non_square_integrable_or_undefined(expr, msg):
    with pytest.raises(ExpressionError, match=msg):
        hermite(expr, 3)


@pytest.mark.parametrize("kmax", [-1, 2.5, "3", True, 1000])
def test_bad_kmax(kmax):
    with pytest.raises(ExpressionError, match="kmax"):
        hermite("z", kmax)


@pytest.mark.parametrize("expr, fn, kinks", [
    # a kink far from the Gaussian bulk: the value there is decided by the bulk, not by the kink
    ("tanh(z)*Heaviside(100-z)", np.tanh, ()),
    ("tanh(z)+Heaviside(z-100)", np.tanh, ()),
    ("Min(h(6,z), -(Max(100+0.1, z)))", lambda x: np.full_like(x, -100.1), ()),
    ("Max(2, Abs(z))", lambda x: np.maximum(2.0, np.abs(x)), (-2.0, 2.0)),
])
def test_far_kinks_do_not_hide_the_gaussian_mass(expr, fn, kinks):
    h = hermite(expr, 4)
    ref = scipy_coefficients(lambda x: fn(np.asarray(x, float)), 4, kinks)
    np.testing.assert_allclose(h.coefficients, ref, atol=1e-9)
    assert h.norm2 >= np.sum(ref**2) - 1e-9


@pytest.mark.parametrize("expr", ["exp(27*z)", "z**255", "cosh(30*z)", "-1e308*10", "(2**256)**256"])
def test_values_beyond_double_precision_are_refused(expr):
    with pytest.raises(ExpressionError, match="beyond what odehild computes with"):
        hermite(expr, 3)


@pytest.mark.parametrize("expr", ["1/relu(z)", "1/Heaviside(z)", "(-2)**(1/3)",
                                  "Max(z*z, 100/z, pi)", "Min(log(z), z)", "erfc(exp(z))", "Min(1e10, z, z)"])
def test_expressions_sympy_cannot_handle_end_in_our_error(expr):
    with pytest.raises(ExpressionError, match=re.escape(expr)):
        hermite(expr, 3)


def test_constants_and_erf_squared():
    assert hermite("sigmoid(1e10)", 3).coefficients.tolist() == [1.0, 0.0, 0.0, 0.0]  # no exact simplification
    h = hermite("erf(z)**2", 2)
    ref = scipy_coefficients(lambda x: special.erf(x) ** 2, 2)
    np.testing.assert_allclose(h.coefficients, ref, atol=1e-9)


def test_symbolic_work_has_a_time_budget(monkeypatch):
    import importlib
    import time

    module = importlib.import_module("odehild.symbolic.hermite")

    monkeypatch.setattr(module, "SYMBOLIC_BUDGET", 0.5)
    start = time.perf_counter()
    with pytest.raises(ExpressionError, match="budget of 0.5 s"):
        module.hermite("Heaviside(sin(3*z) - 0.3)", 3)  # about 13 s of quadrature, then refused
    assert time.perf_counter() - start < 5


def test_a_budget_alarm_lost_in_a_finalizer_is_not_reported_and_the_next_one_stops_the_work():
    import sys
    import time

    from odehild.symbolic.hermite import time_budget

    class SlowFinalizer:
        def __del__(self):
            time.sleep(0.4)  # the first alarm fires here, where Python can only report it

    reported = []
    outer = sys.unraisablehook
    sys.unraisablehook = reported.append
    try:
        start = time.perf_counter()
        with pytest.raises(ExpressionError, match="budget of 0.2 s"):
            with time_budget(0.2, "the work"):
                SlowFinalizer()  # dropped at once: its __del__ runs inside the budget
                while True:
                    pass
        assert time.perf_counter() - start < 5
    finally:
        sys.unraisablehook = outer
    assert reported == []


def test_jump_at_the_irrational_roots_of_a_hermite_polynomial():
    # Heaviside(h2) = 1{|z| > 1}: c0 = P(|z| > 1), c2 = E[(z^2 - 1) 1{|z| > 1}] / sqrt(2) = sqrt(2) phi(1)
    h = hermite("Heaviside(h(2,z))", 3)
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    np.testing.assert_allclose(h.coefficients, [math.erfc(1 / math.sqrt(2)), 0, math.sqrt(2) * phi1, 0],
                               atol=1e-12)
    assert h.norm2 == pytest.approx(math.erfc(1 / math.sqrt(2)), abs=1e-12)


def test_kinks_at_the_eight_roots_of_h8_against_scipy_quadrature():
    h8 = lambda x: special.eval_hermitenorm(8, x) / math.sqrt(math.factorial(8))
    roots = np.sort(np.polynomial.hermite_e.hermeroots([0] * 8 + [1]))
    ref = scipy_coefficients(lambda x: np.maximum(h8(x), 0.0), 4, tuple(roots))
    np.testing.assert_allclose(hermite("relu(h(8,z))", 4).coefficients, ref, atol=1e-10)


def test_cusp_at_zero_is_certified_and_exact():
    # E|z|^(1/2) = 2^(1/4) Gamma(3/4) / sqrt(pi); E|z| = sqrt(2/pi)
    h = hermite("sqrt(Abs(z))", 2)
    assert h.coefficients[0] == pytest.approx(2**0.25 * math.gamma(0.75) / math.sqrt(math.pi), abs=1e-12)
    assert h.norm2 == pytest.approx(math.sqrt(2 / math.pi), abs=1e-12)
    assert max(h.errors) < 1e-10


def test_pole_of_a_high_degree_denominator_is_named():
    with pytest.raises(ExpressionError, match=r"pole at z = -3\.75"):
        hermite("Min(z, 1e308, 0.5)/(-He(7,z))", 4)


def test_expansions_are_cached_on_disk_and_a_damaged_entry_is_recomputed(tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("odehild.symbolic.hermite")
    monkeypatch.setenv("ODEHILD_CACHE_DIR", str(tmp_path))
    first = module.hermite("tanh(z) + relu(z)", 4)  # numeric (tanh) and exact (relu) parts
    entries = list((tmp_path / "hermite").glob("*.pickle"))
    assert len(entries) == 1

    def no_work(*args):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(module, "_expand", no_work)
    again = module.hermite("tanh(z) + relu(z)", 4)
    np.testing.assert_array_equal(again.coefficients, first.coefficients)
    assert again.norm2 == first.norm2 and again.tail == first.tail and str(again.expr) == str(first.expr)
    with pytest.raises(AssertionError, match="recomputed"):
        module.hermite("tanh(z) + relu(z)", 5)  # another kmax is another entry
    entries[0].write_bytes(b"\x80\x05garbage")
    monkeypatch.undo()
    monkeypatch.setenv("ODEHILD_CACHE_DIR", str(tmp_path))
    np.testing.assert_array_equal(module.hermite("tanh(z) + relu(z)", 4).coefficients, first.coefficients)


def test_function_from_cached_numbers_derives_its_exact_values_on_first_use(tmp_path, monkeypatch):
    from odehild.symbolic.founding import as_function

    monkeypatch.setenv("ODEHILD_CACHE_DIR", str(tmp_path))
    eager = as_function("relu(z)", 5, "sigma")  # expands and caches
    cached = as_function("relu(z)", 5, "sigma")  # from the numbers file
    assert cached.source == ("relu(z)", 5) and cached._exact is None
    assert cached.coefficients == eager.coefficients and cached.norm2 == eager.norm2 and cached.name == eager.name
    assert cached.exact == eager.exact and cached.exact[4] == -sp.sqrt(3) / (12 * sp.sqrt(sp.pi))
    assert cached.expr == eager.expr and cached.symbolic_coefficients == eager.symbolic_coefficients
    shorter = as_function(cached, 3, "sigma")
    assert shorter.exact == eager.exact[:4] and shorter.coefficients == eager.coefficients[:4]


def test_symbolic_hermite_stays_the_function_after_its_module_is_imported():
    import odehild
    import odehild.symbolic
    from odehild.symbolic import hermite as imported

    module = importlib.import_module("odehild.symbolic.hermite")
    assert callable(odehild.symbolic.hermite) and odehild.symbolic.hermite is module.hermite is imported
    assert odehild.hermite is module.hermite
