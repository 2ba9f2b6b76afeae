"""Kernels V and U against Monte Carlo of E[phi(G) sigma(s G + sqrt(1-s^2) G')], and closed forms
against their series."""

import numpy as np
import pytest
import sympy as sp
from scipy import special

from odehild import U_kernel, V_kernel
from odehild.symbolic.kernels import r_sym, s_sym

N_MC = 2_000_000

FUNCS = {
    "relu(z)": lambda x: np.maximum(x, 0),
    "erf(z/sqrt(2))": lambda x: special.erf(x / np.sqrt(2)),
    "tanh(z)": np.tanh,
    "h(1,z)+h(2,z)+h(3,z)": lambda x: x + (x**2 - 1) / np.sqrt(2) + (x**3 - 3 * x) / np.sqrt(6),
    "sign(z)": np.sign,
}


def mc(f, g, s, rng):
    G, Gp = rng.standard_normal((2, N_MC))
    vals = f(G) * g(s * G + np.sqrt(1 - s * s) * Gp)
    return vals.mean(), vals.std() / np.sqrt(N_MC)


@pytest.mark.parametrize("phi, sigma", [("h(1,z)+h(2,z)+h(3,z)", "relu(z)"), ("tanh(z)", "erf(z/sqrt(2))"),
                                        ("sign(z)", "tanh(z)"), ("relu(z)", "relu(z)")])
@pytest.mark.parametrize("s", [-0.7, 0.2, 0.9])
def test_V_against_monte_carlo(phi, sigma, s, rng):
    V = V_kernel(phi, sigma, 12)
    val = float(V.series.subs(s_sym, s))
    ref, se = mc(FUNCS[phi], FUNCS[sigma], s, rng)
    assert abs(val - ref) < 5 * se + V.tail_bound


@pytest.mark.parametrize("sigma", ["relu(z)", "erf(z/sqrt(2))", "tanh(z)"])
def test_U_against_monte_carlo(sigma, rng):
    U = U_kernel(sigma, 12)
    for r in (-0.5, 0.3, 0.95):
        ref, se = mc(FUNCS[sigma], FUNCS[sigma], r, rng)
        assert abs(float(U.series.subs(r_sym, r)) - ref) < 5 * se + U.tail_bound
        if U.closed_form is not None:
            assert abs(float(U.closed_form.subs(r_sym, r)) - ref) < 5 * se


def test_erf_closed_form_matches_published_and_series():
    U = U_kernel("erf(z/sqrt(2))", 30)
    assert sp.simplify(U.closed_form - 2 / sp.pi * sp.asin(r_sym / 2)) == 0
    for r in np.linspace(-1, 1, 9):
        closed = float(U.closed_form.subs(r_sym, r))
        assert abs(float(U.series.subs(r_sym, r)) - closed) <= U.tail_bound + 1e-14
    assert U.tail_bound < 1e-3


def test_relu_closed_form_matches_arccos_kernel_and_series():
    U = U_kernel("relu(z)", 40)
    for r in np.linspace(-0.99, 0.99, 7):
        th = np.arccos(r)
        ref = (np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi)
        assert float(U.closed_form.subs(r_sym, r)) == pytest.approx(ref, abs=1e-14)
        assert abs(float(U.series.subs(r_sym, r)) - ref) <= U.tail_bound
    assert float(U.closed_form.subs(r_sym, 1)) == pytest.approx(0.5)


def test_polynomial_kernel_is_exact():
    V = V_kernel("h(1,z)+h(2,z)+h(3,z)", "h(0,z)+h(1,z)+h(2,z)+h(3,z)", 6)
    assert V.tail_bound == 0
    assert sp.expand(V.closed_form - (s_sym + s_sym**2 + s_sym**3)) == 0
