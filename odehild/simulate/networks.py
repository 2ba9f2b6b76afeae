"""Finite-width, finite-dimension simulations of the founding model (docs/model.md section 4).

The network f(x) = (1/m) sum_i a_i sigma(<u_i, x>), |u_i| = 1, learns y = phi(<u*, x>) with
u* = e_1 (inputs are isotropic, so this loses nothing). Time is in the ODE's unit, t = step * eta.
The activation, its derivative and the link are generated from the same symbolic declaration as
the ODE and inlined into Numba kernels, cached on disk like every generated module.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cached_property
import time
import warnings
from typing import Optional

import numpy as np
import sympy as sp

from .. import __version__
from ..checks import check_memory, positive_float, positive_int, seed_value
from ..codegen import compile_model, compile_source, digest, scalar_functions_source
from ..errors import InputError, IntegrationError
from ..io import load_npz, save_npz
from ..solve import InitialCondition, a0_law, log_time_grid, solve
from ..solve.trajectory import check_time_arrays
from ..models.finite_width import FiniteWidthModel
from ..symbolic.founding import check_eps, check_kmax
from ..symbolic.parse import parse_expression, z
from ..threads import blas_threads, check_compiled_threads, compiled_threads, parallel_variant

ALGORITHMS = ("gf", "sgd", "gd")
# series order of the risk kernels when no closed form is known (tanh: tail of E[sigma^2] 1.4e-5)
RISK_KMAX = 16

_KERNELS = '''

@njit(cache=True)
def renormalize(W):
    for i in range(W.shape[0]):
        n = 0.0
        for k in range(W.shape[1]):
            n += W[i, k] * W[i, k]
        n = math.sqrt(n)
        for k in range(W.shape[1]):
            W[i, k] /= n


@njit(cache=True, fastmath={"reassoc", "contract"})
def sgd_steps(W, a, nsteps, eta, inv_eps, noise, rng):
    """Online SGD, one fresh Gaussian sample per step (mini-batches: ``minibatch_steps``, a kernel
    of its own, so that a one-sample run does not compile it); u* = e_1. The samples are ``rng``'s
    (a NumPy Generator): each x, then its label noise; NumPy's own ``rng.standard_normal`` gives
    the same numbers.
    a_i += (eta/eps) e sigma(h_i); u_i <- normalize(u_i + eta e a_i sigma'(h_i) (x - h_i u_i)).

    With one sample per step the update of W is applied lazily, inside the next step's pass that
    computes h = W x (u_i <- keep_i u_i + cs_i x_prev, then h_i = u_i . x, row by row, the dot
    reading the updated row from the cache): W comes from memory once per step instead of twice.
    Compiled with reassociation allowed, so that the sums over W's rows vectorise (h is a
    rounding-level change of order from a sequential sum). The pass over the rows is a prange: a plain
    loop in this build, split across Numba's threads in its parallel variant (online_sgd's
    ``threads``), which draws the same samples and differs only in the order of the sum f."""
    m, d = W.shape
    x = np.empty(d)
    xp = np.empty(d)
    h = np.empty(m)
    keep = np.ones(m)
    cs = np.zeros(m)
    pending = False
    for step in range(nsteps):
        for k in range(d):
            x[k] = rng.standard_normal()
        y = phi(x[0]) + noise * rng.standard_normal()
        f = 0.0
        for i in prange(m):
            row = W[i]
            if pending:
                # the row's pending update, then its dot with x from the cache (a row of 32768
                # doubles, 256 KB, stays in L2): one loop doing both ran at 17 GB/s, these two at 36 GB/s
                kp = keep[i]
                cp = cs[i]
                for k in range(d):
                    row[k] = kp * row[k] + cp * xp[k]
            acc = 0.0
            for k in range(d):
                acc += row[k] * x[k]
            h[i] = acc
            f += a[i] * sigma(acc)
        e = y - f / m
        x2 = 0.0
        for k in range(d):
            x2 += x[k] * x[k]
        for i in range(m):
            c = eta * e * a[i] * dsigma(h[i])
            hi = h[i]
            # |u + c (x - h u)|^2 = 1 + c^2 (|x|^2 - h^2) for a unit u
            scale = 1.0 / math.sqrt(1.0 + c * c * (x2 - hi * hi))
            keep[i] = (1.0 - c * hi) * scale
            cs[i] = c * scale
            a[i] += eta * inv_eps * e * sigma(hi)
        for k in range(d):
            xp[k] = x[k]
        pending = True
    if pending:
        for i in range(m):
            for k in range(d):
                W[i, k] = keep[i] * W[i, k] + cs[i] * xp[k]
    renormalize(W)


@njit(cache=True)
def minibatch_steps(W, a, nsteps, eta, inv_eps, batch, noise, rng):
    """Mini-batch SGD: the batch's pre-activations H = X W^T and the update C^T X are two GEMMs
    (BLAS), the rest O(batch m). Samples are drawn in the order of the one-sample loop (each x,
    then its label noise)."""
    m, d = W.shape
    X = np.empty((batch, d), dtype=W.dtype)
    yb = np.empty(batch)
    C = np.empty((batch, m), dtype=W.dtype)
    H = np.empty((batch, m), dtype=W.dtype)
    GW = np.empty((m, d), dtype=W.dtype)  # once: a fresh (m, d) array per step cost its page faults
    for step in range(nsteps):
        for b in range(batch):
            for k in range(d):
                X[b, k] = rng.standard_normal()
            yb[b] = phi(np.float64(X[b, 0])) + noise * rng.standard_normal()
        np.dot(X, W.T, H)
        GA = np.zeros(m)
        S = np.zeros(m)
        for b in range(batch):
            f = 0.0
            for i in range(m):
                f += a[i] * sigma(np.float64(H[b, i]))
            e = yb[b] - f / m
            for i in range(m):
                hi = np.float64(H[b, i])
                GA[i] += eta * inv_eps * e * sigma(hi) / batch
                c = eta * e * a[i] * dsigma(hi) / batch
                C[b, i] = c
                S[i] += c * hi
        np.dot(C.T, X, GW)
        for i in range(m):
            a[i] += GA[i]
            n = 0.0
            for k in range(d):
                w = W[i, k] + GW[i, k] - S[i] * W[i, k]
                W[i, k] = w
                n += np.float64(w) * np.float64(w)
            n = math.sqrt(n)
            for k in range(d):
                W[i, k] = W[i, k] / n


@njit(cache=True)
def gd_steps(W, a, X, y, nsteps, eta, inv_eps):
    """Full-batch gradient descent on the empirical risk (1/2n) sum (y - f)^2, sphere-projected.
    Returns the train risk before the last step."""
    n, d = X.shape
    m = W.shape[0]
    H = np.empty((n, m))
    e = np.empty(n)
    train = 0.0
    for step in range(nsteps):
        np.dot(X, W.T, H)  # not H[:, :] = X @ W.T: Numba compiles that with its shape-mismatch message
        train = 0.0
        for j in range(n):
            f = 0.0
            for i in range(m):
                f += a[i] * sigma(H[j, i])
            e[j] = y[j] - f / m
            train += 0.5 * e[j] * e[j] / n
        for i in range(m):
            ga = 0.0
            coef = np.empty(n)
            for j in range(n):
                ga += e[j] * sigma(H[j, i])
                coef[j] = e[j] * a[i] * dsigma(H[j, i])
            g = (coef @ X) / n
            proj = 0.0
            for k in range(d):
                proj += g[k] * W[i, k]
            nn = 0.0
            for k in range(d):
                W[i, k] += eta * (g[k] - proj * W[i, k])
                nn += W[i, k] * W[i, k]
            nn = math.sqrt(nn)
            for k in range(d):
                W[i, k] /= nn
            a[i] += eta * inv_eps * ga / n
    return train


@njit(cache=True)
def train_risk(W, a, X, y):
    n = X.shape[0]
    m = W.shape[0]
    H = X @ W.T
    out = 0.0
    for j in range(n):
        f = 0.0
        for i in range(m):
            f += a[i] * sigma(H[j, i])
        out += 0.5 * (y[j] - f / m) ** 2 / n
    return out


@njit(cache=True)
def weight_flow_rhs(t, yv, m, d, inv_eps, out):
    """Population gradient flow of (a, W) in R^d (docs/model.md 2), u* = e_1, with the kernels
    V and U of the ODE: eps da_i/dt = V(s_i) - (1/m) sum_j a_j U(r_ij),
    du_i/dt = (I - u_i u_i^T)[a_i V'(s_i) u* - (1/m) sum_j a_i a_j U'(r_ij) u_j]."""
    a = yv[:m]
    W = yv[m:].reshape((m, d))
    # |u_i| = 1 holds only to rounding; closed-form kernels (sqrt(1 - r^2)) need |r| <= 1
    R = np.minimum(np.maximum(W @ W.T, -1.0), 1.0)
    for i in range(m):
        acc = Vk(min(max(W[i, 0], -1.0), 1.0))
        for j in range(m):
            acc -= a[j] * Uk(R[i, j]) / m
        out[i] = inv_eps * acc
    G = np.zeros((m, d))
    for i in range(m):
        G[i, 0] += a[i] * dVk(min(max(W[i, 0], -1.0), 1.0))
        for j in range(m):
            if j != i:
                c = a[i] * a[j] * dUk(R[i, j]) / m
                for k in range(d):
                    G[i, k] -= c * W[j, k]
        proj = 0.0
        for k in range(d):
            proj += G[i, k] * W[i, k]
        for k in range(d):
            out[m + i * d + k] = G[i, k] - proj * W[i, k]
'''


@dataclasses.dataclass(frozen=True)
class Network:
    """A network and target declared by sigma and phi (expressions in z), plus the overlap model
    used for the exact population risk."""

    sigma: str
    phi: str
    eps: float
    kmax: int = 6

    def __post_init__(self):
        object.__setattr__(self, "eps", check_eps(self.eps))
        object.__setattr__(self, "kmax", check_kmax(self.kmax))

    @cached_property
    def overlap_model(self) -> FiniteWidthModel:
        """The overlap model whose kernels V, U give the population risk (and the flow of
        ``population_gf``): closed forms where known, else Hermite series to degree
        max(K, RISK_KMAX), whose truncation error :func:`risk_truncation_bound` bounds."""
        try:
            model = FiniteWidthModel(self.sigma, self.phi, self.kmax, self.eps, kernels="closed")
            model.kernel_exprs
            return model
        except InputError:
            return FiniteWidthModel(self.sigma, self.phi, max(self.kmax, RISK_KMAX), self.eps, kernels="series")

    @property
    def risk_kernels(self) -> str:
        model = self.overlap_model
        return "closed" if model.kernels == "closed" else f"series to degree {model.K}"

    def check_differentiable(self, algo: str):
        """Per-sample gradients need sigma' pointwise; a jump in sigma makes them 0 almost everywhere."""
        dsig = sp.diff(parse_expression(self.sigma), z)
        if dsig.has(sp.DiracDelta):
            raise InputError(f"{algo} needs sigma' pointwise, and sigma = {self.sigma} jumps (sigma' = {dsig}): "
                             "its per-sample first-layer gradients are 0 almost everywhere, so the first layer "
                             "would never move; use --algo gf (the population flow, which sees the Gaussian-"
                             "smoothed derivative) or a continuous activation")

    def compiled(self):
        s_expr, p_expr = parse_expression(self.sigma), parse_expression(self.phi)
        model = self.overlap_model
        V, U = model.kernel_exprs
        from ..symbolic.founding import r_sym, s_sym

        key = digest({"kind": "network", "sigma": sp.srepr(s_expr), "phi": sp.srepr(p_expr),
                      "V": sp.srepr(V), "U": sp.srepr(U), "odehild": __version__,
                      "template": digest({"kernels": _KERNELS})})

        def build():
            # a jump's DiracDelta is 0 pointwise; SGD and GD refuse such a sigma (check_differentiable)
            dsig = sp.diff(s_expr, z).replace(lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0))
            funcs = {"sigma": s_expr, "dsigma": dsig, "phi": p_expr,
                     "Vk": V.xreplace({s_sym: z}), "dVk": sp.diff(V, s_sym).xreplace({s_sym: z}),
                     "Uk": U.xreplace({r_sym: z}), "dUk": sp.diff(U, r_sym).xreplace({r_sym: z})}
            header = ("# Generated by odehild: simulation kernels. Do not edit.\n"
                      "import math\nimport numpy as np\nfrom numba import njit, prange\n\n\n")
            return header + scalar_functions_source(funcs) + _KERNELS

        return compile_source(key, build, {"sigma": self.sigma, "phi": self.phi}, "network")


