"""The sphere geometry of the committee family (docs/committee.md): the Hermite back end against
Isserlis moments, closed forms and Monte Carlo; the projected flow against Monte Carlo of the spec's
section 3 formulas and finite differences; the founding model's member at gamma = 0 against the
finite-width overlap ODE of docs/model.md 2a; online SGD at fixed gamma against the gamma-ODE."""

import math

import numpy as np
import pytest
import sympy as sp

from odehild import InputError
from odehild.codegen import compile_model
from odehild.models.committee import CommitteeInit, CommitteeModel, overlaps, pack, solve_committee
from odehild.models.finite_width import solve_finite_width
from odehild.symbolic.committee import C4_SYMS, EDGE_SLOTS, _cov4, four_point_table, polynomial_expectation
from odehild.symbolic.parse import z

from test_committee import ERF, check_jacobian, field_samples, monte_carlo, upper

SIGMA_FW, PHI_FW = "h(0,z) + h(1,z) + 0.5*h(2,z)", "h(1,z) + 0.5*h(2,z)"  # spec section 3


def random_correlation(rng, n, d=12):
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X @ X.T


def sphere_state(rng, K, M, d=30):
    W, Ws = rng.normal(size=(K, d)), rng.normal(size=(M, d))
    W *= np.sqrt(d) / np.linalg.norm(W, axis=1, keepdims=True)
    Ws *= np.sqrt(d) / np.linalg.norm(Ws, axis=1, keepdims=True)
    return overlaps(W, Ws, rng.normal(size=K), rng.normal(size=M))


def test_four_point_table_equals_isserlis_moments_of_the_truncated_series(rng):
    coeffs = [rng.normal(size=n) for n in (3, 4, 5, 4)]
    polys = [sp.expand(sum(float(c) * sp.hermite_prob(k, z) / sp.sqrt(sp.factorial(k)) for k, c in enumerate(cc)))
             for cc in coeffs]
    C = _cov4().subs({C4_SYMS[i]: 1 for i in (0, 4, 7, 9)})
    exact = polynomial_expectation(polys, C)
    table = four_point_table(coeffs)
    for _ in range(3):
        x = rng.uniform(-0.9, 0.9, 6)
        ref = float(exact.subs({C4_SYMS[s]: v for s, v in zip(EDGE_SLOTS, x)}))
        val = float(np.sum(table.coefficients * np.prod(x ** table.exponents, axis=1)))
        assert val == pytest.approx(ref, rel=1e-12, abs=1e-13)


def test_hermite_back_end_against_closed_forms_and_monte_carlo(rng):
    assert CommitteeModel("relu(z)", "relu(z)", geometry="sphere").backend == "relu"  # exact where it can be
    relu = CommitteeModel("relu(z)", "relu(z)", geometry="sphere", backend="hermite", kmax=10)
    cm = compile_model(relu)
    tails = relu.tails()
    for rho in (-0.6, 0.2, 0.9):
        theta = math.acos(rho)
        arc_cosine = (math.sin(theta) + (math.pi - theta) * rho) / (2 * math.pi)  # references.md
        # truncation error of sum_k c_k^2 rho^k is at most the tail of sigma
        assert abs(cm.P_ss(1.0, 1.0, rho)[0] - arc_cosine) <= tails["sigma"] + 1e-12
    # four-point kernel of a smooth activation: the series converges fast, Monte Carlo decides
    tanh = CommitteeModel("tanh(z)", "z + 0.5*z**2", geometry="sphere", kmax=11)
    ct = compile_model(tanh)
    s, ds = np.tanh, lambda x: 1 / np.cosh(x) ** 2
    for _ in range(2):
        C = random_correlation(rng, 4)
        mean, err = monte_carlo(C, [ds, ds, s, lambda x: x + 0.5 * x * x], rng)
        assert abs(ct.E4_sp(*upper(C))[0] - mean) < 5 * err + 2e-4
        mean, err = monte_carlo(C[:2, :2], [ds, ds], rng)
        assert abs(ct.J2(1.0, 1.0, C[0, 1])[0] - mean) < 5 * err + 2e-4


