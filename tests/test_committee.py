"""The committee family (docs/committee.md): every expectation back end against Monte Carlo and
quadrature, the derived drift against Monte Carlo of the SGD increments, the Jacobian against finite
differences, the Saad-Solla plateau, the exact linear solution and the sum/mean time conversion."""

import math

import numpy as np
import pytest
from scipy import special

from odehild import InputError
from odehild.codegen import compile_model
from odehild.models.committee import CommitteeInit, CommitteeModel, overlaps, pack, solve_committee
from odehild.symbolic.committee import convert_time

ERF = "erf(z/sqrt(2))"
POLY_SIGMA, POLY_PHI = "z + 0.3*z**2 - 0.2*z**3", "z**2 - 0.5*z"


def g(x):
    return special.erf(x / math.sqrt(2))


def dg(x):
    return math.sqrt(2 / math.pi) * np.exp(-x * x / 2)


def random_cov(rng, n, nearly_singular=False):
    X = rng.normal(size=(n, n + 2))
    C = X @ X.T / (n + 2)
    if nearly_singular:  # two fields almost equal: the corner the closed forms must survive
        B = np.eye(n)
        B[1] = B[0] + 1e-4 * B[1]
        C = B @ C @ B.T
    return C


def monte_carlo(C, fns, rng, n=2_000_000):
    """Mean and standard error of prod_i fns[i](x_i), x ~ N(0, C)."""
    w, V = np.linalg.eigh(C)
    x = (rng.normal(size=(n, len(C))) * np.sqrt(np.maximum(w, 0))) @ V.T
    vals = np.prod([f(x[:, i]) for i, f in enumerate(fns)], axis=0)
    return vals.mean(), vals.std() / math.sqrt(n)


def upper(C):
    return [C[i, j] for i in range(len(C)) for j in range(i, len(C))]


@pytest.mark.parametrize("nearly_singular", [False, True])
def test_erf_kernels_against_monte_carlo(rng, nearly_singular):
    cm = compile_model(CommitteeModel(ERF, ERF))
    for _ in range(2):
        C = random_cov(rng, 4, nearly_singular)
        for value, fns in (
                (cm.P_ss(C[0, 0], C[1, 1], C[0, 1])[0], [g, g]),
                (cm.J2(C[0, 0], C[1, 1], C[0, 1])[0], [dg, dg]),
                (cm.E4_ss(*upper(C))[0], [dg, dg, g, g])):
            sub = C[:len(fns), :len(fns)]
            mean, err = monte_carlo(sub, fns, rng)
            assert abs(value - mean) < 5 * err + 1e-12, (value, mean, err)


def _gauss_hermite_4d(C, fns, nodes=24):
    """E[prod f_i(x_i)], x ~ N(0, C), by a tensor Gauss-Hermite rule (smooth integrands)."""
    x, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    L = np.linalg.cholesky(C + 1e-300 * np.eye(len(C)))
    grids = np.meshgrid(*[x] * len(C), indexing="ij")
    Z = np.stack([gr.ravel() for gr in grids])
    W = np.prod(np.meshgrid(*[w] * len(C), indexing="ij"), axis=0).ravel()
    X = L @ Z
    return float(np.sum(W * np.prod([f(X[i]) for i, f in enumerate(fns)], axis=0)))


def test_erf_closed_forms_against_quadrature(rng):
    # the four-point closed form: public code has shipped closed forms off by a factor
    cm = compile_model(CommitteeModel(ERF, ERF))
    for _ in range(3):
        C = 0.5 * random_cov(rng, 4)
        assert cm.E4_ss(*upper(C))[0] == pytest.approx(_gauss_hermite_4d(C, [dg, dg, g, g]), abs=1e-8)
        assert cm.P_ss(C[0, 0], C[1, 1], C[0, 1])[0] == pytest.approx(
            _gauss_hermite_4d(C[:2, :2], [g, g], 60), abs=1e-10)


