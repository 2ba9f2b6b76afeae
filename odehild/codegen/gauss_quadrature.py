"""Numba source of the committee family's quadrature back end: Gaussian expectations of any
activation with free variances, by nested Gauss-Legendre quadrature in whitened coordinates.

For x ~ N(0, C), x = L z with L the Cholesky factor (a zero pivot makes its variable a function of
the earlier ones: the same field given twice, or a degenerate covariance). The integral over each z
runs over [-Z, Z], split where that level's function has a kink and where a later variable's
function has one given the earlier levels (integrating the later levels out smears that kink over
the later variable's remaining spread; panels are graded geometrically towards it), into panels of
width at most H with N Gauss-Legendre nodes each; intervals where the level's function vanishes
identically are skipped, and a level without any cut takes Gauss-Hermite nodes. Every panel then
integrates a smooth function, whatever the kinks (accuracy measured in tests/test_quadrature.py and
stated in docs/committee.md).

Pair kernels return their gradient in (var u, var w, cov) from the first derivatives of the
activations only (Gaussian integration by parts), so kinks need no delta functions:
dP/dc = E[f' g'], dP/da = (E[u f'(u) g(w)] - c E[f' g'])/(2a), and symmetrically in b.
Second derivatives (the Jacobian's) and J2's gradient are forward differences of those; the
four-point kernels (the SGD term) return their value only, so the Jacobian leaves out the SGD
term's dependence on the overlaps (Newton's iteration still converges on the exact right-hand side).
"""

from __future__ import annotations

import numpy as np

# pair kernels and J2 (the flow): 1e-10 relative on the tested kernels; W0, the narrowest graded
# panel, is about their accuracy
PAIR_Z, PAIR_H, PAIR_N, PAIR_W0 = 8.0, 2.0, 10, 1e-10
# four-point kernels (the SGD term, second order in the learning rate): 5e-5 at worst
FOUR_Z, FOUR_H, FOUR_N, FOUR_W0 = 6.5, 3.25, 7, 1e-7
# Gauss-Hermite orders of a smooth activation's level by the covariance's rank (4, 3, 2, 1: a field
# passed twice lowers the rank, affords more nodes, and narrows the integrand, as erf'(x)^2 does);
# a kinked activation's level takes the first (it reaches Gauss-Hermite only far from its kink).
# Not by the size of the pivots: an order that switched as the overlaps move would make the
# right-hand side jump, and the step-size control crawl
FOUR_GH = (24, 40, 64, 64)
# ratio of the graded panels around a smeared kink (the first one as wide as the smearing)
GRADE = 4.0
# relative step of the forward differences for second derivatives (Jacobian only)
FD_STEP = 1e-6


def _array(name: str, values, dtype: str) -> str:
    return f"{name} = np.array({values!r}, dtype=np.{dtype})\n"


def _cuts(width: int, H: float, W0: float) -> int:
    """Most cuts one level can have: its own kinks, and each of up to three later variables' kinks
    with two graded cuts per ratio GRADE from W0 up to H/2."""
    grades = int(np.ceil(np.log(0.5 * H / W0) / np.log(GRADE))) + 1
    return width + 3 * width * (1 + 2 * grades)


