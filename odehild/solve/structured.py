"""Radau and BDF with the mean-field Jacobian kept in its structure.

The mean-field Jacobian is J = D + A Vt: D holds one block per particle (a_i and its alignment s_i
coupled at fixed moments: 2x2 for a single-index target, (M+1) x (M+1) for M directions) and A Vt
has the rank of the number of moments (every particle sees the others only through them). SciPy's
implicit solvers factor iteration matrices c I - J (Radau, c real or complex)
or I - c J (BDF) densely, O(N^3) per factorization. Here they are factored by the Woodbury identity,

    (P - A Vt)^-1 = P^-1 + P^-1 A (I - Vt P^-1 A)^-1 Vt P^-1,    P = c I - D (blocks),

which costs O(N K) per solve and a (K+1) x (K+1) capacitance matrix per factorization. When the
capacitance matrix is ill-conditioned (late in a run, when the residuals are near rounding), the
identity loses accuracy; each solve is then refined against the structured matrix itself (residual
b - (c I - J) x in O(N K), a correction by the same factorization) until it is accurate to
rounding, for at most REFINE_STEPS corrections; refinement stops early when the residual no longer
halves (the rounding of the residual itself bounds it) and keeps the iterate with the smaller one.
Only when a block is singular to working precision is the matrix assembled and factored densely
(counted in ``ndense``), and only up to DENSE_MAX unknowns: beyond that a dense factor would not fit
in memory (8 (bN)^2 bytes), the singular block is replaced by a finite stand-in and the refined
solution is used as it is, which Radau's and BDF's Newton iterations tolerate (they check their own
convergence and shorten the step).
"""

from __future__ import annotations

import functools
import math
from types import SimpleNamespace

import numpy as np
from numba import njit, prange

# A 2x2 block worse conditioned than this is not inverted by its adjugate; a capacitance matrix worse
# conditioned than this gets iterative refinement.
COND_LIMIT = 1e10
REFINE_STEPS = 4
DENSE_MAX = 4000  # unknowns: a dense fallback beyond this would take over 128 MB


class LowRankJacobian:
    """J = D + A Vt for a state of N particles with b = 1 + ndir unknowns each, laid out as
    [a_0..a_(N-1), s_(0,0)..s_(0,ndir-1), s_(1,0), ...] (a first, then s row by row; the
    single-index state [a; s] is ndir = 1).

    ``D``: the per-particle blocks (N, b, b); ``A`` (bN, r); ``Vt`` (r, bN). ``scale`` multiplies
    the whole matrix (BDF forms c J).
    """

    def __init__(self, D, A, Vt, scale=1.0):
        self.D, self.A, self.Vt, self.scale = D, A, Vt, scale
        self.N, self.b = D.shape[0], D.shape[1]
        self.shape = (self.b * self.N, self.b * self.N)

    @classmethod
    def from_transposed(cls, D, A, VtT, replaces=None):
        """From Vt's transpose VtT (bN, r), the layout the Woodbury passes read (no copy made).
        ``replaces``: a Jacobian being discarded, whose arrays in other layouts this one may reuse."""
        J = cls(D, A, VtT.T)
        J._VtT = VtT
        if replaces is not None:
            J._row_buffers, J._block_row_buffer = replaces._rows, replaces._block_rows
        return J

    @classmethod
    def from_rows(cls, Dr, AT, Vt):
        """From D's blocks in rows Dr (b b, N) (:meth:`block_rows`), A^T and Vt, each (r, bN)
        row-major: the layout of the generated passes (:meth:`rows`), no copy made (D is a view)."""
        b = math.isqrt(Dr.shape[0])
        J = cls(Dr.reshape(b, b, -1).transpose(2, 0, 1), AT.T, Vt)
        J._rows, J._block_rows = (AT, Vt), Dr
        return J

    @staticmethod
    def rows_for(N, b, r, replaces=None):
        """Arrays (Dr, A^T, Vt) for :meth:`from_rows`: those of ``replaces``, a Jacobian in rows being
        discarded (with every factorization of it), where their shapes fit (fresh ones cost page
        faults), else new ones."""
        shapes = (b * b, N), (r, b * N), (r, b * N)
        if replaces is not None and replaces.scale == 1.0 and replaces._rows is not None:
            arrays = (replaces._block_rows, *replaces._rows)
            if all(x is not None and x.shape == shape for x, shape in zip(arrays, shapes)):
                return arrays
        return tuple(np.empty(shape) for shape in shapes)

    def buffers(self, N, b, r):
        """(D, A, VtT) of this Jacobian for a caller that overwrites them with a new one (the old
        is then gone, with every factorization of it), or None if their shapes differ."""
        VtT = self._VtT
        if (self.scale != 1.0 or VtT is None or self.D.shape != (N, b, b) or self.A.shape != (b * N, r)
                or VtT.shape != (b * N, r) or not (self.A.flags.c_contiguous and VtT.flags.c_contiguous)):
            return None
        return self.D, self.A, VtT

    def __rmul__(self, c):
        J = LowRankJacobian(self.D, self.A, self.Vt, self.scale * c)
        J._VtT = self._VtT
        return J

    _VtT = None

    @property
    def VtT(self) -> np.ndarray:
        """Vt transposed, (bN, r) row-major: the solves read it one particle at a time. Made once
        per Jacobian and shared by the real and complex factorizations."""
        if self._VtT is None:
            self._VtT = np.ascontiguousarray(self.Vt.T)
        return self._VtT

    _rows = None
    _row_buffers = None

    def rows(self):
        """(A^T, Vt), each (r, bN) row-major: the layout of the fused Newton passes, which read each
        moment's row of particles as a vector. Made once per Jacobian, for its two factorizations, in
        the arrays of the Jacobian it replaced where it has them (fresh ones cost page faults)."""
        if self._rows is None:
            shape = self.A.shape[::-1]
            old = self._row_buffers
            AT, Vt = old if old is not None and old[0].shape == shape else (np.empty(shape), np.empty(shape))
            _transpose(self.A, AT)
            _transpose(self.VtT, Vt)
            self._rows = AT, Vt
        return self._rows

    _block_rows = None
    _block_row_buffer = None

    def block_rows(self):
        """D's blocks as (b b, N) row-major, entry (p, q) in row b p + q: the fused Newton pass forms
        each particle's P^-1 from them. Made once per Jacobian, as :meth:`rows`."""
        if self._block_rows is None:
            shape = (self.b * self.b, self.N)
            old = self._block_row_buffer
            Dr = old if old is not None and old.shape == shape else np.empty(shape)
            _transpose(self.D.reshape(self.N, -1), Dr)
            self._block_rows = Dr
        return self._block_rows

    @property
    def A_contiguous(self) -> np.ndarray:
        if not self.A.flags.c_contiguous:
            self.A = np.ascontiguousarray(self.A)
        return self.A

    def toarray(self) -> np.ndarray:
        J = self.A @ self.Vt
        idx = _block_indices(self.N, self.b)
        J[idx[:, :, None], idx[:, None, :]] += self.D
        return self.scale * J


