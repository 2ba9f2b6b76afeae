"""Reported numbers that converge and mean what they say (docs/model.md section 3): learning times
in N, exponents against the scenario, reachable plateau levels, output grids."""

import math
import warnings

import numpy as np
import pytest

from odehild import ResolutionWarning
from odehild.solve import initial_condition, solve
from odehild.errors import InputError
from odehild.solve.analysis import (expected_slope, find_plateaus, learning_times, phase_separation,
                                    timescale_sweep)
from odehild.solve.trajectory import a0_quadrature
from odehild.symbolic.learnability import learnability
from odehild.models.meanfield import MeanFieldModel

STAIR3 = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")
STAIR2 = ("h(0,z)+h(1,z)+h(2,z)", "h(1,z)+h(2,z)")


def _times(model, init, points=2000):
    tr = solve(model, init, 5.0, points=points, progress=False)
    return learning_times(tr.t, tr.residuals)


def test_quadrature_nodes_integrate_the_law():
    """Moments of the a0 quadrature against the laws' exact moments (normal: E a^2k = (2k-1)!!, up to
    the mass beyond the cut at 8 standard deviations)."""
    a, w = a0_quadrature("normal", 100)
    for k in range(1, 6):
        assert np.sum(w * a ** (2 * k)) == pytest.approx(math.prod(range(1, 2 * k, 2)), rel=1e-8)
    assert np.sum(w * a**3) == pytest.approx(0, abs=1e-13)
    a, w = a0_quadrature("uniform", 10)
    assert np.sum(w * a**4) == pytest.approx(9 / 5, rel=1e-13)  # E U^4 on [-sqrt3, sqrt3]
    a, w = a0_quadrature("rademacher", 5)
    assert np.sum(w * a) == pytest.approx(0, abs=1e-15) and np.all(np.abs(a) == 1)


def test_learning_times_converge_in_N_with_the_default_discretisation():
    """Degrees 1 and 2 at eps = 1e-8 change by less than 0.5% between N and 4N (normal a0);
    equal-weight quantiles, the old default, change by more than 10% (the test can fail)."""
    model = MeanFieldModel(*STAIR3, K=3, eps=1e-8)
    t100, t400 = _times(model, initial_condition(100)), _times(model, initial_condition(400))
    np.testing.assert_allclose(t400[1:3], t100[1:3], rtol=5e-3)
    q100 = _times(model, initial_condition(100, nodes="quantiles"))
    q400 = _times(model, initial_condition(400, nodes="quantiles"))
    assert abs(q100[2] / q400[2] - 1) > 0.1
    # and the quadrature value is what quantiles creep towards: q400 is 47% above, q100 twice as far
    assert t400[2] < q400[2] < q100[2]


def test_exponents_of_the_K2_staircase_match_the_scenario():
    """Uniform a0 (bounded), eps 1e-8..1e-14, where phases 1 and 2 separate: the degree-2 slope is
    within 0.01 of 1/4, degree 1 within 0.01 of the slope of sqrt(eps) log(1/eps) over the same eps,
    and t_1 / log(1/eps) within 0.01 of 1/2."""
    model = MeanFieldModel(*STAIR2, K=2, eps=1e-8)
    eps = [1e-8, 1e-10, 1e-12, 1e-14]
    fit, _ = timescale_sweep(model, eps, initial_condition(100, "uniform"), progress=False)
    assert fit.separated[:, 1:].all()
    assert fit.slope[2] == pytest.approx(0.25, abs=0.01)
    assert fit.expected[1] == pytest.approx(expected_slope(1, eps))
    assert fit.slope[1] == pytest.approx(fit.expected[1], abs=0.01)
    assert fit.log_corrected_slope[1] == pytest.approx(0.5, abs=0.01)
    # the discretisation error estimate (N = 100 against 50) is stored and small
    assert fit.resolution == (100, 50)
    assert np.nanmax(fit.time_error[:, 1:] / fit.times[:, 1:]) < 0.01
    # local slopes approach 1/4 from above
    assert np.all(np.diff(fit.local_slope[:, 2]) < 0)
    # at eps = 1e-14 the plateau between the phases exists at phi_2^2 / 2 = 0.5, with an error estimate
    middle = [p for p in fit.plateaus[-1] if p.degree == 1]
    assert len(middle) == 1 and middle[0].level == pytest.approx(0.5, abs=0.01)
    assert 0 <= middle[0].level_error < 1e-3 and middle[0].decades > 1


def test_plateau_levels_carry_the_difference_to_the_coarse_run():
    """Synthetic risk with plateaus at 1.0 and 0.5 and a coarse run 0.02 higher on the second:
    level errors 0 and 0.02, each plateau named by the nearest level."""
    t = np.logspace(-8, 2, 1001)
    x = np.log10(t)
    risk = 1.0 - 0.5 / (1 + np.exp(-8 * (x + 3))) - 0.5 / (1 + np.exp(-8 * (x - 0.5)))
    coarse = risk + 0.02 * ((x > -3) & (x < 0.5))
    found = find_plateaus(t, risk, coarse_risk=coarse, levels={-1: 1.0, 1: 0.5, 2: 0.0})
    assert [p.degree for p in found] == [-1, 1, 2]
    assert [p.level for p in found] == pytest.approx([1.0, 0.5, 0.0], abs=1e-3)
    assert found[0].level_error == pytest.approx(0, abs=1e-12)
    assert found[1].level_error == pytest.approx(0.02, rel=1e-12)
    with pytest.raises(InputError, match="same output times"):
        find_plateaus(t, risk, coarse_risk=coarse[::2])


