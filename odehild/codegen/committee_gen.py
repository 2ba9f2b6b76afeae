"""Numba source for the committee family: generated kernels plus one generic assembly.

The kernels (pair, four-point and J2 expectations with their derivatives in the covariance entries)
are generated from the declaration; the assembly below loops over units and is the same for every
activation. The gradient-flow part is -lr times the gradient of the risk in overlap coordinates; the
Jacobian follows from the risk's Hessian, assembled from the kernels' second derivatives, and from
the four-point kernels' gradients for the SGD term.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import sympy as sp

from .. import __version__
from ..symbolic.committee import C4_SYMS, EDGE_SLOTS, MonomialTable, a_sym, b_sym, c_sym
from .gauss_quadrature import COV4, ENGINE, NESTED, quadrature_constants, quadrature_kernels
from .numba_gen import HEADER, emit_block, scalar_functions_source

PAIR_ARGS = (a_sym, b_sym, c_sym)


# the relu kernels' second derivatives grow like 1/sqrt(1 - rho^2) as a student unit aligns with a
# teacher unit (the overlap chart is singular there, the risk in weight space is not): the Jacobian
# takes them at |rho| <= 1 - JAC_MARGIN so that it stays finite. Radau still stalls there (K = M = 2:
# 21401 steps in 60 s unclamped, 10513 steps in 47 s clamped, neither past alpha = 157-300), which is
# why this back end defaults to LSODA (solve/committee.py)
JAC_MARGIN = 1e-6
CLAMP = ("    ch = c\n    lim = math.sqrt(a * b) * (1.0 - {m!r})\n    if abs(c) > lim:\n"
         "        ch = math.copysign(lim, c)\n").format(m=JAC_MARGIN)
ch_sym = sp.Symbol("ch", real=True)


def _kernel_function(model, name: str, expr, order: int, diagonal=None) -> str:
    """A kernel of (a, b, c) with its derivatives up to ``order`` (2: pair kernels, whose gradient
    enters the flow and Hessian the Jacobian; 1: J2, whose gradient enters the Jacobian only).

    With ``diagonal`` (the kernel's value at a = b = c as a function of a), for kernels not smooth
    where c^2 = a b: the same field twice takes the limit, its total derivative in the c slot, and
    the highest derivatives (the Jacobian's) are taken at |c| <= (1 - JAC_MARGIN) sqrt(a b)."""
    d = model.derivative
    grads = [(f"g{i}", d(expr, x)) for i, x in enumerate(PAIR_ARGS)]
    hess = [(f"h{i}{j}", d(expr, PAIR_ARGS[i], PAIR_ARGS[j])) for i in range(3) for j in range(i, 3)]
    exact, jacobian_only = ([("val", expr)] + grads, hess) if order == 2 else ([("val", expr)], grads)
    names = [t for t, _ in exact + jacobian_only]
    head = f"@njit(cache=True)\ndef {name}(a, b, c, want=True):\n"
    tail = f"    return ({', '.join(names)})\n"
    if diagonal is None:
        return head + emit_block(exact + jacobian_only, 4, "x" + name) + "\n" + tail
    along = [("val", diagonal)] + [(t, sp.diff(diagonal, a_sym, k)) for k, t in ((1, "g2"), (2, "h22"))[:order]]
    limit = ", ".join(t if t in dict(along) else "0.0" for t in names)
    clamped = [(t, e.xreplace({c_sym: ch_sym})) for t, e in jacobian_only]
    return (head + "    if a == b and b == c:\n" + emit_block(along, 8, "y" + name) + f"\n        return ({limit})\n"
            "    if c * c >= a * b:  # rounding beyond perfect alignment\n"
            "        c = math.copysign(math.sqrt(a * b) * (1.0 - 1e-15), c)\n"
            + emit_block(exact, 4, "x" + name) + "\n" + CLAMP + emit_block(clamped, 4, "z" + name) + "\n" + tail)


def _four_point_function(name: str, expr) -> str:
    outputs = [("val", expr)] + [(f"g{i}", sp.diff(expr, x)) for i, x in enumerate(C4_SYMS)]
    body = emit_block(outputs, 4, "x" + name)
    args = ", ".join(str(s) for s in C4_SYMS)
    rets = ", ".join(["val"] + [f"g{i}" for i in range(10)])
    return f"@njit(cache=True)\ndef {name}({args}, want_grad=True):\n{body}\n    return ({rets})\n"


def _table_eval_source() -> str:
    """Numba source of the monomial-table sum and its gradient, unrolled over the six correlations
    (scalars stay in registers: 1.6x faster than loops over the exponents, 2.5x faster than prefix
    products in small arrays, relu at kmax 6 and K = M = 8)."""
    lines = ["@njit(cache=True)", "def _table_eval(EXP, COEF, top, x):",
             '    """sum_t COEF[t] prod_e x_e^EXP[t, e] (exponents <= top) and its gradient in the six '
             'correlations x."""',
             "    pw = np.ones((6, top + 1))", "    for e in range(6):",
             "        for k in range(1, top + 1):", "            pw[e, k] = pw[e, k - 1] * x[e]",
             "    val = 0.0", "    " + " = ".join(f"g{e}" for e in range(6)) + " = 0.0",
             "    for t in range(EXP.shape[0]):", "        c = COEF[t]"]
    for e in range(6):
        lines += [f"        k{e} = EXP[t, {e}]", f"        f{e} = pw[{e}, k{e}]"]
    lines.append("        val += c * f0 * f1 * f2 * f3 * f4 * f5")
    for e in range(6):
        others = " * ".join(f"f{o}" for o in range(6) if o != e)
        lines += [f"        if k{e} > 0:", f"            g{e} += c * k{e} * pw[{e}, k{e} - 1] * {others}"]
    lines.append("    return val, np.array([" + ", ".join(f"g{e}" for e in range(6)) + "])")
    return "\n".join(lines) + "\n"


TABLE_EVAL = _table_eval_source()


def _gauss_legendre_panels(edges, n):
    x, w = np.polynomial.legendre.leggauss(n)
    us = [lo + (hi - lo) * 0.5 * (x + 1.0) for lo, hi in zip(edges[:-1], edges[1:])]
    ws = [(hi - lo) * 0.5 * w for lo, hi in zip(edges[:-1], edges[1:])]
    return np.concatenate(us), np.concatenate(ws)


def _relu_four_point_source() -> str:
    # geometric panels in u resolve the feature at u ~ sqrt(1 - |r|) of a nearly perfect correlation
    # (a student unit aligned with a teacher unit): 1e-9 against SciPy's Genz integration
    u, w = _gauss_legendre_panels([0.0, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.1, 0.4, 1.0], 8)
    nodes = (f"GL_U = np.array([{', '.join(repr(float(x)) for x in u)}])\n"
             f"GL_W = np.array([{', '.join(repr(float(x)) for x in w)}])\n\n\n")
    return nodes + RELU_ORTHANT + COV4 + RELU_FOUR_POINT


RELU_ORTHANT = '''@njit(cache=True)
def _orthant4(R):
    """P(x > 0) for four standard Gaussians with correlation R: Plackett's reduction along
    R(t) = I + t (R - I), dP/dr_ij = phi2(0, 0; r_ij) P(x_k, x_l > 0 | x_i = x_j = 0), with t = 1 - u^2
    (smooth at t = 1 where a correlation can be 1)."""
    total = 0.0
    for q in range(GL_U.size):
        u = GL_U[q]
        t = 1.0 - u * u
        acc = 0.0
        for i in range(4):
            for j in range(i + 1, 4):
                r = R[i, j]
                if r == 0.0:
                    continue
                k, l = -1, -1
                for m in range(4):
                    if m != i and m != j:
                        if k < 0:
                            k = m
                        else:
                            l = m
                rt = t * r
                det = 1.0 - rt * rt
                # conditional covariance of (x_k, x_l) given x_i = x_j = 0 at R(t)
                a_k = t * R[k, i]; b_k = t * R[k, j]
                a_l = t * R[l, i]; b_l = t * R[l, j]
                # S^-1 = [[1, -rt], [-rt, 1]] / det
                vkk = 1.0 - (a_k * a_k - 2 * rt * a_k * b_k + b_k * b_k) / det
                vll = 1.0 - (a_l * a_l - 2 * rt * a_l * b_l + b_l * b_l) / det
                vkl = t * R[k, l] - (a_k * a_l - rt * (a_k * b_l + b_k * a_l) + b_k * b_l) / det
                rho = vkl / math.sqrt(max(vkk * vll, 1e-300))
                rho = min(1.0, max(-1.0, rho))
                # 2u dt-Jacobian over sqrt(det) stays finite as t -> 1 with |r| = 1
                acc += r * (0.25 + math.asin(rho) / (2 * math.pi)) / (2 * math.pi) * 2 * u / math.sqrt(max(det, 1e-300))
        total += GL_W[q] * acc
    return 1.0 / 16.0 + total


@njit(cache=True)
def orthant_probability(C, mask):
    idx = np.flatnonzero(mask)
    m = idx.size
    if m == 0:
        return 1.0
    if m == 1:
        return 0.5
    R = np.empty((m, m))
    for p in range(m):
        for q in range(m):
            R[p, q] = C[idx[p], idx[q]] / math.sqrt(max(C[idx[p], idx[p]] * C[idx[q], idx[q]], 1e-300))
            R[p, q] = min(1.0, max(-1.0, R[p, q]))
    if m == 2:
        return 0.25 + math.asin(R[0, 1]) / (2 * math.pi)
    if m == 3:
        return 0.125 + (math.asin(R[0, 1]) + math.asin(R[0, 2]) + math.asin(R[1, 2])) / (4 * math.pi)
    return _orthant4(R)


@njit(cache=True)
def _condition(C, pw, mask, j):
    n = C.shape[0]
    keep = np.empty(n - 1, np.int64)
    e = 0
    for m in range(n):
        if m != j:
            keep[e] = m
            e += 1
    Cc = np.empty((n - 1, n - 1))
    for p in range(n - 1):
        for q in range(n - 1):
            Cc[p, q] = C[keep[p], keep[q]] - C[keep[p], j] * C[j, keep[q]] / C[j, j]
    return Cc, pw[keep], mask[keep]


@njit(cache=True)
def orthant_moment(C, pw, mask):
    """E[prod_j x_j^pw[j] prod_{mask} 1(x_j > 0)] for zero-mean Gaussian x with covariance C, by
    Gaussian integration by parts: E[x_a h] = sum_j C_aj E[d_j h], where d_j of 1(x_j > 0) is the
    density at 0 times conditioning on x_j = 0 (still zero mean)."""
    n = C.shape[0]
    a = -1
    for j in range(n):
        if pw[j] > 0:
            a = j
            break
    if a < 0:
        return orthant_probability(C, mask)
    pw2 = pw.copy()
    pw2[a] -= 1
    total = 0.0
    for j in range(n):
        c = C[a, j]
        if c == 0.0:
            continue
        if pw2[j] > 0:
            pw3 = pw2.copy()
            pw3[j] -= 1
            total += c * pw2[j] * orthant_moment(C, pw3, mask)
        elif mask[j] and C[j, j] > 0.0:
            Cc, pc, mc = _condition(C, pw2, mask, j)
            total += c / math.sqrt(2 * math.pi * C[j, j]) * orthant_moment(Cc, pc, mc)
    return total
'''

RELU_FOUR_POINT = '''

@njit(cache=True)
def relu_four_point(cv, pw0, pref, want_grad):
    """pref E[prod_p x_p^pw0[p] 1(x_p > 0)] over the 4x4 covariance with upper triangle cv (row-major),
    and its gradient over the ten entries by central differences. The same field given twice
    (c_pq = c_pp = c_qq exactly, as the assembly passes it) is merged first: the product of its
    factors is one factor, and its entries' derivative goes to the first of them (they share a
    state slot)."""
    C = cov4(cv)
    rep = np.arange(4)
    for q in range(1, 4):
        for p in range(q):
            if rep[p] == p and C[p, q] == C[p, p] and C[p, p] == C[q, q]:
                rep[q] = p
                break
    reps = np.flatnonzero(rep == np.arange(4))
    n = reps.size
    where = np.empty(4, np.int64)
    for q in range(4):
        for r in range(n):
            if reps[r] == rep[q]:
                where[q] = r
    Cm = np.empty((n, n))
    for r in range(n):
        for s in range(n):
            Cm[r, s] = C[reps[r], reps[s]]
    pw = np.zeros(n, np.int64)
    for q in range(4):
        pw[where[q]] += pw0[q]
    mask = np.ones(n, np.int64)
    val = pref * orthant_moment(Cm, pw, mask)
    grad = np.zeros(10)
    if not want_grad:
        return val, grad
    gm = np.zeros((n, n))
    for r in range(n):
        for s in range(r, n):
            h = 1e-6 * math.sqrt(Cm[r, r] * Cm[s, s])
            Cp = Cm.copy()
            Cp[r, s] += h
            Cp[s, r] = Cp[r, s]
            up = orthant_moment(Cp, pw, mask)
            Cp[r, s] -= 2 * h
            Cp[s, r] = Cp[r, s]
            gm[r, s] = pref * (up - orthant_moment(Cp, pw, mask)) / (2 * h)
    taken = np.zeros((n, n), np.bool_)
    e = 0
    for p in range(4):
        for q in range(p, 4):
            r, s = min(where[p], where[q]), max(where[p], where[q])
            if not taken[r, s]:
                grad[e] = gm[r, s]
                taken[r, s] = True
            e += 1
    return val, grad
'''


def _relu_four_point_function(name: str, pref) -> str:
    """E4 = E[sigma'(x1) sigma'(x2) f(x3) g(x4)] for sigma, f, g multiples of relu: x3 x4 times the
    indicator of the positive orthant, times ``pref``."""
    args = ", ".join(str(s) for s in C4_SYMS)
    return (f"@njit(cache=True)\ndef {name}({args}, want_grad=True):\n"
            f"    val, g = relu_four_point(np.array([{args}]), np.array([0, 0, 1, 1]), {float(pref)!r}, want_grad)\n"
            "    return (val, g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9])\n")


def _table_constants(name: str, table: MonomialTable) -> str:
    exps = ", ".join("(" + ", ".join(str(int(k)) for k in row) + ")" for row in table.exponents)
    coefs = ", ".join(repr(float(c)) for c in table.coefficients)
    return (f"EXP_{name} = np.array([{exps}], dtype=np.int64).reshape(-1, 6)\n"
            f"COEF_{name} = np.array([{coefs}], dtype=np.float64)\n")


def _table_function(name: str, table: MonomialTable) -> str:
    """A four-point kernel on unit variances from its monomial table; variance derivatives are 0
    (on the sphere they cancel in the projected flow)."""
    args = ", ".join(str(s) for s in C4_SYMS)
    off = [str(C4_SYMS[i]) for i in EDGE_SLOTS]
    grads = ["0.0"] * 10
    for e, slot in enumerate(EDGE_SLOTS):
        grads[slot] = f"grad[{e}]"
    return (_table_constants(name, table) + "\n\n"
            f"@njit(cache=True)\ndef {name}({args}, want_grad=True):\n"
            f"    val, grad = _table_eval(EXP_{name}, COEF_{name}, {int(table.exponents.max(initial=0))}, "
            f"np.array([{', '.join(off)}]))\n"
            f"    return (val, {', '.join(grads)})\n")


ASSEMBLY = '''
@njit(cache=True)
def layout(K):
    """Slot of Q_ik in the upper-triangle block of the state."""
    qs = np.empty((K, K), np.int64)
    idx = 0
    for i in range(K):
        for k in range(i, K):
            qs[i, k] = idx
            qs[k, i] = idx
            idx += 1
    return qs


@njit(cache=True)
def fields(y, K, M, T):
    """Covariance of (lambda_1..K, rho_1..M) and the state slot of each entry (-1: constant)."""
    F = K + M
    nq = K * (K + 1) // 2
    qs = layout(K)
    C = np.empty((F, F))
    S = np.full((F, F), -1, np.int64)
    for i in range(K):
        for k in range(K):
            C[i, k] = y[qs[i, k]]
            S[i, k] = qs[i, k]
        for n in range(M):
            s = nq + i * M + n
            C[i, K + n] = y[s]
            C[K + n, i] = y[s]
            S[i, K + n] = s
            S[K + n, i] = s
    for n in range(M):
        for m in range(M):
            C[K + n, K + m] = T[n, m]
    return C, S


@njit(cache=True)
def _scatter_pair(out, slots, w, g, H, want_hess, vslot1, v1, vslot2, v2):
    """Add w * v1 * v2 * P (P a pair kernel with value, gradient, Hessian in ``out``) to the risk's
    gradient g and Hessian H. vslot = -1 marks a constant factor."""
    grad = (out[1], out[2], out[3])
    hess = ((out[4], out[5], out[6]), (out[5], out[7], out[8]), (out[6], out[8], out[9]))
    vv = w * v1 * v2
    for l in range(3):
        if slots[l] >= 0:
            g[slots[l]] += vv * grad[l]
    if vslot1 >= 0:
        g[vslot1] += w * v2 * out[0]
    if vslot2 >= 0:
        g[vslot2] += w * v1 * out[0]
    if not want_hess:
        return
    for l in range(3):
        if slots[l] < 0:
            continue
        for m in range(3):
            if slots[m] >= 0:
                H[slots[l], slots[m]] += vv * hess[l][m]
        if vslot1 >= 0:
            H[slots[l], vslot1] += w * v2 * grad[l]
            H[vslot1, slots[l]] += w * v2 * grad[l]
        if vslot2 >= 0:
            H[slots[l], vslot2] += w * v1 * grad[l]
            H[vslot2, slots[l]] += w * v1 * grad[l]
    if vslot1 >= 0 and vslot2 >= 0:
        H[vslot1, vslot2] += w * out[0]
        H[vslot2, vslot1] += w * out[0]


@njit(cache=True)
def risk_grad_hess(y, K, M, T, A, c, ct, want_hess, g, H):
    """Noise-free risk L = (1/2) E[(y* - yhat)^2] at the packed state y; fills its gradient g and
    (if want_hess) its Hessian H in the packed coordinates (upper-triangle Q entries as variables)."""
    C, S = fields(y, K, M, T)
    # bool(...) and np.int64(...) around constants, here and in the calls below: Numba compiles a
    # callee once more for each literal argument (Literal[bool](True) is not bool), about 1.6 s of
    # a cold erf solve when they were bare
    return _risk(C, S, y, K, M, T, A, c, ct, want_hess, g, H, bool(True))


@njit(cache=True)
def _risk(C, S, y, K, M, T, A, c, ct, want_hess, g, H, want_value):
    """risk_grad_hess on the fields' covariance C and slots S already built; without want_value the
    returned value leaves out the constant teacher term."""
    voff = y.size - K
    g[:] = 0.0
    if want_hess:
        H[:, :] = 0.0
    L = 0.0
    for i in range(K):
        vi = y[voff + i]
        # the (i, k) and (k, i) terms are equal: each unordered pair once
        for k in range(i, K):
            vk = y[voff + k]
            out = P_ss(C[i, i], C[k, k], C[i, k], want_hess)
            w = 0.5 * c * c * (1.0 if k == i else 2.0)
            L += w * vi * vk * out[0]
            _scatter_pair(out, (S[i, i], S[k, k], S[i, k]), w, g, H, want_hess, voff + i, vi, voff + k, vk)
        for m in range(M):
            out = P_sp(C[i, i], C[K + m, K + m], C[i, K + m], want_hess)
            w = -c * ct * A[m]
            L += w * vi * out[0]
            _scatter_pair(out, (S[i, i], np.int64(-1), S[i, K + m]), w, g, H, want_hess, voff + i, vi,
                          np.int64(-1), 1.0)
    if want_value:  # the teacher's own term is constant: the flow does not need it
        for n1 in range(M):
            for n2 in range(M):
                L += 0.5 * ct * ct * A[n1] * A[n2] * P_pp(T[n1, n1], T[n2, n2], T[n1, n2], bool(False))[0]
    return L


@njit(cache=True)
def _four_point(C, S, f1, f2, f3, f4, K, want_grad):
    """E[sigma'(x_f1) sigma'(x_f2) f(x_f3) g(x_f4)] with f, g = sigma for student fields (< K) and phi
    for teacher fields, its gradient, and the slots of the ten covariance entries."""
    if f3 >= K and f4 < K:
        f3, f4 = f4, f3
    idx = (f1, f2, f3, f4)
    args = np.empty(10)
    slots = np.empty(10, np.int64)
    e = 0
    for p in range(4):
        for q in range(p, 4):
            args[e] = C[idx[p], idx[q]]
            slots[e] = S[idx[p], idx[q]]
            e += 1
    if f3 < K and f4 < K:
        out = E4_ss(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], want_grad)
    elif f3 < K:
        out = E4_sp(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], want_grad)
    else:
        out = E4_pp(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], want_grad)
    return out, slots


@njit(cache=True)
def sgd_term(y, K, M, T, A, c, ct, noise2, i, k, C, S, want_jac, dW):
    """W_ik = E[sigma'(lambda_i) sigma'(lambda_k) e^2] (noise included) and, if want_jac, its
    gradient over the state in dW."""
    n = y.size
    voff = n - K
    F = K + M
    coef = np.empty(F)
    for f in range(K):
        coef[f] = -c * y[voff + f]
    for m in range(M):
        coef[K + m] = ct * A[m]
    W = 0.0
    if want_jac:
        dW[:] = 0.0
    # E[.. f(x_l) g(x_j)] is symmetric in (l, j): each unordered pair once, off-diagonal ones twice
    for l in range(F):
        for j in range(l, F):
            out, slots = _four_point(C, S, i, k, l, j, K, want_jac)
            m = 1.0 if l == j else 2.0
            cc = m * coef[l] * coef[j]
            W += cc * out[0]
            if want_jac:
                for e in range(10):
                    if slots[e] >= 0:
                        dW[slots[e]] += cc * out[1 + e]
                if l < K:
                    dW[voff + l] += -c * m * coef[j] * out[0]
                if j < K:
                    dW[voff + j] += -c * m * coef[l] * out[0]
    if noise2 > 0.0:
        out = J2(C[i, i], C[k, k], C[i, k], want_jac)
        W += noise2 * out[0]
        if want_jac:
            sl = (S[i, i], S[k, k], S[i, k])
            for e in range(3):
                dW[sl[e]] += noise2 * out[1 + e]
    return W


@njit(cache=True)
def _sub_row(J, row, f, X, xrow):
    """J[row, :] -= f X[xrow, :], as a loop: Numba compiles an array-to-slice assignment with its
    shape-mismatch message, about 3 s of a cold start."""
    for col in range(J.shape[1]):
        J[row, col] -= f * X[xrow, col]


@njit(cache=True)
def rhs_jac(y, K, M, T, A, lr, lr2, lr_sq, noise2, c, ct, sphere, want_jac, dy, J):
    """d(state)/d(alpha) into dy and, if want_jac, its Jacobian into J. lr_sq multiplies the SGD
    term c^2 v_i v_k E[sigma' sigma' e^2] (lr^2 for online SGD, 0 for gradient flow); sphere projects
    the flow on Q_ii = 1."""
    n = y.size
    nq = K * (K + 1) // 2
    roff = nq
    voff = nq + K * M
    qs = layout(K)
    g = np.empty(n)
    H = np.empty((n, n)) if want_jac else np.empty((1, 1))
    C, S = fields(y, K, M, T)
    _risk(C, S, y, K, M, T, A, c, ct, want_jac, g, H, bool(False))
    dy[:] = 0.0
    if want_jac:
        J[:, :] = 0.0
    # R_in: -lr [sum_k G_ik R_kn + sum_m dL/dR_im T_mn], G_ik = dL/dQ_ik (x2 on the diagonal)
    for i in range(K):
        for nn in range(M):
            row = roff + i * M + nn
            acc = 0.0
            for k in range(K):
                f = 2.0 if i == k else 1.0
                Gik = f * g[qs[i, k]]
                Rkn = y[roff + k * M + nn]
                acc += Gik * Rkn
                if want_jac:
                    _sub_row(J, row, lr * f * Rkn, H, qs[i, k])
                    J[row, roff + k * M + nn] -= lr * Gik
            for m in range(M):
                acc += g[roff + i * M + m] * T[m, nn]
                if want_jac:
                    _sub_row(J, row, lr * T[m, nn], H, roff + i * M + m)
            dy[row] = -lr * acc
    # Q_ik: w_i . dw_k/d + w_k . dw_i/d, plus the SGD term lr^2 c^2 v_i v_k W_ik
    dW = np.empty(n)
    for i in range(K):
        for k in range(i, K):
            row = qs[i, k]
            acc = 0.0
            for pair in range(2):
                a = i if pair == 0 else k
                b = k if pair == 0 else i
                for l in range(K):
                    f = 2.0 if a == l else 1.0
                    Gal = f * g[qs[a, l]]
                    Qlb = y[qs[l, b]]
                    acc += Gal * Qlb
                    if want_jac:
                        _sub_row(J, row, lr * f * Qlb, H, qs[a, l])
                        J[row, qs[l, b]] -= lr * Gal
                for m in range(M):
                    Ham = g[roff + a * M + m]
                    Rbm = y[roff + b * M + m]
                    acc += Ham * Rbm
                    if want_jac:
                        _sub_row(J, row, lr * Rbm, H, roff + a * M + m)
                        J[row, roff + b * M + m] -= lr * Ham
            dy[row] = -lr * acc
            if lr_sq != 0.0:
                vi, vk = y[voff + i], y[voff + k]
                W = sgd_term(y, K, M, T, A, c, ct, noise2, i, k, C, S, want_jac, dW)
                scale = lr_sq * c * c
                dy[row] += scale * vi * vk * W
                if want_jac:
                    vw = scale * vi * vk
                    for col in range(n):
                        J[row, col] += vw * dW[col]
                    J[row, voff + i] += scale * vk * W
                    J[row, voff + k] += scale * vi * W
    # v_i: -lr2 dL/dv_i
    for i in range(K):
        dy[voff + i] = -lr2 * g[voff + i]
        if want_jac:
            for col in range(n):
                J[voff + i, col] = -lr2 * H[voff + i, col]
    if sphere:
        project_sphere(y, K, M, want_jac, dy, J)


@njit(cache=True)
def project_sphere(y, K, M, want_jac, dy, J):
    """The flow on |u_i| = 1 from the free flow: renormalising removes each unit's radial velocity,
    dR_in -= R_in dQ_ii/2 and dQ_ik -= Q_ik (dQ_ii + dQ_kk)/2; the Q_ii stay 1."""
    nq = K * (K + 1) // 2
    qs = layout(K)
    D = np.empty(K)
    JD = np.empty((K, y.size)) if want_jac else np.empty((1, 1))
    for i in range(K):
        D[i] = dy[qs[i, i]]
        if want_jac:
            for col in range(y.size):
                JD[i, col] = J[qs[i, i], col]
    for i in range(K):
        for nn in range(M):
            row = nq + i * M + nn
            dy[row] -= 0.5 * y[row] * D[i]
            if want_jac:
                _sub_row(J, row, 0.5 * y[row], JD, i)
                J[row, row] -= 0.5 * D[i]
        for k in range(i + 1, K):
            row = qs[i, k]
            dy[row] -= 0.5 * y[row] * (D[i] + D[k])
            if want_jac:
                half = 0.5 * y[row]
                for col in range(y.size):
                    J[row, col] -= half * (JD[i, col] + JD[k, col])
                J[row, row] -= 0.5 * (D[i] + D[k])
    for i in range(K):
        dy[qs[i, i]] = 0.0
        if want_jac:
            J[qs[i, i], :] = 0.0
            J[:, qs[i, i]] = 0.0


@njit(cache=True)
def sgd_steps(W, Ws, v, A, nsteps, lr, lr2, noise, c, ct, sphere, rng):
    """Online SGD of the real network, one fresh Gaussian sample per step (spec section 2):
    w_i += (lr/sqrt(d)) c v_i sigma'(lambda_i) e x, v_i += (lr2/d) c sigma(lambda_i) e. On the
    sphere (rows of W of norm sqrt(d)) the step is projected on the tangent space, x -> x - lambda_i
    w_i/sqrt(d), and each row renormalised (spec section 3)."""
    K, d = W.shape
    M = Ws.shape[0]
    sq = math.sqrt(d)
    x = np.empty(d)
    lam = np.empty(K)
    for step in range(nsteps):
        for j in range(d):
            x[j] = rng.standard_normal()
        y = 0.0
        for n in range(M):
            acc = 0.0
            for j in range(d):
                acc += Ws[n, j] * x[j]
            y += ct * A[n] * phi(acc / sq)
        if noise > 0.0:
            y += noise * rng.standard_normal()
        yhat = 0.0
        for i in range(K):
            acc = 0.0
            for j in range(d):
                acc += W[i, j] * x[j]
            lam[i] = acc / sq
            yhat += c * v[i] * sigma(lam[i])
        e = y - yhat
        for i in range(K):
            coef = lr / sq * c * v[i] * dsigma(lam[i]) * e
            if sphere:
                radial = lam[i] / sq
                norm2 = 0.0
                for j in range(d):
                    W[i, j] += coef * (x[j] - radial * W[i, j])
                    norm2 += W[i, j] * W[i, j]
                scale = sq / math.sqrt(norm2)
                for j in range(d):
                    W[i, j] *= scale
            else:
                for j in range(d):
                    W[i, j] += coef * x[j]
        if lr2 > 0.0:
            for i in range(K):
                v[i] += lr2 / d * c * sigma(lam[i]) * e
        if not math.isfinite(e):
            return step + 1
    return nsteps


@njit(cache=True)
def risk_series(Y, K, M, T, A, c, ct):
    """Noise-free risk at each row of Y (time on the first axis)."""
    out = np.empty(Y.shape[0])
    g = np.empty(Y.shape[1])
    H = np.empty((1, 1))
    for t in range(Y.shape[0]):
        out[t] = risk_grad_hess(Y[t], K, M, T, A, c, ct, bool(False), g, H)
    return out
'''


def committee_source(model) -> str:
    """The generated module of a committee declaration (:class:`odehild.models.committee.CommitteeModel`)."""
    parts = [HEADER.format(version=__version__, kind=model.kind, key=model.cache_key())]
    from ..symbolic.parse import z

    functions = {"sigma": model.sigma_expr, "dsigma": model.dsigma_expr, "phi": model.phi_expr}
    if model.backend == "quadrature":
        parts += [quadrature_constants(model.pieces), COV4, ENGINE.format(nested=NESTED),
                  quadrature_kernels(model.four_point_kernels),
                  scalar_functions_source({**functions, "dphi": sp.diff(model.phi_expr, z)}), ASSEMBLY]
        return "\n\n".join(parts)
    diagonals = model.pair_diagonals or {}
    for name, expr in model.pair_kernels.items():
        parts.append(_kernel_function(model, f"P_{name}", expr, 2, diagonals.get(name)))
    if model.backend == "hermite":
        parts.append(TABLE_EVAL)
    if model.backend == "relu":
        parts.append(_relu_four_point_source())
    for name, expr in model.four_point_kernels.items():
        if model.backend == "relu":
            parts.append(_relu_four_point_function(f"E4_{name}", expr))
        elif model.backend == "hermite":
            parts.append(_table_function(f"E4_{name}", expr))
        else:
            parts.append(_four_point_function(f"E4_{name}", expr))
    parts.append(_kernel_function(model, "J2", model.J2_kernel, 1, diagonals.get("J2")))
    parts.append(scalar_functions_source(functions))
    parts.append(ASSEMBLY)
    return "\n\n".join(parts)


# part of every committee cache key: entries made by another version of this template are rebuilt
TEMPLATE_SHA = hashlib.sha256(Path(__file__).read_bytes()
                              + (Path(__file__).parent / "gauss_quadrature.py").read_bytes()).hexdigest()[:8]