def _block_indices(N, b):
    """(N, b): the state indices of particle i's unknowns (a_i, s_i1, ..)."""
    idx = np.empty((N, b), dtype=np.int64)
    idx[:, 0] = np.arange(N)
    idx[:, 1:] = N + np.arange(N * (b - 1)).reshape(N, b - 1)
    return idx


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


@njit(cache=True, inline="always")
def _at(N, nd, i, p):
    return i if p == 0 else N + i * nd + p - 1


@njit(cache=True, inline="always")
def _zero_like(out):
    """0 in the dtype of ``out`` (real or complex), not read from ``out``: it is not written yet."""
    return np.zeros(1, dtype=out.dtype)[0]


@njit(cache=True, inline="always")
def _write_pair(Pinv, i, N, va, vs, out):
    """out's (a_i, s_i) = P_i^-1 (va, vs): the last step of a solve, 2x2 blocks."""
    out[i] = Pinv[i, 0, 0] * va + Pinv[i, 0, 1] * vs
    out[N + i] = Pinv[i, 1, 0] * va + Pinv[i, 1, 1] * vs


@njit(cache=True, inline="always")
def _write_block(Pinv, i, N, nd, v, out):
    """out's unknowns of particle i = P_i^-1 v (the last step of a solve)."""
    nb = Pinv.shape[1]
    for p in range(nb):
        x = Pinv[i, p, 0] * v[0]
        for q in range(1, nb):
            x += Pinv[i, p, q] * v[q]
        out[_at(N, nd, i, p)] = x


@njit(cache=True)
def _pinv_rows(Pinv, B, scale, out):
    """out = P^-1 (scale B) for B (bN, r), P^-1 as blocks (N, b, b)."""
    zero = _zero_like(out)
    N, b = Pinv.shape[0], Pinv.shape[1]
    nd = b - 1
    v = np.empty(b, dtype=out.dtype)
    for i in range(N):
        for k in range(B.shape[1]):
            for p in range(b):
                v[p] = scale * B[_at(N, nd, i, p), k]
            for p in range(b):
                acc = zero
                for q in range(b):
                    acc += Pinv[i, p, q] * v[q]
                out[_at(N, nd, i, p), k] = acc


# Each thread's partial sums sit this many values (at least two cache lines) past the previous
# thread's: with adjacent sums on one line, the cores traded the line at every particle and two
# threads ran the fused Newton pass slower than one (5.6 ms against 4.0 at N = 1e5; 2.0 ms padded).
PARTIAL_PAD = 16


@njit(cache=True, inline="always")
def _chunk(c, nchunk, N):
    """Particles [lo, hi) of chunk c of nchunk: one per thread in the parallel variants, so that
    sums over particles are per-chunk partial sums (no shared accumulator)."""
    return c * N // nchunk, (c + 1) * N // nchunk


