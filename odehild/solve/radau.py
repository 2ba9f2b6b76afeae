"""Radau IIA (order 5) for the structured mean-field Jacobian, its O(N) work compiled.

The method, step-size control and Newton iteration are those of Hairer & Wanner, Solving ODEs II
(section IV.8, RADAU5) as SciPy's ``Radau`` implements them, so the steps and counters agree with
SciPy's to rounding, with four differences, all in the Newton iteration: it may take up to
NEWTON_MAXITER = 10 iterations where SciPy stops at 6; a step whose fresh Jacobian failed is retried
once with the Jacobian at its predicted end (JACOBIAN_AT_END); the next steps are then capped
(NEWTON_CAP), as RADAU5 and CVODE also keep a step from growing right back after a failure; and a
Jacobian refreshed after a step is taken at the next step's predicted end (JACOBIAN_AHEAD). Runs
that never refresh the Jacobian and whose Newton iterations converge within SciPy's 6 take SciPy's
steps; the others take steps within a few percent of SciPy's count. What differs is where the
time goes: SciPy's step is a sequence of NumPy expressions over (3, n) arrays (about 25
temporaries per Newton iteration, 17 ms of a 32 ms step at N = 1e5 particles); here each Newton
iteration is a few Numba passes over buffers allocated once: the stage derivatives, then the
residuals, the two Woodbury solves, the increment's norm and the update pass by pass, or, from
FUSED_MIN_UNKNOWNS on, in two fused passes.
The Python left per step is the control logic (a few dozen scalar operations).

The Newton systems are solved through the Jacobian's structure J = D + A Vt
(:class:`~odehild.solve.structured.WoodburyFactor`): (mu/h I - J) for the real eigenvalue mu of
the inverse Butcher matrix and for its complex pair.
"""

from __future__ import annotations

import numpy as np
from types import SimpleNamespace

from numba import njit, prange

from .structured import IterationMatrix, WoodburyFactor, _residual_at, newton_update

# Radau IIA, 3 stages: nodes and Butcher matrix (Hairer & Wanner II, Table 7.7)
_S6 = 6.0 ** 0.5
C = np.array([(4 - _S6) / 10, (4 + _S6) / 10, 1.0])
_A = np.array([[(88 - 7 * _S6) / 360, (296 - 169 * _S6) / 1800, (-2 + 3 * _S6) / 225],
               [(296 + 169 * _S6) / 1800, (88 + 7 * _S6) / 360, (-2 - 3 * _S6) / 225],
               [(16 - _S6) / 36, (16 + _S6) / 36, 1 / 9]])


def _eigen_transform():
    """T with T^-1 A^-1 T = [[mu, 0, 0], [0, alpha, beta], [0, -beta, alpha]]; the complex pair acts
    on W1 + i W2 as multiplication by alpha - i beta."""
    lam, vec = np.linalg.eig(np.linalg.inv(_A))
    real = int(np.argmin(np.abs(lam.imag)))
    cplx = int(np.argmax(lam.imag))
    T = np.column_stack([vec[:, real].real, vec[:, cplx].real, vec[:, cplx].imag])
    return T, np.linalg.inv(T), float(lam[real].real), complex(np.conj(lam[cplx]))


T, TI, MU_REAL, MU_COMPLEX = _eigen_transform()
# error estimate: the embedded formula of Hairer & Wanner (IV.8.19), scaled by 1/gamma0 = MU_REAL
E = np.array([-13 - 7 * _S6, -13 + 7 * _S6, -1]) / 3
# dense output: the collocation polynomial through (0, 0) and (c_i, Z_i), in powers x, x^2, x^3
P = np.linalg.inv(np.vander(C, 4, increasing=True)[:, 1:])

