"""The relu back end (docs/committee.md): closed-form pair kernels (arc-cosine) and exact orthant
moments for the SGD term, against SciPy's Genz integration and Monte Carlo; online SGD of a ReLU
committee against its ODE; the command line on a ReLU committee."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from odehild.codegen import compile_model
from odehild.models.committee import CommitteeModel, random_weights, solve_committee

from test_committee import monte_carlo, random_cov, upper


def relu(x):
    return np.maximum(x, 0.0)


def step(x):
    return (x > 0) * 1.0


@pytest.fixture(scope="module")
def relu_module():
    model = CommitteeModel("relu(z)", "2*relu(z)")
    assert model.backend == "relu"
    return compile_model(model)


@pytest.mark.parametrize("nearly_singular", [False, True])
def test_orthant_probability_against_genz(rng, relu_module, nearly_singular):
    for _ in range(3):
        C = random_cov(rng, 4, nearly_singular)
        ref = multivariate_normal.cdf(np.zeros(4), np.zeros(4), C, abseps=1e-12, releps=1e-12, maxpts=10**7)
        assert relu_module.orthant_probability(C, np.ones(4, np.int64)) == pytest.approx(ref, abs=2e-8)


@pytest.mark.parametrize("nearly_singular", [False, True])
def test_relu_kernels_against_monte_carlo(rng, relu_module, nearly_singular):
    cm = relu_module
    C = random_cov(rng, 4, nearly_singular)
    two = lambda x: 2 * relu(x)
    for value, fns, sub in ((cm.P_sp(C[0, 0], C[1, 1], C[0, 1])[0], [relu, two], C[:2, :2]),
                            (cm.J2(C[0, 0], C[1, 1], C[0, 1])[0], [step, step], C[:2, :2]),
                            (cm.E4_sp(*upper(C))[0], [step, step, relu, two], C),
                            (cm.E4_pp(*upper(C))[0], [step, step, two, two], C)):
        mean, err = monte_carlo(sub, fns, rng)
        assert abs(value - mean) < 5 * err, (value, mean, err)
    # the same field twice, as the SGD term passes it (W_ii, and x3 = x1): merged exactly
    idx = [0, 0, 1, 0]
    Cd = C[np.ix_(idx, idx)]
    mean, err = monte_carlo(Cd, [step, step, relu, relu], rng)
    assert abs(cm.E4_ss(*upper(Cd))[0] - mean) < 5 * err
    # on the diagonal the pair kernels are E[relu(u)^2] = a/2 and E[step(u)^2] = 1/2
    assert cm.P_ss(1.7, 1.7, 1.7)[0] == pytest.approx(0.85) and cm.J2(1.7, 1.7, 1.7)[0] == pytest.approx(0.5)


def test_relu_committee_sgd_follows_its_ode_and_not_the_gradient_flow():
    """K = M = 2, lr = 1, from a start already partly aligned with the teacher (a start near the
    symmetric plateau leaves it at a time set by the SGD noise itself, at every d)."""
    from odehild.simulate.committee import committee_distance, simulate_committee

    model, flow = CommitteeModel("relu(z)", "relu(z)"), CommitteeModel("relu(z)", "relu(z)", dynamics="gf")
    dist, gf = {}, {}
    for d in (500, 2000):
        dist[d], gf[d] = [], []
        for seed in range(2):
            W, Ws = random_weights(2, 2, d, scale=0.5, seed=seed)
            sim = simulate_committee(model, 2, 2, d, lr=1.0, alpha_end=30, points=30, seed=seed,
                                     weights=(W + 0.3 * Ws, Ws))
            for m, out in ((model, dist[d]), (flow, gf[d])):
                out.append(committee_distance(solve_committee(m, sim.init, 30, lr=1.0, t_eval=sim.t), sim)["risk_sup"])
    assert np.mean(dist[2000]) < 0.7 * np.mean(dist[500]) and np.mean(dist[2000]) < 0.012
    assert np.mean(gf[2000]) > 5 * np.mean(dist[2000])


def test_command_line_relu_committee_plateau_and_specialisation(tmp_path, monkeypatch, capsys):
    from odehild.cli import main
    from odehild.models.committee import CommitteeInit, CommitteeTrajectory

    monkeypatch.chdir(tmp_path)
    CommitteeInit(0.2 * np.eye(2), 1e-3 * np.array([[1.0, -0.5], [0.3, 0.8]]), np.eye(2), np.ones(2),
                  np.ones(2)).save("IC.npz")
    assert main(["solve", "--model", "committee", "--sigma", "relu(z)", "--phi", "relu(z)", "--init", "IC.npz",
                 "--lr", "0.5", "--t-end", "1000", "--quiet", "--out", "c.npz"]) == 0
    out = capsys.readouterr().out
    assert "relu back end" in out and "specialisation" in out
    traj = CommitteeTrajectory.load("c.npz")
    assert traj.meta["analysis"]["specialisation_time"] < 1000
    assert traj.risk[-1] < 1e-6 and np.allclose(np.sort(traj.R[-1].ravel()), [0, 0, 1, 1], atol=1e-3)
    assert main(["plot", "c.npz", "-o", "c.png"]) == 0


def test_relu_back_end_is_selectable_on_the_command_line(tmp_path, monkeypatch):
    from odehild.cli import main
    from odehild.simulate.committee import CommitteeSimulation

    monkeypatch.chdir(tmp_path)
    assert main(["simulate", "--model", "committee", "--sigma", "relu(z)", "--phi", "relu(z)", "--backend", "relu",
                 "--width", "2", "--teacher-width", "2", "--dim", "200", "--lr", "0.5", "--t-end", "2", "--quiet",
                 "--out", "s.npz"]) == 0
    assert CommitteeSimulation.load("s.npz").meta["backend"] == "relu"