def quadrature_constants(pieces: dict) -> str:
    """Kink points and vanishing intervals of act(0) = sigma', act(1) = sigma, act(2) = phi."""
    order = ("dsigma", "sigma", "phi")
    width = max(1, max(len(pieces[k][0]) for k in order))
    kinks = [[float(p) for p in pieces[k][0]] + [0.0] * (width - len(pieces[k][0])) for k in order]
    zero = [list(pieces[k][1]) + [False] * (width + 1 - len(pieces[k][1])) for k in order]
    out = [_array("KINKS", kinks, "float64"), _array("NK", [len(pieces[k][0]) for k in order], "int64"),
           _array("ZERO", zero, "bool_")]
    for tag, (Z, H, N, W0) in (("PAIR", (PAIR_Z, PAIR_H, PAIR_N, PAIR_W0)), ("FOUR", (FOUR_Z, FOUR_H, FOUR_N, FOUR_W0))):
        x, w = np.polynomial.legendre.leggauss(N)
        out.append(f"{tag}_Z, {tag}_H, {tag}_W0 = {Z!r}, {H!r}, {W0!r}\n")
        out.append(_array(f"{tag}_X", [float(v) for v in x], "float64"))
        out.append(_array(f"{tag}_W", [float(v) for v in w], "float64"))
        # panels over [-Z, Z] plus one per cut: own kinks, later kinks and their graded panels
        panels = int(np.ceil(2 * Z / H)) + 2 + _cuts(width, H, W0)
        out.append(f"{tag}_NODES = {max(panels * N, max(FOUR_GH))}\n")
    orders = tuple(FOUR_GH)  # row 4 - k: rank k
    xs, ws = zip(*(np.polynomial.hermite_e.hermegauss(n) for n in orders))
    starts = np.concatenate([[0], np.cumsum(orders)[:-1]])
    out.append(_array("GH_X", [float(v) for v in np.concatenate(xs)], "float64"))
    out.append(_array("GH_W", [float(v) for v in np.concatenate(ws) / np.sqrt(2 * np.pi)], "float64"))
    out.append(_array("GH_START", [int(v) for v in starts], "int64"))
    out.append(_array("GH_N", list(orders), "int64"))
    out.append("NO_NODES = np.empty(0)\n")
    out.append(f"GRADE = {GRADE!r}\nFD_STEP = {FD_STEP!r}\n"
               f"CUTS = {max(_cuts(width, PAIR_H, PAIR_W0), _cuts(width, FOUR_H, FOUR_W0))}\n")
    return "".join(out)


# shared by the relu and quadrature back ends' four-point kernels
COV4 = '''
@njit(cache=True)
def cov4(cv):
    """The symmetric 4x4 covariance from its upper triangle, row-major."""
    C = np.empty((4, 4))
    e = 0
    for p in range(4):
        for q in range(p, 4):
            C[p, q] = cv[e]
            C[q, p] = cv[e]
            e += 1
    return C
'''