# Newton iterations allowed per attempt (SciPy's Radau: 6). The iteration stops early where its rate
# predicts no convergence within the iterations left, so a larger limit lets a slow but steady
# iteration finish instead of halving the step and factoring anew. In the founding model at
# eps = 1e-12 the tail particles' Jacobian changes within a step near t = 1e-4 and the iteration
# contracts slowly there: weighted norm, rtol 1e-8, N = 1e4: 792 -> 750 steps, 1200 -> 926
# factorizations; N = 1e5: 820 -> 777 steps, 1378 -> 1038 factorizations, 25.7 -> 22.3 s (one
# process). State-norm runs, whose iterations converge in two or three, keep SciPy's steps (N = 1e4:
# 2960 -> 2961). 20 gained more at rtol 1e-8 (N = 1e5: 755 steps, 19.0 s), but at rtol 1e-10, where
# the weighted solve resolves the first drop with steps near eps, step counts there scatter by
# factors of 3 to 8 with any change of the iteration, and 20 lost on that grid (below).
NEWTON_MAXITER = 10
# The step-size safety factor 0.9 (2 k + 1) / (2 k + n_iter) keeps SciPy's k = 6, with n_iter
# counted up to SAFETY_ITERATIONS_MAX: a larger k would lengthen every step (a change of the error
# control, not of the Newton iteration: k = 15 at N = 1e4, state norm, took 2752 steps and 884
# factorizations against 2960 and 716), and a slow iteration's n_iter beyond 8 would shorten the
# next steps below SciPy's range. Over 18 tight solves (N = 700 to 2000: 12 in both norms at rtol
# 1e-10 and 1e-9, 6 weighted at 1e-10 and 3e-10; each stopped at 20 s, which 3 reached with 6, 2
# with these choices) they took 79 s against 92 s with SciPy's 6 iterations.
SAFETY_ITERATIONS = 6
SAFETY_ITERATIONS_MAX = 8


def _safety(n_iter):
    n = min(n_iter, SAFETY_ITERATIONS_MAX)
    return 0.9 * (2 * SAFETY_ITERATIONS + 1) / (2 * SAFETY_ITERATIONS + n)


MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
# After a Newton failure at step h (the step is then halved), steps stay below h / sqrt 2, a cap that
# grows by NEWTON_CAP_GROWTH with each step without failure. Without it the error control proposes h
# again at once: in a fast phase each step failed at h, then succeeded at h/2 (half the Newton
# iterations wasted, two factorizations a step). A second failure at the cap lifts it.
NEWTON_CAP = 0.5 ** 0.5
NEWTON_CAP_GROWTH = 1.1
# JACOBIAN_AT_END. Where the Newton iteration fails with a fresh Jacobian, the Jacobian is taken anew
# at y + Z0[2] (the end of the step as the last step's collocation polynomial predicts it), and the
# step is retried once at the same size before it is halved. Simplified Newton converges to the same
# collocation solution with any iteration matrix; only its rate depends on the matrix. Where the
# failures come from particles whose Jacobian changes within the step (the tail particles of the
# founding model at eps = 1e-12, escaping at rates of 1e6 to 1e7 while the error control would
# allow 3x longer steps), the end's Jacobian converges more often: with SciPy's 6 Newton iterations,
# at N = 1e4, weighted norm, 792 steps and 1200 factorizations against 892 and 1470; at N = 1e3,
# rtol 1e-10, 2834 and 3466 against 5216 and 10930. A stale Jacobian that fails is refreshed at the
# step's start, as in SciPy (taking it at the end there cost a tight state-norm run 16% more steps).
JACOBIAN_AT_END = True
# JACOBIAN_AHEAD. Where an accepted step asks for a fresh Jacobian (its Newton iteration took more
# than two iterations at a rate above 1e-3), the Jacobian is taken at the next step's predicted end
# (the step's collocation polynomial extrapolated), not at the step's end as in SciPy: for the step
# it serves, the Jacobian JACOBIAN_AT_END falls back on. A failure with it halves the step at once,
# as a failure with the end's Jacobian does. The point lies at most AHEAD_MAX of the last step ahead:
# extrapolated to the next step's end after the step grew 10x (late in a run, the state at rest),
# the polynomial went astray, and a state-norm run at rtol 1e-10 took 155 steps instead of 2 over
# t in [1, 5].
# Founding model, eps = 1e-12, rtol 1e-8, weighted norm: N = 1e5 on two threads 7117 right-hand
# sides, 274 Jacobians and 762 factorizations against 8033, 422 and 1038 (765 steps against 778);
# N = 3000: 6655, 248, 720 against 7217, 317, 848. State norm at rtol 1e-10, N = 1000: 9764 steps and
# 1992 factorizations against 9974 and 2806; at rtol 1e-9, 1016 factorizations against 964.
JACOBIAN_AHEAD = True
AHEAD_MAX = 1.0

