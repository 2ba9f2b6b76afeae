"""Radau's fused Newton iteration for one rank r of the Woodbury term, written out and cached.

The iteration (:func:`odehild.solve.structured.newton_update`) is two passes over the particles:
the residuals and Vt P^-1 of both Newton systems (real and complex), then the solutions, the
increment's norm, W += dW and the next stage states. Written with the factors in rows (one row of N
per entry of the Jacobian's 2x2 blocks D, from which each particle's P^-1 of both systems is formed
in registers; A and Vt as (r, 2N)), one scalar sum per moment and a single written array per inner
loop, LLVM vectorises both passes, which a loop over the moments and per-particle blocks kept scalar
(2.5x at N = 1e5 on one thread). The scalar sums need the moments' count at the time of writing:
hence generated source, one module per rank, compiled once and cached as the models' code is. The
same module holds, written the same way, the passes of a factor in rows: its capacitance
I - Vt P^-1 A (real and complex), its Woodbury solves and a refinement's residual (real and complex).
"""

from __future__ import annotations

import sys

from .. import __version__
from .numba_gen import HEADER, _file_sha, compile_source

# particles per block of the second pass: its new W and stage states go to a block buffer (12 rows)
# and are copied out after, so that the loop writes one array and needs few aliasing checks (with 12
# written rows LLVM gave up: "too many memory checks")
BLOCK = 512

_ROWS = ("F0a, F1a, F2a, F0s, F1s, F2s = F[0, {lo}:{hi}], F[1, {lo}:{hi}], F[2, {lo}:{hi}], "
         "F[0, N + {lo}:N + {hi}], F[1, N + {lo}:N + {hi}], F[2, N + {lo}:N + {hi}]",
         "W0a, W1a, W2a, W0s, W1s, W2s = W[0, {lo}:{hi}], W[1, {lo}:{hi}], W[2, {lo}:{hi}], "
         "W[0, N + {lo}:N + {hi}], W[1, N + {lo}:N + {hi}], W[2, N + {lo}:N + {hi}]",
         "D00, D01, D10, D11 = Dr[0, {lo}:{hi}], Dr[1, {lo}:{hi}], Dr[2, {lo}:{hi}], Dr[3, {lo}:{hi}]")

# the residuals of both systems at particle i: real (TI F)_0 - m_real W0, complex (TI F)_1 + i (TI F)_2
# - m_complex (W1 + i W2), for a_i (ra, ca) and s_i (rs, cs)
_RESIDUALS = """\
fa0, fa1, fa2, fs0, fs1, fs2 = F0a[i], F1a[i], F2a[i], F0s[i], F1s[i], F2s[i]
wa0, wa1, wa2, ws0, ws1, ws2 = W0a[i], W1a[i], W2a[i], W0s[i], W1s[i], W2s[i]
ra = t00 * fa0 + t01 * fa1 + t02 * fa2 - m_re * wa0
rs = t00 * fs0 + t01 * fs1 + t02 * fs2 - m_re * ws0
ca_re = t10 * fa0 + t11 * fa1 + t12 * fa2 - (mc_re * wa1 - mc_im * wa2)
ca_im = t20 * fa0 + t21 * fa1 + t22 * fa2 - (mc_re * wa2 + mc_im * wa1)
cs_re = t10 * fs0 + t11 * fs1 + t12 * fs2 - (mc_re * ws1 - mc_im * ws2)
cs_im = t20 * fs0 + t21 * fs1 + t22 * fs2 - (mc_re * ws2 + mc_im * ws1)"""