@functools.lru_cache(maxsize=None)
def _rank_passes(rank: int) -> SimpleNamespace:
    """The capacitance and solve passes compiled for one rank r of A Vt (the number of moments). A
    constant r lets LLVM unroll the loops over it and keep their sums in registers: a solve at
    N = 3e4, r = 4 takes half the time it takes with r read from the arrays, with the same numbers.
    Numba caches each rank apart (its key includes the closure's values)."""
    R = rank

    @njit(cache=True)
    def _capacitance(Pinv, A, scale, VtT, out, nchunk=1):
        """out = I - Vt P^-1 (scale A), with P^-1 A formed one particle at a time and never stored (a
        (bN, r) complex array is the largest a factorization would otherwise keep)."""
        zero = _zero_like(out)
        N, nb, r = Pinv.shape[0], Pinv.shape[1], R
        nd = nb - 1
        partial = np.zeros((nchunk, r + PARTIAL_PAD, r), dtype=out.dtype)
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc = partial[c]
            if nb == 2:
                for i in range(lo, hi):
                    p00, p01, p10, p11 = Pinv[i, 0, 0], Pinv[i, 0, 1], Pinv[i, 1, 0], Pinv[i, 1, 1]
                    for l in range(r):
                        a0, a1 = A[i, l], A[N + i, l]
                        q0, q1 = p00 * a0 + p01 * a1, p10 * a0 + p11 * a1
                        for k in range(r):
                            acc[k, l] += VtT[i, k] * q0 + VtT[N + i, k] * q1
            else:
                q = np.empty(nb, dtype=out.dtype)
                for i in range(lo, hi):
                    for l in range(r):
                        for p in range(nb):
                            v = zero
                            for m in range(nb):
                                v += Pinv[i, p, m] * A[_at(N, nd, i, m), l]
                            q[p] = v
                        for p in range(nb):
                            jp = _at(N, nd, i, p)
                            for k in range(r):
                                acc[k, l] += VtT[jp, k] * q[p]
        for k in range(r):
            for l in range(r):
                total = zero
                for c in range(nchunk):
                    total += partial[c, k, l]
                out[k, l] = (1.0 if k == l else 0.0) - scale * total

    @njit(cache=True)
    def _woodbury_solve(Pinv, A, scale, VtT, cap_inv, b, out, nchunk=1):
        """out = P^-1 (b + scale A z), z = cap^-1 Vt P^-1 b: one pass for Vt P^-1 b, one for the
        solution; reads P^-1, A, Vt (as its transpose, row by row) and b, stores nothing else."""
        zero = _zero_like(out)
        N, nb, r = Pinv.shape[0], Pinv.shape[1], R
        nd = nb - 1
        partial = np.zeros((nchunk, r + PARTIAL_PAD), dtype=out.dtype)
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc = partial[c]
            if nb == 2:  # the single-index layout [a; s], written out (the general loop costs 25% there)
                for i in range(lo, hi):
                    ba, bs = b[i], b[N + i]
                    ya = Pinv[i, 0, 0] * ba + Pinv[i, 0, 1] * bs
                    ys = Pinv[i, 1, 0] * ba + Pinv[i, 1, 1] * bs
                    for k in range(r):
                        acc[k] += VtT[i, k] * ya + VtT[N + i, k] * ys
            else:
                y = np.empty(nb, dtype=out.dtype)
                for i in range(lo, hi):
                    for p in range(nb):
                        v = zero
                        for q in range(nb):
                            v += Pinv[i, p, q] * b[_at(N, nd, i, q)]
                        y[p] = v
                    for p in range(nb):
                        jp = _at(N, nd, i, p)
                        for k in range(r):
                            acc[k] += VtT[jp, k] * y[p]
        z = np.zeros(r, dtype=out.dtype)
        for k in range(r):
            for l in range(r):
                total = zero
                for c in range(nchunk):
                    total += partial[c, l]
                z[k] += scale * cap_inv[k, l] * total
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            if nb == 2:
                for i in range(lo, hi):
                    va, vs = b[i], b[N + i]
                    for k in range(r):
                        va += A[i, k] * z[k]
                        vs += A[N + i, k] * z[k]
                    _write_pair(Pinv, i, N, va, vs, out)
            else:
                v = np.empty(nb, dtype=out.dtype)
                for i in range(lo, hi):
                    for p in range(nb):
                        jp = _at(N, nd, i, p)
                        u = b[jp]
                        for k in range(r):
                            u += A[jp, k] * z[k]
                        v[p] = u
                    _write_block(Pinv, i, N, nd, v, out)

    @njit(cache=True)
    def _capacitance_complex(Pinv, A, scale, VtT, out, nchunk=1):
        """:func:`_capacitance` for complex P^-1 with A and Vt real, real and imaginary parts summed
        apart: Numba multiplies a real by a complex as two complexes (four products where two do), and
        these passes are bound by that arithmetic. The same numbers as the generic pass."""
        N, nb, r = Pinv.shape[0], Pinv.shape[1], R
        nd = nb - 1
        part_re = np.zeros((nchunk, r + PARTIAL_PAD, r))
        part_im = np.zeros((nchunk, r + PARTIAL_PAD, r))
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc_re, acc_im = part_re[c], part_im[c]
            if nb == 2:
                for i in range(lo, hi):
                    p00, p01, p10, p11 = Pinv[i, 0, 0], Pinv[i, 0, 1], Pinv[i, 1, 0], Pinv[i, 1, 1]
                    for l in range(r):
                        a0, a1 = A[i, l], A[N + i, l]
                        q0_re, q0_im = p00.real * a0 + p01.real * a1, p00.imag * a0 + p01.imag * a1
                        q1_re, q1_im = p10.real * a0 + p11.real * a1, p10.imag * a0 + p11.imag * a1
                        for k in range(r):
                            v0, v1 = VtT[i, k], VtT[N + i, k]
                            acc_re[k, l] += v0 * q0_re + v1 * q1_re
                            acc_im[k, l] += v0 * q0_im + v1 * q1_im
            else:
                q_re, q_im = np.empty(nb), np.empty(nb)
                for i in range(lo, hi):
                    for l in range(r):
                        for p in range(nb):
                            v_re = v_im = 0.0
                            for m in range(nb):
                                a = A[_at(N, nd, i, m), l]
                                v_re += Pinv[i, p, m].real * a
                                v_im += Pinv[i, p, m].imag * a
                            q_re[p], q_im[p] = v_re, v_im
                        for p in range(nb):
                            jp = _at(N, nd, i, p)
                            for k in range(r):
                                acc_re[k, l] += VtT[jp, k] * q_re[p]
                                acc_im[k, l] += VtT[jp, k] * q_im[p]
        for k in range(r):
            for l in range(r):
                t_re = t_im = 0.0
                for c in range(nchunk):
                    t_re += part_re[c, k, l]
                    t_im += part_im[c, k, l]
                out[k, l] = (1.0 if k == l else 0.0) - scale * (t_re + 1j * t_im)

    @njit(cache=True)
    def _woodbury_solve_complex(Pinv, A, scale, VtT, cap_inv, b, out, nchunk=1):
        """:func:`_woodbury_solve` for complex P^-1 and b with A and Vt real: the products with A and Vt
        taken on real and imaginary parts apart (see :func:`_capacitance_complex`)."""
        N, nb, r = Pinv.shape[0], Pinv.shape[1], R
        nd = nb - 1
        part_re = np.zeros((nchunk, r + PARTIAL_PAD))
        part_im = np.zeros((nchunk, r + PARTIAL_PAD))
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc_re, acc_im = part_re[c], part_im[c]
            if nb == 2:
                for i in range(lo, hi):
                    ba, bs = b[i], b[N + i]
                    ya = Pinv[i, 0, 0] * ba + Pinv[i, 0, 1] * bs
                    ys = Pinv[i, 1, 0] * ba + Pinv[i, 1, 1] * bs
                    for k in range(r):
                        v0, v1 = VtT[i, k], VtT[N + i, k]
                        acc_re[k] += v0 * ya.real + v1 * ys.real
                        acc_im[k] += v0 * ya.imag + v1 * ys.imag
            else:
                y = np.empty(nb, dtype=out.dtype)
                for i in range(lo, hi):
                    for p in range(nb):
                        v = 0j
                        for q in range(nb):
                            v += Pinv[i, p, q] * b[_at(N, nd, i, q)]
                        y[p] = v
                    for p in range(nb):
                        jp = _at(N, nd, i, p)
                        for k in range(r):
                            acc_re[k] += VtT[jp, k] * y[p].real
                            acc_im[k] += VtT[jp, k] * y[p].imag
        z_re, z_im = np.zeros(r), np.zeros(r)
        for k in range(r):
            for l in range(r):
                t_re = t_im = 0.0
                for c in range(nchunk):
                    t_re += part_re[c, l]
                    t_im += part_im[c, l]
                zk = scale * cap_inv[k, l] * (t_re + 1j * t_im)
                z_re[k] += zk.real
                z_im[k] += zk.imag
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            if nb == 2:
                for i in range(lo, hi):
                    va_re, va_im, vs_re, vs_im = b[i].real, b[i].imag, b[N + i].real, b[N + i].imag
                    for k in range(r):
                        a0, a1 = A[i, k], A[N + i, k]
                        va_re += a0 * z_re[k]
                        va_im += a0 * z_im[k]
                        vs_re += a1 * z_re[k]
                        vs_im += a1 * z_im[k]
                    _write_pair(Pinv, i, N, complex(va_re, va_im), complex(vs_re, vs_im), out)
            else:
                v = np.empty(nb, dtype=out.dtype)
                for i in range(lo, hi):
                    for p in range(nb):
                        jp = _at(N, nd, i, p)
                        u_re, u_im = b[jp].real, b[jp].imag
                        for k in range(r):
                            u_re += A[jp, k] * z_re[k]
                            u_im += A[jp, k] * z_im[k]
                        v[p] = complex(u_re, u_im)
                    _write_block(Pinv, i, N, nd, v, out)

    @njit(cache=True)
    def _newton_update(F, W, TI, T, m_real, m_complex, Pr, cap_r, Pc, cap_c, A, scale, VtT, y, inv_scale, Ys,
                       nchunk=1):
        """One simplified-Newton iteration of Radau's collocation system after its stage derivatives F,
        in two passes over the particles (2x2 blocks): the residuals, both Woodbury solves (real
        P^-1 = Pr, complex Pc; A, Vt, scale shared), the increment's norm, W += dW and the next
        stage states Ys = y + T W. Nothing of size N is stored but W and Ys; the residuals are
        formed in both passes. The same arithmetic as ``_newton_residual``, ``_woodbury_solve``,
        ``_woodbury_solve_complex`` and ``_apply_increment`` in turn; only the norm's sum runs in
        particle order. Returns (number of non-finite stage derivatives, RMS of dW / scale); with a
        non-finite one W is left as it was."""
        N, r = Pr.shape[0], R
        part_r = np.zeros((nchunk, r + PARTIAL_PAD))
        part_re = np.zeros((nchunk, r + PARTIAL_PAD))
        part_im = np.zeros((nchunk, r + PARTIAL_PAD))
        bad = np.zeros(nchunk, dtype=np.int64)
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc_r, acc_re, acc_im = part_r[c], part_re[c], part_im[c]
            for i in range(lo, hi):
                fa, fca = _residual_at(F, W, TI, m_real, m_complex, i)
                fs, fcs = _residual_at(F, W, TI, m_real, m_complex, N + i)
                if not (np.isfinite(F[0, i]) and np.isfinite(F[1, i]) and np.isfinite(F[2, i])
                        and np.isfinite(F[0, N + i]) and np.isfinite(F[1, N + i]) and np.isfinite(F[2, N + i])):
                    bad[c] += 1
                ya = Pr[i, 0, 0] * fa + Pr[i, 0, 1] * fs
                ys = Pr[i, 1, 0] * fa + Pr[i, 1, 1] * fs
                yca = Pc[i, 0, 0] * fca + Pc[i, 0, 1] * fcs
                ycs = Pc[i, 1, 0] * fca + Pc[i, 1, 1] * fcs
                for k in range(r):
                    v0, v1 = VtT[i, k], VtT[N + i, k]
                    acc_r[k] += v0 * ya + v1 * ys
                    acc_re[k] += v0 * yca.real + v1 * ycs.real
                    acc_im[k] += v0 * yca.imag + v1 * ycs.imag
        if np.sum(bad) > 0:
            return np.sum(bad), 0.0
        z_r, z_re, z_im = np.zeros(r), np.zeros(r), np.zeros(r)
        for k in range(r):
            for l in range(r):
                total = 0.0
                t_re = t_im = 0.0
                for c in range(nchunk):
                    total += part_r[c, l]
                    t_re += part_re[c, l]
                    t_im += part_im[c, l]
                z_r[k] += scale * cap_r[k, l] * total
                zk = scale * cap_c[k, l] * (t_re + 1j * t_im)
                z_re[k] += zk.real
                z_im[k] += zk.imag
        part_norm = np.zeros(nchunk)
        for c in prange(nchunk):
            lo, hi = _chunk(c, nchunk, N)
            acc = 0.0
            for i in range(lo, hi):
                fa, fca = _residual_at(F, W, TI, m_real, m_complex, i)
                fs, fcs = _residual_at(F, W, TI, m_real, m_complex, N + i)
                va, vs = fa, fs
                va_re, va_im, vs_re, vs_im = fca.real, fca.imag, fcs.real, fcs.imag
                for k in range(r):
                    a0, a1 = A[i, k], A[N + i, k]
                    va += a0 * z_r[k]
                    vs += a1 * z_r[k]
                    va_re += a0 * z_re[k]
                    va_im += a0 * z_im[k]
                    vs_re += a1 * z_re[k]
                    vs_im += a1 * z_im[k]
                vca, vcs = complex(va_re, va_im), complex(vs_re, vs_im)
                dra = Pr[i, 0, 0] * va + Pr[i, 0, 1] * vs
                drs = Pr[i, 1, 0] * va + Pr[i, 1, 1] * vs
                dca = Pc[i, 0, 0] * vca + Pc[i, 0, 1] * vcs
                dcs = Pc[i, 1, 0] * vca + Pc[i, 1, 1] * vcs
                acc += _increment_at(dra, dca, inv_scale[i]) + _increment_at(drs, dcs, inv_scale[N + i])
                _apply_at(dra, dca, T, W, y, Ys, i)
                _apply_at(drs, dcs, T, W, y, Ys, N + i)
            part_norm[c] = acc
        return 0, (np.sum(part_norm) / (6 * N)) ** 0.5

    return SimpleNamespace(_capacitance=_capacitance, _woodbury_solve=_woodbury_solve,
                           _capacitance_complex=_capacitance_complex, _woodbury_solve_complex=_woodbury_solve_complex,
                           _newton_update=_newton_update)