# From this many unknowns on, Newton iterations run in two fused passes where both factors are plain
# Woodbury ones (structured.newton_update). On one thread they are generated per rank and vectorise
# (odehild.codegen.radau_gen), and solve faster at every N measured (benchmarks/bench_passes.py
# --against separate, median wall time of the separate passes over the fused ones: N = 300 1.34x
# state norm, 1.11x weighted; 1000 1.25x, 1.23x; 1e4 1.86x, 1.28x). Below this many unknowns a solve
# is too short to repay their compilation on first use (5 s; from the cache they load in 0.02 s).
FUSED_MIN_UNKNOWNS = 2_000
# On threads the fused passes are the generated ones too, in their parallel variant (each thread a
# chunk of particles), and start where the threads do (integrate.PARALLEL_MIN_UNKNOWNS): on the
# Intel machine of the seventeenth session (33 GB/s on two threads beyond its cache) they took 2.0
# ms a call at N = 1e5 where the pass that reads the factors as blocks, which does not vectorise,
# took 4.1 ms; whole solves with the options (weighted, two threads, float32 output) 1.16x faster
# at N = 1e5, and against the separate passes 1.47x at N = 1e4 (1.31x in the state norm). On the
# AMD EPYC of the twelfth and thirteenth sessions the two fused passes solved as fast as each
# other at N = 1e5 (0.98x and 1.02x). THREADS_NEWTON_PASS = "blocks" takes the block pass, from
# FUSED_MIN_UNKNOWNS_BLOCKS unknowns on, as before.
THREADS_NEWTON_PASS = "generated"
FUSED_MIN_UNKNOWNS_BLOCKS = 120_000


@njit(cache=True)
def _stage_states(y, Z, out):
    for j in prange(y.shape[0]):
        for i in range(3):
            out[i, j] = y[j] + Z[i, j]


@njit(cache=True)
def _newton_residual(F, W, TI, m_real, m_complex, f_real, f_complex):
    """f_real = (TI F)_0 - m_real W0 and f_complex = (TI F)_1 + i (TI F)_2 - m_complex (W1 + i W2);
    False if F is not finite."""
    nonfinite = 0
    for j in prange(F.shape[1]):
        if not (np.isfinite(F[0, j]) and np.isfinite(F[1, j]) and np.isfinite(F[2, j])):
            nonfinite += 1
        f_real[j], f_complex[j] = _residual_at(F, W, TI, m_real, m_complex, j)
    return nonfinite == 0


@njit(cache=True)
def _increment_norm(dw_real, dw_complex, inv_scale):
    """RMS over the 3n components of dW / scale."""
    acc = 0.0
    for j in prange(inv_scale.shape[0]):
        s = inv_scale[j] * inv_scale[j]
        c = dw_complex[j]
        acc += (dw_real[j] * dw_real[j] + c.real * c.real + c.imag * c.imag) * s
    return (acc / (3 * inv_scale.shape[0])) ** 0.5


@njit(cache=True)
def _apply_increment(dw_real, dw_complex, T, W, Z):
    """W += dW; Z = T W."""
    for j in prange(W.shape[1]):
        w0 = W[0, j] + dw_real[j]
        w1 = W[1, j] + dw_complex[j].real
        w2 = W[2, j] + dw_complex[j].imag
        W[0, j], W[1, j], W[2, j] = w0, w1, w2
        for i in range(3):
            Z[i, j] = T[i, 0] * w0 + T[i, 1] * w1 + T[i, 2] * w2