@dataclasses.dataclass
class Simulation:
    """A simulated run, time on the first axis: ``t`` (ODE time unit), ``step``, ``a`` and ``s``
    (T, m), ``risk`` (exact population risk from the overlaps), ``train_risk`` for batch GD."""

    t: np.ndarray
    step: np.ndarray
    a: np.ndarray
    s: np.ndarray
    risk: np.ndarray
    train_risk: Optional[np.ndarray] = None
    meta: dict = dataclasses.field(default_factory=dict)
    r0: Optional[np.ndarray] = None  # initial overlaps r_ij = <u_i, u_j> (m, m): the finite-width ODE's start

    ARRAYS = ("t", "step", "a", "s", "risk", "train_risk", "r0")

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS if getattr(self, k) is not None},
                        self.meta)

    @classmethod
    def load(cls, path) -> "Simulation":
        arrays, meta = load_npz(path, required=("t", "step", "a", "s", "risk"))
        check_time_arrays(path, arrays)
        return cls(**{k: arrays.get(k) for k in cls.ARRAYS}, meta=meta)

    def __repr__(self):
        return (f"Simulation({self.meta.get('algo')}, m={self.a.shape[1]}, d={self.meta.get('dim')}, "
                f"T={self.t.size}, risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g})")


def random_start(m: int, d: int, seed, a0: str = "normal"):
    """Rows of W uniform on the sphere S^(d-1), a_i sampled from the a0 law; u* = e_1."""
    rng = np.random.default_rng(seed_value("seed", seed))
    W = rng.standard_normal((m, d))
    W /= np.linalg.norm(W, axis=1, keepdims=True)
    a = a0_law(a0, m, seed=int(rng.integers(2**31)))
    return W, a