@njit(cache=True, inline="always")
def _residual_at(F, W, TI, m_real, m_complex, j):
    """Radau's Newton residuals of unknown j: real (TI F)_0 - m_real W0, complex (TI F)_1 + i (TI F)_2
    - m_complex (W1 + i W2)."""
    F0, F1, F2 = F[0, j], F[1, j], F[2, j]
    f_real = TI[0, 0] * F0 + TI[0, 1] * F1 + TI[0, 2] * F2 - m_real * W[0, j]
    # complex(x, y), not x + 1j * y: Numba multiplies 1j * y as two complexes (products by 0 and 1)
    fc = complex(TI[1, 0] * F0 + TI[1, 1] * F1 + TI[1, 2] * F2, TI[2, 0] * F0 + TI[2, 1] * F1 + TI[2, 2] * F2)
    return f_real, fc - m_complex * complex(W[1, j], W[2, j])


@njit(cache=True, inline="always")
def _increment_at(dr, dc, inv_scale):
    s = inv_scale * inv_scale
    return (dr * dr + dc.real * dc.real + dc.imag * dc.imag) * s


@njit(cache=True, inline="always")
def _apply_at(dr, dc, T, W, y, Ys, j):
    """W += dW and Ys = y + T W at unknown j."""
    w0 = W[0, j] + dr
    w1 = W[1, j] + dc.real
    w2 = W[2, j] + dc.imag
    W[0, j], W[1, j], W[2, j] = w0, w1, w2
    for i in range(3):
        Ys[i, j] = y[j] + (T[i, 0] * w0 + T[i, 1] * w1 + T[i, 2] * w2)