@njit(cache=True)
def _transform(M, X, out):
    """out = M X for a 3x3 M and X (3, n)."""
    for j in prange(X.shape[1]):
        x0, x1, x2 = X[0, j], X[1, j], X[2, j]
        for i in range(3):
            out[i, j] = M[i, 0] * x0 + M[i, 1] * x1 + M[i, 2] * x2


@njit(cache=True)
def _error_rhs(f, Z, E, h, out):
    """out = f + (Z^T E) / h."""
    for j in prange(f.shape[0]):
        out[j] = f[j] + (E[0] * Z[0, j] + E[1] * Z[1, j] + E[2] * Z[2, j]) / h


@njit(cache=True)
def _weighted_rms(err, y, y_new, rtol, atol, g):
    """RMS of g err / (atol + rtol max(|y|, |y_new|))."""
    acc = 0.0
    for j in prange(err.shape[0]):
        s = atol + rtol * max(abs(y[j]), abs(y_new[j]))
        acc += (g[j] * err[j] / s) ** 2
    return (acc / err.shape[0]) ** 0.5


@njit(cache=True)
def _add(y, z, out):
    for j in prange(y.shape[0]):
        out[j] = y[j] + z[j]


@njit(cache=True)
def _inverse_scale(y, rtol, atol, g, out):
    for j in prange(y.shape[0]):
        out[j] = g[j] / (atol + rtol * abs(y[j]))


@njit(cache=True)
def _newton_finish(T, P, E, h, W, y, f, y_new, err_rhs, Q):
    """From the converged W, with Z = T W (not stored): y_new = y + Z_2, the error estimate's
    right-hand side f + (Z^T E) / h and the dense output's coefficients Q = P Z, in one pass (the
    arithmetic of ``_transform``, ``_add`` and ``_error_rhs``)."""
    for j in prange(y.shape[0]):
        w0, w1, w2 = W[0, j], W[1, j], W[2, j]
        z0 = T[0, 0] * w0 + T[0, 1] * w1 + T[0, 2] * w2
        z1 = T[1, 0] * w0 + T[1, 1] * w1 + T[1, 2] * w2
        z2 = T[2, 0] * w0 + T[2, 1] * w1 + T[2, 2] * w2
        y_new[j] = y[j] + z2
        err_rhs[j] = f[j] + (E[0] * z0 + E[1] * z1 + E[2] * z2) / h
        for i in range(3):
            Q[i, j] = P[i, 0] * z0 + P[i, 1] * z1 + P[i, 2] * z2


@njit(cache=True)
def _predict(y_old, Q, x, y, TI, W, Ys):
    """The Newton iteration's start from Z0 = (the collocation polynomial at x_m) - y, the last
    step's polynomial extrapolated: W = TI Z0 and the stage states Ys = y + Z0 (``_transform`` and
    ``_stage_states`` of Z0), in one pass (0.75 s of a 10.5 s solve at N = 1e5 as two). Z0 itself is
    not stored: writing it cost about a quarter of the pass (N = 1e5, two threads, in the cache:
    0.74 against 0.54 ms, measured beside another job)."""
    x1, x2, x3 = x[0], x[0] * x[0], x[0] * x[0] * x[0]
    u1, u2, u3 = x[1], x[1] * x[1], x[1] * x[1] * x[1]
    v1, v2, v3 = x[2], x[2] * x[2], x[2] * x[2] * x[2]
    for j in prange(y_old.shape[0]):
        q0, q1, q2, yo, yj = Q[0, j], Q[1, j], Q[2, j], y_old[j], y[j]
        z0 = (yo + q0 * x1 + q1 * x2 + q2 * x3) - yj
        z1 = (yo + q0 * u1 + q1 * u2 + q2 * u3) - yj
        z2 = (yo + q0 * v1 + q1 * v2 + q2 * v3) - yj
        for i in range(3):
            W[i, j] = TI[i, 0] * z0 + TI[i, 1] * z1 + TI[i, 2] * z2
        Ys[0, j], Ys[1, j], Ys[2, j] = yj + z0, yj + z1, yj + z2


