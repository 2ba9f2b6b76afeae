"""The founding model's finite-width network of m neurons in overlap coordinates (docs/model.md 2a):
the exact population gradient flow with kernels V and U (:class:`FiniteWidthModel`), and the same
network at a finite online-SGD rate gamma as a member of the committee family
(:func:`founding_member`, :func:`solve_finite_width`; docs/committee.md).

The risk is declared as a sum of one-neuron terms A(a_i, s_i) and pair terms B(a_i, a_j, r_ij); the
flow on the sphere follows from the gradients of A and B.
"""

from __future__ import annotations

import dataclasses
import functools
from functools import cached_property

import numpy as np
import sympy as sp

from .. import __version__
from ..codegen.numba_gen import HEADER, compile_model, emit_block, scalar_functions_source
from ..errors import InputError, IntegrationError
from ..solve.integrate import OdeProblem, solve
from ..solve.state import Block, StateMap
from ..solve.trajectory import InitialCondition, Trajectory
from ..symbolic.founding import (CODEGEN_FORMAT, _digest, a_sym, aj_sym, as_function, check_eps, m_sym, r_sym,
                                 s_sym)
from . import register
from ._founding import FoundingDeclaration
from .committee import CommitteeInit, CommitteeModel, check_rate


@dataclasses.dataclass(frozen=True)
class FiniteWidthDerivation:
    """Symbolic pieces of the exact finite-width overlap ODE (docs/model.md 2a).

    R = |phi|^2/2 + sum_i A(a_i, s_i) + sum_{i != j} B(a_i, a_j, r_ij). With the mobility m of
    the paper, the sphere-projected flow is
      eps da_i/dt = self_a(a_i, s_i) + sum_{j != i} pair_a(a_i, a_j, r_ij),
      du_i/dt = alpha(a_i, s_i) (u* - s_i u_i) + sum_{j != i} beta(a_i, a_j, r_ij) (u_j - r_ij u_i).
    """

    V: sp.Expr  # V(s)
    U: sp.Expr  # U(r)
    A: sp.Expr
    B: sp.Expr
    self_a: sp.Expr
    pair_a: sp.Expr
    alpha: sp.Expr
    beta: sp.Expr
    self_partials: tuple  # d(self_a, alpha)/d(a_i, s_i): ((sa_a, sa_s), (al_a, al_s))
    pair_partials: tuple  # d(pair_a, beta)/d(a_i, a_j, r_ij): ((pa_ai, pa_aj, pa_r), (be_ai, be_aj, be_r))


def derive_finite_width(V: sp.Expr, U: sp.Expr) -> FiniteWidthDerivation:
    U1 = U.subs(r_sym, 1)
    A = -a_sym * V / m_sym + a_sym**2 * U1 / (2 * m_sym**2)
    B = a_sym * aj_sym * U / (2 * m_sym**2)
    # B is symmetric in (i, j) and appears for both ordered pairs, hence the factor 2
    self_a = sp.expand(-m_sym * sp.diff(A, a_sym))
    pair_a = sp.expand(-m_sym * 2 * sp.diff(B, a_sym))
    alpha = sp.expand(-m_sym * sp.diff(A, s_sym))
    beta = sp.expand(-m_sym * 2 * sp.diff(B, r_sym))
    # analytic partials for the Jacobian: closed-form kernels (asin, acos) admit no complex step
    self_partials = tuple(tuple(sp.diff(f, v) for v in (a_sym, s_sym)) for f in (self_a, alpha))
    pair_partials = tuple(tuple(sp.diff(f, v) for v in (a_sym, aj_sym, r_sym)) for f in (pair_a, beta))
    return FiniteWidthDerivation(V, U, A, B, self_a, pair_a, alpha, beta, self_partials, pair_partials)


