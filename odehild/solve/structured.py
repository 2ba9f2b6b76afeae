"""Radau and BDF with the mean-field Jacobian kept in its structure.

The mean-field Jacobian is J = D + A Vt: D holds one 2x2 block per particle (a_i and s_i coupled at
fixed moments) and A Vt has rank at most K + 1 (every particle sees the others only through the
moments M_k). SciPy's implicit solvers factor iteration matrices c I - J (Radau, c real or complex)
or I - c J (BDF) densely, O(N^3) per factorization. Here they are factored by the Woodbury identity,

    (P - A Vt)^-1 = P^-1 + P^-1 A (I - Vt P^-1 A)^-1 Vt P^-1,    P = c I - D (2x2 blocks),

which costs O(N K) per solve and a (K+1) x (K+1) capacitance matrix per factorization. When a 2x2
block or the capacitance matrix is too ill-conditioned for that identity to be accurate, the matrix
is assembled and factored densely instead (counted in ``ndense``).
"""

from __future__ import annotations

import numpy as np
from scipy.integrate import BDF, Radau
from scipy.linalg import lu_factor, lu_solve
from scipy.sparse import csc_matrix

# A block or capacitance matrix worse conditioned than this is factored densely instead.
COND_LIMIT = 1e10


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


class WoodburyFactor:
    """Factorization of an :class:`IterationMatrix`; ``solve(b)`` returns (c I - J)^-1 b."""

    def __init__(self, M: IterationMatrix):
        c, J = M.c, M.J
        sc = J.scale
        p_aa, p_as = c - sc * J.D[0], -sc * J.D[1]
        p_sa, p_ss = -sc * J.D[2], c - sc * J.D[3]
        det = p_aa * p_ss - p_as * p_sa
        size = (np.abs(p_aa) + np.abs(p_as)) * (np.abs(p_sa) + np.abs(p_ss))
        self.dense = None
        if np.any(np.abs(det) * COND_LIMIT <= size):
            self._factor_dense(M)
            return
        # P^-1 blocks, stored as rows (aa, as, sa, ss)
        self.Pinv = np.array([p_ss, -p_as, -p_sa, p_aa]) / det
        self.Q = self._apply_Pinv(sc * J.A)
        self.Vt = J.Vt
        cap = np.eye(J.Vt.shape[0]) - J.Vt @ self.Q
        if np.linalg.cond(cap) > COND_LIMIT:
            self._factor_dense(M)
            return
        self.cap_inv = np.linalg.inv(cap)

    def _factor_dense(self, M):
        self.dense = lu_factor(M.toarray(), overwrite_a=True, check_finite=False)

    def _apply_Pinv(self, b):
        N = self.Pinv.shape[1]
        ba, bs = b[:N], b[N:]
        if b.ndim == 2:
            Pi = self.Pinv[:, :, None]
        else:
            Pi = self.Pinv
        return np.concatenate([Pi[0] * ba + Pi[1] * bs, Pi[2] * ba + Pi[3] * bs])

    def solve(self, b):
        if self.dense is not None:
            return lu_solve(self.dense, b, check_finite=False)
        y = self._apply_Pinv(b)
        return y + self.Q @ (self.cap_inv @ (self.Vt @ y))


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