@njit(cache=True)
def _residual(c, sc, D, A, Vt, x, b, out, nchunk=1):
    """out = b - (c I - sc J) x with J = D + A Vt, in O(N r); returns max |out|. With nchunk > 1
    (the parallel variant) Vt x is summed per chunk."""
    zero = _zero_like(out)
    N, nb, r = D.shape[0], D.shape[1], Vt.shape[0]
    nd = nb - 1
    partial = np.zeros((nchunk, r + PARTIAL_PAD), dtype=out.dtype)
    for ch in prange(nchunk):
        lo, hi = _chunk(ch, nchunk, nb * N)
        for k in range(r):
            acc = zero
            for j in range(lo, hi):
                acc += Vt[k, j] * x[j]
            partial[ch, k] = acc
    v = np.zeros(r, dtype=out.dtype)
    for k in range(r):
        for ch in range(nchunk):
            v[k] += partial[ch, k]
    tops = np.zeros(nchunk)
    for ch in prange(nchunk):
        lo, hi = _chunk(ch, nchunk, N)
        top = 0.0
        for i in range(lo, hi):
            for p in range(nb):
                jp = _at(N, nd, i, p)
                jx = zero
                for q in range(nb):
                    jx += D[i, p, q] * x[_at(N, nd, i, q)]
                for k in range(r):
                    jx += A[jp, k] * v[k]
                out[jp] = b[jp] - (c * x[jp] - sc * jx)
                top = max(top, abs(out[jp]))
        tops[ch] = top
    return np.max(tops)