@register
class FiniteWidthModel(FoundingDeclaration):
    """Exact population gradient flow of m neurons in overlap coordinates (any d > m).

    The kernels V and U are the Hermite series truncated at K (exact when sigma and phi are
    polynomials of degree <= K), or their closed forms with ``kernels="closed"`` where known.
    """

    kind = "finite_width"
    cli_name = "finite-width"
    result_type = Trajectory

    def __init__(self, sigma, phi, K: int = 6, eps: float = 1e-2, kernels: str = "series"):
        self.K, self.eps = K, eps
        self._check_common()
        if kernels not in ("series", "closed"):
            raise InputError(f"kernels must be 'series' or 'closed', got {kernels!r}")
        self.kernels = kernels
        self.sigma = as_function(sigma, self.K, "sigma")
        self.phi = as_function(phi, self.K, "phi")

    @cached_property
    def kernel_exprs(self):
        cs, cp = self.sigma.symbolic_coefficients, self.phi.symbolic_coefficients
        V = sp.Add(*[cp[k] * cs[k] * s_sym**k for k in range(self.K + 1)])
        U = sp.Add(*[cs[k] ** 2 * r_sym**k for k in range(self.K + 1)])
        if self.kernels == "closed":
            from ..symbolic.kernels import closed_form_kernel, r_sym as kr, s_sym as ks

            if self.sigma.expr is None or self.phi.expr is None:
                raise InputError("closed-form kernels need sigma and phi given as expressions")
            Vc = closed_form_kernel(self.phi.expr, self.sigma.expr, ks)
            Uc = closed_form_kernel(self.sigma.expr, self.sigma.expr, kr)
            if Vc is None or Uc is None:
                raise InputError(f"no closed-form kernel known for sigma={self.sigma.name!r}, "
                                 f"phi={self.phi.name!r}; use kernels='series'")
            V, U = Vc.subs(ks, s_sym), Uc.subs(kr, r_sym)
        return V, U

    @cached_property
    def derivation(self) -> FiniteWidthDerivation:
        return derive_finite_width(*self.kernel_exprs)

    def cache_key(self) -> str:
        return _digest({"kind": self.kind, "K": self.K, "format": CODEGEN_FORMAT,
                        "kernels": self.kernels,
                        "sigma": [repr(float(c)) for c in self.sigma.coefficients],
                        "phi": [repr(float(c)) for c in self.phi.coefficients],
                        "sigma_expr": str(self.sigma.expr) if self.kernels == "closed" else None,
                        "phi_expr": str(self.phi.expr) if self.kernels == "closed" else None})

    def source(self) -> str:
        return finite_width_source(self)

    @staticmethod
    def state_map(m: int) -> StateMap:
        """a (m,), s (m,), then r_ij for i < j (the unit diagonal is not stored)."""
        return StateMap(Block("a", (m,)), Block("s", (m,)), Block("r", (m, m), "offdiag"))

    def problem(self, init) -> OdeProblem:
        """From ``init`` with ``r0`` (without it, the neurons start orthogonal to one another: r = I)."""
        if init is None:
            raise InputError("a finite-width model needs an explicit initial condition with r0")
        if not isinstance(init, InitialCondition):
            raise InputError(f"init must be an InitialCondition, got {type(init).__name__}")
        compiled = compile_model(self)
        m, inv_eps = init.N, 1.0 / self.eps
        state = self.state_map(m)
        y0 = state.pack({"a": init.a0, "s": init.s0, "r": init.r0 if init.r0 is not None else np.eye(m)})
        rhs, jac = compiled.rhs, compiled.jac
        meta = {**self.meta(), "init": init.description, "N": m}
        return OdeProblem(y0, state, lambda t, y, out: rhs(t, y, m, inv_eps, out),
                          lambda t, y, J: jac(t, y, m, inv_eps, J), compiled, meta, fast_eps=self.eps,
                          context={"weights": init.weights})

    def result(self, problem, t, Y, stats, meta, observed=None) -> Trajectory:
        """With the population risk from the overlaps at every output time."""
        v = problem.state.unpack(Y)
        a, s, r = v["a"], v["s"], v["r"]
        risk = np.array([problem.compiled.risk(a[i].copy(), s[i].copy(), r[i], self.phi.norm2, self.sigma.norm2)
                         for i in range(t.size)])
        return Trajectory(t, a, s, risk, problem.context["weights"], None, None, r, stats, meta)

    @classmethod
    def solve_command(cls, args):
        return solve_finite_width_command(args)

    def meta(self) -> dict:
        return {**super().meta(), "kernels": self.kernels}

    def __repr__(self):
        return (f"FiniteWidthModel(sigma={self.sigma.name!r}, phi={self.phi.name!r}, K={self.K}, "
                f"eps={self.eps:g}, kernels={self.kernels!r})")