ENGINE = '''
INV_SQRT_2PI = 0.3989422804014327


@njit(cache=True, inline='always')
def act(code, x):
    if code == 0:
        return dsigma(x)
    if code == 1:
        return sigma(x)
    return phi(x)


@njit(cache=True, inline='always')
def dact(code, x):
    if code == 1:
        return dsigma(x)
    return dphi(x)


@njit(cache=True)
def _level_nodes(code, m, l, codes, ms, ls, rhos, Z, H, W0, GX, GW, HX, HW, zs, ws, cuts):
    """Nodes and weights (standard normal density included) over z in [-Z, Z] for a level whose
    variable is x = m + l z and whose function is act(code, x); the later variables are
    x_q = ms[q] + ls[q] z + (spread rhos[q]). Without a cut in [-Z, Z], Gauss-Hermite nodes HX
    (when given) replace the panels. Returns the number of nodes."""
    nc = 0
    for j in range(NK[code]):
        t = (KINKS[code, j] - m) / l
        if -Z < t < Z:
            cuts[nc] = t
            nc += 1
    # every later kink, however smeared: cutting only the sharp ones would switch cuts on and off as
    # the overlaps move, and the right-hand side would jump by the error of the uncut panels (1e-6),
    # which stalls the step-size control near alignment (the cuts cost 1.7x on relu's kernels)
    for q in range(codes.size):
        if ls[q] != 0.0:
            cq = codes[q]
            r = rhos[q] / abs(ls[q])  # width of the smeared kink in z
            for j in range(NK[cq]):
                t = (KINKS[cq, j] - ms[q]) / ls[q]
                if -Z < t < Z and nc < CUTS:
                    cuts[nc] = t
                    nc += 1
                    # panels graded geometrically towards a smeared kink resolve its width (a
                    # narrower one costs an error of the order of its width: no panels below W0);
                    # exact kinks (r = 0, a field passed twice) too: measured, a relu committee
                    # then specialises in a third of the steps
                    w = max(r, W0)
                    while w < 0.5 * H and nc + 2 <= CUTS:
                        for u in (t - w, t + w):
                            if -Z < u < Z:
                                cuts[nc] = u
                                nc += 1
                        w *= GRADE
    for i in range(1, nc):  # insertion sort: a handful of cuts
        t = cuts[i]
        j = i - 1
        while j >= 0 and cuts[j] > t:
            cuts[j + 1] = cuts[j]
            j -= 1
        cuts[j + 1] = t
    count = 0
    if nc == 0 and HX.size > 0:  # smooth over the whole line: Gauss-Hermite
        j = 0
        while j < NK[code] and m > KINKS[code, j]:
            j += 1
        if ZERO[code, j]:
            return 0
        for g in range(HX.size):
            zs[g] = HX[g]
            ws[g] = HW[g]
        return HX.size
    lo = -Z
    for piece in range(nc + 1):
        hi = cuts[piece] if piece < nc else Z
        if hi > lo:
            mid = m + l * 0.5 * (lo + hi)
            j = 0
            while j < NK[code] and mid > KINKS[code, j]:
                j += 1
            if not ZERO[code, j]:
                npan = max(1, int(math.ceil((hi - lo) / H - 1e-9)))
                h = (hi - lo) / npan
                for p in range(npan):
                    a0 = lo + p * h
                    for g in range(GX.size):
                        zz = a0 + 0.5 * h * (GX[g] + 1.0)
                        zs[count] = zz
                        ws[count] = 0.5 * h * GW[g] * math.exp(-0.5 * zz * zz) * INV_SQRT_2PI
                        count += 1
            lo = hi
    return count


@njit(cache=True)
def pair_moments(cf, cg, a, b, c):
    """E[f g], E[f' g'], E[u f'(u) g(w)] and E[f(u) w g'(w)] for f = act(cf), g = act(cg) and
    (u, w) Gaussian with var u = a, var w = b, cov = c."""
    if c * c > a * b:  # rounding beyond perfect alignment
        c = math.copysign(math.sqrt(a * b), c)
    sa = math.sqrt(a)
    beta = c / sa
    s2 = b - c * c / a
    s = math.sqrt(s2) if s2 > 1e-13 * b else 0.0
    zs = np.empty(PAIR_NODES)
    ws = np.empty(PAIR_NODES)
    ys = np.empty(PAIR_NODES)
    vs = np.empty(PAIR_NODES)
    cuts = np.empty(CUTS)
    later = np.array([cg])
    none = np.empty(0, np.int64)
    nx = _level_nodes(cf, 0.0, sa, later, np.zeros(1), np.array([beta]), np.array([s]),
                      PAIR_Z, PAIR_H, PAIR_W0, PAIR_X, PAIR_W, NO_NODES, NO_NODES, zs, ws, cuts)
    e0 = e1 = e2 = e3 = 0.0
    for i in range(nx):
        u = sa * zs[i]
        fu = act(cf, u)
        du = dact(cf, u)
        mu = beta * zs[i]
        if s == 0.0:
            ny = 1
            ys[0] = 0.0
            vs[0] = 1.0
        else:
            ny = _level_nodes(cg, mu, s, none, zs[:0], zs[:0], zs[:0], PAIR_Z, PAIR_H, PAIR_W0, PAIR_X, PAIR_W, NO_NODES, NO_NODES, ys, vs, cuts)
        i0 = i1 = i2 = i3 = 0.0
        for j in range(ny):
            w = mu + s * ys[j]
            gw = act(cg, w)
            dw = dact(cg, w)
            i0 += vs[j] * gw
            i1 += vs[j] * dw
            i3 += vs[j] * w * dw
        e0 += ws[i] * fu * i0
        e1 += ws[i] * du * i1
        e2 += ws[i] * u * du * i0
        e3 += ws[i] * fu * i3
    return e0, e1, e2, e3


@njit(cache=True)
def _pair_gradient(cf, cg, a, b, c):
    e0, e1, e2, e3 = pair_moments(cf, cg, a, b, c)
    return e0, (e2 - c * e1) / (2 * a), (e3 - c * e1) / (2 * b), e1


@njit(cache=True)
def _fd_steps(a, b, c):
    """Forward-difference steps in a, b and (towards 0) c: relative FD_STEP, and well inside the
    distance to the boundary c^2 = a b, where kernels of kinked activations curve sharply (down to
    1e-9 relative, below which the quadrature's own error would dominate)."""
    gap = a * b - c * c
    ha = a * max(min(FD_STEP, 1e-3 * gap / (a * b)), 1e-9)
    hb = b * max(min(FD_STEP, 1e-3 * gap / (a * b)), 1e-9)
    hc = math.sqrt(a * b) * max(min(FD_STEP, 1e-3 * gap / (a * b)), 1e-9)
    return ha, hb, -hc if c > 0 else hc


@njit(cache=True)
def pair_kernel(cf, cg, a, b, c, want):
    """E[f(u) g(w)], its gradient in (a, b, c) and, if want, its Hessian (forward differences of
    the gradient), in the order of the generated kernels. The same field twice (a = b = c, as the
    assembly passes it) gives the derivative along the diagonal in the c slot."""
    if a == b and b == c:
        e0, e1, e2, e3 = pair_moments(cf, cg, a, a, a)
        d1 = (e2 + e3) / (2 * a)
        h22 = 0.0
        if want:
            ah = a * (1.0 + FD_STEP)
            f0, f1, f2, f3 = pair_moments(cf, cg, ah, ah, ah)
            h22 = ((f2 + f3) / (2 * ah) - d1) / (ah - a)
        return (e0, 0.0, 0.0, d1, 0.0, 0.0, 0.0, 0.0, 0.0, h22)
    v, ga, gb, gc = _pair_gradient(cf, cg, a, b, c)
    h = np.zeros((3, 3))
    if want:
        base = np.array([a, b, c])
        steps = _fd_steps(a, b, c)
        for k in range(3):
            x = base.copy()
            x[k] += steps[k]
            _, pa, pb, pc = _pair_gradient(cf, cg, x[0], x[1], x[2])
            dx = x[k] - base[k]
            h[k, 0] = (pa - ga) / dx
            h[k, 1] = (pb - gb) / dx
            h[k, 2] = (pc - gc) / dx
    return (v, ga, gb, gc, h[0, 0], 0.5 * (h[0, 1] + h[1, 0]), 0.5 * (h[0, 2] + h[2, 0]), h[1, 1],
            0.5 * (h[1, 2] + h[2, 1]), h[2, 2])


{nested}

@njit(cache=True)
def gauss_expectation(C, codes, Z, H, W0, GX, GW, use_hermite, nodes):
    """E[prod_p act(codes[p], x_p)] for x ~ N(0, C), by nested quadrature over x = L z."""
    n = codes.size
    L = np.zeros((n, n))
    for j in range(n):
        d = C[j, j]
        for k in range(j):
            d -= L[j, k] * L[j, k]
        if d > 1e-13 * C[j, j] and C[j, j] > 0.0:
            L[j, j] = math.sqrt(d)
            for i in range(j + 1, n):
                acc = C[i, j]
                for k in range(j):
                    acc -= L[i, k] * L[j, k]
                L[i, j] = acc / L[j, j]
    rho = np.zeros((n, n))  # spread of x_q left after level l
    for q in range(n):
        for l in range(n):
            acc = 0.0
            for m in range(l + 1, n):
                acc += L[q, m] * L[q, m]
            rho[q, l] = math.sqrt(acc)
    P = np.zeros((n + 1, n))
    ZS = np.empty((n, nodes))
    WS = np.empty((n, nodes))
    CB = np.empty((n, CUTS))
    HR = np.full(n, -1, np.int64)  # Gauss-Hermite row per level (-1: none)
    if use_hermite:
        rank = 0
        for j in range(n):
            if L[j, j] > 0.0:
                rank += 1
        for j in range(n):
            HR[j] = 4 - rank if NK[codes[j]] == 0 else 0
    if n == 2:
        return _nested2(codes, L, rho, P, ZS, WS, CB, Z, H, W0, GX, GW, HR)
    return _nested4(codes, L, rho, P, ZS, WS, CB, Z, H, W0, GX, GW, HR)


@njit(cache=True)
def _j2(a, b, c):
    C = np.array([[a, c], [c, b]])
    return gauss_expectation(C, np.array([0, 0]), PAIR_Z, PAIR_H, PAIR_W0, PAIR_X, PAIR_W, False, PAIR_NODES)


@njit(cache=True)
def J2(a, b, c, want=True):
    """E[sigma'(u) sigma'(w)] and (if want) its gradient by forward differences; the same field
    twice gives the derivative along the diagonal in the c slot."""
    v = _j2(a, b, c)
    if not want:
        return (v, 0.0, 0.0, 0.0)
    if a == b and b == c:
        ah = a * (1.0 + FD_STEP)
        return (v, 0.0, 0.0, (_j2(ah, ah, ah) - v) / (ah - a))
    ha, hb, hc = _fd_steps(a, b, c)
    return (v, (_j2(a + ha, b, c) - v) / ha, (_j2(a, b + hb, c) - v) / hb, (_j2(a, b, c + hc) - v) / hc)


@njit(cache=True)
def four_point(cv, cf, cg):
    """E[sigma'(x1) sigma'(x2) f(x3) g(x4)] over the 4x4 covariance with upper triangle cv."""
    C = cov4(cv)
    return gauss_expectation(C, np.array([0, 0, cf, cg]), FOUR_Z, FOUR_H, FOUR_W0, FOUR_X, FOUR_W, True, FOUR_NODES)
'''