def test_scaled_erf_and_polynomial_kernels_against_monte_carlo(rng):
    for sigma, phi in (("2*erf(z)", "erf(3*z)"), (POLY_SIGMA, POLY_PHI)):
        model = CommitteeModel(sigma, phi)
        cm = compile_model(model)
        import sympy as sp

        from odehild.symbolic.parse import parse_expression, z

        s, p = parse_expression(sigma), parse_expression(phi)
        fs, fp = sp.lambdify(z, s, "scipy"), sp.lambdify(z, p, "scipy")
        fds = sp.lambdify(z, sp.diff(s, z), "scipy")
        C = 0.6 * random_cov(rng, 4)
        mean, err = monte_carlo(C, [fds, fds, fs, fp], rng)
        assert abs(cm.E4_sp(*upper(C))[0] - mean) < 5 * err, (sigma, cm.E4_sp(*upper(C))[0], mean, err)
        mean, err = monte_carlo(C[:2, :2], [fs, fp], rng)
        assert abs(cm.P_sp(C[0, 0], C[1, 1], C[0, 1])[0] - mean) < 5 * err


def test_polynomial_kernel_on_the_sphere_equals_the_hermite_series():
    from odehild import hermite

    cm = compile_model(CommitteeModel(POLY_SIGMA, POLY_PHI))
    hs, hp = hermite(POLY_SIGMA, 3), hermite(POLY_PHI, 3)
    for c in (-0.7, 0.1, 0.55, 1.0):
        series = sum(hs.coefficients[k] * hp.coefficients[k] * c**k for k in range(4))
        assert cm.P_sp(1.0, 1.0, c)[0] == pytest.approx(series, abs=1e-12)


def field_samples(sigma, phi, init, c, ct, noise, rng, n=2_000_000):
    """sigma and sigma' as NumPy functions, n samples of the fields (lambda, rho) with covariance
    [[Q, R], [R^T, T]] and the error e = ct A.phi(rho) - c v.sigma(lambda) + noise xi."""
    import sympy as sp

    from odehild.symbolic.parse import parse_expression, z

    s, p = parse_expression(sigma), parse_expression(phi)
    fs, fp, fds = (sp.lambdify(z, e, "scipy") for e in (s, p, sp.diff(s, z)))
    K = init.K
    C = np.block([[init.Q, init.R], [init.R.T, init.T]])
    w, V = np.linalg.eigh(C)
    x = (rng.normal(size=(n, C.shape[0])) * np.sqrt(np.maximum(w, 0))) @ V.T
    lam, rho = x[:, :K], x[:, K:]
    e = ct * (fp(rho) @ init.A) - c * (fs(lam) @ init.v) + noise * rng.normal(size=n)
    return fs, fds, lam, rho, e


def check_jacobian(cm, y, args, fixed=(), tol=1e-6):
    """The generated Jacobian against central differences of the generated right-hand side, column by
    column except the ``fixed`` state slots; returns the Jacobian and the right-hand side. (The relu
    back end's four-point gradients are themselves central differences: agreement to about 1e-7.)"""
    n = y.size
    dy, J = np.empty(n), np.empty((n, n))
    cm.rhs_jac(y, *args, True, dy, J)
    h = 1e-6
    for j in set(range(n)) - set(fixed):
        plus, minus = np.empty(n), np.empty(n)
        yp, ym = y.copy(), y.copy()
        yp[j] += h
        ym[j] -= h
        cm.rhs_jac(yp, *args, False, plus, J[:1, :1].copy())
        cm.rhs_jac(ym, *args, False, minus, J[:1, :1].copy())
        fd = (plus - minus) / (2 * h)
        assert np.allclose(J[:, j], fd, atol=tol * max(1.0, np.max(np.abs(fd)))), j
    return J, dy


def random_state(rng, K, M, d=40):
    W, Ws = rng.normal(size=(K, d)), rng.normal(size=(M, d))
    return overlaps(W, Ws, rng.normal(size=K), rng.normal(size=M))


