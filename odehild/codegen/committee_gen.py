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

import sympy as sp

from .. import __version__
from ..symbolic.committee import C4_SYMS, CommitteeModel, a_sym, b_sym, c_sym
from .numba_gen import HEADER, compile_source, emit_block, scalar_functions_source

PAIR_ARGS = (a_sym, b_sym, c_sym)


def _pair_function(name: str, expr) -> str:
    outputs = [("val", expr)]
    outputs += [(f"g{i}", sp.diff(expr, x)) for i, x in enumerate(PAIR_ARGS)]
    outputs += [(f"h{i}{j}", sp.diff(expr, PAIR_ARGS[i], PAIR_ARGS[j])) for i in range(3) for j in range(i, 3)]
    body = emit_block(outputs, 4, "x" + name)
    return (f"@njit(cache=True)\ndef {name}(a, b, c):\n{body}\n"
            f"    return (val, g0, g1, g2, h00, h01, h02, h11, h12, h22)\n")


def _four_point_function(name: str, expr) -> str:
    outputs = [("val", expr)] + [(f"g{i}", sp.diff(expr, x)) for i, x in enumerate(C4_SYMS)]
    body = emit_block(outputs, 4, "x" + name)
    args = ", ".join(str(s) for s in C4_SYMS)
    rets = ", ".join(["val"] + [f"g{i}" for i in range(10)])
    return f"@njit(cache=True)\ndef {name}({args}):\n{body}\n    return ({rets})\n"


def _J2_function(expr) -> str:
    outputs = [("val", expr)] + [(f"g{i}", sp.diff(expr, x)) for i, x in enumerate(PAIR_ARGS)]
    body = emit_block(outputs, 4, "xJ2")
    return f"@njit(cache=True)\ndef J2(a, b, c):\n{body}\n    return (val, g0, g1, g2)\n"


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
    n = y.size
    voff = n - K
    C, S = fields(y, K, M, T)
    g[:] = 0.0
    if want_hess:
        H[:, :] = 0.0
    L = 0.0
    for i in range(K):
        vi = y[voff + i]
        for k in range(K):
            vk = y[voff + k]
            out = P_ss(C[i, i], C[k, k], C[i, k])
            w = 0.5 * c * c
            L += w * vi * vk * out[0]
            _scatter_pair(out, (S[i, i], S[k, k], S[i, k]), w, g, H, want_hess, voff + i, vi, voff + k, vk)
        for m in range(M):
            out = P_sp(C[i, i], C[K + m, K + m], C[i, K + m])
            w = -c * ct * A[m]
            L += w * vi * out[0]
            _scatter_pair(out, (S[i, i], -1, S[i, K + m]), w, g, H, want_hess, voff + i, vi, -1, 1.0)
    for n1 in range(M):
        for n2 in range(M):
            L += 0.5 * ct * ct * A[n1] * A[n2] * P_pp(T[n1, n1], T[n2, n2], T[n1, n2])[0]
    return L


@njit(cache=True)
def _four_point(C, S, f1, f2, f3, f4, K):
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
        out = E4_ss(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9])
    elif f3 < K:
        out = E4_sp(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9])
    else:
        out = E4_pp(args[0], args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9])
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
    for l in range(F):
        for j in range(F):
            out, slots = _four_point(C, S, i, k, l, j, K)
            cc = coef[l] * coef[j]
            W += cc * out[0]
            if want_jac:
                for e in range(10):
                    if slots[e] >= 0:
                        dW[slots[e]] += cc * out[1 + e]
                if l < K:
                    dW[voff + l] += -c * coef[j] * out[0]
                if j < K:
                    dW[voff + j] += -c * coef[l] * out[0]
    if noise2 > 0.0:
        out = J2(C[i, i], C[k, k], C[i, k])
        W += noise2 * out[0]
        if want_jac:
            sl = (S[i, i], S[k, k], S[i, k])
            for e in range(3):
                dW[sl[e]] += noise2 * out[1 + e]
    return W


