"""Finite networks learning a multi-index target (docs/multi-index.md): population gradient flow in
weight space, online SGD and full-batch GD, and the distance to the mean-field ODE.

The network f(x) = (1/m) sum_i a_i sigma(<u_i, x>), |u_i| = 1, learns y = phi(x_1, .., x_M)
(u*_j = e_j: inputs are isotropic, so this loses nothing). Time is in the ODE's unit (t = step * lr
for SGD and GD). The population risk of a finite network comes from the Hermite data:

    R = E[phi^2]/2 - (1/m) sum_i a_i G(s_i) + (1/2m^2) [sum_(i != j) a_i a_j kappa(rho_ij) + E[sigma^2] sum_i a_i^2],

G(s) = sum_alpha phi_alpha c_alpha s^alpha and kappa(rho) = sum_k sigma_k^2 rho^k, both to degree
RISK_KMAX (exact for polynomial sigma and phi of lower degree; otherwise the truncation is
reported). The population flow eps da_i/dt = -m dR/da_i, du_i/dt = -m (I - u_i u_i^T) dR/du_i is
written here in weight space, independently of the mean-field ODE's generated code.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from functools import cached_property
from typing import Optional

import numpy as np
import sympy as sp

from .. import __version__
from ..checks import positive_float, positive_int, seed_value
from ..codegen import compile_source, digest, scalar_functions_source
from ..codegen.numba_gen import emit_block
from ..errors import InputError, IntegrationError
from ..io import load_npz, save_npz
from ..solve import log_time_grid
from ..symbolic.founding import as_function, check_eps, check_kmax
from ..symbolic.multi_hermite import multi_hermite
from ..symbolic.parse import parse_expression, parse_target, z
from ..threads import blas_threads
from .networks import _Bar, _check_noise, _check_sizes, random_start, record_steps, sample_stream, step_count

RISK_KMAX = 12
ALGORITHMS = ("gf", "sgd", "gd")

_KERNELS = '''

@njit(cache=True)
def accumulate(W, a, x, y, h, GA, GW):
    """Add one sample's update directions to GA, GW: e = y - f, e sigma(h_i) for a_i and
    e a_i sigma'(h_i) (x - h_i u_i) for u_i (h is scratch)."""
    m, d = W.shape
    f = 0.0
    for i in range(m):
        acc = 0.0
        for k in range(d):
            acc += W[i, k] * x[k]
        h[i] = acc
        f += a[i] * sigma(acc)
    e = y - f / m
    for i in range(m):
        GA[i] += e * sigma(h[i])
        c = e * a[i] * dsigma(h[i])
        for k in range(d):
            GW[i, k] += c * (x[k] - h[i] * W[i, k])


@njit(cache=True)
def apply(W, a, GA, GW, eta, inv_eps, n):
    """a += (eta/eps) GA/n; u_i <- normalize(u_i + eta GW_i/n)."""
    m, d = W.shape
    for i in range(m):
        a[i] += eta * inv_eps * GA[i] / n
        nn = 0.0
        for k in range(d):
            W[i, k] += eta * GW[i, k] / n
            nn += W[i, k] * W[i, k]
        nn = math.sqrt(nn)
        for k in range(d):
            W[i, k] /= nn


@njit(cache=True)
def sgd_steps(W, a, nsteps, eta, inv_eps, batch, noise, rng):
    """Online SGD on fresh Gaussian samples, u*_j = e_j. Per sample: e = y - f;
    a_i += (eta/eps) e sigma(h_i); u_i <- normalize(u_i + eta e a_i sigma'(h_i) (x - h_i u_i)),
    averaged over a mini-batch."""
    m, d = W.shape
    x = np.empty(d)
    h = np.empty(m)
    GA = np.empty(m)
    GW = np.empty((m, d))
    for step in range(nsteps):
        GA[:] = 0.0
        GW[:, :] = 0.0
        for b in range(batch):
            for k in range(d):
                x[k] = rng.standard_normal()
            y = target(x) + noise * rng.standard_normal()
            accumulate(W, a, x, y, h, GA, GW)
        apply(W, a, GA, GW, eta, inv_eps, batch)


