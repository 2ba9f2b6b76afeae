"""Woodbury solves of the structured mean-field Jacobian against dense linear algebra."""

import numpy as np
import pytest

from odehild.codegen import compile_model
from odehild.solve import initial_condition, solve
from odehild.solve.structured import IterationMatrix, LowRankJacobian, ShiftedIdentity, WoodburyFactor
from odehild.models.meanfield import MeanFieldModel

STAIR = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")


def parts(model, rng, N):
    c = compile_model(model)
    y = np.concatenate([rng.normal(size=N) * 2, rng.uniform(-0.9, 0.9, size=N)])
    w = rng.uniform(0.5, 1.5, size=N)
    w /= w.sum()
    r = model.K + 1
    D, A, Vt = np.empty((N, 2, 2)), np.empty((2 * N, r)), np.empty((r, 2 * N))
    c.jac_parts(0.0, y, w, 1 / model.eps, D, A, Vt)
    J = np.empty((2 * N, 2 * N))
    c.jac(0.0, y, w, 1 / model.eps, J)
    return LowRankJacobian(D, A, Vt), J


@pytest.mark.parametrize("model", [MeanFieldModel(*STAIR, K=3, eps=1e-8),
                                   MeanFieldModel("relu(z)", "tanh(z)", K=6, eps=0.3)])
def test_woodbury_solves_match_dense(model, rng):
    N = 30
    Js, J = parts(model, rng, N)
    np.testing.assert_allclose(Js.toarray(), J, rtol=1e-13, atol=1e-13 * np.abs(J).max())
    I = ShiftedIdentity()

    def check(x, Mdense):
        # normwise backward error (the dense solve itself is only this good when M is ill-conditioned)
        ref = np.linalg.solve(Mdense, b)
        berr = np.linalg.norm(Mdense @ x - b) / (np.linalg.norm(Mdense, 2) * np.linalg.norm(x) + np.linalg.norm(b))
        assert berr < 1e-13
        cond = np.linalg.cond(Mdense)
        np.testing.assert_allclose(x, ref, atol=1e-13 * cond * np.linalg.norm(ref))

    b = rng.normal(size=2 * N)
    # Radau's two iteration matrices (real and complex shift) and BDF's I - c J
    for h in (1e-10, 1e-4, 1.0):
        for mu in (3.6378, 2.6811 + 3.0504j):
            M = mu / h * I - Js
            assert isinstance(M, IterationMatrix)
            check(WoodburyFactor(M).solve(b.astype(complex) if isinstance(mu, complex) else b),
                  mu / h * np.eye(2 * N) - J)
        check(WoodburyFactor(I - (h / 1.5) * Js).solve(b), np.eye(2 * N) - (h / 1.5) * J)


def test_singular_block_falls_back_to_dense(rng):
    N, r = 6, 2
    D = rng.normal(size=(4, N))
    D[:, 0] = [1.0, 2.0, 0.5, 1.0]  # shift 2: block [[1, -2], [-0.5, 1]] is singular
    D = np.ascontiguousarray(D.T.reshape(N, 2, 2))  # rows aa, as, sa, ss -> one block per particle
    Js = LowRankJacobian(D, rng.normal(size=(2 * N, r)), rng.normal(size=(r, 2 * N)))
    F = WoodburyFactor(2.0 * ShiftedIdentity() - Js)
    assert F.dense is not None
    b = rng.normal(size=2 * N)
    np.testing.assert_allclose(F.solve(b), np.linalg.solve(2.0 * np.eye(2 * N) - Js.toarray(), b), rtol=1e-9)


@pytest.mark.parametrize("method", ["Radau", "BDF"])
def test_structured_solve_equals_dense_solve(method):
    model = MeanFieldModel(*STAIR, K=3, eps=1e-8)
    init = initial_condition(50)
    a = solve(model, init, 5.0, method=method, rtol=1e-9, atol=1e-11)
    b = solve(model, init, 5.0, method=method, rtol=1e-9, atol=1e-11, structured=False)
    assert a.meta["structured"] and not b.meta["structured"]
    assert a.stats["nlu"] > 0 and a.stats["njev"] > 0
    np.testing.assert_allclose(a.risk, b.risk, atol=1e-6)
    np.testing.assert_allclose(a.s, b.s, atol=1e-6)


def test_compiled_radau_solves_a_linear_low_rank_system_exactly(rng):
    """y' = (D + A Vt) y has the solution expm(J t) y0: the compiled Radau's steps and its dense
    output against SciPy's matrix exponential."""
    from scipy.linalg import expm

    from odehild.solve.radau import CompiledRadau

    N, r = 20, 3
    D = np.empty((N, 2, 2))
    D[:, 0, 0] = -rng.uniform(1e2, 1e4, N)  # a stiff fast component, as the fast second layer
    D[:, 0, 1] = rng.normal(size=N)
    D[:, 1, 0] = rng.normal(size=N)
    D[:, 1, 1] = -rng.uniform(0.1, 1.0, N)
    A, Vt = 0.1 * rng.normal(size=(2 * N, r)), 0.1 * rng.normal(size=(r, 2 * N))
    J = LowRankJacobian(D, A, Vt)
    Jd = J.toarray()
    y0 = rng.normal(size=2 * N)

    def rhs(t, y, out):
        out[:] = Jd @ y

    solver = CompiledRadau(rhs, 0.0, y0, 3.0, jac=lambda t, y: J, rtol=1e-10, atol=1e-12)
    checked = 0
    while solver.status == "running":
        solver.step()
        np.testing.assert_allclose(solver.y, expm(Jd * solver.t) @ y0, rtol=0, atol=1e-8)
        tm = 0.5 * (solver.t_old + solver.t)
        np.testing.assert_allclose(solver.dense_output()(tm), expm(Jd * tm) @ y0, rtol=0, atol=1e-7)
        checked += 1
    assert solver.status == "finished" and checked > 10
    assert solver.nlu > 0 and solver.njev >= 1 and solver.nfev > 3 * checked


def test_compiled_radau_takes_scipys_steps():
    """The same method and step-size control as SciPy's Radau (with the same Woodbury solves): the
    step counts agree within 1% and the risk curves to the tolerance."""
    from odehild.solve import integrate

    model = MeanFieldModel(*STAIR, K=3, eps=1e-8)
    init = initial_condition(60)
    runs = {}
    try:
        for engine in ("scipy", "compiled"):
            integrate.STRUCTURED_RADAU = engine
            runs[engine] = solve(model, init, 5.0, rtol=1e-8, atol=1e-10, progress=False)
    finally:
        integrate.STRUCTURED_RADAU = "compiled"
    a, b = runs["scipy"], runs["compiled"]
    assert a.stats["nsteps"] > 100
    assert abs(a.stats["nsteps"] - b.stats["nsteps"]) <= 0.01 * a.stats["nsteps"]
    np.testing.assert_allclose(a.risk, b.risk, atol=1e-7)
