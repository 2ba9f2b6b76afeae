"""Simulators against exact facts: the overlap ODE, Monte Carlo risk, hand-computed SGD steps,
the population gradient, and convergence to the ODE as d grows."""

import json
import subprocess
import sys

import numba
import numpy as np
import pytest

from helpers import finite_width_rhs
from odehild import InputError
from odehild.codegen import compile_model
from odehild.simulate import Network, Simulation, batch_gd, online_sgd, population_gf
from odehild.simulate.compare import compare, convergence_study, plot_convergence
from odehild.solve import initial_condition, solve
from odehild.models.meanfield import MeanFieldModel

SIG, PHI = "h(0,z)+h(1,z)+h(2,z)", "h(1,z)+h(2,z)"


def test_weight_space_flow_equals_overlap_flow():
    kw = dict(sigma=SIG, phi=PHI, eps=0.1, width=4, dim=10, t_end=2.0, seed=3, kmax=2, points=15)
    g1 = population_gf(**kw)
    g2 = population_gf(space="weights", rtol=1e-11, atol=1e-12, **kw)
    np.testing.assert_allclose(g1.s, g2.s, atol=1e-7)
    np.testing.assert_allclose(g1.a, g2.a, atol=1e-7)
    np.testing.assert_allclose(g1.risk, g2.risk, atol=1e-7)