@pytest.mark.parametrize("sigma, phi, output", [
    (ERF, ERF, "sum"),
    pytest.param(POLY_SIGMA, POLY_PHI, "mean", marks=pytest.mark.slow),  # 14 s each: the erf case stays
    pytest.param("relu(z)", "0.5*relu(2*z)", "sum", marks=pytest.mark.slow)])  # in the default run
def test_drift_equals_monte_carlo_of_the_sgd_increments(rng, sigma, phi, output):
    """Spec section 2, term by term: dR = eta c v_i E[sigma'_i rho_n e], dQ with the eta^2 term and
    the noise, dv = eta_v c E[sigma_i e], estimated from 2e6 samples of the fields."""
    K, M, lr, lr2, noise = 3, 2, 0.7, 0.3, 0.2
    model = CommitteeModel(sigma, phi, output=output)
    cm = compile_model(model)
    init = random_state(rng, K, M)
    c, ct = (1.0, 1.0) if output == "sum" else (1 / K, 1 / M)
    y = pack(init)
    dy = np.empty(y.size)
    cm.rhs_jac(y, K, M, init.T, init.A, lr, lr2, lr**2, noise**2, c, ct, False, False, dy, np.empty((1, 1)))

    fs, fds, lam, rho, e = field_samples(sigma, phi, init, c, ct, noise, rng)
    v = init.v
    samples = []
    for i in range(K):
        for k in range(i, K):
            samples.append(lr * c * (v[i] * fds(lam[:, i]) * lam[:, k] + v[k] * fds(lam[:, k]) * lam[:, i]) * e
                           + lr**2 * c**2 * v[i] * v[k] * fds(lam[:, i]) * fds(lam[:, k]) * e**2)
    for i in range(K):
        for m in range(M):
            samples.append(lr * c * v[i] * fds(lam[:, i]) * rho[:, m] * e)
    for i in range(K):
        samples.append(lr2 * c * fs(lam[:, i]) * e)
    mean = np.array([q.mean() for q in samples])
    err = np.array([q.std() / math.sqrt(q.size) for q in samples])
    assert np.all(np.abs(dy - mean) < 5 * err + 1e-12), np.c_[dy, mean, err]


# the polynomial back end's Jacobian is checked on the sphere in the default run (test_sphere)
@pytest.mark.parametrize("backend_case", [(ERF, ERF), pytest.param((POLY_SIGMA, POLY_PHI), marks=pytest.mark.slow),
                                          ("relu(z)", "relu(z)")])
def test_jacobian_against_finite_differences(rng, backend_case):
    cm = compile_model(CommitteeModel(*backend_case))
    K, M = 3, 2
    init = random_state(rng, K, M)
    y = pack(init)
    args = (K, M, init.T, init.A, 0.7, 0.3, 0.49, 0.04, 1.0, 1.0, False)
    check_jacobian(cm, y, args)


def test_gradient_flow_is_the_small_rate_limit_of_sgd(rng):
    K, M = 2, 2
    init = random_state(rng, K, M)
    y = pack(init)
    n = y.size
    gf, sgd = compile_model(CommitteeModel(ERF, ERF, dynamics="gf")), compile_model(CommitteeModel(ERF, ERF))
    ref = np.empty(n)
    gf.rhs_jac(y, K, M, init.T, init.A, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, False, False, ref, np.empty((1, 1)))
    gaps = []
    for lr in (1e-2, 1e-3):
        out = np.empty(n)
        sgd.rhs_jac(y, K, M, init.T, init.A, lr, lr, lr**2, 0.0, 1.0, 1.0, False, False, out, np.empty((1, 1)))
        gaps.append(np.max(np.abs(out / lr - ref)))
    assert gaps[1] < 0.15 * gaps[0] and gaps[1] < 1e-2  # the eta^2 term vanishes linearly in eta


