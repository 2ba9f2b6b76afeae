"""Radau and BDF with the mean-field Jacobian kept in its structure.

The mean-field Jacobian is J = D + A Vt: D holds one 2x2 block per particle (a_i and s_i coupled at
fixed moments) and A Vt has rank at most K + 1 (every particle sees the others only through the
moments M_k). SciPy's implicit solvers factor iteration matrices c I - J (Radau, c real or complex)
or I - c J (BDF) densely, O(N^3) per factorization. Here they are factored by the Woodbury identity,

    (P - A Vt)^-1 = P^-1 + P^-1 A (I - Vt P^-1 A)^-1 Vt P^-1,    P = c I - D (2x2 blocks),

which costs O(N K) per solve and a (K+1) x (K+1) capacitance matrix per factorization. When the
capacitance matrix is ill-conditioned (late in a run, when the residuals are near rounding), the
identity loses accuracy; each solve is then refined against the structured matrix itself (residual
b - (c I - J) x in O(N K), a correction by the same factorization) until it is accurate to
rounding. Only when a 2x2 block is singular to working precision, or refinement stalls, is the
matrix assembled and factored densely (counted in ``ndense``), and only up to DENSE_MAX unknowns:
beyond that a dense factor would not fit in memory (8 (2N)^2 bytes) and the refined solution is
used as it is, which Radau's and BDF's Newton iterations tolerate (they check their own
convergence and shorten the step).
"""

from __future__ import annotations

import numpy as np
from numba import njit
from scipy.integrate import BDF, Radau
from scipy.linalg import lu_factor, lu_solve
from scipy.sparse import csc_matrix

# A 2x2 block worse conditioned than this is not inverted by its adjugate; a capacitance matrix worse
# conditioned than this gets iterative refinement.
COND_LIMIT = 1e10
REFINE_STEPS = 4
DENSE_MAX = 4000  # unknowns: a dense fallback beyond this would take over 128 MB


class LowRankJacobian:
    """J = D + A Vt for the state [a_0..a_(N-1), s_0..s_(N-1)].

    ``D`` (4, N): rows jaa, jas, jsa, jss of the per-particle blocks; ``A`` (2N, r); ``Vt`` (r, 2N).
    ``scale`` multiplies the whole matrix (BDF forms c J).
    """

    def __init__(self, D, A, Vt, scale=1.0):
        self.D, self.A, self.Vt, self.scale = D, A, Vt, scale
        self.N = D.shape[1]
        self.shape = (2 * self.N, 2 * self.N)

    def __rmul__(self, c):
        return LowRankJacobian(self.D, self.A, self.Vt, self.scale * c)

    def toarray(self) -> np.ndarray:
        N = self.N
        J = self.A @ self.Vt
        i = np.arange(N)
        J[i, i] += self.D[0]
        J[i, N + i] += self.D[1]
        J[N + i, i] += self.D[2]
        J[N + i, N + i] += self.D[3]
        return self.scale * J


class ShiftedIdentity:
    """c I, so that SciPy's ``MU / h * I - J`` and ``I - c * J`` build an :class:`IterationMatrix`."""

    def __init__(self, c=1.0):
        self.c = c

    def __rmul__(self, c):
        return ShiftedIdentity(self.c * c)

    __mul__ = __rmul__

    def __sub__(self, J):
        if not isinstance(J, LowRankJacobian):
            return NotImplemented
        return IterationMatrix(self.c, J)


class IterationMatrix:
    """c I - J, J a :class:`LowRankJacobian`."""

    def __init__(self, c, J):
        self.c, self.J = c, J

    def toarray(self) -> np.ndarray:
        return self.c * np.eye(self.J.shape[0]) - self.J.toarray()


@njit(cache=True)
def _pinv_rows(Pinv, B, scale, out):
    """out = P^-1 (scale B) for the rows [a-block; s-block] of B (2N, r), P^-1 as 2x2 blocks (4, N)."""
    N = Pinv.shape[1]
    for i in range(N):
        for k in range(B.shape[1]):
            ba, bs = scale * B[i, k], scale * B[N + i, k]
            out[i, k] = Pinv[0, i] * ba + Pinv[1, i] * bs
            out[N + i, k] = Pinv[2, i] * ba + Pinv[3, i] * bs


@njit(cache=True)
def _woodbury_solve(Pinv, Q, cap_inv, Vt, b, out):
    """out = y + Q cap^-1 Vt y, y = P^-1 b: one pass for y and Vt y, one for the rank-r update."""
    N, r = Pinv.shape[1], Vt.shape[0]
    acc = np.zeros(r, dtype=out.dtype)
    for i in range(N):
        ya = Pinv[0, i] * b[i] + Pinv[1, i] * b[N + i]
        ys = Pinv[2, i] * b[i] + Pinv[3, i] * b[N + i]
        out[i] = ya
        out[N + i] = ys
        for k in range(r):
            acc[k] += Vt[k, i] * ya + Vt[k, N + i] * ys
    z = np.zeros(r, dtype=out.dtype)
    for k in range(r):
        for l in range(r):
            z[k] += cap_inv[k, l] * acc[l]
    for i in range(2 * N):
        u = out[i]
        for k in range(r):
            u += Q[i, k] * z[k]
        out[i] = u