@pytest.mark.parametrize("sigma, phi", [(SIG, PHI), ("relu(z)", "relu(z)"), ("erf(z/sqrt(2))", "erf(z/sqrt(2))")])
def test_exact_risk_from_overlaps_equals_monte_carlo(sigma, phi, rng):
    net = Network(sigma, phi, 0.1, kmax=6)
    k = net.compiled()
    m, d = 5, 8
    W = rng.normal(size=(m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = rng.normal(size=m) * 2
    model = net.overlap_model
    exact = compile_model(model).risk(a, W[:, 0].copy(), W @ W.T, model.phi.norm2, model.sigma.norm2)
    X = rng.normal(size=(400_000, d))
    sig = np.vectorize(k.sigma)
    e = np.vectorize(k.phi)(X[:, 0]) - sig(X @ W.T) @ a / m
    vals = 0.5 * e**2
    assert abs(vals.mean() - exact) < 5 * vals.std() / np.sqrt(vals.size)
    assert model.kernels == "closed"  # polynomials, ReLU and erf all have exact kernels


def test_one_sgd_step_by_hand():
    net = Network("tanh(z)", "relu(z)", 0.2, kmax=4)
    k = net.compiled()
    rng = np.random.default_rng(5)
    m, d, eta, noise = 3, 6, 0.01, 0.3
    W = rng.normal(size=(m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = rng.normal(size=m)
    draws = np.random.default_rng(123).standard_normal(d + 1)  # NumPy's own draws of the kernel's stream
    x, xi = draws[:d], draws[d]
    y = max(x[0], 0) + noise * xi
    h = W @ x
    e = y - np.mean(a * np.tanh(h))
    a_new = a + eta / 0.2 * e * np.tanh(h)
    U = W + (eta * e * a * (1 - np.tanh(h) ** 2))[:, None] * (x[None, :] - h[:, None] * W)
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    W2, a2 = W.copy(), a.copy()
    k.sgd_steps(W2, a2, 1, eta, 1 / 0.2, noise, np.random.default_rng(123))
    np.testing.assert_allclose(a2, a_new, rtol=1e-13)
    np.testing.assert_allclose(W2, U, rtol=1e-12, atol=1e-14)


def minibatch_step_by_hand(seed, W, a, eta, noise, batch):
    """(a, W) after one mini-batch step of tanh(z) against relu(z) at eps = 0.2, in NumPy, from the
    draws the kernels make from ``np.random.default_rng(seed)`` (drawn here by NumPy)."""
    m, d = W.shape
    draws = np.random.default_rng(seed).standard_normal(batch * (d + 1)).reshape(batch, d + 1)
    ga, gw = np.zeros(m), np.zeros((m, d))
    for x, xi in zip(draws[:, :d], draws[:, d]):
        h = W @ x
        e = max(x[0], 0) + noise * xi - np.mean(a * np.tanh(h))
        ga += eta / 0.2 * e * np.tanh(h) / batch
        gw += (eta * e * a * (1 - np.tanh(h) ** 2))[:, None] * (x[None, :] - h[:, None] * W) / batch
    U = W + gw
    return a + ga, U / np.linalg.norm(U, axis=1, keepdims=True)


def test_online_sgd_with_a_batch_takes_mini_batch_steps():
    """online_sgd(batch > 1) runs the mini-batch kernel: its one step against the step by hand."""
    from odehild.simulate.networks import random_start

    m, d, eta, noise, batch, seed = 3, 6, 0.01, 0.3, 5, 7
    sim = online_sgd("tanh(z)", "relu(z)", 0.2, m, d, lr=eta, t_end=eta, batch=batch, noise=noise, seed=seed,
                     kmax=4, points=2)
    assert sim.meta["batch"] == batch and sim.step[-1] == 1
    W, a = random_start(m, d, seed, "normal")
    a_new, U = minibatch_step_by_hand([seed, 2], W, a, eta, noise, batch)  # online_sgd's stream of samples
    np.testing.assert_allclose(sim.a[-1], a_new, rtol=1e-12)
    np.testing.assert_allclose(sim.s[-1], U[:, 0], rtol=1e-12, atol=1e-14)


def test_online_sgd_with_a_batch_runs_its_gemms_on_threads_blas_threads(monkeypatch):
    """threads with batch > 1 is the BLAS pool of the mini-batch kernel (its GEMMs), the same steps."""
    from threadpoolctl import threadpool_info

    threads = min(2, numba.config.NUMBA_NUM_THREADS)
    pools = []
    real = Network.compiled

    def compiled(self):
        k = real(self)

        class Recording:
            def __getattr__(self, name):
                return getattr(k, name)

            def minibatch_steps(self, *args):
                pools.append({p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"})
                k.minibatch_steps(*args)

        return Recording()

    monkeypatch.setattr(Network, "compiled", compiled)
    kw = dict(sigma="tanh(z)", phi="relu(z)", eps=0.2, width=40, dim=300, lr=1e-3, t_end=5e-3, batch=8, kmax=4,
              points=3)
    one, many = online_sgd(**kw), online_sgd(threads=threads, **kw)
    assert pools and pools[0] == {1} and pools[-1] == {threads}
    assert many.meta["threads"] == threads
    np.testing.assert_allclose(many.s, one.s, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(many.risk, one.risk, rtol=1e-12)


def test_one_minibatch_step_by_hand():
    """The GEMM mini-batch step against the per-sample formula in NumPy, with the same draws."""
    net = Network("tanh(z)", "relu(z)", 0.2, kmax=4)
    k = net.compiled()
    rng = np.random.default_rng(6)
    m, d, eta, noise, batch = 3, 6, 0.01, 0.3, 5
    W = rng.normal(size=(m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = rng.normal(size=m)
    a_new, U = minibatch_step_by_hand(321, W, a, eta, noise, batch)
    for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-6)):
        W2, a2 = W.astype(dtype), a.copy()
        k.minibatch_steps(W2, a2, 1, eta, 1 / 0.2, batch, noise, np.random.default_rng(321))
        assert W2.dtype == dtype
        np.testing.assert_allclose(a2, a_new, rtol=tol)
        np.testing.assert_allclose(W2, U, rtol=tol, atol=tol)


def test_single_precision_weights_follow_the_double_precision_run():
    kw = dict(sigma=SIG, phi=PHI, eps=0.1, width=4, dim=32, t_end=0.5, kmax=2, points=8)
    s64, s32 = online_sgd(**kw), online_sgd(precision="float32", **kw)
    assert s32.meta["precision"] == "float32" and s64.meta["precision"] == "float64"
    assert not np.array_equal(s32.s, s64.s)  # the weights really were rounded
    np.testing.assert_allclose(s32.risk, s64.risk, rtol=1e-4)
    with pytest.raises(InputError, match="precision 'float16'"):
        online_sgd(precision="float16", **kw)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="Numba's pool has one thread here")
def test_sgd_on_two_threads_draws_the_same_samples_and_agrees_to_rounding():
    # m = 64 rows: both threads get rows; the serial run is the reference (hand-checked step above)
    kw = dict(sigma=SIG, phi=PHI, eps=0.1, width=64, dim=128, t_end=0.5, kmax=2, points=8)
    one, two = online_sgd(**kw), online_sgd(threads=2, **kw)
    assert one.meta["threads"] == 1 and two.meta["threads"] == 2
    assert np.max(np.abs(two.s - one.s)) < 1e-12 and np.max(np.abs(two.a - one.a)) < 1e-12
    np.testing.assert_allclose(two.risk, one.risk, rtol=1e-10)
    assert abs(one.risk[-1] - one.risk[0]) > 1e-3  # the weights moved: the agreement is not trivial
    with pytest.raises(InputError, match="threads must be a positive integer .*got 0"):
        online_sgd(threads=0, **kw)


def test_expected_sgd_step_is_population_gradient():
    """Mean of many single-sample steps from one state, against the overlap ODE (2a)."""
    eps, eta = 0.5, 1e-4
    net = Network(SIG, PHI, eps, kmax=2)
    k = net.compiled()
    rng = np.random.default_rng(9)
    m, d = 3, 5
    W = rng.normal(size=(m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = rng.normal(size=m)
    n = 40_000
    da, ds = np.zeros((n, m)), np.zeros((n, m))
    samples = np.random.default_rng(7)
    for i in range(n):
        W2, a2 = W.copy(), a.copy()
        k.sgd_steps(W2, a2, 1, eta, 1 / eps, 0.0, samples)
        da[i], ds[i] = (a2 - a) / eta, (W2[:, 0] - W[:, 0]) / eta
    model = net.overlap_model
    ref_a, ref_s, _ = finite_width_rhs(a, W[:, 0], W @ W.T, model.sigma.coefficients, model.phi.coefficients, eps)
    se_a, se_s = da.std(0) / np.sqrt(n), ds.std(0) / np.sqrt(n)
    assert np.all(np.abs(da.mean(0) - ref_a) < 5 * se_a + 1e-3)
    assert np.all(np.abs(ds.mean(0) - ref_s) < 5 * se_s + 1e-3)


def test_sgd_is_seeded_and_reproducible():
    kw = dict(sigma=SIG, phi=PHI, eps=0.1, width=4, dim=16, t_end=0.2, kmax=2, points=8)
    s1, s2, s3 = online_sgd(seed=4, **kw), online_sgd(seed=4, **kw), online_sgd(seed=5, **kw)
    np.testing.assert_array_equal(s1.a, s2.a)
    assert not np.array_equal(s1.a, s3.a)
    np.testing.assert_allclose(s1.t, s1.step * s1.meta["lr"])


def test_batch_gd_records_train_and_population_risk(tmp_path):
    sim = batch_gd("relu(z)", "z", 0.1, 6, 12, samples=300, t_end=1.0, points=10)
    assert sim.train_risk.shape == sim.risk.shape
    assert sim.train_risk[-1] < sim.train_risk[0] and sim.risk[-1] < sim.risk[0]
    back = Simulation.load(sim.save(tmp_path / "gd.npz"))
    np.testing.assert_array_equal(back.train_risk, sim.train_risk)


def test_convergence_with_d(tmp_path):
    """Exact population flow at m = d/8 from random starts: the distance to the mean-field ODE
    shrinks with d. Measured slope of the L2 risk distance: about -0.7 (allowed [-1.5, -0.3])."""
    rows, slopes = convergence_study(SIG, PHI, 0.05, [32, 64, 128, 256], width_of_d=lambda d: d // 8,
                                     seeds=(0, 1, 2), t_end=3.0, kmax=2)
    l2 = [r["l2_risk_distance"] for r in rows]
    assert l2[-1] < 0.5 * l2[0]
    assert -1.5 < slopes["l2_risk_distance"] < -0.3
    assert slopes["sup_risk_distance"] < -0.2
    assert plot_convergence(rows, slopes, tmp_path / "conv.png") is not None
    assert (tmp_path / "conv.png").stat().st_size > 5000


@pytest.mark.slow
def test_convergence_with_d_sgd():
    rows, slopes = convergence_study(SIG, PHI, 0.05, [64, 128, 256, 512], width_of_d=lambda d: d // 8,
                                     seeds=(0, 1), algo="sgd", t_end=3.0, kmax=2)
    assert -1.5 < slopes["l2_risk_distance"] < -0.1


@pytest.mark.parametrize("kw, needle", [
    (dict(width=0), "width"), (dict(dim=0), "dimension"), (dict(lr=0.0), "lr"), (dict(lr=-1.0), "lr"),
    (dict(batch=0), "batch"), (dict(eps=0.0), "eps"), (dict(noise=-1.0), "noise"),
])
def test_bad_simulation_input(kw, needle):
    args = dict(sigma=SIG, phi=PHI, eps=0.1, width=4, dim=8, t_end=0.1) | kw
    with pytest.raises(InputError, match=needle):
        online_sgd(**args)


def test_large_lr_over_eps_warns_with_reason():
    with pytest.warns(UserWarning, match="lr/eps"):
        online_sgd(SIG, PHI, 0.01, 2, 8, lr=0.02, t_end=0.02, kmax=2)


def test_compare_refuses_mismatched_files(tmp_path):
    model = MeanFieldModel(SIG, PHI, 2, 0.1)
    traj = solve(model, initial_condition(20), 0.5)
    traj.meta.update({"sigma_expr_input": SIG, "phi_expr_input": PHI})
    ok = online_sgd(SIG, PHI, 0.1, 4, 16, t_end=0.5, kmax=2, points=10)
    assert compare(traj, [ok]).sup_risk_distance >= 0
    with pytest.raises(InputError, match="eps"):
        compare(traj, [online_sgd(SIG, PHI, 0.2, 4, 16, t_end=0.5, kmax=2, points=10)])
    with pytest.raises(InputError, match="phi"):
        compare(traj, [online_sgd(SIG, "h(1,z)", 0.1, 4, 16, t_end=0.5, kmax=2, points=10)])


def test_cli_simulate_and_compare(tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "odehild.cli", *a], capture_output=True, text=True)
    res = run("simulate", "--sigma", SIG, "--phi", PHI, "--eps", "0.1", "--kmax", "2", "--width", "8", "--dim", "32",
              "--algo", "sgd", "--seeds", "2", "--t-end", "1", "--quiet", "--out", str(tmp_path / "sim.npz"),
              "--ode", str(tmp_path / "traj.npz"), "--particles", "50",
              "--threads", str(min(2, numba.config.NUMBA_NUM_THREADS)))
    assert res.returncode == 0, res.stderr
    sims = sorted(tmp_path.glob("sim_seed*.npz"))
    assert len(sims) == 2
    assert Simulation.load(sims[0]).meta["threads"] == min(2, numba.config.NUMBA_NUM_THREADS)
    res = run("compare", str(tmp_path / "traj.npz"), *map(str, sims), "--report", str(tmp_path / "r.json"),
              "--plot", str(tmp_path / "c.png"))
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    for key in ("sup_risk_distance", "l2_risk_distance", "law_distance", "ode_learning_times", "sim_learning_times"):
        assert key in rep
    assert (tmp_path / "c.png").stat().st_size > 10_000
    res = run("compare", str(tmp_path / "traj.npz"), str(tmp_path / "traj.npz"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = run("simulate", "--sigma", SIG, "--phi", PHI, "--eps", "0.1", "--width", "0", "--dim", "8",
              "--out", str(tmp_path / "x.npz"))
    assert res.returncode == 2 and "width" in res.stderr
    res = run("simulate", "--sigma", SIG, "--phi", PHI, "--eps", "0.1", "--width", "4", "--dim", "8",
              "--algo", "gd", "--samples", "10", "--threads", "2", "--out", str(tmp_path / "x.npz"))
    assert res.returncode == 2 and "--threads applies to online SGD (--algo sgd), not --algo gd" in res.stderr


@pytest.mark.parametrize("sigma, phi", [("relu(z)", "relu(z)"), ("erf(z)", "erf(2*z)")])
def test_closed_form_kernels_under_every_implicit_solver(sigma, phi):
    """asin/acos kernels through Radau, BDF and LSODA (analytic Jacobian) against the weight-space
    flow in R^d, an independent integration with the same kernels; the risk stays finite."""
    kw = dict(width=4, dim=12, t_end=2.0, kmax=4, points=20)
    ref = population_gf(sigma, phi, 0.1, space="weights", rtol=1e-11, atol=1e-12, **kw)
    assert np.all(np.isfinite(ref.risk))
    for method in ("Radau", "BDF", "LSODA"):
        sim = population_gf(sigma, phi, 0.1, method=method, rtol=1e-10, atol=1e-12, **kw)
        assert sim.meta["risk_kernels"] == "closed"
        assert sim.t.size == ref.t.size and sim.t[-1] == 2.0
        np.testing.assert_allclose(sim.a, ref.a, atol=1e-6)
        np.testing.assert_allclose(sim.s, ref.s, atol=1e-7)
        np.testing.assert_allclose(sim.risk, ref.risk, atol=1e-8)
        assert sim.risk[-1] < 0.2 * sim.risk[0]


def _kernel_by_quadrature(f, g, rho, n=300):
    """E[f(G) g(rho G + sqrt(1 - rho^2) G')] by a tensor Gauss-Hermite rule (smooth f, g; tanh(2x)
    has poles near the real axis, so n = 300; NumPy's weights overflow beyond about 350)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    X, Y = np.meshgrid(x, x, indexing="ij")
    return float(np.sum(np.outer(w, w) * f(X) * g(rho * X + np.sqrt(1 - rho**2) * Y)))


def test_sgd_risk_without_closed_form_is_exact_within_its_bound(rng):
    """tanh has no closed-form kernel: the recorded population risk uses series kernels, and must
    agree with kernels from 2-D quadrature to within the reported truncation bound (which is small)."""
    from odehild.simulate.networks import _risks

    net = Network("tanh(z)", "tanh(2*z)", eps=0.1, kmax=4)
    assert net.risk_kernels.startswith("series")
    m, d = 5, 6
    W = rng.normal(size=(m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    W[0] = 0.6 * np.eye(d)[0] + 0.8 * np.eye(d)[1]  # a large alignment, s = 0.6
    a = rng.normal(size=m) * 2
    R, s = W @ W.T, W[:, 0]
    V = np.array([_kernel_by_quadrature(lambda x: np.tanh(2 * x), np.tanh, si) for si in s])
    U = np.array([[_kernel_by_quadrature(np.tanh, np.tanh, min(r, 1.0)) for r in row] for row in R])
    phi2 = _kernel_by_quadrature(lambda x: np.tanh(2 * x), lambda x: np.tanh(2 * x), 1.0)
    exact = 0.5 * phi2 - a @ V / m + a @ U @ a / (2 * m * m)
    risk, bound = _risks(net, W, a)
    assert bound < 1e-6
    assert abs(risk - exact) <= bound + 1e-10
    # the old risk (series to degree K = 4, U(1) from the series) misses by far more
    from odehild.models.finite_width import FiniteWidthModel

    low = FiniteWidthModel("tanh(z)", "tanh(2*z)", 4, 0.1)
    low_risk = 0.5 * low.phi.norm2 - a @ np.polyval(np.array(low.phi.coefficients)[::-1] * np.array(
        low.sigma.coefficients)[::-1], s) / m + a @ np.polyval(np.square(low.sigma.coefficients)[::-1], R) @ a / (2 * m * m)
    assert abs(low_risk - exact) > 100 * (bound + 1e-10)