@pytest.mark.parametrize("K, level", [(2, 0.011611), (3, 0.020297)])
def test_saad_solla_symmetric_plateau(K, level):
    """From a symmetric start the flow stays symmetric and reaches the unspecialised fixed point
    Q_ik = 1/(2K - 1), R_in = 1/sqrt(K(2K - 1)), risk (K/pi)[pi/6 - K arcsin(1/(2K))]."""
    model = CommitteeModel(ERF, ERF, dynamics="gf")
    init = CommitteeInit(0.2 * np.eye(K), 1e-3 * np.ones((K, K)), np.eye(K), np.ones(K), np.ones(K))
    traj = solve_committee(model, init, 3e4, lr=1.0, rtol=1e-10, atol=1e-12)
    exact = K / math.pi * (math.pi / 6 - K * math.asin(1 / (2 * K)))
    assert exact == pytest.approx(level, abs=5e-7)
    assert traj.risk[-1] == pytest.approx(exact, rel=1e-6)
    # the approach along Q_ii - Q_ik is slow (algebraic): still 1e-3 away at alpha = 3e4
    np.testing.assert_allclose(traj.R[-1], 1 / math.sqrt(K * (2 * K - 1)), atol=5e-5)
    np.testing.assert_allclose(traj.Q[-1], 1 / (2 * K - 1), atol=1e-3)


def test_linear_network_against_its_exact_solution(rng):
    """sigma = phi = z, fixed v: u = sum_i v_i w_i relaxes to b = sum_n A_n w*_n at rate lr |v|^2,
    W(alpha) = W0 + v (b - u0)^T (1 - exp(-lr |v|^2 alpha)) / |v|^2, exactly."""
    K, M, D, lr = 3, 2, 6, 0.4
    W0 = rng.normal(size=(K, D)) / math.sqrt(D)
    Ws = np.linalg.qr(rng.normal(size=(D, M)))[0].T
    v, A = rng.normal(size=K), rng.normal(size=M)
    init = CommitteeInit(W0 @ W0.T, W0 @ Ws.T, Ws @ Ws.T, v, A)
    alphas = np.array([0.0, 0.1, 1.0, 3.0, 10.0])
    traj = solve_committee(CommitteeModel("z", "z", dynamics="gf"), init, 10.0, lr=lr, t_eval=alphas,
                           rtol=1e-11, atol=1e-13)
    b, u0, vv = A @ Ws, v @ W0, v @ v
    for j, a in enumerate(alphas):
        W = W0 + np.outer(v, b - u0) * (1 - math.exp(-lr * vv * a)) / vv
        np.testing.assert_allclose(traj.Q[j], W @ W.T, atol=1e-8)
        np.testing.assert_allclose(traj.R[j], W @ Ws.T, atol=1e-8)


def test_sum_and_mean_conventions_coincide_after_conversion(rng):
    K = M = 2
    init = random_state(rng, K, M)
    eta, alphas = 0.3, np.array([0.0, 1.0, 10.0, 50.0])
    t_mean, gamma = convert_time(alphas, lr=eta, K=K, to="mean")
    assert gamma == pytest.approx(eta * K**2)
    back, eta_back = convert_time(t=t_mean, lr=gamma, K=K, to="sum")
    np.testing.assert_allclose(back, alphas)
    assert eta_back == pytest.approx(eta)
    s = solve_committee(CommitteeModel(ERF, ERF, output="sum"), init, 50.0, lr=eta, t_eval=alphas, rtol=1e-10)
    m = solve_committee(CommitteeModel(ERF, ERF, output="mean"), init, 50.0, lr=gamma, t_eval=alphas, rtol=1e-10)
    np.testing.assert_allclose(m.Q, s.Q, atol=1e-7)
    np.testing.assert_allclose(m.risk, s.risk / K**2, rtol=1e-6)