def sample_stream(seed) -> np.random.Generator:
    """The Generator of an online-SGD run's samples (every simulator's): a stream of its own, apart
    from the start's (``seed``) and batch GD's samples (``[seed, 1]``)."""
    seed = seed_value("seed", seed)
    return np.random.default_rng(None if seed is None else [seed, 2])


MAX_STEPS = 10**12  # beyond this a run would not finish: refuse it with the count


def step_count(t_end: float, lr: float) -> int:
    """Training steps to reach t_end = steps * lr, refused when 0 or beyond MAX_STEPS."""
    n = t_end / lr
    if not n < MAX_STEPS:
        raise InputError(f"t_end / lr = {n:.3g} steps (t_end = {t_end:g}, lr = {lr:g}); at most {MAX_STEPS:.0e}")
    if round(n) < 1:
        raise InputError(f"t_end = {t_end:g} is less than one step of lr = {lr:g}")
    return int(round(n))


def record_steps(nsteps: int, points: int) -> np.ndarray:
    """0, about ``points`` log-spaced step counts, and nsteps itself: the record grid never
    changes how long the network trains."""
    points = positive_int("points", points)
    grid = np.round(np.logspace(0, np.log10(max(nsteps, 1)), points)).astype(np.int64)
    return np.unique(np.concatenate([[0], grid, [nsteps]]))