@njit(cache=True)
def gd_steps(W, a, X, y, nsteps, eta, inv_eps):
    """Full-batch gradient descent on fixed samples (X (n, d), y (n,)), the same update averaged."""
    m, d = W.shape
    h = np.empty(m)
    GA = np.empty(m)
    GW = np.empty((m, d))
    for step in range(nsteps):
        GA[:] = 0.0
        GW[:, :] = 0.0
        for s in range(X.shape[0]):
            accumulate(W, a, X[s], y[s], h, GA, GW)
        apply(W, a, GA, GW, eta, inv_eps, X.shape[0])


@njit(cache=True)
def train_risk(W, a, X, y):
    m = W.shape[0]
    tot = 0.0
    for s in range(X.shape[0]):
        f = 0.0
        for i in range(m):
            acc = 0.0
            for k in range(W.shape[1]):
                acc += W[i, k] * X[s, k]
            f += a[i] * sigma(acc)
        e = y[s] - f / m
        tot += 0.5 * e * e
    return tot / X.shape[0]


@njit(cache=True)
def targets(X):
    out = np.empty(X.shape[0])
    for s in range(X.shape[0]):
        out[s] = target(X[s])
    return out
'''


class MultiIndexNetwork:
    """A network and a multi-index target declared by sigma (in z) and phi (in z1 .. zM), with the
    Hermite data of the exact population risk."""

    def __init__(self, sigma: str, phi: str, eps: float, kmax: int = 4):
        self.sigma, self.phi = sigma, phi
        self.eps, self.kmax = check_eps(eps), check_kmax(kmax)
        _, variables = parse_target(phi)
        if not variables:
            raise InputError(f"phi = {phi!r} is a function of z: simulate it with the founding network")
        self.M = len(variables)
        self.risk_K = max(self.kmax, RISK_KMAX)
        self.sig = as_function(sigma, self.risk_K, "sigma")
        self.target = multi_hermite(phi, self.risk_K)
        sig = np.asarray(self.sig.coefficients)
        self.alphas = np.array(self.target.multi_indices, dtype=np.int64)
        deg = self.alphas.sum(axis=1)
        c = sig[deg] * np.sqrt([math.factorial(int(k)) / math.prod(math.factorial(int(j)) for j in al)
                                for k, al in zip(deg, self.alphas)])
        self.g_coefficients = self.target.coefficients * c  # G(s) = sum_alpha phi_alpha c_alpha s^alpha
        self.kappa = sig**2  # kappa(rho) = sum_k sigma_k^2 rho^k
        self.truncation = (f"exact (sigma and phi of degree <= {self.risk_K})"
                           if self.sig.tail < 1e-14 and self.target.tail < 1e-14
                           else f"Hermite series to degree {self.risk_K} (tails: sigma {self.sig.tail:.2g}, "
                                f"phi {self.target.tail:.2g})")

    def G(self, S):
        """G(s) (m,) and its gradient (m, M) for alignments S (m, M)."""
        P = np.ones((S.shape[0], len(self.alphas)))
        for j in range(self.M):
            P *= S[:, j:j + 1] ** self.alphas[None, :, j]
        g = P @ self.g_coefficients
        grad = np.empty_like(S)
        for j in range(self.M):
            aj = self.alphas[:, j]
            Q = np.ones_like(P)
            for i in range(self.M):
                e = self.alphas[None, :, i] - (1 if i == j else 0)
                Q *= S[:, i:i + 1] ** np.maximum(e, 0)
            grad[:, j] = Q @ (self.g_coefficients * aj)
        return g, grad

    def kernel(self, rho):
        """kappa(rho) and kappa'(rho), elementwise (Horner)."""
        k = np.zeros_like(rho)
        dk = np.zeros_like(rho)
        for c in self.kappa[::-1]:
            dk = dk * rho + k
            k = k * rho + c
        return k, dk

    def risk(self, a, W) -> float:
        m = a.size
        g, _ = self.G(W[:, :self.M])
        rho = W @ W.T
        k, _ = self.kernel(rho)
        np.fill_diagonal(k, self.sig.norm2)
        return float(0.5 * self.target.norm2 - a @ g / m + a @ k @ a / (2 * m * m))

    def flow(self, a, W):
        """(da/dt, dW/dt) of the population gradient flow at finite width."""
        m = a.size
        S = W[:, :self.M]
        g, grad = self.G(S)
        rho = W @ W.T
        k, dk = self.kernel(rho)
        np.fill_diagonal(k, self.sig.norm2)
        np.fill_diagonal(dk, 0.0)  # the self term depends on |u_i| only: no tangential force
        da = (g - k @ a / m) / self.eps
        force = -(a[:, None] / m) * (dk * a[None, :]) @ W
        force[:, :self.M] += a[:, None] * grad
        dW = force - np.sum(force * W, axis=1, keepdims=True) * W
        return da, dW

    @cached_property
    def compiled(self):
        s_expr = parse_expression(self.sigma)
        p_expr, variables = parse_target(self.phi)
        key = digest({"kind": "multi-index network", "sigma": sp.srepr(s_expr), "phi": sp.srepr(p_expr),
                      "odehild": __version__, "template": digest({"kernels": _KERNELS})})

        def build():
            dsig = sp.diff(s_expr, z).replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0))
            body = emit_block([("val", p_expr.xreplace({v: sp.Symbol(f"x_{j}") for j, v in enumerate(variables)}))],
                              4, "xt")
            loads = "\n".join(f"    x_{j} = x[{j}]" for j in range(len(variables)))
            target = f"@njit(cache=True, inline='always')\ndef target(x):\n{loads}\n{body}\n    return val\n"
            header = ("# Generated by odehild: multi-index simulation kernels. Do not edit.\n"
                      "import math\nimport numpy as np\nfrom numba import njit\n\n\n")
            return header + scalar_functions_source({"sigma": s_expr, "dsigma": dsig}) + "\n\n" + target + _KERNELS

        return compile_source(key, build, {"sigma": self.sigma, "phi": self.phi}, "network")


@dataclasses.dataclass
class MultiIndexSimulation:
    """A simulated run, time on the first axis: ``t``, ``step``, ``a`` (T, m), ``s`` (T, m, M) the
    alignments U*^T u_i, ``risk`` the population risk, ``train_risk`` for batch GD."""

    t: np.ndarray
    step: np.ndarray
    a: np.ndarray
    s: np.ndarray
    risk: np.ndarray
    train_risk: Optional[np.ndarray] = None
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "step", "a", "s", "risk", "train_risk")

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None}, self.meta)

    @classmethod
    def load(cls, path) -> "MultiIndexSimulation":
        arrays, meta = load_npz(path, required=("t", "step", "a", "s", "risk"))
        t, a, s = arrays["t"], arrays["a"], arrays["s"]
        if t.ndim != 1 or a.shape != (t.size, a.shape[1] if a.ndim == 2 else -1) or s.ndim != 3 \
                or s.shape[:2] != a.shape:
            raise InputError(f"{path}: expected t (T,), a (T, m), s (T, m, M); got {t.shape}, {a.shape}, {s.shape}")
        return cls(**{k: arrays.get(k) for k in cls.ARRAYS}, meta=meta)

    def __repr__(self):
        return (f"MultiIndexSimulation({self.meta.get('algo')}, m={self.a.shape[1]}, d={self.meta.get('dim')}, "
                f"M={self.s.shape[2]}, T={self.t.size}, risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g})")


def _meta(net, algo, m, d, seed, a0, start, **extra):
    return {"model": "multi-index simulation", "algo": algo, "sigma": net.sigma, "phi": net.phi, "eps": net.eps,
            "kmax": net.kmax, "M": net.M, "width": m, "dim": d, "seed": seed, "a0": a0,
            "risk_kernels": net.truncation, "wall_seconds": time.perf_counter() - start,
            "odehild": __version__, **extra}


def population_flow(sigma, phi, eps, width, dim, t_end=5.0, seed=0, a0="normal", points=60, kmax=4,
                    rtol=1e-7, atol=1e-9, quiet=True) -> MultiIndexSimulation:
    """The exact population gradient flow of a finite network, integrated in weight space (explicit
    DOP853 in the ODE's time; choose eps of order 0.1 or more, the flow is stiff below)."""
    from scipy.integrate import solve_ivp

    net = MultiIndexNetwork(sigma, phi, eps, kmax)
    m, d = _check_sizes(width, dim)
    if d < net.M:
        raise InputError(f"dimension d = {d} is below the number of directions M = {net.M}")
    W, a = random_start(m, d, seed, a0)
    t_end = positive_float("t_end", t_end)
    t_eval = log_time_grid(t_end, points, eps=net.eps)
    start = time.perf_counter()

    def f(t, y):
        da, dW = net.flow(y[:m], y[m:].reshape(m, d))
        out = np.concatenate([da, dW.ravel()])
        if not np.all(np.isfinite(out)):
            raise IntegrationError(f"weight-space flow: non-finite derivative at t = {t:.6g}", t_fail=t)
        return out

    with blas_threads(1):
        sol = solve_ivp(f, (0, t_end), np.concatenate([a, W.ravel()]), method="DOP853", t_eval=t_eval,
                        rtol=rtol, atol=atol)
        if sol.status < 0:
            raise IntegrationError(f"weight-space flow failed at t = {sol.t[-1]:.4g}: {sol.message}", t_fail=sol.t[-1])
        A = sol.y[:m].T
        Ws = sol.y[m:].T.reshape(-1, m, d)
        R = np.array([net.risk(at, Wt) for at, Wt in zip(A, Ws)])
    return MultiIndexSimulation(sol.t.copy(), np.full(sol.t.size, -1), A, Ws[:, :, :net.M].copy(), R, None,
                                _meta(net, "gf", m, d, seed, a0, start, nfev=int(sol.nfev)))


def _run(net, W, a, steps, eta, advance, algo, seed, a0, quiet, extra, on_record=None):
    m, d = W.shape
    rec_a, rec_s, rec_r = [], [], []
    start = time.perf_counter()
    bar = _Bar(int(steps[-1]), f"{algo} seed {seed}", quiet)
    done = 0
    with blas_threads(1):
        for target in steps:
            if target > done:
                advance(W, a, int(target - done))
                bar.update(int(target - done))
                done = int(target)
            risk = net.risk(a, W) if np.all(np.isfinite(W)) and np.all(np.isfinite(a)) else np.inf
            if not np.isfinite(risk) or (rec_r and risk > 1e6 * max(1.0, rec_r[0])):
                bar.close()
                raise IntegrationError(f"{algo} diverged by step {done} (t = {done * eta:.4g}): risk {risk:.3g}; "
                                       f"lower the learning rate (lr = {eta:.3g})", t_fail=done * eta)
            rec_a.append(a.copy())
            rec_s.append(W[:, :net.M].copy())
            rec_r.append(risk)
            if on_record is not None:
                on_record(W, a)
    bar.close()
    return MultiIndexSimulation(steps * eta, steps, np.array(rec_a), np.array(rec_s), np.array(rec_r), None,
                                _meta(net, algo, m, d, seed, a0, start, lr=eta, **extra))


def online_sgd(sigma, phi, eps, width, dim, lr=None, t_end=5.0, batch=1, noise=0.0, seed=0, a0="normal",
               points=60, kmax=4, quiet=True) -> MultiIndexSimulation:
    """Online SGD with step ``lr`` (default 0.01/d), a fresh sample (or mini-batch) per step."""
    net = MultiIndexNetwork(sigma, phi, eps, kmax)
    m, d = _check_sizes(width, dim)
    eta = positive_float("lr", lr if lr is not None else 0.01 / d)
    batch, noise = positive_int("batch", batch), _check_noise(noise)
    if eta / net.eps > 0.5:
        warnings.warn(f"lr/eps = {eta / net.eps:.3g}: the second layer is unstable unless lr/eps << 1", stacklevel=2)
    nsteps = step_count(positive_float("t_end", t_end), eta)
    k = net.compiled
    W, a = random_start(m, d, seed, a0)
    rng = sample_stream(seed)
    return _run(net, W, a, record_steps(nsteps, points), eta,
                lambda W, a, n: k.sgd_steps(W, a, n, eta, 1 / net.eps, batch, noise, rng), "sgd", seed, a0, quiet,
                {"batch": batch, "noise": noise})


def batch_gd(sigma, phi, eps, width, dim, samples, lr=None, t_end=5.0, noise=0.0, seed=0, a0="normal",
             points=60, kmax=4, quiet=True) -> MultiIndexSimulation:
    """Full-batch gradient descent on ``samples`` fixed samples; records train and population risk."""
    net = MultiIndexNetwork(sigma, phi, eps, kmax)
    m, d = _check_sizes(width, dim)
    n = positive_int("samples", samples)
    noise = _check_noise(noise)
    eta = positive_float("lr", lr if lr is not None else 0.05 * net.eps)
    nsteps = step_count(positive_float("t_end", t_end), eta)
    k = net.compiled
    W, a = random_start(m, d, seed, a0)
    rng = np.random.default_rng([seed_value("seed", seed), 1])
    X = rng.standard_normal((n, d))
    y = k.targets(X) + noise * rng.standard_normal(n)
    train = []
    sim = _run(net, W, a, record_steps(nsteps, points), eta, lambda W, a, ns: k.gd_steps(W, a, X, y, ns, eta, 1 / net.eps),
               "gd", seed, a0, quiet, {"samples": n, "noise": noise},
               on_record=lambda W, a: train.append(k.train_risk(W, a, X, y)))
    sim.train_risk = np.array(train)
    return sim


def simulate_multi_index(algo: str, **kw) -> MultiIndexSimulation:
    table = {"gf": population_flow, "sgd": online_sgd, "gd": batch_gd}
    if algo not in table:
        raise InputError(f"unknown algorithm {algo!r} (allowed: {', '.join(ALGORITHMS)})")
    return table[algo](**kw)


# ----------------------------------------------------------------------------- distance to the ODE


@dataclasses.dataclass
class MultiIndexComparison:
    t: np.ndarray
    ode_risk: np.ndarray
    sim_risk_mean: np.ndarray
    sup_risk_distance: float
    l2_risk_distance: float
    law_distance: float
    law_distance_t: np.ndarray
    meta: dict

    def to_dict(self) -> dict:
        from .compare import finite_list as clean

        return {"sup_risk_distance": self.sup_risk_distance, "l2_risk_distance": self.l2_risk_distance,
                "law_distance": self.law_distance, "law_distance_t": clean(self.law_distance_t),
                "t": clean(self.t), "ode_risk": clean(self.ode_risk), "sim_risk_mean": clean(self.sim_risk_mean),
                "meta": self.meta}


def compare_multi_index(traj, sims) -> MultiIndexComparison:
    """Risk distances (sup and L2 in log-time) and the sliced Wasserstein-1 distance between the law
    of (a, s) in R^(1+M) of the simulations (seeds pooled) and of the ODE particles."""
    from .compare import _interp_log, sliced_wasserstein

    sims = list(sims)
    if not sims:
        raise InputError("compare needs at least one simulation")
    for s in sims:
        if s.s.shape[2] != traj.M:
            raise InputError(f"a simulation has M = {s.s.shape[2]} directions, the trajectory M = {traj.M}")
    t = sims[0].t
    keep = (t > 0) & (t <= traj.t[-1] * (1 + 1e-9)) & (t >= traj.t[traj.t > 0][0])
    if keep.sum() < 2:
        raise InputError("the simulations and the trajectory share fewer than 2 output times")
    tc = t[keep]
    mean = np.mean([s.risk[keep] for s in sims], axis=0)
    ode = _interp_log(traj.t, traj.risk, tc)
    diff = np.abs(mean - ode)
    lt = np.log10(tc)
    l2 = float(np.sqrt(np.trapezoid(diff**2, lt) / (lt[-1] - lt[0])))
    A, S = _interp_log(traj.t, traj.a, tc), _interp_log(traj.t, traj.s, tc)
    law = np.empty(tc.size)
    for i in range(tc.size):
        pts = np.concatenate([np.column_stack([s.a[keep][i], s.s[keep][i]]) for s in sims])
        law[i] = sliced_wasserstein(pts, np.column_stack([A[i], S[i]]), None, traj.weights)
    meta = {"n_simulations": len(sims), "width": sims[0].meta.get("width"), "dim": sims[0].meta.get("dim"),
            "algo": sims[0].meta.get("algo"), "phi": traj.meta.get("phi"), "eps": traj.meta.get("eps"),
            "sigma": traj.meta.get("sigma"), "particles": int(traj.a.shape[1]), "M": traj.M}
    return MultiIndexComparison(tc, ode, mean, float(diff.max()), l2, float(law[-1]), law, meta)