def test_expected_slope_of_degree_one_includes_the_log_factor():
    # independent: d log10(sqrt(eps) ln(1/eps)) / d log10(eps) = 1/2 - 1/ln(1/eps), averaged
    eps = np.array([1e-4, 1e-12])
    direct = np.diff(np.log10(np.sqrt(eps) * np.log(1 / eps))) / np.diff(np.log10(eps))
    assert expected_slope(1, eps) == pytest.approx(direct[0], rel=1e-12)
    assert expected_slope(3, eps) == pytest.approx(1 / 6)


def test_phases_learned_together_are_flagged_and_left_out_of_fits():
    model = MeanFieldModel(*STAIR3, K=3, eps=1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResolutionWarning)
        fit, _ = timescale_sweep(model, [1e-8, 1e-10], initial_condition(60), progress=False)
    # degrees 2 and 3 of the demo model are learned together at these eps (t_3/t_2 < 1.1)
    assert not fit.separated[:, 2].any() and not fit.separated[:, 3].any()
    assert np.isnan(fit.slope[2]) and np.isnan(fit.slope[3])
    assert any("degrees 2, 3 are not separated" in n for n in fit.notes)
    sep = phase_separation([[np.nan, 1.0, 1.5, 10.0]], (1, 2, 3))
    assert sep.tolist() == [[False, False, False, True]]


def test_resolution_warning_when_the_coarse_run_disagrees():
    model = MeanFieldModel(*STAIR3, K=3, eps=1e-8)
    with pytest.warns(ResolutionWarning, match="discretisation error"):
        timescale_sweep(model, [1e-6, 1e-8], initial_condition(12, nodes="quantiles"), progress=False,
                        points=400)


def test_last_output_time_is_always_t_end():
    """logspace rounds its last value above t_end for some t_end: that time must not be dropped."""
    t_end = next(t for t in np.linspace(0.1, 10, 997) if np.logspace(-3, np.log10(t), 61)[-1] > t)
    t_eval = np.concatenate([[0.0], np.logspace(-3, np.log10(t_end), 60)])
    model = MeanFieldModel(*STAIR2, K=2, eps=1e-2)
    tr = solve(model, initial_condition(10), t_end, t_eval=t_eval, progress=False)
    assert tr.t.size == 61 and tr.t[-1] == t_end and tr.stats["status"] == 0


def test_stall_level_accounts_for_a_vanishing_activation_coefficient():
    """relu has sigma_3 = 0: the link z + z^3/6 = 1.5 h_1 + h_3/sqrt(6) leaves its degree-3 part,
    risk phi_3^2 / 2 = 1/12, and that is where the run ends."""
    model = MeanFieldModel("relu(z)", "z + z**3/6", K=4, eps=1e-4)
    learn = learnability(model.sigma.coefficients, model.phi.coefficients)
    assert learn.unrepresentable == (3,) and learn.reachable == (1,)
    assert learn.floor == pytest.approx(1 / 12, rel=1e-12)
    tr = solve(model, initial_condition(60), 50.0, progress=False)
    assert tr.risk[-1] == pytest.approx(1 / 12, abs=2e-3)


def test_s_zero_trap_floor_is_the_whole_nonconstant_target():
    """relu learning |z| (phi_1 = 0): s = 0 is invariant, the floor is Var|G| / 2 = (1 - 2/pi) / 2."""
    model = MeanFieldModel("relu(z)", "Abs(z)", K=4, eps=1e-4)
    learn = model.learnability()
    assert learn.trapped == (2, 4) and learn.reachable == (0,)
    assert learn.floor == pytest.approx((1 - 2 / np.pi) / 2, rel=1e-10)
    assert list(learn.levels) == [-1, 0]
    assert not model.learnability(s0_zero=False).trapped


def test_sign_obstruction_of_tanh_and_its_stall_level():
    """sigma = h0..h4, phi = tanh: sigma_5 = 0 and sigma_1 phi_1 sigma_3 phi_3 < 0, so from s0 = 0 the
    run stalls near (phi_3^2 + phi_5^2)/2 + tail/2, not phi_3^2/2 + tail/2."""
    model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)+h(4,z)", "tanh(z)", K=6, eps=1e-6)
    learn = model.learnability()
    p = np.array(model.phi.coefficients)
    assert learn.sign_obstructed == (3,) and learn.unrepresentable == (5,)
    assert learn.floor == pytest.approx((p[3] ** 2 + p[5] ** 2 + model.phi.tail) / 2, rel=1e-12)
    tr = solve(model, initial_condition(60), 20.0, progress=False)
    assert tr.risk[-1] == pytest.approx(learn.floor, rel=0.05)
    assert abs(tr.risk[-1] - (p[3] ** 2 + model.phi.tail) / 2) > 0.1 * learn.floor