def _level_source(lev: int, n: int, indent: str) -> list:
    """One level of the nested quadrature: its nodes (one node at z = 0 when the variable is fixed by
    the earlier ones), then a loop that moves the partial means on to the next level."""
    i = indent
    return [
        f"{i}l = L[{lev}, {lev}]",
        f"{i}if l == 0.0:",
        f"{i}    n{lev} = 1",
        f"{i}    ZS[{lev}, 0] = 0.0",
        f"{i}    WS[{lev}, 0] = 1.0",
        f"{i}else:",
        f"{i}    n{lev} = _level_nodes(codes[{lev}], P[{lev}, {lev}], l, codes[{lev + 1}:], P[{lev}, {lev + 1}:], "
        f"L[{lev + 1}:, {lev}], rho[{lev + 1}:, {lev}], Z, H, W0, GX, GW, "
        f"GH_X[GH_START[HR[{lev}]]:GH_START[HR[{lev}]] + (GH_N[HR[{lev}]] if HR[{lev}] >= 0 else 0)], "
        f"GH_W[GH_START[HR[{lev}]]:GH_START[HR[{lev}]] + (GH_N[HR[{lev}]] if HR[{lev}] >= 0 else 0)], "
        f"ZS[{lev}], WS[{lev}], CB[{lev}])",
        f"{i}acc{lev} = 0.0",
        f"{i}for i{lev} in range(n{lev}):",
        f"{i}    z = ZS[{lev}, i{lev}]",
        f"{i}    f{lev} = act(codes[{lev}], P[{lev}, {lev}] + L[{lev}, {lev}] * z)",
        f"{i}    if f{lev} == 0.0:",
        f"{i}        continue",
    ] + ([] if lev == n - 1 else [
        f"{i}    for q in range({lev + 1}, {n}):",
        f"{i}        P[{lev + 1}, q] = P[{lev}, q] + L[q, {lev}] * z",
    ])