def test_declaration_errors():
    with pytest.raises(InputError, match="output must be one of"):
        CommitteeModel(ERF, ERF, output="avg")
    with pytest.raises(InputError, match="relu expectation back end needs"):
        CommitteeModel("relu(z)", ERF, backend="relu")
    with pytest.raises(InputError, match="erf expectation back end needs"):
        CommitteeModel("z", "z", backend="erf")
    with pytest.raises(InputError, match="not a covariance"):
        CommitteeInit(np.eye(2), 2 * np.ones((2, 1)), np.eye(1), np.ones(2), np.ones(1))
    with pytest.raises(InputError, match="shape"):
        CommitteeInit(np.eye(2), np.zeros((3, 1)), np.eye(1), np.ones(2), np.ones(1))
    init = CommitteeInit(np.eye(2), np.zeros((2, 1)), np.eye(1), np.ones(2), np.ones(1))
    with pytest.raises(InputError, match="lr must lie in"):
        solve_committee(CommitteeModel(ERF, ERF), init, 10.0, lr=-1)


def test_online_sgd_converges_to_the_ode_as_d_grows():
    """Free geometry at fixed eta = 0.5 (eta^2 terms matter there): the sup risk distance between
    SGD of the real network and the ODE from the same weights' overlaps shrinks like d^(-1/2)."""
    from odehild.simulate.committee import committee_distance, simulate_committee

    model = CommitteeModel(ERF, ERF)
    dims, dist = (100, 400, 1600), []
    for d in dims:
        per_seed = []
        for seed in range(4):
            sim = simulate_committee(model, 2, 2, d, lr=0.5, alpha_end=20, points=30, seed=seed)
            traj = solve_committee(model, sim.init, 20, lr=0.5, t_eval=sim.t)
            per_seed.append(committee_distance(traj, sim)["risk_sup"])
        dist.append(np.mean(per_seed))
    slope = np.polyfit(np.log(dims), np.log(dist), 1)[0]
    assert dist[0] > dist[1] > dist[2]
    assert -0.85 < slope < -0.3, (dist, slope)
    # dropping the eta^2 terms (gradient flow) is further from SGD at the largest d than the SGD ODE
    sim = simulate_committee(model, 2, 2, 1600, lr=0.5, alpha_end=20, points=30, seed=0)
    gf = solve_committee(CommitteeModel(ERF, ERF, dynamics="gf"), sim.init, 20, lr=0.5, t_eval=sim.t)
    sgd = solve_committee(model, sim.init, 20, lr=0.5, t_eval=sim.t)
    assert committee_distance(gf, sim)["overlap_sup"] > 2 * committee_distance(sgd, sim)["overlap_sup"]


def test_command_line_solve_and_plot(tmp_path, monkeypatch, capsys):
    from odehild.cli import main
    from odehild.models.committee import CommitteeTrajectory

    monkeypatch.chdir(tmp_path)
    CommitteeInit(0.2 * np.eye(2), 1e-3 * np.array([[1.0, -0.5], [0.3, 0.8]]), np.eye(2), np.ones(2),
                  np.ones(2)).save("IC.npz")
    assert main(["solve", "--model", "committee", "--sigma", ERF, "--phi", ERF, "--init", "IC.npz", "--lr", "0.5",
                 "--t-end", "1000", "--quiet", "--out", "c.npz"]) == 0
    traj = CommitteeTrajectory.load("c.npz")
    assert traj.Q.shape == (201, 2, 2) and traj.R.shape == (201, 2, 2) and traj.v.shape == (201, 2)
    # plateau (risk near the symmetric level for a decade), then specialisation (one R_in -> 1 per unit)
    on_plateau = (traj.t > 20) & (traj.t < 150)
    assert np.all(np.abs(traj.risk[on_plateau] - 0.0129) < 0.003)
    assert traj.risk[-1] < 1e-10 and np.allclose(np.sort(traj.R[-1].ravel()), [0, 0, 1, 1], atol=1e-5)
    assert main(["plot", "c.npz", "-o", "c.png"]) == 0 and (tmp_path / "c.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["solve", "--model", "committee", "--sigma", "relu(z)", "--phi", ERF, "--init", "IC.npz",
                 "--lr", "0.5", "--backend", "erf", "--out", "r.npz"]) == 2
    assert "erf expectation back end needs" in capsys.readouterr().err
    assert main(["solve", "--sigma", ERF, "--phi", ERF, "--lr", "0.5", "--eps", "1e-3", "--out", "m.npz"]) == 2
    assert "--lr belongs to --model committee" in capsys.readouterr().err