@njit(cache=True, inline="always")
def _mag(z):
    return abs(z.real) + abs(z.imag)


@njit(cache=True)
def _shifted_inverses_2x2(D, c, sc, Pinv, cond_limit):
    """Pinv = (c I - sc D_i)^-1 for 2x2 blocks by the adjugate; returns how many blocks are singular
    to working precision (|det| cond_limit <= the product of the row 1-norms, complex moduli
    taken as |re| + |im|: within a factor sqrt 2, without a square root per entry). cond_limit is an
    argument: Numba freezes a global at compile time, into the cache."""
    singular = 0
    for i in prange(D.shape[0]):
        p00, p01 = c - sc * D[i, 0, 0], -sc * D[i, 0, 1]
        p10, p11 = -sc * D[i, 1, 0], c - sc * D[i, 1, 1]
        det = p00 * p11 - p01 * p10
        if _mag(det) * cond_limit <= (_mag(p00) + _mag(p01)) * (_mag(p10) + _mag(p11)) or det == 0:
            singular += 1
            det = 1.0 + 0.0 * det
        inv = 1.0 / det  # one complex division instead of four
        Pinv[i, 0, 0], Pinv[i, 0, 1], Pinv[i, 1, 0], Pinv[i, 1, 1] = p11 * inv, -p01 * inv, -p10 * inv, p00 * inv
    return singular