@pytest.mark.parametrize("sigma, phi", [(ERF, ERF), ("z + 0.3*z**2 - 0.2*z**3", "z**2 - 0.5*z")])
def test_projected_drift_equals_monte_carlo_of_the_spec_formulas(rng, sigma, phi):
    """Spec section 3 in the committee's units: dR_in = lr c v_i E[sigma'_i (rho_n - lambda_i R_in) e]
    - (lr^2 c^2 / 2) v_i^2 E[sigma'_i^2 e^2] R_in, and the matching formula for Q_ik."""
    K, M, lr, lr2, noise = 3, 2, 0.8, 0.4, 0.3
    model = CommitteeModel(sigma, phi, output="mean", geometry="sphere")
    cm = compile_model(model)
    init = sphere_state(rng, K, M)
    c, ct = 1 / K, 1 / M
    y = pack(init)
    dy = np.empty(y.size)
    cm.rhs_jac(y, K, M, init.T, init.A, lr, lr2, lr**2, noise**2, c, ct, True, False, dy, np.empty((1, 1)))
    fs, fds, lam, rho, e = field_samples(sigma, phi, init, c, ct, noise, rng)
    v, Q, R = init.v, init.Q, init.R
    W = lambda i, k: fds(lam[:, i]) * fds(lam[:, k]) * e**2
    samples = []
    for i in range(K):
        for k in range(i, K):
            if i == k:
                samples.append(np.zeros(1))
                continue
            samples.append(lr * c * (v[i] * fds(lam[:, i]) * (lam[:, k] - lam[:, i] * Q[i, k])
                                     + v[k] * fds(lam[:, k]) * (lam[:, i] - lam[:, k] * Q[i, k])) * e
                           + lr**2 * c**2 * (v[i] * v[k] * W(i, k)
                                             - 0.5 * (v[i]**2 * W(i, i) + v[k]**2 * W(k, k)) * Q[i, k]))
    for i in range(K):
        for m in range(M):
            samples.append(lr * c * v[i] * fds(lam[:, i]) * (rho[:, m] - lam[:, i] * R[i, m]) * e
                           - 0.5 * lr**2 * c**2 * v[i]**2 * W(i, i) * R[i, m])
    for i in range(K):
        samples.append(lr2 * c * fs(lam[:, i]) * e)
    mean = np.array([q.mean() for q in samples])
    err = np.array([q.std() / math.sqrt(q.size) for q in samples])
    assert np.all(np.abs(dy - mean) < 5 * err + 1e-12), np.c_[dy, mean, err]


@pytest.mark.parametrize("case", [(ERF, ERF, "auto"), ("z + 0.3*z**3", "z**2", "auto"),
                                  ("tanh(z)", "relu(z)", "hermite")])
