"""Solved trajectories against exact facts of docs/model.md (sections 2 and 5)."""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from helpers import break_rhs_after, meanfield_rhs, meanfield_risk, weight_space_rhs
from odehild import InputError, IntegrationError
from odehild.solve import InitialCondition, Trajectory, initial_condition, solve
from odehild.solve.analysis import find_plateaus, learning_times
from odehild.models.finite_width import FiniteWidthModel
from odehild.models.meanfield import MeanFieldModel

STAIR = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")


def test_finite_width_ode_equals_weight_space_flow(rng):
    """Overlap ODE (2a) against the projected gradient flow of the weights in R^d."""
    m, d, eps = 4, 12, 0.2
    model = FiniteWidthModel(*STAIR, K=3, eps=eps)
    sig, phi = model.sigma.coefficients, model.phi.coefficients
    U = rng.normal(size=(m + 1, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    ustar, W0 = U[0], U[1:]
    a0 = rng.normal(size=m)

    def f(t, y):
        a, W = y[:m], y[m:].reshape(m, d)
        da, dW = weight_space_rhs(a, W, ustar, sig, phi, eps)
        return np.concatenate([da, dW.ravel()])

    t_eval = np.linspace(0, 2.0, 21)
    ref = solve_ivp(f, (0, 2.0), np.concatenate([a0, W0.ravel()]), t_eval=t_eval, rtol=1e-11, atol=1e-12,
                    method="DOP853")
    Wt = ref.y[m:].T.reshape(-1, m, d)
    s_ref = Wt @ ustar
    R_ref = np.einsum("tid,tjd->tij", Wt, Wt)
    tr = solve(model, InitialCondition(a0, W0 @ ustar, None, W0 @ W0.T), 2.0, t_eval=t_eval,
               rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(tr.a, ref.y[:m].T, atol=1e-7)
    np.testing.assert_allclose(tr.s, s_ref, atol=1e-7)
    np.testing.assert_allclose(tr.r, R_ref, atol=1e-7)
    # r_ii stays 1 in the weights' flow: the projection keeps |u_i| = 1
    np.testing.assert_allclose(np.einsum("tii->ti", R_ref), 1.0, atol=1e-8)
    assert np.all(np.diff(tr.risk) <= 1e-10)


@pytest.fixture(scope="module")
def stair_traj():
    model = MeanFieldModel(*STAIR, K=3, eps=1e-2)
    return model, solve(model, initial_condition(40), 20.0, points=400, rtol=1e-10, atol=1e-12)


def test_risk_matches_moment_formula_and_is_monotone(stair_traj):
    model, tr = stair_traj
    for i in range(0, len(tr), 37):
        assert tr.risk[i] == pytest.approx(meanfield_risk(tr.a[i], tr.s[i], tr.weights,
                                                          model.sigma.coefficients, model.phi.coefficients), abs=1e-13)
    assert np.all(np.diff(tr.risk) <= 1e-12)
    assert tr.risk[-1] < 1e-3 < 1.4 < tr.risk[0]


def test_energy_identity(stair_traj):
    """dR/dt = -(1/eps) sum w F(s)^2 - sum w (1 - s^2) a^2 F'(s)^2, with dR/dt by the chain rule
    dR/dt = sum_j w_j (dR/da_j * da_j/dt + ...) evaluated independently from the risk's slope."""
    model, tr = stair_traj
    eps, w = model.eps, tr.weights
    sig, phi = model.sigma.coefficients, model.phi.coefficients
    for i in range(40, len(tr) - 40, 25):
        da, ds = meanfield_rhs(tr.a[i], tr.s[i], w, sig, phi, eps)
        one_minus_s2 = 1 - tr.s[i] ** 2  # 0 for particles aligned to rounding: ds = 0 there too
        identity = -eps * np.sum(w * da**2) - np.sum(w * np.divide(ds**2, one_minus_s2, out=np.zeros_like(ds),
                                                                      where=one_minus_s2 > 0))
        # independent: central difference of R along the exact flow direction
        h = 1e-7 * tr.t[i]
        Rp = meanfield_risk(tr.a[i] + h * da, tr.s[i] + h * ds, w, sig, phi)
        Rm = meanfield_risk(tr.a[i] - h * da, tr.s[i] - h * ds, w, sig, phi)
        assert (Rp - Rm) / (2 * h) == pytest.approx(identity, rel=1e-5, abs=1e-10)
        assert identity <= 0


def test_phase_zero_closed_form_and_invariance_of_s_zero():
    """phi_1 = 0 with s(0) = 0: s stays 0 and M_0 relaxes exponentially on the time scale eps."""
    eps = 1e-6
    model = MeanFieldModel("0.5 + h(1,z) + h(2,z)", "0.8 + h(2,z)", K=3, eps=eps)
    init = initial_condition(30)
    init.a0 = init.a0 + 0.3  # M_0(0) = 0.3
    tr = solve(model, init, 1e-4, points=120, rtol=1e-10, atol=1e-13)
    assert np.max(np.abs(tr.s)) == 0.0
    s0, p0 = 0.5, 0.8
    M0 = p0 / s0 + (0.3 - p0 / s0) * np.exp(-s0**2 * tr.t / eps)
    np.testing.assert_allclose(tr.moments[:, 0], M0, rtol=1e-7, atol=1e-9)
    assert np.isnan(learning_times(tr.t, tr.residuals)[2])  # degree 2 is never learned


def test_tightening_rtol_changes_solution_by_less_than_promised():
    model = MeanFieldModel(*STAIR, K=3, eps=1e-4)
    init = initial_condition(50)
    loose = solve(model, init, 5.0, rtol=1e-6, atol=1e-9)
    tight = solve(model, init, 5.0, rtol=1e-11, atol=1e-13)
    # away from the fast drops (where a shift in time gives O(1) differences), the risk agrees
    flat = np.zeros(len(tight), bool)
    for p in find_plateaus(tight.t, tight.risk):
        flat |= (tight.t >= p.t_start) & (tight.t <= p.t_end)
    err = np.abs(loose.risk - tight.risk)[flat]
    assert err.max() < 1e-4
    lt_l, lt_t = learning_times(loose.t, loose.residuals), learning_times(tight.t, tight.residuals)
    ok = np.isfinite(lt_t)
    np.testing.assert_allclose(lt_l[ok], lt_t[ok], rtol=1e-3)


def test_a_state_at_rest_whose_error_is_exactly_zero_is_integrated():
    """sigma_0 = 0 and s(0) = 0 with symmetric a(0): the moments are sums that cancel exactly, the
    state is at rest and Radau's error estimate is exactly 0. The step then grows by its largest
    factor (a Python float 0.0 ** -0.25 had raised ZeroDivisionError at t = 0)."""
    from odehild.solve.radau import MAX_FACTOR, CompiledRadau

    assert CompiledRadau._predict_factor(1e-3, 1e-3, 0.0, 0.5) == np.inf
    model = MeanFieldModel("tanh(z)", "He(2,z)+He(3,z)", K=3, eps=1e-4)
    tr = solve(model, initial_condition(20), 5.0, points=21, progress=False)
    assert tr.stats["status"] == 0 and np.all(tr.s == 0.0) and np.all(tr.moments == 0.0)
    assert tr.stats["nsteps"] < np.log(5.0 / 1e-6) / np.log(MAX_FACTOR) + 5


def test_plateaus_and_degree_order_at_small_eps():
    model = MeanFieldModel(*STAIR, K=3, eps=1e-10)
    tr = solve(model, initial_condition(60), 5.0)
    lt = learning_times(tr.t, tr.residuals)
    assert np.isnan(lt[0])  # r_0(0) = 0: nothing to learn
    assert lt[1] < lt[2] < lt[3]  # canonical learning order
    levels = [p.level for p in find_plateaus(tr.t, tr.risk)]
    assert levels[0] == pytest.approx(1.5, abs=1e-3)
    assert any(abs(lv - 1.0) < 0.01 for lv in levels)


def test_save_load_round_trip(stair_traj, tmp_path):
    _, tr = stair_traj
    path = tr.save(tmp_path / "traj.npz")
    back = Trajectory.load(path)
    for k in ("t", "a", "s", "risk", "moments", "residuals", "weights"):
        np.testing.assert_array_equal(getattr(back, k), getattr(tr, k))
    assert back.meta["eps"] == tr.meta["eps"] and back.stats["nfev"] == tr.stats["nfev"]
    assert not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("kw, needle", [
    (dict(eps=0), "eps"), (dict(eps=-1), "eps"), (dict(eps=float("nan")), "eps"),
    (dict(K=0), "K"), (dict(K=2.5), "K"),
])
def test_bad_model_arguments(kw, needle):
    args = dict(sigma=STAIR[0], phi=STAIR[1], K=3, eps=1e-3) | kw
    with pytest.raises(InputError, match=needle):
        MeanFieldModel(**args)


@pytest.mark.parametrize("a0, s0, needle", [
    ([np.nan, 1.0], [0, 0], "a0"), ([1.0, 1.0], [0, np.inf], "s0"), ([1.0, 2.0], [0, 1.5], r"\|s\| <= 1"),
    ([1.0], [0.0, 0.0], "same shape"),
])
def test_bad_initial_conditions(a0, s0, needle):
    with pytest.raises(InputError, match=needle):
        InitialCondition(a0, s0, None)


@pytest.mark.parametrize("kw, needle", [
    (dict(t_end=0), "t_end"), (dict(t_end=-3), "t_end"), (dict(method="Euler"), "Euler"),
    (dict(rtol=0), "rtol"),
])
def test_bad_solve_arguments(kw, needle):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-3)
    with pytest.raises(InputError, match=needle):
        solve(model, initial_condition(4), **({"t_end": 1.0} | kw))


def test_failed_integration_keeps_partial_trajectory(monkeypatch):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-3)
    break_rhs_after(monkeypatch, model, 0.01)
    with pytest.raises(IntegrationError) as err:
        solve(model, initial_condition(10), 1.0)
    e = err.value
    assert 0.005 < e.t_fail <= 0.02
    assert "t = " in str(e) and set(e.state) == {"a", "s"} and e.state["s"].shape == (10,)
    assert len(e.partial) > 10 and e.partial.t[-1] <= e.t_fail


def test_max_wall_stops_and_keeps_output():
    model = MeanFieldModel(*STAIR, K=3, eps=1e-3)
    tr = solve(model, initial_condition(10), 5.0, method="RK45", max_wall=0.05)
    assert tr.stats["status"] == 2 and tr.stats["t_reached"] < 5.0
    assert len(tr) >= 1


def test_float32_output_keeps_moments_and_risk_of_the_float64_run(tmp_path):
    """output_precision="float32": a and s in single precision, rounded from the float64 run's
    (within 2 ulp of float32); moments, residuals and risk taken from the solver's float64 state,
    equal to the float64 run's (computed afterwards from its whole output) to the last bit."""
    model = MeanFieldModel(*STAIR, K=3, eps=1e-6)
    init = initial_condition(60)
    full = solve(model, init, 5.0, points=80, progress=False)
    half = solve(model, init, 5.0, points=80, progress=False, output_precision="float32")
    assert half.a.dtype == half.s.dtype == np.float32 and half.moments.dtype == np.float64
    assert half.meta["output_precision"] == "float32" and full.meta["output_precision"] == "float64"
    for k in ("t", "moments", "residuals", "risk"):
        np.testing.assert_array_equal(getattr(half, k), getattr(full, k))
    ulp = np.finfo(np.float32).eps
    for k in ("a", "s"):
        x, x32 = getattr(full, k), getattr(half, k)
        assert np.all(np.abs(x32 - x) <= 2 * ulp * np.maximum(np.abs(x), np.finfo(np.float32).tiny))
    back = Trajectory.load(half.save(tmp_path / "half.npz"))
    assert back.a.dtype == np.float32 and back.meta["output_precision"] == "float32"
    np.testing.assert_array_equal(back.s, half.s)
    with pytest.raises(InputError, match="float16.*allowed: float64, float32"):
        solve(model, init, 1.0, output_precision="float16")


def test_float32_output_of_a_failed_run_keeps_its_observables(monkeypatch):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-3)
    break_rhs_after(monkeypatch, model, 0.01)
    with pytest.raises(IntegrationError) as err:
        solve(model, initial_condition(10), 1.0, output_precision="float32")
    part = err.value.partial
    assert len(part) > 10 and part.s.dtype == np.float32
    assert part.moments.shape == (len(part), 4) and part.risk.shape == (len(part),)
    np.testing.assert_allclose(part.risk[:3], part.risk[0], rtol=1e-3)  # still near R(0) early on