# ------------------------------------------------------- the committee member at a finite SGD rate


@functools.lru_cache(maxsize=32)  # one declaration per member: its Hermite expansions are derived once
def founding_member(sigma, phi, *, backend: str = "auto", kmax: int = 6, gamma: float = 0.0) -> CommitteeModel:
    """The founding model's finite-width network as a committee member: units on the sphere, mean
    output, one teacher direction with link phi (docs/committee.md)."""
    return CommitteeModel(sigma, phi, output="mean", dynamics="sgd" if gamma > 0 else "gf", backend=backend,
                          geometry="sphere", kmax=kmax)


def solve_finite_width(sigma, phi, init, eps: float, t_end: float = 5.0, *, gamma: float = 0.0,
                       noise: float = 0.0, backend: str = "auto", kmax: int = 6, **solver) -> Trajectory:
    """The founding model's finite-width overlaps (a, s, r) at SGD rate gamma = eta d
    (docs/committee.md), in the founding model's time t = steps * eta.

    gamma = 0 is the exact population gradient flow (docs/model.md 2a); gamma > 0 adds the terms of
    online SGD's renormalisation, exact as d -> infinity at fixed width m. ``init`` is an
    :class:`InitialCondition` with ``r0``. ``solver`` takes the keywords of
    :func:`odehild.solve.solve` (t_eval, points, t_min, method, rtol, atol, max_wall, progress, threads).
    Returns a :class:`Trajectory` with ``a``, ``s`` (T, m), ``r`` (T, m, m) and the noise-free ``risk``.
    """
    eps = check_eps(eps)
    gamma = check_rate("gamma", gamma, allow_zero=True)
    noise = check_rate("noise", noise, allow_zero=True)
    if not isinstance(init, InitialCondition) or init.r0 is None:
        raise InputError("the finite-width model needs an InitialCondition with a0, s0 and r0 (m, m)")
    model = founding_member(sigma, phi, backend=backend, kmax=kmax, gamma=gamma)
    m = init.N
    cinit = CommitteeInit(init.r0, init.s0[:, None], np.ones((1, 1)), init.a0, np.ones(1), init.description)
    # time t = alpha * lr * c with c = 1/m: lr = m makes t = alpha; gamma = lr_sq c^2 / (lr c)
    rates = {"lr": float(m), "lr2": m / eps, "lr_sq": gamma * m**2, "noise2": noise**2, "c": 1.0 / m, "ct": 1.0}
    meta = {"model": "finite_width", "eps": eps, "gamma": gamma, "noise": noise, "m": m,
            "time": "t = steps * eta (founding model); gamma = eta d"}

    def as_trajectory(traj):
        return Trajectory(traj.t, traj.v, traj.R[:, :, 0], traj.risk, init.weights, None, None, traj.Q,
                          traj.stats, traj.meta)

    try:
        traj = solve(model, cinit, t_end, rates=rates, extra_meta=meta, time_name="t", default_t_min=eps / 100,
                     fast_eps=eps, **solver)
    except IntegrationError as exc:
        exc.partial = as_trajectory(exc.partial)
        exc.state = {"a": exc.state["v"], "s": exc.state["R"][:, 0], "r": exc.state["Q"]}
        raise
    return as_trajectory(traj)


# ------------------------------------------------------------------------------ command line