def _risks(net: Network, W, a):
    model = net.overlap_model
    c = compile_model(model)
    W = W.astype(float, copy=False)  # single-precision weights: the overlaps in double
    R = W @ W.T
    return c.risk(a.copy(), W[:, 0].copy(), R, model.phi.norm2, model.sigma.norm2), \
        risk_truncation_bound(model, a, W[:, 0], R)


def risk_truncation_bound(model: FiniteWidthModel, a, s, R) -> float:
    """Bound on |risk - exact risk| from truncating the kernels at K (0 for closed forms and
    finite series). Cauchy-Schwarz on the coefficient tails: |V - V_K|(s) <= |s|^(K+1) sqrt(tau_phi
    tau_sigma), |U - U_K|(r) <= |r|^(K+1) tau_sigma; U(1) = E[sigma^2] is used exactly."""
    if model.kernels == "closed":
        return 0.0
    tp, ts = model.phi.tail, model.sigma.tail
    if tp == 0 and ts == 0:
        return 0.0
    m, p = a.size, model.K + 1
    aa = np.abs(a)
    off = np.abs(np.clip(R, -1, 1)) ** p
    np.fill_diagonal(off, 0.0)
    return float(np.sum(aa * np.abs(np.clip(s, -1, 1)) ** p) * np.sqrt(tp * ts) / m
                 + aa @ off @ aa * ts / (2 * m * m))