@njit(cache=True)
def _evaluate_polynomial(y_old, Q, x, out):
    """out[m] = y_old + sum_k Q_k x_m^(k+1) for each x_m."""
    for m in range(x.shape[0]):
        x1 = x[m]
        x2 = x1 * x1
        x3 = x2 * x1
        for j in prange(y_old.shape[0]):
            out[m, j] = y_old[j] + Q[0, j] * x1 + Q[1, j] * x2 + Q[2, j] * x3


_PASSES = ("_stage_states", "_newton_residual", "_increment_norm", "_apply_increment", "_transform", "_error_rhs",
           "_weighted_rms", "_add", "_inverse_scale", "_evaluate_polynomial", "_newton_finish",
           "_predict")


def step_passes(parallel: bool = False) -> SimpleNamespace:
    """The step's compiled passes by name (``stage_states``, ...): as defined above, or their
    parallel variants (:func:`odehild.threads.parallel_variant`, compiled on first use)."""
    if not parallel:
        return SimpleNamespace(**{name[1:]: globals()[name] for name in _PASSES})
    from ..threads import parallel_variant

    return SimpleNamespace(**{name[1:]: parallel_variant(globals()[name]) for name in _PASSES})


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


class CollocationOutput:
    """The step's collocation polynomial on [t_old, t], evaluated in compiled code; called with a
    time gives (n,), with an array of times (n, T), as SciPy's dense outputs."""

    def __init__(self, t_old, t, y_old, Q, evaluate=_evaluate_polynomial):
        self.t_old, self.t, self.h = t_old, t, t - t_old
        self.y_old, self.Q, self.evaluate = y_old, Q, evaluate

    def __call__(self, t):
        t = np.asarray(t, dtype=float)
        x = np.atleast_1d(t)
        out = np.empty((x.size, self.y_old.size))
        self.evaluate(self.y_old, self.Q, (x - self.t_old) / self.h, out)
        return out.T if t.ndim else out[0]