def solve_finite_width_command(args):
    """``odehild solve --model finite-width``: through the committee member, at rate --gamma."""
    from ..checks import positive_float
    from ..commands import solver_summary, stop_if_out_of_time, keep_partial
    from ..config import merge_values
    from ..io import load_npz

    unused = [f for f, v in (("--lr", args.lr), ("--lr2", args.lr2), ("--output", args.output_scaling),
                             ("--dynamics", args.dynamics), ("--geometry", args.geometry),
                             ("--particles", args.particles), ("--a0", args.a0), ("--seed", args.seed),
                             ("--nodes", args.nodes)) if v is not None]
    if unused:
        raise InputError(f"{', '.join(unused)} {'does' if len(unused) == 1 else 'do'} not apply to --model finite-width "
                         "(the founding model's m neurons on the sphere, mean output; rates eps and gamma)")
    if args.eps is None:
        raise InputError("--model finite-width needs --eps (the learning-rate ratio eps > 0)")
    if not args.init:
        raise InputError("--model finite-width needs --init IC.npz with arrays a0 (m,), s0 (m,) and r0 (m, m)")
    arrays, _ = load_npz(args.init, required=("a0", "s0", "r0"))
    init = InitialCondition(arrays["a0"], arrays["s0"], None, arrays["r0"], description=f"from {args.init}")
    gamma = args.gamma or 0.0
    model = founding_member(args.sigma, args.phi, backend=args.backend or "auto", kmax=args.kmax, gamma=gamma)
    args.t_end = 5.0 if args.t_end is None else args.t_end
    positive_float("--max-wall", args.max_wall)
    info = {"sigma_expr_input": args.sigma, "phi_expr_input": args.phi, "points": args.points}
    print(f"finite width: m = {init.N}, sigma = {model.sigma}, phi = {model.phi}, eps = {args.eps:g}, gamma = {gamma:g}"
          f" ({'online SGD, d -> infinity at fixed gamma = lr d' if gamma else 'population gradient flow'}), "
          f"expectations by the {model.backend} back end" + model.backend_note(), flush=True)
    with keep_partial(args.out, info):
        traj = solve_finite_width(args.sigma, args.phi, init, args.eps, args.t_end, gamma=gamma,
                                  noise=args.noise or 0.0, backend=args.backend or "auto", kmax=args.kmax,
                                  points=args.points, t_min=args.t_min, method=args.method, rtol=args.rtol,
                                  atol=args.atol, max_wall=args.max_wall, threads=args.threads,
                                  progress=False if args.quiet else None)
        stop_if_out_of_time(traj, args)
    resolved = {"t_min": float(traj.t[1]) if len(traj) > 1 else None, "t_end": args.t_end,
                "method": traj.meta["method"]}
    traj.meta.update(info, values=merge_values(args.values, resolved))
    path = traj.save(args.out)
    print(f"{path}: T = {len(traj)}, m = {init.N}, risk {traj.risk[0]:.6g} -> {traj.risk[-1]:.3g}; "
          + solver_summary(traj.stats))
    return [(path, resolved)]




# ------------------------------------------------------------------ generated source