@njit(cache=True)
def rhs_jac(y, K, M, T, A, lr, lr2, noise2, c, ct, sgd, want_jac, dy, J):
    """d(state)/d(alpha) into dy and, if want_jac, its Jacobian into J."""
    n = y.size
    nq = K * (K + 1) // 2
    roff = nq
    voff = nq + K * M
    qs = layout(K)
    g = np.empty(n)
    H = np.empty((n, n)) if want_jac else np.empty((1, 1))
    risk_grad_hess(y, K, M, T, A, c, ct, want_jac, g, H)
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
                    J[row, :] -= lr * f * Rkn * H[qs[i, k], :]
                    J[row, roff + k * M + nn] -= lr * Gik
            for m in range(M):
                acc += g[roff + i * M + m] * T[m, nn]
                if want_jac:
                    J[row, :] -= lr * T[m, nn] * H[roff + i * M + m, :]
            dy[row] = -lr * acc
    # Q_ik: w_i . dw_k/d + w_k . dw_i/d, plus the SGD term lr^2 c^2 v_i v_k W_ik
    C, S = fields(y, K, M, T)
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
                        J[row, :] -= lr * f * Qlb * H[qs[a, l], :]
                        J[row, qs[l, b]] -= lr * Gal
                for m in range(M):
                    Ham = g[roff + a * M + m]
                    Rbm = y[roff + b * M + m]
                    acc += Ham * Rbm
                    if want_jac:
                        J[row, :] -= lr * Rbm * H[roff + a * M + m, :]
                        J[row, roff + b * M + m] -= lr * Ham
            dy[row] = -lr * acc
            if sgd:
                vi, vk = y[voff + i], y[voff + k]
                W = sgd_term(y, K, M, T, A, c, ct, noise2, i, k, C, S, want_jac, dW)
                scale = lr * lr * c * c
                dy[row] += scale * vi * vk * W
                if want_jac:
                    J[row, :] += scale * vi * vk * dW
                    J[row, voff + i] += scale * vk * W
                    J[row, voff + k] += scale * vi * W
    # v_i: -lr2 dL/dv_i
    for i in range(K):
        dy[voff + i] = -lr2 * g[voff + i]
        if want_jac:
            J[voff + i, :] = -lr2 * H[voff + i, :]


@njit(cache=True)
def sgd_steps(W, Ws, v, A, nsteps, lr, lr2, noise, c, ct):
    """Online SGD of the real network, one fresh Gaussian sample per step (spec section 2):
    w_i += (lr/sqrt(d)) c v_i sigma'(lambda_i) e x, v_i += (lr2/d) c sigma(lambda_i) e."""
    K, d = W.shape
    M = Ws.shape[0]
    sq = math.sqrt(d)
    x = np.empty(d)
    lam = np.empty(K)
    for step in range(nsteps):
        for j in range(d):
            x[j] = np.random.standard_normal()
        y = 0.0
        for n in range(M):
            acc = 0.0
            for j in range(d):
                acc += Ws[n, j] * x[j]
            y += ct * A[n] * phi(acc / sq)
        if noise > 0.0:
            y += noise * np.random.standard_normal()
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
            for j in range(d):
                W[i, j] += coef * x[j]
        if lr2 > 0.0:
            for i in range(K):
                v[i] += lr2 / d * c * sigma(lam[i]) * e
        if not math.isfinite(e):
            return step + 1
    return nsteps


@njit(cache=True)
def seed_numba(seed):
    np.random.seed(seed)


@njit(cache=True)
def risk_series(Y, K, M, T, A, c, ct):
    """Noise-free risk at each row of Y (time on the first axis)."""
    out = np.empty(Y.shape[0])
    g = np.empty(Y.shape[1])
    H = np.empty((1, 1))
    for t in range(Y.shape[0]):
        out[t] = risk_grad_hess(Y[t], K, M, T, A, c, ct, False, g, H)
    return out
'''


def committee_source(model: CommitteeModel) -> str:
    parts = [HEADER.format(version=__version__, kind=model.kind, key=model.cache_key())]
    for name, expr in model.pair_kernels.items():
        parts.append(_pair_function(f"P_{name}", expr))
    for name, expr in model.four_point_kernels.items():
        parts.append(_four_point_function(f"E4_{name}", expr))
    parts.append(_J2_function(model.J2_kernel))
    from ..symbolic.parse import z

    parts.append(scalar_functions_source({"sigma": model.sigma_expr, "dsigma": sp.diff(model.sigma_expr, z),
                                          "phi": model.phi_expr}))
    parts.append(ASSEMBLY)
    return "\n\n".join(parts)


# entries made by another version of this template are rebuilt, not trusted
TEMPLATE_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:8]


def compile_committee(model: CommitteeModel):
    """The generated, Numba-compiled module of a committee declaration (disk-cached by content)."""
    key = f"{model.cache_key()}{TEMPLATE_SHA}"
    return compile_source(key, lambda: committee_source(model), model.meta(), model.kind)