@njit(cache=True)
def _transpose(X, out):
    """out = X^T for X (n, r): a row of out at a time within blocks of X's rows that stay in the cache
    (0.2 ms at n = 2e5, r = 4; a loop over X's rows writing r rows of out at once took 0.45 ms)."""
    n, r = X.shape
    for c in range((n + 1023) // 1024):
        lo, hi = 1024 * c, min(1024 * c + 1024, n)
        block = X[lo:hi]
        for k in range(r):
            row = out[k, lo:hi]
            for i in range(hi - lo):
                row[i] = block[i, k]


CAPACITANCE_LOOP_MAX = 8  # rank up to which the loop beats a (complex) GEMM


def _block_inverses(P):
    """P^-1 for blocks P (N, b, b) and whether each is singular to working precision. 2x2 blocks by
    their adjugate; larger ones by LAPACK, their condition from the 1-norms."""
    if P.shape[1] == 2:
        det = P[:, 0, 0] * P[:, 1, 1] - P[:, 0, 1] * P[:, 1, 0]
        size = (np.abs(P[:, 0, 0]) + np.abs(P[:, 0, 1])) * (np.abs(P[:, 1, 0]) + np.abs(P[:, 1, 1]))
        singular = np.abs(det) * COND_LIMIT <= size
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = np.stack([np.stack([P[:, 1, 1], -P[:, 0, 1]], -1), np.stack([-P[:, 1, 0], P[:, 0, 0]], -1)], 1)
            inv /= det[:, None, None]
        return inv, singular
    with np.errstate(all="ignore"):
        try:
            inv = np.linalg.inv(P)
        except np.linalg.LinAlgError:
            return None, np.ones(P.shape[0], dtype=bool)
        norm = np.abs(P).sum(axis=1).max(axis=1) * np.abs(inv).sum(axis=1).max(axis=1)
    return inv, ~(norm < COND_LIMIT)


@functools.lru_cache(maxsize=None)
def _passes(parallel: bool, rank: int) -> SimpleNamespace:
    """The factorization's and solve's compiled passes for rank ``rank``, or their parallel variants."""
    k = _rank_passes(rank)
    names = ("_capacitance", "_woodbury_solve", "_capacitance_complex", "_woodbury_solve_complex", "_newton_update")
    if not parallel:
        return SimpleNamespace(_shifted_inverses_2x2=_shifted_inverses_2x2, _residual=_residual,
                               **{n: getattr(k, n) for n in names})
    from ..threads import parallel_variant

    return SimpleNamespace(_shifted_inverses_2x2=parallel_variant(_shifted_inverses_2x2),
                           _residual=parallel_variant(_residual),
                           **{n: parallel_variant(getattr(k, n)) for n in names})


class WoodburyFactor:
    """Factorization of an :class:`IterationMatrix`; ``solve(b)`` returns (c I - J)^-1 b. The O(N r)
    passes are compiled (Numba): each solve reads P^-1 (``rows=True``: the Jacobian's blocks, from
    which the generated passes form it), A, Vt and b, with no temporaries; nothing of size N r is
    stored beyond the Jacobian itself. ``threads`` > 1 takes the passes' parallel
    variants, the sums over particles split into one chunk per thread."""

    def __init__(self, M: IterationMatrix, threads: int = 1, rows: bool = False):
        c, J = M.c, M.J
        self.nchunk = threads
        self._passes = k = _passes(threads > 1, J.Vt.shape[0])
        sc = J.scale
        self.c, self.sc, self.J = c, sc, J
        self.dtype = dtype = np.result_type(c, sc, J.D)
        # complex shift, real Jacobian (Radau's complex pair): the passes that split the arithmetic
        split = dtype.kind == "c" and J.A.dtype.kind == "f" and J.Vt.dtype.kind == "f"
        self._solve_pass = k._woodbury_solve_complex if split else k._woodbury_solve
        capacitance_pass = k._capacitance_complex if split else k._capacitance
        self.dense = None
        self.n = J.shape[0]
        r = J.Vt.shape[0]
        # in rows: the generated passes, which form each particle's P^-1 from the Jacobian's blocks
        # in rows (LowRankJacobian.block_rows): no P^-1 written (made on first use by a block pass);
        # not with a singular block, which the capacitance pass counts
        self.in_rows = (rows and J.b == 2 and r <= CAPACITANCE_LOOP_MAX
                        and J.A.dtype.kind == J.Vt.dtype.kind == J.D.dtype.kind == "f")
        self._Pinv = None
        if self.in_rows:
            cap = np.empty((r, r), dtype=dtype)
            name = "capacitance_complex" if dtype.kind == "c" else "capacitance"
            AT, Vt = J.rows()
            self.in_rows = not _generated_pass(name, r, threads > 1)(J.block_rows(), dtype.type(c), AT, sc, Vt, cap,
                                                                     COND_LIMIT, self.nchunk)
            if self.in_rows:
                self.refine = np.linalg.cond(cap) > COND_LIMIT
                self.cap_inv = np.linalg.inv(cap)
                return
        if J.b == 2:
            Pinv = np.empty(J.D.shape, dtype=dtype)
            singular = k._shifted_inverses_2x2(np.ascontiguousarray(J.D), dtype.type(c), float(sc), Pinv, COND_LIMIT)
        else:
            P = np.multiply(-sc, J.D, dtype=dtype)
            P[:, np.arange(J.b), np.arange(J.b)] += c
            Pinv, singular = _block_inverses(P)
            singular = int(np.sum(singular))
        if singular and self.n <= DENSE_MAX:
            self._factor_dense(M)
            return
        self._Pinv = np.ascontiguousarray(Pinv)
        if r <= CAPACITANCE_LOOP_MAX:
            cap = np.empty((r, r), dtype=self.Pinv.dtype)
            capacitance_pass(self.Pinv, self.A, sc, self.VtT, cap, self.nchunk)
        else:
            Q = np.empty(self.A.shape, dtype=self.Pinv.dtype)  # transient: P^-1 A for one GEMM
            _pinv_rows(self.Pinv, self.A, sc, Q)
            cap = np.eye(r) - np.ascontiguousarray(J.Vt) @ Q
            del Q
        # a singular block beyond DENSE_MAX was replaced by a finite stand-in: refinement corrects it
        self.refine = singular > 0 or np.linalg.cond(cap) > COND_LIMIT
        self.cap_inv = np.linalg.inv(cap)

    @property
    def Pinv(self) -> np.ndarray:
        """The blocks of P^-1 (N, b, b), for the block passes (made on first use by a factor in rows)."""
        if self._Pinv is None:
            J = self.J
            self._Pinv = np.empty(J.D.shape, dtype=self.dtype)
            self._passes._shifted_inverses_2x2(np.ascontiguousarray(J.D), self.dtype.type(self.c), float(self.sc),
                                               self._Pinv, COND_LIMIT)
        return self._Pinv

    @property
    def A(self) -> np.ndarray:
        """The Jacobian's A (bN, r) row-major, for the passes that read it so (made on first use:
        a Jacobian written in rows and factors with rows never need it)."""
        return self.J.A_contiguous

    @property
    def VtT(self) -> np.ndarray:
        return self.J.VtT

    def pairs_with(self, other: "WoodburyFactor") -> bool:
        """Whether this (real) factor and ``other`` (complex) of the same 2x2-block Jacobian can share
        :func:`newton_update`'s fused passes: both by the Woodbury identity, neither refined."""
        return (self.dense is None and other.dense is None and not self.refine and not other.refine
                and self.J is other.J and self.J.b == 2 and self.dtype.kind == "f" and other.dtype.kind == "c"
                and self.nchunk == other.nchunk and self.in_rows == other.in_rows)

    def _factor_dense(self, M):
        from scipy.linalg import lu_factor

        self.dense = lu_factor(M.toarray(), overwrite_a=True, check_finite=False)

    def solve(self, b):
        if self.dense is not None:
            from scipy.linalg import lu_solve

            return lu_solve(self.dense, b, check_finite=False)
        b = np.ascontiguousarray(b, dtype=self.dtype)
        x = np.empty_like(b)
        self._apply(b, x)
        if not self.refine:
            return x
        scale = np.max(np.abs(b))
        r, dx = np.empty_like(b), np.empty_like(b)
        last, previous = np.inf, x
        for _ in range(REFINE_STEPS):
            residual = self._residual(x, b, r)
            if residual <= 1e-13 * scale:
                break
            if not residual < 0.5 * last:
                # stalled at the rounding of the residual itself (|c x| can exceed |b| by far): the
                # iterate with the smaller residual is kept
                return x if residual <= last else previous
            self._apply(r, dx)
            previous, x = x, x + dx
            last = residual
        return x

    def _apply(self, b, out):
        """out = (c I - J)^-1 b by the Woodbury identity; a factor in rows by the generated passes,
        which vectorise (N = 1e5, random factors, with P^-1 read in rows: one thread 0.91 against
        2.39 ms in the cache, 1.74 against 2.15 ms cold; two threads 0.84 against 1.28, cold 1.28
        against 1.47), forming P^-1 from the Jacobian's blocks."""
        if self.in_rows:
            AT, Vt = self.J.rows()
            name, c = ("woodbury_solve", float(self.c)) if self.dtype.kind == "f" else ("woodbury_solve_complex",
                                                                                           complex(self.c))
            _generated_pass(name, AT.shape[0], self.nchunk > 1)(self.J.block_rows(), c, AT, self.sc, Vt, self.cap_inv,
                                                                b, out, self.nchunk)
        else:
            self._solve_pass(self.Pinv, self.A, self.sc, self.VtT, self.cap_inv, b, out, self.nchunk)

    def _residual(self, x, b, out):
        """out = b - (c I - J) x; returns max |out|. A factor in rows by the generated pass (N = 1e5
        within a solve: 2 to 3 ms a call by the block pass, which reads D through a strided view)."""
        J = self.J
        if self.in_rows:
            AT, Vt = J.rows()
            name, c = ("residual", float(self.c)) if self.dtype.kind == "f" else ("residual_complex", complex(self.c))
            return _generated_pass(name, AT.shape[0], self.nchunk > 1)(J.block_rows(), c, AT, self.sc, Vt, x, b, out,
                                                                       self.nchunk)
        return self._passes._residual(self.c, self.sc, J.D, self.A, J.Vt, x, b, out, self.nchunk)


@functools.lru_cache(maxsize=None)
def _generated_pass(name: str, rank: int, parallel: bool):
    """A generated pass for ``rank`` moments (:func:`odehild.codegen.radau_gen.generated_pass`),
    compiled on first use (a solve below FUSED_MIN_UNKNOWNS never loads it), or its parallel variant."""
    from ..codegen.radau_gen import generated_pass

    fn = generated_pass(name, rank)
    if parallel:
        from ..threads import parallel_variant

        fn = parallel_variant(fn)
    return fn


def newton_update(LU_real, LU_complex, F, W, TI, T, m_real, m_complex, y, inv_scale, Ys):
    """Radau's Newton iteration in two fused passes for a real and a complex factor that
    :meth:`WoodburyFactor.pairs_with` each other; returns (number of non-finite stage derivatives,
    RMS of the increment over its scale). With factors in rows (``rows=True``), the generated pass
    of :mod:`odehild.codegen.radau_gen`, which vectorises (its arithmetic was the bound) and forms
    P^-1 per particle from the Jacobian's blocks (:meth:`LowRankJacobian.block_rows`), on threads
    its parallel variant; without, ``_newton_update`` of :func:`_rank_passes`, which reads the
    factors as they are (``radau.THREADS_NEWTON_PASS = "blocks"``)."""
    R, C = LU_real, LU_complex
    if R.in_rows:
        AT, Vt = R.J.rows()
        fn = _generated_pass("newton_update", AT.shape[0], R.nchunk > 1)
        return fn(F, W, TI, T, m_real, m_complex, R.J.block_rows(), float(R.c), complex(C.c), R.cap_inv, C.cap_inv, AT,
                  R.sc, Vt, y, inv_scale, Ys, R.nchunk)
    return R._passes._newton_update(F, W, TI, T, m_real, m_complex, R.Pinv, R.cap_inv, C.Pinv, C.cap_inv, R.A,
                                    R.sc, R.VtT, y, inv_scale, Ys, R.nchunk)