def finite_width_source(model: FiniteWidthModel) -> str:
    d = model.derivation
    names = {a_sym: sp.Symbol("ai"), s_sym: sp.Symbol("si"), aj_sym: sp.Symbol("aj"),
             r_sym: sp.Symbol("rij"), m_sym: sp.Symbol("mf")}

    def sub(e):
        return sp.sympify(e).xreplace(names)

    from ..symbolic.parse import z

    single = emit_block([("sa", sub(d.self_a)), ("al", sub(d.alpha))], 8, "xs")
    pair = emit_block([("pa", sub(d.pair_a)), ("be", sub(d.beta))], 12, "xp")
    (sa_a, sa_s), (al_a, al_s) = d.self_partials
    (pa_ai, pa_aj, pa_r), (be_ai, be_aj, be_r) = d.pair_partials
    single_partials = emit_block(
        [("al", sub(d.alpha)), ("d_sa_a", sub(sa_a)), ("d_sa_s", sub(sa_s)), ("d_al_a", sub(al_a)),
         ("d_al_s", sub(al_s))], 8, "xds")
    pair_partials = emit_block(
        [("be", sub(d.beta)), ("d_pa_ai", sub(pa_ai)), ("d_pa_aj", sub(pa_aj)), ("d_pa_r", sub(pa_r)),
         ("d_be_ai", sub(be_ai)), ("d_be_aj", sub(be_aj)), ("d_be_r", sub(be_r))], 12, "xdp")
    kernels = scalar_functions_source({
        "V": d.V.xreplace({s_sym: z}), "dV": sp.diff(d.V, s_sym).xreplace({s_sym: z}),
        "U": d.U.xreplace({r_sym: z}), "dU": sp.diff(d.U, r_sym).xreplace({r_sym: z})})
    return HEADER.format(version=__version__, kind=model.kind, key=model.cache_key()) + f'''

{kernels}

@njit(cache=True)
def unpack(y, m, R):
    """Full overlap matrix R (r_ii = 1) from the packed upper triangle y[2m:]."""
    p = 2 * m
    for i in range(m):
        R[i, i] = 1.0
        for j in range(i + 1, m):
            R[i, j] = y[p]
            R[j, i] = y[p]
            p += 1


@njit(cache=True)
def rhs(t, y, m, inv_eps, dy):
    """dy/dt for y = [a (m), s (m), r_ij for i < j (row-major upper triangle)]."""
    mf = float(m)
    R = np.empty((m, m))
    unpack(y, m, R)
    al_v = np.empty(m)
    W = np.zeros((m, m))  # beta_ij, zero on the diagonal
    for i in range(m):
        ai = y[i]
        si = y[m + i]
{single}
        al_v[i] = al
        da = sa
        for j in range(m):
            if j == i:
                continue
            aj = y[j]
            rij = R[i, j]
{pair}
            da += pa
            W[i, j] = be
        dy[i] = inv_eps * da
    for i in range(m):
        si = y[m + i]
        ds = al_v[i] * (1.0 - si * si)
        for k in range(m):
            ds += W[i, k] * (y[m + k] - R[i, k] * si)
        dy[m + i] = ds
    # G_ij = alpha_i (s_j - s_i r_ij) + sum_k beta_ik (r_kj - r_ik r_ij); dr_ij = G_ij + G_ji
    G = np.empty((m, m))
    for i in range(m):
        si = y[m + i]
        for j in range(m):
            if j == i:
                continue
            acc = al_v[i] * (y[m + j] - si * R[i, j])
            for k in range(m):
                acc += W[i, k] * (R[k, j] - R[i, k] * R[i, j])
            G[i, j] = acc
    p = 2 * m
    for i in range(m):
        for j in range(i + 1, m):
            dy[p] = G[i, j] + G[j, i]
            p += 1


@njit(cache=True)
def pair_index(m):
    """Column of r_ij (i != j) in the packed state; -1 on the diagonal."""
    P = np.full((m, m), -1, dtype=np.int64)
    p = 2 * m
    for i in range(m):
        for j in range(i + 1, m):
            P[i, j] = p
            P[j, i] = p
            p += 1
    return P


@njit(cache=True)
def jac(t, y, m, inv_eps, J):
    """Analytic dF/dy, assembled from the derived partials of the one-neuron terms (self_a,
    alpha) in (a_i, s_i) and of the pair terms (pair_a, beta) in (a_i, a_j, r_ij)."""
    mf = float(m)
    R = np.empty((m, m))
    unpack(y, m, R)
    P = pair_index(m)
    s = y[m:2 * m]
    AL = np.empty(m)
    SAa = np.empty(m)
    SAs = np.empty(m)
    ALa = np.empty(m)
    ALs = np.empty(m)
    W = np.zeros((m, m))
    PAi = np.zeros((m, m))
    PAj = np.zeros((m, m))
    PAr = np.zeros((m, m))
    BEi = np.zeros((m, m))
    BEj = np.zeros((m, m))
    BEr = np.zeros((m, m))
    for i in range(m):
        ai = y[i]
        si = s[i]
{single_partials}
        AL[i] = al
        SAa[i] = d_sa_a
        SAs[i] = d_sa_s
        ALa[i] = d_al_a
        ALs[i] = d_al_s
        for j in range(m):
            if j == i:
                continue
            aj = y[j]
            rij = R[i, j]
{pair_partials}
            W[i, j] = be
            PAi[i, j] = d_pa_ai
            PAj[i, j] = d_pa_aj
            PAr[i, j] = d_pa_r
            BEi[i, j] = d_be_ai
            BEj[i, j] = d_be_aj
            BEr[i, j] = d_be_r
    J[:, :] = 0.0
    for i in range(m):
        si = s[i]
        # eps da_i/dt = self_a(a_i, s_i) + sum_j pair_a(a_i, a_j, r_ij)
        acc = SAa[i]
        for j in range(m):
            if j != i:
                acc += PAi[i, j]
                J[i, j] = inv_eps * PAj[i, j]
                J[i, P[i, j]] = inv_eps * PAr[i, j]
        J[i, i] = inv_eps * acc
        J[i, m + i] = inv_eps * SAs[i]
        # ds_i/dt = alpha_i (1 - s_i^2) + sum_k W_ik (s_k - r_ik s_i)
        row = m + i
        da = ALa[i] * (1.0 - si * si)
        dsi = ALs[i] * (1.0 - si * si) - 2.0 * si * AL[i]
        for k in range(m):
            if k == i:
                continue
            lever = s[k] - R[i, k] * si
            da += BEi[i, k] * lever
            J[row, k] += BEj[i, k] * lever
            dsi -= W[i, k] * R[i, k]
            J[row, m + k] += W[i, k]
            J[row, P[i, k]] += BEr[i, k] * lever - W[i, k] * si
        J[row, i] += da
        J[row, m + i] += dsi
    # dr_ij/dt = G_ij + G_ji, G_ij = alpha_i (s_j - s_i r_ij) + sum_k W_ik (r_kj - r_ik r_ij)
    for i in range(m):
        for j in range(m):
            if j == i:
                continue
            row = P[i, j]
            si = s[i]
            rij = R[i, j]
            da = ALa[i] * (s[j] - si * rij)
            drij = -AL[i] * si - rij * W[i, j]
            for k in range(m):
                if k == i:
                    continue
                lever = R[k, j] - R[i, k] * rij
                da += BEi[i, k] * lever
                J[row, k] += BEj[i, k] * lever
                drij -= W[i, k] * R[i, k]
                if k == j:
                    drij += BEr[i, j] * (1.0 - rij * rij)
                else:
                    J[row, P[i, k]] += BEr[i, k] * lever - rij * W[i, k]
                    J[row, P[k, j]] += W[i, k]
            J[row, i] += da
            J[row, m + i] += ALs[i] * (s[j] - si * rij) - AL[i] * rij
            J[row, m + j] += AL[i]
            J[row, row] += drij


@njit(cache=True)
def risk(a, s, R, phi_norm2, sigma_norm2):
    """Population risk of the finite network from its overlaps (docs/model.md 1); U(1) = E[sigma^2]
    exactly, whatever the kernel's truncation."""
    m = a.shape[0]
    val = 0.5 * phi_norm2
    # overlaps of unit vectors computed in floating point may exceed 1 by rounding
    for i in range(m):
        val -= a[i] * V(min(max(s[i], -1.0), 1.0)) / m
        val += a[i] * a[i] * sigma_norm2 / (2.0 * m * m)
        for j in range(m):
            if j != i:
                val += a[i] * a[j] * U(min(max(R[i, j], -1.0), 1.0)) / (2.0 * m * m)
    return val
'''