def _nested_source(n: int) -> str:
    """Nested quadrature over n levels as loops (Numba does not cache recursive functions)."""
    lines = ["@njit(cache=True)", f"def _nested{n}(codes, L, rho, P, ZS, WS, CB, Z, H, W0, GX, GW, HR):"]
    for lev in range(n):
        lines += _level_source(lev, n, "    " * (lev + 1))
    inner = "    " * (n + 1)
    lines.append(f"{inner}acc{n - 1} += WS[{n - 1}, i{n - 1}] * f{n - 1}")
    for lev in range(n - 2, -1, -1):
        ind = "    " * (lev + 2)
        lines.append(f"{ind}acc{lev} += WS[{lev}, i{lev}] * f{lev} * acc{lev + 1}")
    lines.append("    return acc0")
    return "\n".join(lines) + "\n"


NESTED = _nested_source(2) + "\n\n" + _nested_source(4)


def quadrature_kernels(four_point_codes: dict) -> str:
    """Pair kernels P_ss, P_sp, P_pp and the four-point kernels E4_* on the engine."""
    from ..symbolic.committee import C4_SYMS

    args = ", ".join(str(s) for s in C4_SYMS)
    out = []
    for name, (cf, cg) in {"ss": (1, 1), "sp": (1, 2), "pp": (2, 2)}.items():
        out.append(f"@njit(cache=True)\ndef P_{name}(a, b, c, want=True):\n"
                   f"    return pair_kernel({cf}, {cg}, a, b, c, want)\n")
    for name, (cf, cg) in four_point_codes.items():
        out.append(f"@njit(cache=True)\ndef E4_{name}({args}, want_grad=True):\n"
                   f"    return (four_point(np.array([{args}]), {cf}, {cg}), {', '.join(['0.0'] * 10)})\n")
    return "\n\n".join(out)