def test_a_particle_that_reaches_unit_overlap_can_leave_it():
    """A tail particle (a0 = 8, weight 2e-16: a test particle in the field of the others) is driven
    to s = 1 within rounding and later back to s ~ 0.34. Independent check: the same test particle
    integrated alone in (a, s) through a spline of the computed field F. The old state (a, s) kept
    it pinned at s = 1 and took 3.7e5 steps; the state u = artanh(s) does not."""
    from scipy.interpolate import CubicSpline

    eps = 1e-6
    model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)+h(4,z)", "h(3,z)+h(2,z)", K=4, eps=eps)
    base = initial_condition(40)
    s0 = 1e-2 * np.random.default_rng(0).standard_normal(40)
    tr = solve(model, InitialCondition(base.a0, s0, base.weights), 5.0, points=1500, progress=False)
    assert tr.stats["nsteps"] < 2e4
    j = int(np.argmax(base.a0))
    assert base.weights[j] < 1e-15
    assert tr.s[:, j].max() > 1 - 1e-12 and tr.s[-1, j] < 0.5
    field = CubicSpline(np.log(tr.t[1:]), np.asarray(model.sigma.coefficients) * tr.residuals[1:], axis=0)
    P = np.polynomial.polynomial

    # the reference moves u = artanh(s) too: in (a, s) its LSODA overshoots s = 1 by rounding and
    # diverges (seen after a 1e-9 change of the field)
    def test_particle(t, y):
        c = field(np.log(t))
        s = np.tanh(y[1])
        return [P.polyval(s, c) / eps, y[0] * P.polyval(s, P.polyder(c))]

    ref = solve_ivp(test_particle, (tr.t[1], tr.t[-1]), [tr.a[1, j], np.arctanh(tr.s[1, j])], method="LSODA",
                    rtol=1e-12, atol=1e-14, t_eval=tr.t[-100:])
    s_ref = np.tanh(ref.y[1])
    assert s_ref.max() < 0.6  # back from s = 1 in the reference too
    np.testing.assert_allclose(tr.s[-100:, j], s_ref, atol=1e-6)