def test_a_learning_rate_beyond_sgd_stability_fails_in_the_ode_as_in_the_network():
    """sigma = phi = z + z^2/2 at lr = 0.5: the eta^2 term outgrows the gradient term; the ODE says so
    and the real network diverges at about the same alpha."""
    from odehild.errors import IntegrationError
    from odehild.simulate.committee import simulate_committee

    model = CommitteeModel("z**2/2 + z", "z**2/2 + z")
    init = CommitteeInit(0.01 * np.eye(2), 1e-3 * np.array([[1.0, -0.5], [0.3, 0.8]]), np.eye(2), np.ones(2),
                         np.ones(2))
    with pytest.raises(IntegrationError, match="grew without bound") as ode:
        solve_committee(model, init, 100.0, lr=0.5)
    with pytest.raises(IntegrationError, match="SGD diverged") as sgd:
        simulate_committee(model, 2, 2, 500, lr=0.5, alpha_end=3, scale=0.1, seed=0)
    assert 0.3 < ode.value.t_fail < 1.5 and 0.3 < sgd.value.t_fail < 1.5
    slow = solve_committee(model, init, 100.0, lr=0.05)  # a tenth of the rate learns
    assert slow.risk[-1] < 0.5 * slow.risk[0]


def literal_arguments(source: str) -> list:
    """Calls in ``source`` that pass a bare int or bool constant (alone or in a tuple) to a function
    defined in it: Numba types such an argument as a literal and compiles the callee once more."""
    import ast

    tree = ast.parse(source)
    defined = {f.name for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    found = []
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in defined:
            parts = [p for a in call.args for p in (a.elts if isinstance(a, ast.Tuple) else [a])]
            parts = [p.operand if isinstance(p, ast.UnaryOp) else p for p in parts]  # -1
            if any(isinstance(p, ast.Constant) and type(p.value) in (bool, int) for p in parts):
                found.append(ast.unparse(call))
    return found


@pytest.mark.parametrize("sigma, backend", [(ERF, "erf"), ("relu(z)", "relu"), ("z + z**3/3", "polynomial")])
def test_generated_committee_code_passes_no_literal_constants_to_its_functions(sigma, backend):
    from odehild.codegen.committee_gen import committee_source

    source = committee_source(CommitteeModel(sigma, sigma, backend=backend))
    assert source.count("_risk(C, S, y,") == 3 and source.count("_scatter_pair(out,") == 3  # def and two calls
    assert literal_arguments(source) == []
    assert literal_arguments("def f(x, flag):\n    pass\n\ndef g():\n    f((1, -1), True)\n") == ["f((1, -1), True)"]


@pytest.mark.slow
def test_generated_committee_code_compiles_each_function_once(tmp_path, monkeypatch, rng):
    """From an empty cache, a solve and its risk series compile no generated function for a literal
    signature (Literal[bool](True) is not bool: each would be a second compilation)."""
    from numba.core import types
    from numba.core.registry import CPUDispatcher

    monkeypatch.setenv("ODEHILD_CACHE_DIR", str(tmp_path))
    model = CommitteeModel(ERF, ERF)
    solve_committee(model, random_state(rng, 2, 2), 5.0, lr=0.5)
    module = compile_model(model).module
    signatures = {name: f.signatures for name, f in vars(module).items() if isinstance(f, CPUDispatcher)}
    assert signatures["_risk"] and signatures["_scatter_pair"] and signatures["P_ss"]
    assert {name: len(s) for name, s in signatures.items() if len(s) > 1} == {}
    assert not [s for ss in signatures.values() for s in ss if any(isinstance(t, types.Literal) for t in s)]
