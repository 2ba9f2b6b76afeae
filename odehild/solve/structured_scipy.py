"""SciPy's Radau and BDF with the structured mean-field Jacobian (Woodbury solves,
:mod:`odehild.solve.structured`). BDF is used from here; SciPy's Radau step is the baseline of the
compiled one (:mod:`odehild.solve.radau`) in tests and benchmarks."""

from __future__ import annotations

from scipy.integrate import BDF, Radau
from scipy.sparse import csc_matrix

from .structured import ShiftedIdentity, WoodburyFactor


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