@njit(cache=True)
def _residual(c, sc, D, A, Vt, x, b, out):
    """out = b - (c I - sc J) x with J = D + A Vt, in O(N r); returns max |out|."""
    N, r = D.shape[1], Vt.shape[0]
    v = np.zeros(r, dtype=out.dtype)
    for k in range(r):
        for j in range(2 * N):
            v[k] += Vt[k, j] * x[j]
    top = 0.0
    for i in range(N):
        xa, xs = x[i], x[N + i]
        ja = D[0, i] * xa + D[1, i] * xs
        js = D[2, i] * xa + D[3, i] * xs
        for k in range(r):
            ja += A[i, k] * v[k]
            js += A[N + i, k] * v[k]
        out[i] = b[i] - (c * xa - sc * ja)
        out[N + i] = b[N + i] - (c * xs - sc * js)
        top = max(top, abs(out[i]), abs(out[N + i]))
    return top


class WoodburyFactor:
    """Factorization of an :class:`IterationMatrix`; ``solve(b)`` returns (c I - J)^-1 b. The O(N r)
    passes are compiled (Numba): each solve reads P^-1, Q and b once or twice, with no temporaries."""

    def __init__(self, M: IterationMatrix):
        c, J = M.c, M.J
        sc = J.scale
        self.c, self.sc, self.J = c, sc, J
        p_aa, p_as = c - sc * J.D[0], -sc * J.D[1]
        p_sa, p_ss = -sc * J.D[2], c - sc * J.D[3]
        det = p_aa * p_ss - p_as * p_sa
        size = (np.abs(p_aa) + np.abs(p_as)) * (np.abs(p_sa) + np.abs(p_ss))
        self.dense = None
        self.n = 2 * J.N
        if np.any(np.abs(det) * COND_LIMIT <= size) and self.n <= DENSE_MAX:
            self._factor_dense(M)
            return
        # P^-1 blocks, stored as rows (aa, as, sa, ss)
        self.Pinv = np.array([p_ss, -p_as, -p_sa, p_aa]) / det
        self.Q = np.empty(J.A.shape, dtype=self.Pinv.dtype)
        _pinv_rows(self.Pinv, np.ascontiguousarray(J.A), sc, self.Q)
        self.Vt = np.ascontiguousarray(J.Vt)
        cap = np.eye(J.Vt.shape[0]) - self.Vt @ self.Q
        self.refine = np.linalg.cond(cap) > COND_LIMIT
        self.cap_inv = np.linalg.inv(cap)

    def _factor_dense(self, M):
        self.dense = lu_factor(M.toarray(), overwrite_a=True, check_finite=False)

    def solve(self, b):
        if self.dense is not None:
            return lu_solve(self.dense, b, check_finite=False)
        b = np.ascontiguousarray(b, dtype=self.Pinv.dtype)
        x = np.empty_like(b)
        _woodbury_solve(self.Pinv, self.Q, self.cap_inv, self.Vt, b, x)
        if not self.refine:
            return x
        scale = np.max(np.abs(b))
        r, dx = np.empty_like(b), np.empty_like(b)
        J = self.J
        for _ in range(REFINE_STEPS):
            if _residual(self.c, self.sc, J.D, J.A, self.Vt, x, b, r) <= 1e-13 * scale:
                break
            _woodbury_solve(self.Pinv, self.Q, self.cap_inv, self.Vt, r, dx)
            x += dx
        return x


class _Structured:
    """Mixin for a SciPy implicit solver: ``jac(t, y)`` returns a :class:`LowRankJacobian`."""

    def __init__(self, fun, t0, y0, t_bound, *, jac, **kw):
        self.ndense = 0
        super().__init__(fun, t0, y0, t_bound, jac=jac, **kw)
        self.J = self._J0
        self.I = ShiftedIdentity()
        self.lu = self._lu
        self.solve_lu = lambda LU, b: LU.solve(b)

    def _validate_jac(self, jac, sparsity):
        def jac_wrapped(t, y, _=None):
            self.njev += 1
            return jac(t, y)

        self._J0 = jac(self.t, self.y)
        self.njev = 1
        # SciPy's __init__ sees a sparse J and builds a sparse identity; a dense one would take
        # 8 (2N)^2 bytes (3.2 GB at N = 10^4). Both are replaced right after.
        return jac_wrapped, csc_matrix((self.n, self.n))

    def _lu(self, M):
        self.nlu += 1
        F = WoodburyFactor(M)
        self.ndense += F.dense is not None
        return F


class StructuredRadau(_Structured, Radau):
    """scipy.integrate.Radau with Woodbury solves for the mean-field Jacobian."""


class StructuredBDF(_Structured, BDF):
    """scipy.integrate.BDF with Woodbury solves for the mean-field Jacobian."""