def test_sphere_jacobian_against_finite_differences(rng, case):
    sigma, phi, backend = case
    cm = compile_model(CommitteeModel(sigma, phi, geometry="sphere", backend=backend, kmax=5))
    K, M = 3, 2
    init = sphere_state(rng, K, M)
    y = pack(init)
    args = (K, M, init.T, init.A, 0.7, 0.3, 0.49, 0.04, 1 / K, 1 / M, True)
    diag = [i * K - i * (i - 1) // 2 for i in range(K)]
    J, dy = check_jacobian(cm, y, args, fixed=diag)
    assert np.all(dy[diag] == 0) and np.all(J[diag] == 0)


def founding_start(rng, m, d):
    from odehild.solve.trajectory import InitialCondition

    U = rng.normal(size=(m, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    return InitialCondition(rng.normal(size=m), U[:, 0], None, U @ U.T)


def test_founding_member_at_gamma_zero_is_the_finite_width_ode(rng):
    from odehild.solve.integrate import solve
    from odehild.models.finite_width import FiniteWidthModel

    init = founding_start(rng, 5, 300)
    ref = solve(FiniteWidthModel(SIGMA_FW, PHI_FW, K=3, eps=0.05), init, 3.0, rtol=1e-10, atol=1e-12)
    for backend in ("polynomial", "hermite"):
        new = solve_finite_width(SIGMA_FW, PHI_FW, init, 0.05, 3.0, rtol=1e-10, atol=1e-12, backend=backend, kmax=3)
        assert np.allclose(new.t, ref.t)
        for name in ("a", "s", "r", "risk"):
            assert np.max(np.abs(getattr(new, name) - getattr(ref, name))) < 1e-8, (backend, name)
        assert np.allclose(np.diagonal(new.r, axis1=1, axis2=2), 1.0)


def sgd_distances(gamma, d, seeds, m=4, eps=0.05, t_end=3.0):
    """Sup risk distance of the founding model's online SGD (odehild.simulate.networks, an independent
    code) at lr = gamma/d to the gamma-ODE and to the gradient flow, from the run's own start."""
    from odehild.simulate.networks import online_sgd, random_start
    from odehild.solve.trajectory import InitialCondition

    to_gamma, to_gf = [], []
    for seed in seeds:
        sim = online_sgd(SIGMA_FW, PHI_FW, eps, m, d, lr=gamma / d, t_end=t_end, seed=seed, points=40)
        W, _ = random_start(m, d, seed, "normal")
        init = InitialCondition(sim.a[0], sim.s[0], None, W @ W.T)
        for g, out in ((gamma, to_gamma), (0.0, to_gf)):
            ode = solve_finite_width(SIGMA_FW, PHI_FW, init, eps, t_end, gamma=g, t_eval=sim.t)
            out.append(np.max(np.abs(ode.risk - sim.risk)))
    return np.mean(to_gamma), np.mean(to_gf)


def test_founding_sgd_at_fixed_gamma_follows_the_gamma_ode():
    """At gamma = 0.4 the gradient flow is 0.2 away from SGD in risk; the gamma-ODE is close and
    closer at larger d (spec section 3)."""
    small, gf_small = sgd_distances(0.4, 500, range(2))
    large, gf_large = sgd_distances(0.4, 4000, range(2))
    assert large < 0.6 * small
    assert large < 0.05 and gf_large > 4 * large, (large, gf_large)


@pytest.mark.slow
@pytest.mark.parametrize("gamma", [0.2, 0.4])
def test_founding_sgd_distance_slope_in_d(gamma):
    dims = (500, 1000, 2000, 4000, 8000)
    dist = [sgd_distances(gamma, d, range(4))[0] for d in dims]
    slope = np.polyfit(np.log(dims), np.log(dist), 1)[0]
    print(f"gamma = {gamma}: distances {np.round(dist, 4)}, slope {slope:.2f}")
    assert -0.9 < slope < -0.3


def test_committee_sgd_on_the_sphere_follows_the_ode():
    from odehild.simulate.committee import committee_distance, simulate_committee

    model = CommitteeModel(ERF, ERF, output="mean", geometry="sphere")
    sim = simulate_committee(model, 3, 2, 2000, lr=2.0, lr2=1.0, alpha_end=20, seed=0, v0=[1.0, -1.0, 0.5])
    assert np.allclose(np.diagonal(sim.Q, axis1=1, axis2=2), 1.0)
    traj = solve_committee(model, sim.init, 20, lr=2.0, lr2=1.0, t_eval=sim.t)
    assert committee_distance(traj, sim)["risk_sup"] < 4e-3
    assert sim.risk[0] - sim.risk[-1] > 0.1  # it learned


def test_sphere_declaration_errors():
    with pytest.raises(InputError, match="hermite expectation back end needs the sphere"):
        CommitteeModel("relu(z)", "relu(z)", backend="hermite")
    with pytest.raises(InputError, match="polynomial expectation back end needs"):
        CommitteeModel("tanh(z)", "relu(z)", backend="polynomial")
    with pytest.raises(InputError, match="relu expectation back end needs sigma and phi of the form"):
        CommitteeModel("relu(z)", "relu(-z)", backend="relu")
    with pytest.raises(InputError, match="kmax"):
        CommitteeModel("relu(z)", "relu(z)", geometry="sphere", kmax=0)
    init = CommitteeInit(2 * np.eye(2), np.zeros((2, 1)), np.eye(1), np.ones(2), np.ones(1))
    with pytest.raises(InputError, match="diagonal of initial Q must be 1"):
        solve_committee(CommitteeModel(ERF, ERF, geometry="sphere"), init, 1.0)
    from odehild.errors import ExpressionError

    with pytest.raises(ExpressionError, match="jump"):
        CommitteeModel("sign(z)", "z", geometry="sphere")


def test_specialisation_time_grows_like_log_of_the_initial_asymmetry():
    """Saad-Solla: leaving the symmetric plateau takes ln(1/delta0)/lambda_+ with lambda_+ the unstable
    eigenvalue there; lambda_+ from the generated Jacobian at the plateau state."""
    from odehild.solve.committee import committee_plateaus, specialisation_time

    model = CommitteeModel(ERF, ERF, dynamics="gf")
    times = []
    for delta in (1e-3, 1e-5):
        R0 = 1e-3 * np.ones((2, 2)) + delta * np.array([[1.0, -1.0], [-1.0, 1.0]])
        init = CommitteeInit(0.2 * np.eye(2), R0, np.eye(2), np.ones(2), np.ones(2))
        traj = solve_committee(model, init, 1e3, lr=1.0, points=2000, rtol=1e-10, atol=1e-12)
        times.append(specialisation_time(traj))
        plateaus = [p for p in committee_plateaus(traj) if p.kind == "symmetric"]
        assert len(plateaus) == 1 and plateaus[0].level == pytest.approx(0.011611, rel=0.03)
    # the published fixed point Q = 1/3, R = 1/sqrt(6) (references.md); the flow only approaches it
    # algebraically (two zero eigenvalues), hence the 10% tolerance on the asymptotic law
    y = pack(CommitteeInit(np.full((2, 2), 1 / 3), np.full((2, 2), 1 / math.sqrt(6)), np.eye(2), np.ones(2), np.ones(2)))
    J, dy = np.empty((y.size, y.size)), np.empty(y.size)
    compile_model(model).rhs_jac(y, 2, 2, np.eye(2), np.ones(2), 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, False, True, dy, J)
    assert np.max(np.abs(dy)) < 1e-14
    lam = np.max(np.linalg.eigvals(J).real)
    assert lam > 0
    assert times[1] - times[0] == pytest.approx(math.log(100) / lam, rel=0.1)


def test_command_line_finite_width_committee_simulation_and_compare(tmp_path, monkeypatch, capsys):
    import json

    from odehild.cli import main
    from odehild.solve import Trajectory

    monkeypatch.chdir(tmp_path)
    init = founding_start(np.random.default_rng(3), 4, 400)
    np.savez("ic.npz", a0=init.a0, s0=init.s0, r0=init.r0)
    args = ["solve", "--model", "finite-width", "--sigma", SIGMA_FW, "--phi", PHI_FW, "--eps", "0.05",
            "--init", "ic.npz", "--t-end", "3", "--quiet"]
    assert main(args + ["--gamma", "0.4", "--out", "g.npz"]) == 0
    assert main(args + ["--out", "f.npz"]) == 0
    g, f = Trajectory.load("g.npz"), Trajectory.load("f.npz")
    assert g.r.shape == (201, 4, 4) and g.meta["gamma"] == 0.4 and f.meta["gamma"] == 0.0
    assert abs(g.risk[-1] - f.risk[-1]) > 0.05  # the gamma terms matter at gamma = 0.4
    assert main(["plot", "g.npz", "-o", "g.png"]) == 0
    capsys.readouterr()
    assert main(args + ["--lr", "0.1", "--out", "x.npz"]) == 2
    assert "--lr does not apply to --model finite-width" in capsys.readouterr().err

    sim_args = ["simulate", "--model", "committee", "--sigma", ERF, "--phi", ERF, "--width", "2", "--teacher-width",
                "2", "--dim", "300", "--lr", "0.5", "--t-end", "20", "--seeds", "2", "--quiet"]
    assert main(sim_args + ["--ode", "ode.npz", "--out", "sim.npz"]) == 0
    assert main(["compare", "ode_seed0.npz", "sim_seed0.npz", "sim_seed1.npz", "--report", "r.json"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    per_seed = [row["risk_sup"] for row in report["per_seed"]]
    assert len(per_seed) == 2 and report["risk_sup_mean"] == pytest.approx(np.mean(per_seed))
    assert 0 < per_seed[0] < 0.05
    capsys.readouterr()
    assert main(sim_args + ["--eps", "0.1", "--out", "bad.npz"]) == 2
    assert "--eps does not apply to --model committee" in capsys.readouterr().err

    assert main(["simulate", "--model", "finite-width", "--sigma", SIGMA_FW, "--phi", PHI_FW, "--eps", "0.05",
                 "--width", "4", "--dim", "500", "--lr", str(0.4 / 500), "--t-end", "3", "--quiet",
                 "--ode", "fw.npz", "--out", "fs.npz"]) == 0
    ode = Trajectory.load("fw.npz")
    assert ode.meta["gamma"] == pytest.approx(0.4)
    assert "sup |risk_sim - risk_ode|" in capsys.readouterr().out


@pytest.mark.slow
def test_gamma_correlates_the_neurons_at_every_width():
    """Spec section 3's open question, measured: from the mean-field start (s = 0, r = I), the
    overlaps q_ij = r_ij - s_i s_j of the neurons' components orthogonal to u* vanish like 1/m at
    gamma = 0 (independent particles: the mean-field limit) and converge to a positive limit at
    gamma = 0.4 (SGD noise shared by all neurons), so no independent-particle gamma-ODE exists."""
    from odehild.solve.trajectory import InitialCondition, a0_law

    mean_q = {}
    for m in (8, 16, 32):
        for gamma in (0.0, 0.4):
            init = InitialCondition(a0_law("normal", m), np.zeros(m), None, np.eye(m), "mean-field start")
            tr = solve_finite_width(SIGMA_FW, PHI_FW, init, 0.05, 3.0, gamma=gamma, points=10, progress=False)
            q = tr.r[-1] - np.outer(tr.s[-1], tr.s[-1])
            mean_q[m, gamma] = q[~np.eye(m, dtype=bool)].mean()
    print({k: round(v, 4) for k, v in mean_q.items()})
    for m in (8, 16):
        assert 0.35 < mean_q[2 * m, 0.0] / mean_q[m, 0.0] < 0.65  # halves with m
    assert mean_q[32, 0.4] > mean_q[16, 0.4] > 0.02  # grows towards a positive limit
    assert mean_q[32, 0.4] - mean_q[16, 0.4] < mean_q[16, 0.4] - mean_q[8, 0.4]  # and settles