class _Bar:
    def __init__(self, total, desc, quiet):
        from ..progress import progress_bar

        self.bar = progress_bar(total, desc, False if quiet else None, unit="step")

    def update(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _check_noise(noise) -> float:
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not math.isfinite(noise) or noise < 0:
        raise InputError(f"label noise must be a non-negative number, got {noise!r}")
    return float(noise)


def _check_sizes(m, d):
    m, d = positive_int("width m", m), positive_int("dimension d", d)
    # weights, a per-step copy and the m x m overlaps of the exact risk
    check_memory(8.0 * (3 * m * d + 2 * m * m), f"a network of width m = {m} in dimension d = {d}")
    if d < 2:
        raise InputError(f"dimension d must be at least 2, got {d}")
    return m, d


PRECISIONS = {"float64": np.float64, "float32": np.float32}


def online_sgd(sigma, phi, eps, width, dim, lr=None, t_end=5.0, batch=1, noise=0.0, seed=0,
               a0="normal", points=60, kmax=6, quiet=True, precision="float64", threads=1) -> Simulation:
    """Online SGD with step ``lr`` (default 0.01/d: the ODE needs lr * d << 1), a fresh sample per step
    (or a mini-batch of ``batch``, through BLAS GEMMs).

    ``precision="float32"`` stores the first-layer weights in single precision (half the memory
    traffic per step at sizes beyond the cache); the arithmetic of each update stays in double. Its
    effect on the risk curve is measured in ``benchmarks/bench_sgd.py``.

    ``threads`` > 1 splits each one-sample step's pass over W's rows across Numba's threads: the
    same samples, and the same weights to rounding (the network's output is summed per thread). On
    a quiet 2-core machine two threads ran 1.5x to 1.9x faster at m d from 1e6 to 1.7e7
    (bench_sgd.py); a small network gains less than a thread launch per step costs, and next to
    other work threads are a loss, as in ``solve``. Default 1. With ``batch`` > 1 ``threads`` is the
    BLAS pool of the steps' GEMMs (and of W W^T at each record): at (d, m) = (16384, 1024) and
    (32768, 512), batch 64, two threads took 1.3x to 1.6x more samples per second than one
    (bench_sgd.py)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r} (allowed: {', '.join(PRECISIONS)})")
    threads = check_compiled_threads(threads)
    net = Network(sigma, phi, eps, kmax)
    net.check_differentiable("online SGD")
    m, d = _check_sizes(width, dim)
    eta = positive_float("lr", lr if lr is not None else 0.01 / d)
    t_end = positive_float("t_end", t_end)
    batch = positive_int("batch", batch)
    noise = _check_noise(noise)
    if eta / net.eps > 0.5:
        warnings.warn(f"lr/eps = {eta / net.eps:.3g}: the second layer moves by (lr/eps) per step and is "
                      f"unstable or far from the ODE unless lr/eps << 1", stacklevel=2)
    if eta * d / batch > 1:
        warnings.warn(f"lr * d / batch = {eta * d / batch:.3g}: fewer than d samples per unit time, the "
                      f"SGD noise is not small (need lr * d << batch)", stacklevel=2)
    nsteps = step_count(t_end, eta)
    k = net.compiled()
    W, a = random_start(m, d, seed, a0)
    W = W.astype(PRECISIONS[precision])
    rng = sample_stream(seed)
    steps = record_steps(nsteps, points)
    extra = {"algo": "sgd", "lr": eta, "batch": batch, "noise": noise, "precision": precision, "threads": threads}
    if batch > 1:  # the GEMMs on `threads` BLAS threads, the compiled loops serial
        def run(W, a, n):
            k.minibatch_steps(W, a, n, eta, 1 / net.eps, batch, noise, rng)

        with compiled_threads(1):
            return _run_chunks(net, W, a, steps, eta, run, extra, seed, a0, quiet, blas=threads)
    kernel = parallel_variant(k.sgd_steps) if threads > 1 else k.sgd_steps

    def run(W, a, n):
        kernel(W, a, n, eta, 1 / net.eps, noise, rng)

    with compiled_threads(threads):
        return _run_chunks(net, W, a, steps, eta, run, extra, seed, a0, quiet)


def batch_gd(sigma, phi, eps, width, dim, samples, lr=None, t_end=5.0, noise=0.0, seed=0, a0="normal",
             points=60, kmax=6, quiet=True) -> Simulation:
    """Full-batch gradient descent on ``samples`` fixed samples; records train and population risk."""
    net = Network(sigma, phi, eps, kmax)
    net.check_differentiable("gradient descent")
    m, d = _check_sizes(width, dim)
    n = positive_int("samples", samples)
    noise = _check_noise(noise)
    eta = positive_float("lr", lr if lr is not None else 0.05 * net.eps)
    t_end = positive_float("t_end", t_end)
    if eta / net.eps > 0.5:
        warnings.warn(f"lr/eps = {eta / net.eps:.3g}: the second layer is unstable unless lr/eps << 1", stacklevel=2)
    k = net.compiled()
    W, a = random_start(m, d, seed, a0)
    rng = np.random.default_rng([seed, 1])
    X = rng.standard_normal((n, d))
    y = np.array([k.phi(x) for x in X[:, 0]]) + noise * rng.standard_normal(n)
    nsteps = step_count(t_end, eta)
    train = []

    def advance(W, a, nst):
        k.gd_steps(W, a, X, y, nst, eta, 1 / net.eps)

    sim = _run_chunks(net, W, a, record_steps(nsteps, points), eta, advance,
                      {"algo": "gd", "lr": eta, "samples": n, "noise": noise}, seed, a0, quiet,
                      on_record=lambda W, a: train.append(k.train_risk(W, a, X, y)))
    sim.train_risk = np.array(train)
    return sim


# a risk this many times its start (or 1) means the step is unstable: stop and say so
DIVERGED = 1e6
CHUNK_SECONDS = 0.2


def _run_chunks(net, W, a, steps, eta, advance, extra, seed, a0, quiet, on_record=None, blas=1):
    """``blas``: the BLAS pool inside (1 but for mini-batch GEMMs the user gave threads)."""
    m, d = W.shape
    r0 = W.astype(float) @ W.astype(float).T
    rec_a, rec_s, rec_r, rec_b = [], [], [], []
    start = time.perf_counter()
    bar = _Bar(int(steps[-1]), f"{extra['algo']} seed {seed}", quiet)

    def result(n, extra_meta=None):
        meta = {"model": "simulation", **extra, "sigma": net.sigma, "phi": net.phi, "eps": net.eps,
                "kmax": net.kmax, "width": m, "dim": d, "seed": seed, "a0": a0,
                "risk_kernels": net.risk_kernels, "risk_truncation_bound": float(max(rec_b, default=0.0)),
                "wall_seconds": time.perf_counter() - start,
                "steps_per_second": float(steps[n - 1] if n else 0) / max(time.perf_counter() - start, 1e-12),
                "odehild": __version__, **(extra_meta or {})}
        return Simulation(steps[:n] * eta, steps[:n], np.array(rec_a), np.array(rec_s), np.array(rec_r), None, meta,
                          r0)

    try:
        with blas_threads(blas):  # W W^T at each record: one BLAS thread unless asked (odehild.threads)
            _train(net, W, a, steps, eta, advance, extra, bar, rec_a, rec_s, rec_r, rec_b, on_record, result)
    except KeyboardInterrupt:
        bar.close()
        done = int(steps[len(rec_r) - 1]) if rec_r else 0
        msg = f"{extra['algo']} interrupted after the record at step {done} (t = {done * eta:.4g})"
        raise IntegrationError(msg, t_fail=done * eta, interrupted=True,
                               partial=result(len(rec_r), {"partial": True, "failure": msg}) if rec_r else None
                               ) from None
    bar.close()
    return result(len(steps))


def _train(net, W, a, steps, eta, advance, extra, bar, rec_a, rec_s, rec_r, rec_b, on_record, result):
    done = 0
    chunk = 1  # steps per compiled call, grown to about CHUNK_SECONDS so Ctrl-C is seen promptly
    for target in steps:
        while done < target:
            n = int(min(target - done, chunk))
            t0 = time.perf_counter()
            advance(W, a, n)
            spent = time.perf_counter() - t0
            chunk = max(1, int(n * CHUNK_SECONDS / spent)) if spent > 0 else chunk * 2
            bar.update(n)
            done += n
        finite = np.all(np.isfinite(a)) and np.all(np.isfinite(W))
        risk, bound = _risks(net, W, a) if finite else (np.inf, np.inf)
        if not np.isfinite(risk) or (rec_r and risk > DIVERGED * max(1.0, rec_r[0])):
            bar.close()
            msg = (f"{extra['algo']} diverged by step {done} (t = {done * eta:.4g}): risk {risk:.3g} from "
                   f"{rec_r[0] if rec_r else float('nan'):.3g} at the start; lower the learning rate "
                   f"(lr = {eta:.3g}, lr/eps = {eta / net.eps:.3g})")
            raise IntegrationError(msg, t_fail=done * eta, state=None,
                                   partial=result(len(rec_r), {"partial": True, "failure": msg}) if rec_r else None)
        rec_a.append(a.copy())
        rec_s.append(W[:, 0].astype(float))
        rec_r.append(risk)
        rec_b.append(bound)
        if on_record is not None:
            on_record(W, a)


def population_gf(sigma, phi, eps, width, dim, t_end=5.0, seed=0, a0="normal", space="overlaps",
                  points=60, kmax=6, method=None, rtol=1e-8, atol=1e-10, quiet=True) -> Simulation:
    """Exact population gradient flow at finite (m, d) from a random start, integrated in overlap
    coordinates (docs/model.md 2a, default) or in weight space R^d (``space="weights"``)."""
    net = Network(sigma, phi, eps, kmax)
    m, d = _check_sizes(width, dim)
    if space not in ("overlaps", "weights"):
        raise InputError(f"space must be 'overlaps' or 'weights', got {space!r}")
    W, a = random_start(m, d, seed, a0)
    model = net.overlap_model
    t_end = positive_float("t_end", t_end)
    t_eval = log_time_grid(t_end, points, eps=net.eps)
    start = time.perf_counter()
    if space == "overlaps":
        tr = solve(model, InitialCondition(a, W[:, 0], None, W @ W.T, f"random sphere start, d = {d}"),
                   t_end, t_eval=t_eval, method=method or "Radau", rtol=rtol, atol=atol,
                   progress=False if quiet else None)
        A, S, R = tr.a, tr.s, tr.risk
    else:
        from scipy.integrate import solve_ivp

        k = net.compiled()

        def f(t, yv):
            out = np.empty_like(yv)
            k.weight_flow_rhs(t, yv, m, d, 1 / net.eps, out)
            if not np.all(np.isfinite(out)):
                raise IntegrationError(f"weight-space flow: non-finite derivative at t = {t:.6g}", t_fail=t,
                                       state=yv.copy())
            return out

        sol = solve_ivp(f, (0, t_end), np.concatenate([a, W.ravel()]), method=method or "DOP853",
                        t_eval=t_eval, rtol=rtol, atol=atol)
        if sol.status < 0:
            raise InputError(f"weight-space flow failed: {sol.message}")
        A = sol.y[:m].T
        Ws = sol.y[m:].T.reshape(-1, m, d)
        S = Ws[:, :, 0]
        R = np.array([_risks(net, Wt, at)[0] for Wt, at in zip(Ws, A)])
    meta = {"model": "simulation", "algo": "gf", "space": space, "sigma": net.sigma, "phi": net.phi,
            "eps": net.eps, "kmax": net.kmax, "width": m, "dim": d, "seed": seed, "a0": a0,
            "risk_kernels": net.risk_kernels, "wall_seconds": time.perf_counter() - start, "odehild": __version__}
    return Simulation(t_eval.copy(), np.full(t_eval.size, -1), A, S, R, None, meta, W @ W.T)


def simulate(algo: str, **kw) -> Simulation:
    """One entry point: ``algo`` in gf, sgd, gd, with the keyword arguments of that simulator."""
    table = {"gf": population_gf, "sgd": online_sgd, "gd": batch_gd}
    if algo not in table:
        raise InputError(f"unknown algorithm {algo!r} (allowed: {', '.join(ALGORITHMS)})")
    return table[algo](**kw)