# P^-1 of particle i's block P = c I - scale D_i by the adjugate, from D_i itself: reading 4 entries
# of D instead of the 12 of P^-1 (real and complex) made the Newton pass 1.10 to 1.25x faster at
# N = 1e5. Real P^-1 (p00 .. p11), shift cr; complex (shift cc_re + i cc_im) as real and imaginary
# parts (c00r, c00i, ..), with 1 / det scaled by det's largest part, so that |det|^2 cannot overflow
_LOAD_D = "d00, d01, d10, d11 = D00[i], D01[i], D10[i], D11[i]"
_REAL_INVERSE = """\
q00 = cr - scale * d00
q11 = cr - scale * d11
q01 = scale * d01
q10 = scale * d10
det = q00 * q11 - q01 * q10
rdet = 1.0 / det
p00, p01, p10, p11 = q11 * rdet, q01 * rdet, q10 * rdet, q00 * rdet"""
_COMPLEX_INVERSE = """\
q01 = scale * d01
q10 = scale * d10
x0 = cc_re - scale * d00
x1 = cc_re - scale * d11
det_re = x0 * x1 - cc_im * cc_im - q01 * q10
det_im = cc_im * (x0 + x1)
mag_det = abs(det_re) + abs(det_im)
big = max(abs(det_re), abs(det_im))
inv_big = 1.0 / big
det_re, det_im = det_re * inv_big, det_im * inv_big
rn = inv_big / (det_re * det_re + det_im * det_im)
ir, ii = det_re * rn, -det_im * rn
c00r, c00i = x1 * ir - cc_im * ii, x1 * ii + cc_im * ir
c11r, c11i = x0 * ir - cc_im * ii, x0 * ii + cc_im * ir
c01r, c01i = q01 * ir, q01 * ii
c10r, c10i = q10 * ir, q10 * ii"""
_BLOCK_INVERSES = "\n".join((_LOAD_D, _REAL_INVERSE, _COMPLEX_INVERSE))
# the capacitance counts the singular blocks as structured._shifted_inverses_2x2 does: |det|
# cond_limit <= the product of the row 1-norms, complex moduli taken as |re| + |im|
_REAL_SINGULAR = ("singular += 1.0 if abs(det) * cond_limit <= (abs(q00) + abs(q01)) * (abs(q10) + abs(q11)) "
                  "or det == 0.0 else 0.0")
_COMPLEX_SINGULAR = ("singular += 1.0 if mag_det * cond_limit <= (abs(x0) + abs(cc_im) + abs(q01)) "
                     "* (abs(q10) + abs(x1) + abs(cc_im)) or mag_det == 0.0 else 0.0")
_D_ROWS = _ROWS[-1].format(lo="lo", hi="hi")

# P^-1 times the residuals: real (xa, xs), complex (xca, xcs) as real and imaginary parts
_BLOCK_SOLVE = """\
{x}a = p00 * ra + p01 * rs
{x}s = p10 * ra + p11 * rs
{x}ca_re = c00r * ca_re - c00i * ca_im + c01r * cs_re - c01i * cs_im
{x}ca_im = c00r * ca_im + c00i * ca_re + c01r * cs_im + c01i * cs_re
{x}cs_re = c10r * ca_re - c10i * ca_im + c11r * cs_re - c11i * cs_im
{x}cs_im = c10r * ca_im + c10i * ca_re + c11r * cs_im + c11i * cs_re"""


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line if line else line for line in text.splitlines())


def _rows(lo: str, hi: str) -> str:
    """Views of particles [lo, hi) of each row the passes read (loops from 0 over views vectorise)."""
    return "\n".join(r.format(lo=lo, hi=hi) for r in _ROWS)


