"""The model-kind contract: one registration per kind, the name-to-slot state map, and a solve stage
that sees only an OdeProblem (a kind written here, outside the package, integrates through it)."""

import types

import numpy as np
import pytest
from scipy.linalg import expm

from odehild import InputError, IntegrationError
from odehild.models import ModelKind, cli_names, kind_for_cli, kind_of_result, kinds, register
from odehild.solve import solve
from odehild.solve.integrate import OdeProblem
from odehild.solve.state import Block, StateMap


def test_every_kind_module_registers_one_kind_under_its_module_name():
    found = kinds()
    assert sorted(c.cli_name for c in found.values()) == cli_names() == [
        "committee", "finite-width", "meanfield", "multi-index"]
    for name, cls in found.items():
        assert cls.kind == name and kind_for_cli(cls.cli_name) is cls
        assert cls.__module__ == "odehild.models." + cls.cli_name.replace("-", "_")
        assert kind_of_result({"model": name}) is cls
    # files of other writers are read as founding-model trajectories, whose loader names the problem
    assert kind_of_result({"model": "simulation"}) is found["meanfield"]
    with pytest.raises(InputError, match="allowed: committee, finite-width, meanfield"):
        kind_for_cli("staircase")


def test_register_refuses_a_kind_outside_its_home_and_a_reused_name():
    class Elsewhere(ModelKind):
        kind, cli_name = "elsewhere", "elsewhere"

    with pytest.raises(TypeError, match="lives in odehild.models.elsewhere"):
        register(Elsewhere)
    with pytest.raises(TypeError):
        register(type("NotAKind", (), {"kind": "x", "cli_name": "x"}))


def test_state_map_round_trip_and_layouts(rng):
    K, M, m = 3, 2, 4
    A = rng.normal(size=(K, K))
    Q = A @ A.T
    R = rng.normal(size=(K, M))
    r = np.corrcoef(rng.normal(size=(m, 10)))
    s = np.array([-1.0, -0.3, 0.0, 0.999])
    smap = StateMap(Block("Q", (K, K), "upper"), Block("R", (K, M)), Block("r", (m, m), "offdiag"),
                    Block("s", (m,), chart="artanh"))
    assert smap.size == 6 + 6 + 6 + 4
    y = smap.pack({"Q": Q, "R": R, "r": r, "s": s})
    assert y.shape == (smap.size,)
    np.testing.assert_array_equal(y[:6], Q[np.triu_indices(K)])  # upper triangle, row-major
    np.testing.assert_array_equal(y[12:18], r[np.triu_indices(m, 1)])
    back = smap.unpack(y)
    np.testing.assert_allclose(back["Q"], Q, rtol=1e-15)
    np.testing.assert_array_equal(back["R"], R)
    np.testing.assert_allclose(back["r"], r, rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(back["s"], s, rtol=1e-12)  # -1 is kept as the u whose tanh rounds to -1
    Y = np.stack([y, 2 * y])  # time on the first axis
    series = smap.unpack(Y)
    assert series["Q"].shape == (2, K, K) and series["r"].shape == (2, m, m)
    np.testing.assert_allclose(series["Q"][1], 2 * Q, rtol=1e-15)
    assert "|Q| max" in smap.describe(y) and "|s| max = 1" in smap.describe(y)
    with pytest.raises(InputError, match=r"R must have shape \(3, 2\)"):
        smap.pack({"Q": Q, "R": R.T, "r": r, "s": s})


class LinearDecay(ModelKind):
    """dx/dt = -B x with x an (n, n) symmetric matrix stored as its upper triangle: a kind written
    outside the package, through the contract alone."""

    kind = "linear"
    default_t_end = 1.0

    def __init__(self, B, blow_up_after=None):
        self.B, self.blow_up_after = B, blow_up_after

    def problem(self, init):
        n = self.B.shape[0]
        state = StateMap(Block("x", (n, n), "upper"))
        L = np.kron(self.B, np.eye(n)) + np.kron(np.eye(n), self.B)  # d vec(X)/dt for dX/dt = -(B X + X B)
        iu = np.triu_indices(n)
        flat = np.ravel_multi_index(iu, (n, n))

        def full(y):
            X = np.zeros((n, n))
            X[iu] = y
            return X + np.triu(X, 1).T

        def rhs(t, y, out):
            out[:] = -(L @ full(y).ravel())[flat]
            if self.blow_up_after is not None and t > self.blow_up_after:
                out[:] = np.nan

        def jac(t, y, J):
            for k in range(y.size):
                e = np.zeros(y.size)
                e[k] = 1.0
                d = np.empty(y.size)
                rhs(0.0, e, d)
                J[:, k] = d

        compiled = types.SimpleNamespace(derive_seconds=0.0, from_cache=True)
        return OdeProblem(state.pack({"x": init}), state, rhs, jac, compiled, {"model": self.kind})

    def result(self, problem, t, Y, stats, meta):
        return LinearResult(t, problem.state.unpack(Y)["x"], stats, meta)


class LinearResult(types.SimpleNamespace):
    def __init__(self, t, x, stats, meta):
        super().__init__(t=t, x=x, stats=stats, meta=meta)

    def __len__(self):
        return self.t.size


@pytest.mark.parametrize("method", ["Radau", "BDF", "LSODA"])
def test_a_kind_outside_the_package_solves_through_the_contract(rng, method):
    """X(t) = e^(-Bt) X0 e^(-Bt) for dX/dt = -(B X + X B), against SciPy's matrix exponential."""
    A = rng.normal(size=(3, 3))
    B = A @ A.T / 3 + np.eye(3)
    X0 = np.cov(rng.normal(size=(3, 8)))
    res = solve(LinearDecay(B), X0, 2.0, points=20, method=method, rtol=1e-10, atol=1e-12)
    for t, X in zip(res.t, res.x):
        E = expm(-B * t)
        np.testing.assert_allclose(X, E @ X0 @ E, rtol=1e-6, atol=1e-9)
    assert res.meta["model"] == "linear" and res.meta["method"] == method and res.stats["nsteps"] > 0


def test_a_failed_solve_reports_the_named_state_and_keeps_the_partial_result(rng):
    B = np.eye(2)
    with pytest.raises(IntegrationError) as err:
        solve(LinearDecay(B, blow_up_after=0.3), np.eye(2), 1.0, points=30)
    e = err.value
    assert 0.2 < e.t_fail <= 0.4 and "|x| max" in str(e) and e.state["x"].shape == (2, 2)
    assert len(e.partial) > 5 and e.partial.t[-1] <= e.t_fail


def test_solve_refuses_what_is_not_a_model_kind():
    with pytest.raises(InputError, match="MeanFieldModel"):
        solve(object(), None, 1.0)


def test_finite_width_start_without_overlaps_is_orthogonal_neurons():
    from odehild.models import FiniteWidthModel
    from odehild.solve import InitialCondition

    model = FiniteWidthModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=0.05)
    a0, s0 = np.array([0.5, -1.0, 1.5]), np.array([0.1, 0.0, -0.2])
    bare = solve(model, InitialCondition(a0, s0, None), 1.0, points=10)
    given = solve(model, InitialCondition(a0, s0, None, np.eye(3)), 1.0, points=10)
    np.testing.assert_array_equal(bare.r[0], np.eye(3))
    np.testing.assert_allclose(bare.risk, given.risk, rtol=1e-12)