class CompiledRadau:
    """Radau IIA of order 5 for ``rhs(t, y, out)`` and a structured ``jac(t, y, reuse=None)``
    returning a :class:`~odehild.solve.structured.LowRankJacobian` (``reuse``: the Jacobian it
    replaces, whose arrays it may overwrite), forward in time.

    SciPy's ``OdeSolver`` interface (``step()``, ``status``, ``t``, ``y``, ``t_old``,
    ``dense_output()``, ``nfev``, ``njev``, ``nlu``) without importing ``scipy.integrate``, which
    costs a warm start 0.35 s of imports this solver does not use."""

    TOO_SMALL_STEP = "Required step size is less than spacing between numbers."

    def __init__(self, rhs, t0, y0, t_bound, jac, rtol=1e-3, atol=1e-6, first_step=None,
                 max_step=np.inf, threads=1, error_weights=None, **extraneous):
        if extraneous:
            raise TypeError(f"unexpected options {sorted(extraneous)}")
        if not t_bound > t0:
            raise ValueError(f"CompiledRadau integrates forward in time only (t0 = {t0}, t_bound = {t_bound})")
        self._rhs = rhs
        # threads > 1: every O(n) pass and Woodbury solve runs on Numba's threads (set by the caller)
        self.threads = threads
        self.k = step_passes(parallel=threads > 1)
        self.t, self.t_bound, self.t_old = float(t0), float(t_bound), None
        self.y = np.array(y0, dtype=float)
        self.n = n = self.y.size
        blocks = threads > 1 and THREADS_NEWTON_PASS == "blocks"
        self.fuse = n >= (FUSED_MIN_UNKNOWNS_BLOCKS if blocks else FUSED_MIN_UNKNOWNS)
        self.rows = self.fuse and not blocks  # factors in rows, for the generated passes
        self.status = "running"
        self.nfev = 0
        self.rtol, self.atol, self.max_step = float(rtol), float(atol), max_step
        # error_weights g (n,), 0 < g <= 1: the error and Newton norms count component j's error
        # times g_j (None: all 1, SciPy's norm)
        self.g = np.ones(n) if error_weights is None else np.asarray(error_weights, dtype=float)
        self._jac = jac
        self.nlu = self.njev = self.ndense = 0
        self.f = self._eval(t0, self.y)
        self.h_abs = first_step if first_step is not None else self._initial_step()
        self.h_abs_old = self.error_norm_old = None
        self.h_cap = np.inf  # NEWTON_CAP
        self.capped = False  # whether h_abs is the cap
        self.cap_failures = 0  # Newton failures at the cap since the last one off it
        self.newton_tol = max(10 * np.finfo(float).eps / self.rtol, min(0.03, self.rtol ** 0.5))
        self.sol = None
        self.J = self._jacobian(t0, self.y)
        self.current_jac = True
        self.jac_ahead = False  # the Jacobian taken at the next step's predicted end
        self.LU_real = self.LU_complex = None
        # buffers, allocated once
        self.Z, self.W, self.F, self.Ys = (np.empty((3, n)) for _ in range(4))
        self.f_real, self.f_complex = np.empty(n), np.empty(n, dtype=complex)
        self.inv_scale, self.err_rhs, self.buf = np.empty(n), np.empty(n), np.empty(n)

    def step(self):
        """One step (retried with smaller steps until accepted); returns None or, on failure, why."""
        if self.status != "running":
            raise RuntimeError("attempt to step on a failed or finished solver")
        if self.n == 0 or self.t == self.t_bound:
            self.t_old, self.t = self.t, self.t_bound
            self.status = "finished"
            return None
        success, message = self._step_impl()
        if not success:
            self.status = "failed"
        elif self.t >= self.t_bound:
            self.status = "finished"
        return message

    def dense_output(self):
        if self.t_old is None:
            raise RuntimeError("dense output is available after a successful step")
        return self.sol

    def _eval(self, t, y, out=None):
        self.nfev += 1
        if out is None:
            out = np.empty(self.n)
        self._rhs(t, y, out)
        return out

    def _jacobian(self, t, y, replaces=None):
        """``replaces``: the Jacobian this one replaces, discarded with its factorizations, whose
        arrays ``jac`` may overwrite."""
        self.njev += 1
        return self._jac(t, y, replaces)

    def _factor(self, mu, h):
        self.nlu += 1
        F = WoodburyFactor(IterationMatrix(mu / h, self.J), threads=self.threads, rows=self.rows)
        self.ndense += F.dense is not None
        return F

    def _initial_step(self):
        """Hairer, Norsett & Wanner I, II.4: the step at which an order-3 error estimate would be
        about the tolerance."""
        y0, f0 = self.y, self.f
        scale = self.atol + np.abs(y0) * self.rtol
        d0, d1 = _rms(y0 / scale), _rms(f0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, self.t_bound - self.t)
        f1 = self._eval(self.t + h0, y0 + h0 * f0)
        d2 = _rms((f1 - f0) / scale) / h0
        h1 = max(1e-6, h0 * 1e-3) if d1 <= 1e-15 and d2 <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 4)
        return min(100 * h0, h1, self.max_step)

    def _start(self, t, h):
        """W and the stage states of the Newton iteration's start Z0: the last step's collocation
        polynomial extrapolated to the stages (``predict``), 0 at the first step."""
        sol = self.sol
        if sol is None:
            self.W.fill(0.0)
            self.Ys[:] = self.y
        else:
            self.k.predict(sol.y_old, sol.Q, (t + h * C - sol.t_old) / sol.h, self.y, TI, self.W, self.Ys)

    def _newton(self, t, h, LU_real, LU_complex, started=False):
        """Simplified Newton for the collocation system from Z0; returns (converged, iterations,
        rate). W holds the last iterate, in the transformed variables (Z = T W). ``started``: W and
        the stage states are already those of Z0 (``_start`` formed them)."""
        y, Z, W, F, Ys, k = self.y, self.Z, self.W, self.F, self.Ys, self.k
        if not started:
            self._start(t, h)
        m_real, m_complex = MU_REAL / h, MU_COMPLEX / h
        dw_norm_old = rate = None
        tol = self.newton_tol
        # both factors by the Woodbury identity: each iteration in two fused passes, which apply the
        # increment at once (a failed iteration's W and Ys are not used again) and leave Z = T W
        # to be formed once, at convergence (by newton_finish)
        fused = self.fuse and LU_real.pairs_with(LU_complex)
        for it in range(NEWTON_MAXITER):
            for i in range(3):
                self._eval(t + C[i] * h, Ys[i], F[i])
            if fused:
                nonfinite, dw_norm = newton_update(LU_real, LU_complex, F, W, TI, T, m_real, m_complex, y,
                                                   self.inv_scale, Ys)
                if nonfinite:
                    return False, it + 1, rate
            else:
                if not k.newton_residual(F, W, TI, m_real, m_complex, self.f_real, self.f_complex):
                    return False, it + 1, rate
                dw_real = LU_real.solve(self.f_real)
                dw_complex = LU_complex.solve(self.f_complex)
                dw_norm = k.increment_norm(dw_real, dw_complex, self.inv_scale)
            if dw_norm_old is not None:
                rate = dw_norm / dw_norm_old
                if rate >= 1 or rate ** (NEWTON_MAXITER - it) / (1 - rate) * dw_norm > tol:
                    return False, it + 1, rate
            if not fused:
                k.apply_increment(dw_real, dw_complex, T, W, Z)
            if dw_norm == 0 or (rate is not None and rate / (1 - rate) * dw_norm < tol):
                return True, it + 1, rate
            if not fused:
                k.stage_states(y, Z, Ys)
            dw_norm_old = dw_norm
        return False, NEWTON_MAXITER, rate

    @staticmethod
    def _predict_factor(h_abs, h_abs_old, error_norm, error_norm_old):
        if error_norm_old is None or h_abs_old is None or error_norm == 0:
            multiplier = 1.0
        else:
            multiplier = h_abs / h_abs_old * (error_norm_old / error_norm) ** 0.25
        if error_norm == 0:
            # a state at rest (its moments summed exactly): the step grows by MAX_FACTOR; 0.0 ** -0.25
            # of a Python float raises where NumPy's float64 gave inf (a NaN still propagates)
            return np.inf
        return min(1.0, multiplier) * error_norm ** -0.25

    def _step_impl(self):
        t, y, f, k = self.t, self.y, self.f, self.k
        rtol, atol = self.rtol, self.atol
        min_step = 10 * abs(np.nextafter(t, np.inf) - t)
        h_abs = min(max(self.h_abs, min_step), self.max_step)
        LU_real, LU_complex = self.LU_real, self.LU_complex
        rejected = newton_failed = False
        at_cap = self.capped and h_abs == self.h_abs  # this attempt's step is the cap
        y_new = np.empty(self.n)
        while True:
            if h_abs < min_step:
                return False, self.TOO_SMALL_STEP
            t_new = min(t + h_abs, self.t_bound)
            h = t_new - t
            h_abs = abs(h)
            self._start(t, h)
            started = True
            k.inverse_scale(y, rtol, atol, self.g, self.inv_scale)
            converged = False
            # the Jacobian at the predicted end: tried (JACOBIAN_AHEAD: taken there for this step size)
            moved = self.sol is None or not JACOBIAN_AT_END or (self.current_jac and self.jac_ahead)
            retried = False
            while not converged:
                if LU_real is None or LU_complex is None:
                    LU_real, LU_complex = self._factor(MU_REAL, h), self._factor(MU_COMPLEX, h)
                converged, n_iter, rate = self._newton(t, h, LU_real, LU_complex, started)
                started = False
                if not converged:
                    if self.current_jac and moved:
                        break
                    if self.current_jac:
                        # JACOBIAN_AT_END: a fresh Jacobian failed; before the step is halved, the
                        # Newton iteration is tried once more with the Jacobian at its predicted end
                        self.J = self._jacobian(t + h, y if self.sol is None else self.sol(t + h), self.J)
                        moved = retried = True
                    else:
                        self.J = self._jacobian(t, y, self.J)
                    self.current_jac = True
                    LU_real = LU_complex = None
            if converged and retried:
                # the next steps stay at this size, as they stay under h / sqrt 2 after a failure;
                # uncapped, the steps grew back into failures (a state-norm run at N = 3e4: 3048
                # steps and 950 factorizations against 2990 and 758 without the retry, 2989 and 746
                # with the cap)
                self.h_cap = min(self.h_cap, h_abs)
                newton_failed = True
            if not converged:
                # a second failure at the cap since the last one off it says the step size is not the
                # cause (rounding noise near convergence at a tight rtol): capping further would
                # ratchet the steps down (to 1e-11 at rtol 1e-11 when it did)
                self.cap_failures = self.cap_failures + 1 if at_cap else 0
                self.h_cap = np.inf if self.cap_failures >= 2 else NEWTON_CAP * h_abs
                at_cap = False
                self.jac_ahead = False  # ahead of a step this one no longer takes
                h_abs *= 0.5
                LU_real = LU_complex = None
                newton_failed = True
                continue
            Q = np.empty((3, self.n))  # the dense output's coefficients of x, x^2, x^3
            k.newton_finish(T, P, E, h, self.W, y, f, y_new, self.err_rhs, Q)
            error = LU_real.solve(self.err_rhs)
            error_norm = k.weighted_rms(error, y, y_new, rtol, atol, self.g)
            safety = _safety(n_iter)
            if rejected and error_norm > 1:
                k.add(y, error, self.buf)
                f_err = self._eval(t, self.buf)
                k.transform(T, self.W, self.Z)
                k.error_rhs(f_err, self.Z, E, h, self.err_rhs)
                error = LU_real.solve(self.err_rhs)
                error_norm = k.weighted_rms(error, y, y_new, rtol, atol, self.g)
            if error_norm > 1:
                factor = self._predict_factor(h_abs, self.h_abs_old, error_norm, self.error_norm_old)
                h_abs *= max(MIN_FACTOR, safety * factor)
                LU_real = LU_complex = None
                rejected = True
                at_cap = False
                self.jac_ahead = False
                continue
            break

        recompute_jac = n_iter > 2 and rate > 1e-3
        factor = self._predict_factor(h_abs, self.h_abs_old, error_norm, self.error_norm_old)
        factor = min(MAX_FACTOR, safety * factor)
        if not newton_failed:
            self.h_cap *= NEWTON_CAP_GROWTH
        if not recompute_jac and factor < 1.2:
            factor = 1.0
        else:
            LU_real = LU_complex = None
        self.capped = h_abs * factor >= self.h_cap
        if self.capped and self.h_cap / h_abs != factor:
            factor = self.h_cap / h_abs
            LU_real = LU_complex = None
        f_new = self._eval(t_new, y_new)
        sol = CollocationOutput(t, t_new, y, Q, k.evaluate_polynomial)
        self.jac_ahead = False
        if recompute_jac:
            t_next = min(t_new + min(h_abs * min(factor, AHEAD_MAX), self.max_step), self.t_bound)
            if JACOBIAN_AHEAD and t_next > t_new:
                self.J = self._jacobian(t_next, sol(t_next), self.J)
                self.jac_ahead = True
            else:
                self.J = self._jacobian(t_new, y_new, self.J)
            self.current_jac = True
        else:
            self.current_jac = False
        self.h_abs_old, self.error_norm_old = h_abs, error_norm
        self.h_abs = h_abs * factor
        self.y_old = y
        self.t, self.y, self.f = t_new, y_new, f_new
        self.LU_real, self.LU_complex = LU_real, LU_complex
        self.t_old = t
        self.sol = sol
        return True, None