def newton_pass_source(rank: int) -> str:
    """The module of ``newton_update`` for ``rank`` moments (see the module's docstring)."""
    R = rank
    ks = range(R)
    zero = " = ".join([f"r{k} = c{k} = d{k}" for k in ks]) + " = 0.0"
    vt_rows = "\n".join(f"V{k}a, V{k}s = Vt[{k}, lo:hi], Vt[{k}, N + lo:N + hi]" for k in ks)
    sums = "\n".join(f"va, vs = V{k}a[i], V{k}s[i]\n"
                     f"r{k} += va * ya + vs * ys\n"
                     f"c{k} += va * yca_re + vs * ycs_re\n"
                     f"d{k} += va * yca_im + vs * ycs_im" for k in ks)
    store = "\n".join(f"partial[c, {3 * k}], partial[c, {3 * k + 1}], partial[c, {3 * k + 2}] = r{k}, c{k}, d{k}"
                      for k in ks)
    z_scalars = "\n".join(f"zr{k}, zc{k}, zd{k} = z_r[{k}], z_re[{k}], z_im[{k}]" for k in ks)
    a_rows = "\n".join(f"A{k}a, A{k}s = AT[{k}, b:e], AT[{k}, N + b:N + e]" for k in ks)
    a_terms = "\n".join(f"a0, a1 = A{k}a[i], A{k}s[i]\n"
                        f"ra += a0 * zr{k}\nrs += a1 * zr{k}\n"
                        f"ca_re += a0 * zc{k}\nca_im += a0 * zd{k}\n"
                        f"cs_re += a1 * zc{k}\ncs_im += a1 * zd{k}" for k in ks)
    return HEADER.format(version=__version__, kind="Radau", key=f"Newton iteration, rank {R}").replace(
        "Radau model", "the Radau") + f'''
R = {R}
BLOCK = {BLOCK}
PAD = 16  # each thread's partial sums at least two cache lines past the previous thread's


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def newton_update(F, W, TI, T, m_real, m_complex, Dr, c_real, c_complex, cap_r, cap_c, AT, scale, Vt, y, inv_scale,
                  Ys, nchunk=1):
    """One simplified-Newton iteration of Radau's collocation system after its stage derivatives F
    (3, 2N), in two passes: the residuals, both Woodbury solves (P^-1 of the real and complex
    factors, shifts c_real and c_complex, formed per particle from the Jacobian's blocks D in rows
    Dr (4, N)), W += dW and the stage states Ys = y + T W. Returns (number of non-finite stage
    derivatives, RMS of dW * inv_scale); with a non-finite one W is left as it was. Sums over
    particles are reassociated (vector lanes), the rest as written; NumPy's error model, without
    which the divisions kept the loops scalar."""
    N = Dr.shape[1]
    t00, t01, t02 = TI[0, 0], TI[0, 1], TI[0, 2]
    t10, t11, t12 = TI[1, 0], TI[1, 1], TI[1, 2]
    t20, t21, t22 = TI[2, 0], TI[2, 1], TI[2, 2]
    m_re, mc_re, mc_im = m_real, m_complex.real, m_complex.imag
    cr, cc_re, cc_im = c_real, c_complex.real, c_complex.imag
    partial = np.zeros((nchunk, 3 * R + PAD))
    bad = np.zeros(nchunk, dtype=np.int64)
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_rows("lo", "hi"), 8)}
{_indent(vt_rows, 8)}
        {zero}
        nonfinite = 0
        for i in range(hi - lo):
{_indent(_RESIDUALS, 12)}
            # x - x is 0 for a finite x, NaN otherwise: one test of all six that vectorises
            nonfinite += (fa0 - fa0) + (fa1 - fa1) + (fa2 - fa2) + (fs0 - fs0) + (fs1 - fs1) + (fs2 - fs2) != 0.0
{_indent(_BLOCK_INVERSES, 12)}
{_indent(_BLOCK_SOLVE.format(x="y"), 12)}
            # one scalar sum per moment and part: sums in an array kept the loop scalar
{_indent(sums, 12)}
        bad[c] = nonfinite
{_indent(store, 8)}
    if np.sum(bad) > 0:
        return np.sum(bad), 0.0
    z_r, z_re, z_im = np.zeros(R), np.zeros(R), np.zeros(R)
    for k in range(R):
        for l in range(R):
            total = t_re = t_im = 0.0
            for c in range(nchunk):
                total += partial[c, 3 * l]
                t_re += partial[c, 3 * l + 1]
                t_im += partial[c, 3 * l + 2]
            z_r[k] += scale * cap_r[k, l] * total
            zk = scale * cap_c[k, l] * complex(t_re, t_im)
            z_re[k] += zk.real
            z_im[k] += zk.imag
{_indent(z_scalars, 4)}
    T00, T01, T02 = T[0, 0], T[0, 1], T[0, 2]
    T10, T11, T12 = T[1, 0], T[1, 1], T[1, 2]
    T20, T21, T22 = T[2, 0], T[2, 1], T[2, 2]
    norm = np.zeros((nchunk, PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
        out = np.empty(12 * BLOCK)  # a block's new W (rows 0-5) and stage states (6-11)
        acc = 0.0
        for b in range(lo, hi, BLOCK):
            e = min(b + BLOCK, hi)
{_indent(_rows("b", "e"), 12)}
{_indent(a_rows, 12)}
            ya_, ys_, ga_, gs_ = y[b:e], y[N + b:N + e], inv_scale[b:e], inv_scale[N + b:N + e]
            for i in range(e - b):
{_indent(_RESIDUALS, 16)}
{_indent(a_terms, 16)}
{_indent(_BLOCK_INVERSES, 16)}
{_indent(_BLOCK_SOLVE.format(x="d"), 16)}
                ga, gs = ga_[i], gs_[i]
                acc += ((da * da + dca_re * dca_re + dca_im * dca_im) * (ga * ga)
                        + (ds * ds + dcs_re * dcs_re + dcs_im * dcs_im) * (gs * gs))
                wa0 += da
                wa1 += dca_re
                wa2 += dca_im
                ws0 += ds
                ws1 += dcs_re
                ws2 += dcs_im
                ya, ys = ya_[i], ys_[i]
                out[i], out[BLOCK + i], out[2 * BLOCK + i] = wa0, wa1, wa2
                out[3 * BLOCK + i], out[4 * BLOCK + i], out[5 * BLOCK + i] = ws0, ws1, ws2
                out[6 * BLOCK + i] = ya + (T00 * wa0 + T01 * wa1 + T02 * wa2)
                out[7 * BLOCK + i] = ya + (T10 * wa0 + T11 * wa1 + T12 * wa2)
                out[8 * BLOCK + i] = ya + (T20 * wa0 + T21 * wa1 + T22 * wa2)
                out[9 * BLOCK + i] = ys + (T00 * ws0 + T01 * ws1 + T02 * ws2)
                out[10 * BLOCK + i] = ys + (T10 * ws0 + T11 * ws1 + T12 * ws2)
                out[11 * BLOCK + i] = ys + (T20 * ws0 + T21 * ws1 + T22 * ws2)
            for q in range(3):
                _copy(out[q * BLOCK:], W[q, b:e])
                _copy(out[(3 + q) * BLOCK:], W[q, N + b:N + e])
                _copy(out[(6 + q) * BLOCK:], Ys[q, b:e])
                _copy(out[(9 + q) * BLOCK:], Ys[q, N + b:N + e])
        norm[c, 0] = acc
    return 0, (np.sum(norm[:, 0]) / (6 * N)) ** 0.5


@njit(cache=True, inline="always")
def _copy(src, dst):
    for i in range(dst.shape[0]):
        dst[i] = src[i]
''' + capacitance_source(rank)


def capacitance_source(rank: int) -> str:
    """``capacitance`` and ``capacitance_complex`` for ``rank`` moments: I - scale Vt P^-1 A, P^-1
    formed per particle from the Jacobian's blocks in rows (4, N), and A^T, Vt (r, 2N), one scalar
    sum per entry (and part), so that LLVM vectorises the pass as it does the Newton pass's; and the
    factor's solves (``woodbury_solve``, ``woodbury_solve_complex``) and a refinement's residuals
    (``residual``, ``residual_complex``)."""
    R = rank
    ks = range(R)
    rows = "\n".join(f"A{k}a, A{k}s, V{k}a, V{k}s = AT[{k}, lo:hi], AT[{k}, N + lo:N + hi], Vt[{k}, lo:hi], "
                     f"Vt[{k}, N + lo:N + hi]" for k in ks)
    loads = "\n".join(f"a0_{k}, a1_{k}, v0_{k}, v1_{k} = A{k}a[i], A{k}s[i], V{k}a[i], V{k}s[i]" for k in ks)

    def one(parts):
        zero = " = ".join(f"s{x}_{k}_{l}" for x in parts for k in ks for l in ks) + " = 0.0"
        q = "\n".join(f"q0{x}_{l} = {p}00{x} * a0_{l} + {p}01{x} * a1_{l}\n"
                      f"q1{x}_{l} = {p}10{x} * a0_{l} + {p}11{x} * a1_{l}"
                      for x, p in parts.items() for l in ks)
        sums = "\n".join(f"s{x}_{k}_{l} += v0_{k} * q0{x}_{l} + v1_{k} * q1{x}_{l}" for x in parts for k in ks
                         for l in ks)
        store = "\n".join(f"partial[c, {j}] = s{x}_{k}_{l}" for j, (x, k, l) in
                           enumerate((x, k, l) for x in parts for k in ks for l in ks))
        return zero, q, sums, store

    zr, qr, sr, str_ = one({"": "p"})
    zc, qc, sc, stc = one({"r": "c", "i": "c"})
    real_inverse = "\n".join((_LOAD_D, _REAL_INVERSE))
    complex_inverse = "\n".join((_LOAD_D, _COMPLEX_INVERSE))
    v_rows = "\n".join(f"V{k}a, V{k}s = Vt[{k}, lo:hi], Vt[{k}, N + lo:N + hi]" for k in ks)
    a_rows = "\n".join(f"A{k}a, A{k}s = AT[{k}, lo:hi], AT[{k}, N + lo:N + hi]" for k in ks)
    solve_zero = " = ".join(f"u{k}" for k in ks) + " = 0.0"
    solve_sums = "\n".join(f"u{k} += V{k}a[i] * ya + V{k}s[i] * ys" for k in ks)
    solve_store = "\n".join(f"partial[c, {k}] = u{k}" for k in ks)
    z_scalars = "\n".join(f"z{k} = z[{k}]" for k in ks)
    a_terms = "\n".join(f"va += A{k}a[i] * z{k}\nvs += A{k}s[i] * z{k}" for k in ks)
    # the solves' first pass up to particle i's P^-1 and right-hand side (ba, bs), Vt P^-1 b's sums
    # (``width`` of them per chunk) set to ``zero``
    def solve_head(width, zero, inverse):
        return f"""    partial = np.zeros((nchunk, {width} + PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_D_ROWS, 8)}
{_indent(v_rows, 8)}
        ba_, bs_ = b[lo:hi], b[N + lo:N + hi]
        {zero}
        for i in range(hi - lo):
{_indent(inverse, 12)}
            ba, bs = ba_[i], bs_[i]"""

    # their second pass up to particle i's P^-1 and right-hand side, the solution to write to xa_, xs_
    def write_head(inverse):
        return f"""    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_D_ROWS, 8)}
{_indent(a_rows, 8)}
        ba_, bs_, xa_, xs_ = b[lo:hi], b[N + lo:N + hi], out[lo:hi], out[N + lo:N + hi]
        for i in range(hi - lo):
{_indent(inverse, 12)}
            ba, bs = ba_[i], bs_[i]"""

    # complex right-hand sides: real and imaginary parts as separate sums (A, Vt and D are real)
    csolve_zero = " = ".join(f"u{k}r = u{k}i" for k in ks) + " = 0.0"
    csolve_sums = "\n".join(f"u{k}r += V{k}a[i] * ya_re + V{k}s[i] * ys_re\n"
                            f"u{k}i += V{k}a[i] * ya_im + V{k}s[i] * ys_im" for k in ks)
    csolve_store = "\n".join(f"partial[c, {k}], partial[c, {R + k}] = u{k}r, u{k}i" for k in ks)
    cz_scalars = "\n".join(f"z{k}r, z{k}i = z[{k}].real, z[{k}].imag" for k in ks)
    ca_terms = "\n".join(f"a0, a1 = A{k}a[i], A{k}s[i]\n"
                         f"va_re += a0 * z{k}r\nva_im += a0 * z{k}i\nvs_re += a1 * z{k}r\nvs_im += a1 * z{k}i"
                         for k in ks)
    # the residual b - (c I - scale J) x: v = Vt x, then J x = D x + A v per particle
    res_sums = "\n".join(f"u{k} += V{k}a[i] * xa + V{k}s[i] * xs" for k in ks)
    res_store = "\n".join(f"partial[c, {k}] = u{k}" for k in ks)
    v_scalars = "\n".join(f"v{k} = v[{k}]" for k in ks)
    res_terms = "\n".join(f"ja += A{k}a[i] * v{k}\njs += A{k}s[i] * v{k}" for k in ks)
    # both residuals' passes over the particles: Vt x's sums per chunk (their terms and names given),
    # then the residual itself (its lines given)
    def residual_passes(zero, sums, store, width, reduce, scalars, body):
        return f"""    partial = np.zeros((nchunk, {width} + PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(v_rows, 8)}
        xa_, xs_ = x[lo:hi], x[N + lo:N + hi]
        {zero}
        for i in range(hi - lo):
            xa, xs = xa_[i], xs_[i]
{_indent(sums, 12)}
{_indent(store, 8)}
{reduce}
{_indent(scalars, 4)}
    tops = np.zeros((nchunk, PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_D_ROWS, 8)}
{_indent(a_rows, 8)}
        xa_, xs_, ba_, bs_ = x[lo:hi], x[N + lo:N + hi], b[lo:hi], b[N + lo:N + hi]
        oa_, os_ = out[lo:hi], out[N + lo:N + hi]
        top = 0.0
        for i in range(hi - lo):
            xa, xs = xa_[i], xs_[i]
{_indent(body, 12)}
        tops[c, 0] = top"""
    real_reduce = """    v = np.zeros(R)
    for k in range(R):
        for c in range(nchunk):
            v[k] += partial[c, k]"""
    real_body = f"""ja = D00[i] * xa + D01[i] * xs
js = D10[i] * xa + D11[i] * xs
{res_terms}
ra = ba_[i] - (cr * xa - scale * ja)
rs = bs_[i] - (cr * xs - scale * js)
oa_[i], os_[i] = ra, rs
top = max(top, max(abs(ra), abs(rs)))"""
    complex_reduce = """    v = np.zeros(R, dtype=np.complex128)
    for k in range(R):
        for c in range(nchunk):
            v[k] += complex(partial[c, k], partial[c, R + k])"""
    cres_sums = "xa_re, xa_im, xs_re, xs_im = xa.real, xa.imag, xs.real, xs.imag\n" + "\n".join(
        f"u{k}r += V{k}a[i] * xa_re + V{k}s[i] * xs_re\n"
        f"u{k}i += V{k}a[i] * xa_im + V{k}s[i] * xs_im" for k in ks)
    cv_scalars = "\n".join(f"v{k}r, v{k}i = v[{k}].real, v[{k}].imag" for k in ks)
    cres_terms = "\n".join(f"a0, a1 = A{k}a[i], A{k}s[i]\n"
                           f"ja_re += a0 * v{k}r\nja_im += a0 * v{k}i\njs_re += a1 * v{k}r\njs_im += a1 * v{k}i"
                           for k in ks)
    complex_body = f"""ba, bs = ba_[i], bs_[i]
xa_re, xa_im, xs_re, xs_im = xa.real, xa.imag, xs.real, xs.imag
ja_re = D00[i] * xa_re + D01[i] * xs_re
ja_im = D00[i] * xa_im + D01[i] * xs_im
js_re = D10[i] * xa_re + D11[i] * xs_re
js_im = D10[i] * xa_im + D11[i] * xs_im
{cres_terms}
ra_re = ba.real - ((cc_re * xa_re - cc_im * xa_im) - scale * ja_re)
ra_im = ba.imag - ((cc_re * xa_im + cc_im * xa_re) - scale * ja_im)
rs_re = bs.real - ((cc_re * xs_re - cc_im * xs_im) - scale * js_re)
rs_im = bs.imag - ((cc_re * xs_im + cc_im * xs_re) - scale * js_im)
oa_[i], os_[i] = complex(ra_re, ra_im), complex(rs_re, rs_im)
top = max(top, max(ra_re * ra_re + ra_im * ra_im, rs_re * rs_re + rs_im * rs_im))"""
    return f'''

@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def woodbury_solve(Dr, cr, AT, scale, Vt, cap_inv, b, out, nchunk=1):
    """out = P^-1 (b + scale A z), z = cap^-1 Vt P^-1 b, for P = cr I - scale D, D's 2x2 blocks in
    rows Dr (4, N), and A^T, Vt (r, 2N): the block pass's solve, P^-1 formed per particle, its sums
    over particles reassociated (vector lanes)."""
    N = Dr.shape[1]
{solve_head("R", solve_zero, real_inverse)}
            ya = p00 * ba + p01 * bs
            ys = p10 * ba + p11 * bs
{_indent(solve_sums, 12)}
{_indent(solve_store, 8)}
    z = np.zeros(R)
    for k in range(R):
        for l in range(R):
            total = 0.0
            for c in range(nchunk):
                total += partial[c, l]
            z[k] += scale * cap_inv[k, l] * total
{_indent(z_scalars, 4)}
{write_head(real_inverse)}
            va, vs = ba, bs
{_indent(a_terms, 12)}
            xa_[i] = p00 * va + p01 * vs
            xs_[i] = p10 * va + p11 * vs


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def woodbury_solve_complex(Dr, cc, AT, scale, Vt, cap_inv, b, out, nchunk=1):
    """``woodbury_solve`` for the complex shift cc (A and Vt real): b, out complex (2N), cap_inv
    complex (r, r); real and imaginary parts summed apart."""
    N = Dr.shape[1]
    cc_re, cc_im = cc.real, cc.imag
{solve_head("2 * R", csolve_zero, complex_inverse)}
            ca_re, ca_im, cs_re, cs_im = ba.real, ba.imag, bs.real, bs.imag
            ya_re = c00r * ca_re - c00i * ca_im + c01r * cs_re - c01i * cs_im
            ya_im = c00r * ca_im + c00i * ca_re + c01r * cs_im + c01i * cs_re
            ys_re = c10r * ca_re - c10i * ca_im + c11r * cs_re - c11i * cs_im
            ys_im = c10r * ca_im + c10i * ca_re + c11r * cs_im + c11i * cs_re
{_indent(csolve_sums, 12)}
{_indent(csolve_store, 8)}
    z = np.zeros(R, dtype=np.complex128)
    for k in range(R):
        for l in range(R):
            t_re = t_im = 0.0
            for c in range(nchunk):
                t_re += partial[c, l]
                t_im += partial[c, R + l]
            z[k] += scale * cap_inv[k, l] * complex(t_re, t_im)
{_indent(cz_scalars, 4)}
{write_head(complex_inverse)}
            va_re, va_im, vs_re, vs_im = ba.real, ba.imag, bs.real, bs.imag
{_indent(ca_terms, 12)}
            xa_[i] = complex(c00r * va_re - c00i * va_im + c01r * vs_re - c01i * vs_im,
                             c00r * va_im + c00i * va_re + c01r * vs_im + c01i * vs_re)
            xs_[i] = complex(c10r * va_re - c10i * va_im + c11r * vs_re - c11i * vs_im,
                             c10r * va_im + c10i * va_re + c11r * vs_im + c11i * vs_re)


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def residual(Dr, cr, AT, scale, Vt, x, b, out, nchunk=1):
    """out = b - (cr x - scale J x), J = D + A Vt with D's 2x2 blocks in rows Dr (4, N) and A^T, Vt
    (r, 2N): a refinement's residual; returns max |out|."""
    N = Dr.shape[1]
{residual_passes(solve_zero, res_sums, res_store, "R", real_reduce, v_scalars, real_body)}
    return np.max(tops[:, 0])


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def residual_complex(Dr, cc, AT, scale, Vt, x, b, out, nchunk=1):
    """``residual`` for the complex shift cc (J real): x, b, out complex; returns max |out|."""
    N = Dr.shape[1]
    cc_re, cc_im = cc.real, cc.imag
{residual_passes(csolve_zero, cres_sums, csolve_store, "2 * R", complex_reduce, cv_scalars, complex_body)}
    return np.max(tops[:, 0]) ** 0.5


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def capacitance(Dr, cr, AT, scale, Vt, out, cond_limit, nchunk=1):
    """out = I - scale Vt P^-1 A for P = cr I - scale D, D's 2x2 blocks in rows Dr (4, N), and A^T,
    Vt (r, 2N); P^-1 formed per particle, sums over particles reassociated (vector lanes). Returns
    how many blocks of P are singular to working precision (out is then of no use)."""
    N = Dr.shape[1]
    partial = np.zeros((nchunk, R * R + 1 + PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_D_ROWS, 8)}
{_indent(rows, 8)}
        {zr}
        singular = 0.0
        for i in range(hi - lo):
{_indent(real_inverse, 12)}
{_indent(_REAL_SINGULAR, 12)}
{_indent(loads, 12)}
{_indent(qr, 12)}
{_indent(sr, 12)}
{_indent(str_, 8)}
        partial[c, R * R] = singular
    for k in range(R):
        for l in range(R):
            total = 0.0
            for c in range(nchunk):
                total += partial[c, R * k + l]
            out[k, l] = (1.0 if k == l else 0.0) - scale * total
    return int(np.sum(partial[:, R * R]))


@njit(cache=True, fastmath={{"reassoc"}}, error_model="numpy")
def capacitance_complex(Dr, cc, AT, scale, Vt, out, cond_limit, nchunk=1):
    """``capacitance`` for the complex shift cc, A and Vt real; out complex (r, r)."""
    N = Dr.shape[1]
    cc_re, cc_im = cc.real, cc.imag
    partial = np.zeros((nchunk, 2 * R * R + 1 + PAD))
    for c in prange(nchunk):
        lo, hi = c * N // nchunk, (c + 1) * N // nchunk
{_indent(_D_ROWS, 8)}
{_indent(rows, 8)}
        {zc}
        singular = 0.0
        for i in range(hi - lo):
{_indent(complex_inverse, 12)}
{_indent(_COMPLEX_SINGULAR, 12)}
{_indent(loads, 12)}
{_indent(qc, 12)}
{_indent(sc, 12)}
{_indent(stc, 8)}
        partial[c, 2 * R * R] = singular
    for k in range(R):
        for l in range(R):
            t_re = t_im = 0.0
            for c in range(nchunk):
                t_re += partial[c, R * k + l]
                t_im += partial[c, R * R + R * k + l]
            out[k, l] = (1.0 if k == l else 0.0) - scale * complex(t_re, t_im)
    return int(np.sum(partial[:, 2 * R * R]))
'''


def _module(rank: int):
    template = _file_sha(sys.modules[__name__].__file__)
    return compile_source(f"radau-newton-r{rank}", lambda: newton_pass_source(rank), {"rank": rank},
                          "Radau Newton pass", template).module


def generated_pass(name: str, rank: int):
    """The compiled pass ``name`` (``newton_update``, ``woodbury_solve``, ``woodbury_solve_complex``,
    ``residual``, ``residual_complex``, ``capacitance``, ``capacitance_complex``) for ``rank``
    moments, from the on-disk cache when it holds it."""
    return getattr(_module(rank), name)
