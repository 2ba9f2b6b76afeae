"""The founding model's mean-field particle system (docs/model.md 2b): declaration, derivation from
the risk, generated source, state map and observables.

Particles (a_j, s_j) with weights w_j interact only through the moments M_k = sum_j w_j a_j s_j^k.
The risk R(M) is declared; the flow is eps da/dt = -dR/d(w a), ds/dt = -(1 - s^2) dR/d(w s) (sphere
mobility), and the Jacobian is a 2x2-block diagonal plus the rank <= 2(K+1) correction through the
moments, which the structured solvers of :mod:`odehild.solve.structured` exploit.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from .. import __version__
from ..codegen.numba_gen import HEADER, compile_model, compensated_moments, emit_block, vector_int_conversions
from ..errors import InputError
from ..threads import parallel_variant
from ..solve.integrate import OdeProblem
from ..solve.state import Block, StateMap
from ..solve.structured import LowRankJacobian
from ..solve.trajectory import InitialCondition, Trajectory, initial_condition
from ..symbolic.founding import CODEGEN_FORMAT, _digest, as_function
from . import register
from ._founding import FoundingDeclaration

if TYPE_CHECKING:
    import sympy as sp


# from this many particles on a solve takes s = tanh(u) from the generated ``tanh_lanes`` (where it
# vectorises), within the moments' pass (``rhs_tanh``); as a pass of its own, before it joined the
# moments', it was in whole solves 1.04x faster at N = 1000 (one thread), 1.06 to 1.08x at 1e4 and 1e5,
# 1.12 and 1.13x on two threads (docs/performance.md, fourteenth session). Below, NumPy's tanh: a
# cold run of a few particles does not compile it.
VECTOR_TANH_MIN_PARTICLES = 1000


@dataclasses.dataclass(frozen=True)
class MeanFieldDerivation:
    """Symbolic objects derived from the declared risk R(M) (all SymPy)."""

    K: int
    sigma: tuple  # symbols sigma_k
    phi: tuple  # symbols phi_k
    tail: sp.Symbol  # tail of phi beyond K
    M: tuple  # moment symbols
    g: tuple  # symbols for dR/dM_k
    moment_fns: tuple  # m_k(a, s)
    risk: sp.Expr  # R(M)
    grad: tuple  # dR/dM_k (expressions in M)
    hess: tuple  # d^2R/dM_k dM_l
    residuals: tuple  # r_k(M)
    rhs: tuple  # (da/dt, ds/dt) per particle, in a, s, g, eps
    local_jac: tuple  # d rhs / d(a, s) at fixed g: ((faa, fas), (fsa, fss))
    rhs_dg: tuple  # d rhs / d g_k: (tuple over k for f_a, tuple over k for f_s)
    moment_dy: tuple  # d m_k / d(a, s): ((dm_k/da for k), (dm_k/ds for k))
    # the integrated state is (a, u) with s = tanh(u): du/dt = (ds/dt) / (1 - s^2) has no factor
    # that pins s to +-1, so a particle that comes within rounding of |s| = 1 can still leave it
    # and |s| < 1 holds by construction. Expressions in a, s, g and ``dsdu`` = 1 - s^2.
    state_rhs: tuple  # (da/dt, du/dt)
    state_jac: tuple  # d state_rhs / d(a, u) at fixed g
    state_rhs_dg: tuple  # d state_rhs / d g_k
    state_moment_dy: tuple  # d m_k / d(a, u)

    def substitutions(self, sigma_vals, phi_vals, tail_val) -> dict:
        sub = {self.tail: tail_val}
        sub.update(zip(self.sigma, sigma_vals))
        sub.update(zip(self.phi, phi_vals))
        return sub

    def residual_polynomial(self, x=None) -> sp.Expr:
        """F(x) = sum_k sigma_k r_k x^k, in terms of the residuals (x: the founding model's x)."""
        import sympy as sp

        from ..symbolic.founding import x_sym

        x = x_sym if x is None else x
        r = sp.symbols(f"r_0:{self.K + 1}", real=True)
        return sp.Add(*[self.sigma[k] * r[k] * x**k for k in range(self.K + 1)])


def derive_meanfield(K: int) -> MeanFieldDerivation:
    """Derive the mean-field particle flow of docs/model.md 2b from its risk."""
    import sympy as sp

    from ..symbolic.founding import a_sym, dsdu_sym, eps_sym, s_sym

    sigma = sp.symbols(f"sigma_0:{K + 1}", real=True)
    phi = sp.symbols(f"phi_0:{K + 1}", real=True)
    M = sp.symbols(f"M_0:{K + 1}", real=True)
    g = sp.symbols(f"g_0:{K + 1}", real=True)
    tail = sp.Symbol("tau", nonnegative=True)
    residuals = tuple(phi[k] - sigma[k] * M[k] for k in range(K + 1))
    risk = sp.Rational(1, 2) * sp.Add(*[r**2 for r in residuals]) + tail / 2
    moment_fns = tuple(a_sym * s_sym**k for k in range(K + 1))
    grad = tuple(sp.diff(risk, Mk) for Mk in M)
    hess = tuple(tuple(sp.diff(gk, Ml) for Ml in M) for gk in grad)
    # gradient flow of the particle measure: per-particle gradient of R through the moments
    mobility = (1 / eps_sym, 1 - s_sym**2)
    f = tuple(-mob * sp.Add(*[g[k] * sp.diff(moment_fns[k], v) for k in range(K + 1)])
              for mob, v in zip(mobility, (a_sym, s_sym)))
    f = tuple(sp.expand(fi) for fi in f)
    local_jac = tuple(tuple(sp.diff(fi, v) for v in (a_sym, s_sym)) for fi in f)
    rhs_dg = tuple(tuple(sp.diff(fi, gk) for gk in g) for fi in f)
    moment_dy = tuple(tuple(sp.diff(mk, v) for mk in moment_fns) for v in (a_sym, s_sym))
    # state (a, u), s = tanh u: d/du = (1 - s^2) d/ds
    fu = sp.expand(sp.cancel(f[1] / (1 - s_sym**2)))
    if sp.denom(sp.together(fu)) != 1:  # an internal invariant of the derivation
        raise RuntimeError("the s-flow has no factor 1 - s^2: the state u = artanh(s) does not apply")
    state_rhs = (f[0], fu)
    state_jac = tuple((sp.diff(fi, a_sym), sp.expand(dsdu_sym * sp.diff(fi, s_sym))) for fi in state_rhs)
    state_rhs_dg = tuple(tuple(sp.diff(fi, gk) for gk in g) for fi in state_rhs)
    state_moment_dy = (moment_dy[0], tuple(dsdu_sym * dm for dm in moment_dy[1]))
    return MeanFieldDerivation(K, sigma, phi, tail, M, g, moment_fns, risk, grad, hess, residuals,
                               f, local_jac, rhs_dg, moment_dy, state_rhs, state_jac, state_rhs_dg,
                               state_moment_dy)


@register
class MeanFieldModel(FoundingDeclaration):
    """The mean-field (m -> inf, d -> inf) particle system of docs/model.md section 2b.

    ``sigma`` and ``phi`` are expressions in z, HermiteExpansions, or sequences of normalized
    Hermite coefficients. The dynamics uses sigma and phi truncated at degree K; the risk adds
    (1/2) of phi's tail beyond K, so it is the risk of the truncated network on the true target.
    """

    kind = "meanfield"
    cli_name = "meanfield"
    result_type = Trajectory

    def __init__(self, sigma, phi, K: int = 6, eps: float = 1e-4):
        self.K, self.eps = K, eps
        self._check_common()
        self.sigma = as_function(sigma, self.K, "sigma")
        self.phi = as_function(phi, self.K, "phi")

    @cached_property
    def derivation(self) -> MeanFieldDerivation:
        return derive_meanfield(self.K)

    @property
    def values(self) -> dict:
        return self.derivation.substitutions(self.sigma.coefficients, self.phi.coefficients,
                                             self.phi.tail)

    def cache_key(self) -> str:
        """Content hash of what the generated code depends on (eps is a runtime argument)."""
        return _digest({"kind": self.kind, "K": self.K, "format": CODEGEN_FORMAT,
                        "sigma": [repr(float(c)) for c in self.sigma.coefficients],
                        "phi": [repr(float(c)) for c in self.phi.coefficients],
                        "tail": repr(float(self.phi.tail))})

    def source(self) -> str:
        return meanfield_source(self)

    @staticmethod
    def state_map(N: int) -> StateMap:
        """a (N,), then s (N,) stored as u = artanh(s) (see :class:`MeanFieldDerivation`)."""
        return StateMap(Block("a", (N,)), Block("s", (N,), chart="artanh"))

    def problem(self, init=None) -> OdeProblem:
        """From ``init`` (default: :func:`~odehild.solve.trajectory.initial_condition`)."""
        if init is None:
            init = initial_condition()
        if not isinstance(init, InitialCondition):
            raise InputError(f"init must be an InitialCondition, got {type(init).__name__}")
        compiled = compile_model(self)
        N = init.N  # a property: read once here, not at every call of the closures below
        state = self.state_map(N)
        y0 = state.pack({"a": init.a0, "s": init.s0})
        w, inv_eps, nm = init.weights, 1.0 / self.eps, self.K + 1
        jac, parts = compiled.jac, compiled.jac_parts_chart

        def jac_parts_with(kernel):
            def jac_parts(t, y, reuse=None):
                # reuse: a Jacobian the caller discards, whose arrays are overwritten (fresh ones cost
                # page faults: 4 of 5.4 ms at N = 1e5)
                u = y[N:]
                with np.errstate(over="ignore"):
                    c = np.cosh(u)
                    dsdu = 1.0 / (c * c)  # 1 - s^2 without cancellation; 0 where cosh(u)^2 overflows
                # D, A and Vt written in rows, the generated passes' layout: their transposition into
                # it took 4% of a solve at N = 1e5
                J = LowRankJacobian.from_rows(*LowRankJacobian.rows_for(N, 2, nm, reuse))
                kernel(t, y, np.tanh(u), dsdu, w, inv_eps, J.D, J.A, J.Vt)
                return J

            return jac_parts

        def parallel_jac_parts():
            return jac_parts_with(parallel_variant(parts, moments=parallel_variant(compiled.moments)))

        meta = {**self.meta(), "init": init.description, "N": init.N,
                "learnability": self.learnability(s0_zero=not np.any(init.s0)).to_dict()}

        # s = tanh(u) by the generated vectorised tanh where it vectorises, within the moments' pass
        # (``rhs_tanh``, whose parallel variant shares it among the threads), by NumPy's ufunc
        # elsewhere; the rest compiled
        vector_tanh = init.N >= VECTOR_TANH_MIN_PARTICLES and vector_int_conversions()

        def chart_rhs(kernel):
            if vector_tanh:
                def rhs(t, y, out):
                    kernel(t, y, np.empty(N), w, inv_eps, out)
            else:
                def rhs(t, y, out):
                    s = np.empty(N)
                    np.tanh(y[N:], s)
                    kernel(t, y, s, w, inv_eps, out)

            return rhs

        def parallel_rhs():
            if vector_tanh:
                moments_tanh = parallel_variant(compiled.moments_tanh)
                return chart_rhs(parallel_variant(compiled.rhs_tanh, moments_tanh=moments_tanh))
            return chart_rhs(parallel_variant(compiled.rhs_chart, moments=parallel_variant(compiled.moments)))

        def observables(Y):
            values = state.unpack(Y)
            return self._observables(compiled, values["a"], values["s"], w)

        return OdeProblem(y0, state, chart_rhs(compiled.rhs_tanh if vector_tanh else compiled.rhs_chart),
                          lambda t, y, J: jac(t, y, w, inv_eps, J), compiled, meta,
                          jac_parts=jac_parts_with(parts),
                          fast_eps=self.eps, context={"weights": w}, parallel_rhs=parallel_rhs,
                          parallel_jac_parts=parallel_jac_parts,
                          component_weights=np.concatenate([w, w]), observables=observables)

    def _observables(self, compiled, a, s, w) -> dict:
        T, nm = a.shape[0], self.K + 1
        M, r, R = np.empty((T, nm)), np.empty((T, nm)), np.empty(T)
        compiled.observables(a, s, w, M, r, R)
        return {"moments": M, "residuals": r, "risk": R}

    def result(self, problem, t, Y, stats, meta, observed=None) -> Trajectory:
        """Moments, residuals and risk along the trajectory, from the generated observables (or as
        ``observed`` at the output times)."""
        values = problem.state.unpack(Y, consume=True)  # a and s are views of Y: one (T, 2N) array in all
        a, s, w = values["a"], values["s"], problem.context["weights"]
        obs = observed if observed is not None else self._observables(problem.compiled, a, s, w)
        return Trajectory(t, a, s, obs["risk"], w, obs["moments"], obs["residuals"], None, stats, meta)

    @classmethod
    def solve_command(cls, args):
        return solve_meanfield_command(args)

    def __repr__(self):
        return f"MeanFieldModel(sigma={self.sigma.name!r}, phi={self.phi.name!r}, K={self.K}, eps={self.eps:g})"


def solve_meanfield_command(args):
    """``odehild solve`` (--model meanfield)."""
    from ..checks import positive_float
    from ..commands import init_from_args, keep_partial, refuse_committee_flags, solver_summary, stop_if_out_of_time
    from ..config import merge_values
    from ..solve import solve

    refuse_committee_flags(args, "mean-field model")
    args.t_end = 5.0 if args.t_end is None else args.t_end
    model = MeanFieldModel(args.sigma, args.phi, args.kmax, args.eps)
    init = init_from_args(args)
    learn = model.learnability(s0_zero=not init.s0.any())
    print(learn.summary(), flush=True)  # before integrating: a run that cannot learn says so first
    info = {"sigma_expr_input": args.sigma, "phi_expr_input": args.phi, "seed": args.seed, "points": args.points}
    positive_float("--max-wall", args.max_wall)
    with keep_partial(args.out, info):
        traj = solve(model, init, args.t_end, points=args.points, t_min=args.t_min,
                     method=args.method or "Radau", rtol=args.rtol, atol=args.atol, max_wall=args.max_wall,
                     threads=args.threads, error_norm=args.error_norm,
                     output_precision=args.output_precision,
                     progress=False if args.quiet else None)
        stop_if_out_of_time(traj, args)
    t_min = {"t_min": float(traj.t[1]) if len(traj) > 1 else None, "t_end": args.t_end, "method": traj.meta["method"]}
    if not args.init:
        t_min.update(particles=init.N, a0=args.a0 or "normal", nodes=args.nodes or "quadrature")
    traj.meta.update(info, values=merge_values(args.values, t_min))
    path = traj.save(args.out)
    print(f"{path}: T = {len(traj)}, N = {traj.a.shape[1]}, risk {traj.risk[0]:.6g} -> {traj.risk[-1]:.3g}; "
          + solver_summary(traj.stats))
    if learn.learns_nothing:
        print(f"note: nothing beyond degree 0 was learnable; the risk ends on the floor {learn.floor:.6g} "
              "(learnability report above: what to change)")
    return [(path, t_min)]




# ------------------------------------------------------------------ generated source


def meanfield_source(model: MeanFieldModel) -> str:
    import sympy as sp

    from ..symbolic.founding import a_sym, dsdu_sym, eps_sym, s_sym

    d = model.derivation
    K = d.K
    vals = model.values
    n = K + 1
    gsym = {d.g[k]: sp.Symbol(f"g_{k}") for k in range(n)}
    Msym = {d.M[k]: sp.Symbol(f"M_{k}") for k in range(n)}
    local = {a_sym: sp.Symbol("ai"), s_sym: sp.Symbol("si"), eps_sym: 1 / sp.Symbol("inv_eps"),
             dsdu_sym: sp.Symbol("dsdu_i")}

    def sub(e):
        return sp.sympify(e).xreplace(vals).xreplace(gsym).xreplace(Msym).xreplace(local)

    unpack_M = "\n".join(f"    M_{k} = M[{k}]" for k in range(n))
    unpack_g = "\n".join(f"    g_{k} = g[{k}]" for k in range(n))
    moment_block = emit_block([(f"m_{k}", sub(d.moment_fns[k])) for k in range(n)], 0, "xm")
    moments = compensated_moments(
        "moments(a, s, w, M)", "M_k = sum_j w_j m_k(a_j, s_j), compensated (codegen.numba_gen.MOMENT_LANES).", n,
        [("a", "ai"), ("s", "si"), ("w", "wi")], moment_block, "wi")
    moments_tanh = compensated_moments(
        "moments_tanh(a, u, s, w, M)", "``moments`` of s = tanh(u), which it writes chunk by chunk (``tanh_block``) "
        "before the chunk's sums.", n, [("a", "ai"), ("s", "si"), ("w", "wi")], moment_block, "wi",
        chunk_prelude="tanh_block(u[lo:hi], s[lo:hi])")
    grad = emit_block([(f"g[{k}]", sub(d.grad[k])) for k in range(n)], 4, "xg")
    hess = emit_block([(f"H[{k}, {l}]", sub(d.hess[k][l])) for k in range(n) for l in range(n)], 4, "xh")
    resid = emit_block([(f"out[{k}]", sub(d.residuals[k])) for k in range(n)], 4, "xr")
    risk = emit_block([("val", sub(d.risk))], 4, "xk")
    rhs = emit_block([("fa", sub(d.state_rhs[0])), ("fu", sub(d.state_rhs[1]))], 12, "xf")
    # the particles' rhs at the moments' gradient g, in rhs_chart and rhs_tanh alike
    rhs_pass = f"""    grad_moments(M, g)
{unpack_g}
    # in chunks, each a loop from 0 over slices: a prange over the particles did not vectorise in
    # the parallel variant (0.17 ms at N = 1e5 on one thread against 0.035 ms for the plain loop),
    # nor did a loop from 1024 c (LLVM cannot rule out negative indices there)
    for c in prange((N + 1023) // 1024):
        lo, hi = 1024 * c, min(1024 * c + 1024, N)
        a_c, s_c, fa_c, fu_c = y[lo:hi], s[lo:hi], dy[lo:hi], dy[N + lo:N + hi]
        for i in range(hi - lo):
            ai = a_c[i]
            si = s_c[i]
{rhs}
            fa_c[i] = fa
            fu_c[i] = fu"""
    jac_local = emit_block(
        [("jaa", sub(d.state_jac[0][0])), ("jau", sub(d.state_jac[0][1])),
         ("jua", sub(d.state_jac[1][0])), ("juu", sub(d.state_jac[1][1]))]
        + [(f"A[i, {k}]", sub(d.state_rhs_dg[0][k])) for k in range(n)]
        + [(f"A[N + i, {k}]", sub(d.state_rhs_dg[1][k])) for k in range(n)]
        + [(f"Bi[0, {k}]", sub(d.state_moment_dy[0][k]) * sp.Symbol("wi")) for k in range(n)]
        + [(f"Bi[1, {k}]", sub(d.state_moment_dy[1][k]) * sp.Symbol("wi")) for k in range(n)], 12, "xj")

    return HEADER.format(version=__version__, kind=model.kind, key=model.cache_key()) + f'''
K = {K}
NM = {n}


{moments}

{moments_tanh}

@njit(cache=True)
def grad_moments(M, g):
    """g_k = dR/dM_k."""
{unpack_M}
{grad}


@njit(cache=True)
def hess_moments(M, H):
    """H_kl = d^2 R / dM_k dM_l."""
{unpack_M}
{hess}


@njit(cache=True)
def residuals(M, out):
{unpack_M}
{resid}


@njit(cache=True)
def risk(M):
{unpack_M}
{risk}
    return val


@njit(cache=True, inline="always")
def tanh_chart(u):
    """s = tanh(u) through expm1: within 2 ulp of libm's tanh and a third faster."""
    e = math.expm1(-2.0 * abs(u))
    return math.copysign(-e / (2.0 + e), u)


@njit(cache=True, error_model="numpy", fastmath={{"contract"}})
def tanh_block(u, s):
    """s = tanh(u) by ``tanh_lanes``, vectorised (0.069 ms at N = 1e5 on one thread against NumPy's
    0.088 ms, AMD EPYC). A function of its own for ``moments_tanh``, which compiles its sums without
    contraction: a multiply-add would round w m_k apart from the sum that its TwoSum corrects."""
    for i in range(u.shape[0]):
        s[i] = tanh_lanes(u[i])


@njit(cache=True, inline="always")
def tanh_lanes(u):
    """tanh(u) in arithmetic that LLVM vectorises where the caller's error model is NumPy's (no
    zero-division check) and contracts to fused multiply-adds: tanh = -e / (2 + e),
    e = expm1(-2|u|) = 2^k (expm1(r) + 1) - 1 with -2|u| = k ln 2 + r, |r| <= ln 2 / 2, expm1(r)
    by its Taylor series to degree 13 (a remainder below 2e-17 relative), ln 2 in two parts so that
    r is exact to rounding. Within 3 ulp of tanh (tests/test_generated.py). |u| is clamped at 20,
    where tanh rounds to 1; NaN passes through (the shift takes 60 then: no conversion of a NaN)."""
    x = abs(u)
    x = x if not x > 20.0 else 20.0
    v = -2.0 * x
    k = np.floor(v * 1.4426950408889634 + 0.5)
    r = (v - k * 0.6931471803691238) - k * 1.9082149292705877e-10
    p = r * (1.0 + r * (1.0 / 2 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (1.0 / 720 + r * (
        1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (1.0 / 3628800 + r * (1.0 / 39916800 + r * (
            1.0 / 479001600 + r * (1.0 / 6227020800)))))))))))))
    shift = k + 60.0 if k >= -58.0 else 60.0
    scale = float(1 << int(shift)) * 8.673617379884035e-19  # 2^k, k in [-58, 0], without a division
    e = scale * p + (scale - 1.0)
    return math.copysign(-e / (2.0 + e), u)


@njit(cache=True)
def rhs(t, y, w, inv_eps, dy):
    """dy/dt for the state y = [a_0..a_(N-1), u_0..u_(N-1)], s_j = tanh(u_j)."""
    N = w.shape[0]
    s = np.empty(N)
    for j in range(N):
        s[j] = tanh_chart(y[N + j])
    rhs_chart(t, y, s, w, inv_eps, dy)


@njit(cache=True)
def rhs_chart(t, y, s, w, inv_eps, dy):
    """dy/dt as ``rhs``, given s = tanh(u): a solve takes s from NumPy's vectorised tanh where the
    generated one does not vectorise (else ``rhs_tanh``), about six times faster here than a scalar
    one per particle, which was most of the rhs's time at large N."""
    N = w.shape[0]
    M = np.empty(NM)
    g = np.empty(NM)
    moments(y[:N], s, w, M)
{rhs_pass}


@njit(cache=True)
def rhs_tanh(t, y, s, w, inv_eps, dy):
    """dy/dt as ``rhs_chart``, writing s = tanh(u) by ``tanh_lanes`` itself, chunk by chunk within
    the moments' pass (N = 1e5 on two threads: 0.40 against 0.43 ms for a separate vectorised tanh
    pass and ``rhs_chart``, the same numbers; one parallel region less, s summed while in the
    cache)."""
    N = w.shape[0]
    M = np.empty(NM)
    g = np.empty(NM)
    moments_tanh(y[:N], y[N:], s, w, M)
{rhs_pass}


@njit(cache=True)
def jac_parts(t, y, w, inv_eps, D, A, Vt):
    """dF/dy = D + A Vt for the state (a, u): D (N, 2, 2) the blocks [[jaa, jau], [jua, juu]] at
    fixed moments, A = dF/dM (2N, NM) and Vt = H dM/dy (NM, 2N), of rank <= NM."""
    N = w.shape[0]
    s = np.empty(N)
    dsdu = np.empty(N)
    for j in range(N):
        u = y[N + j]
        s[j] = tanh_chart(u)
        c = math.cosh(u)
        dsdu[j] = 1.0 / (c * c)  # 1 - s^2 without cancellation; 0 once cosh overflows
    jac_parts_chart(t, y, s, dsdu, w, inv_eps, D, A, Vt)


@njit(cache=True)
def jac_parts_chart(t, y, s, dsdu, w, inv_eps, D, A, Vt):
    """``jac_parts`` given s = tanh(u) and ds/du = 1/cosh(u)^2 (a solve takes both from NumPy's
    vectorised ufuncs). D, A and Vt are written one particle at a time, in any layout: a solve passes
    views of the rows its generated passes read (D (4, N), A^T and Vt (NM, 2N))."""
    N = w.shape[0]
    M = np.empty(NM)
    g = np.empty(NM)
    H = np.empty((NM, NM))
    moments(y[:N], s, w, M)
    grad_moments(M, g)
    hess_moments(M, H)
{unpack_g}
    # particles in chunks of 1024, each with its own scratch row: the parallel variant splits the
    # chunks across threads (the particles are independent, so the numbers do not depend on it)
    for c in prange((N + 1023) // 1024):
        Bi = np.empty((2, NM))  # dM/dy of particle i (rows a_i, u_i)
        for i in range(1024 * c, min(1024 * c + 1024, N)):
            ai = y[i]
            si = s[i]
            dsdu_i = dsdu[i]
            wi = w[i]
{jac_local}
            D[i, 0, 0] = jaa
            D[i, 0, 1] = jau
            D[i, 1, 0] = jua
            D[i, 1, 1] = juu
            for k in range(NM):
                va = 0.0
                vu = 0.0
                for m in range(NM):
                    va += H[k, m] * Bi[0, m]
                    vu += H[k, m] * Bi[1, m]
                Vt[k, i] = va
                Vt[k, N + i] = vu


@njit(cache=True)
def jac(t, y, w, inv_eps, J):
    """Dense dF/dy (the same parts, assembled)."""
    N = w.shape[0]
    D = np.empty((N, 2, 2))
    A = np.empty((2 * N, NM))
    Vt = np.empty((NM, 2 * N))
    jac_parts(t, y, w, inv_eps, D, A, Vt)
    np.dot(A, Vt, J)  # not J[:, :] = A @ Vt: see observables
    for i in range(N):
        J[i, i] += D[i, 0, 0]
        J[i, N + i] += D[i, 0, 1]
        J[N + i, i] += D[i, 1, 0]
        J[N + i, N + i] += D[i, 1, 1]


@njit(cache=True)
def observables(a, s, w, Mt, rt, Rt):
    """Moments, residuals and risk along a trajectory (time on the first axis)."""
    M = np.empty(NM)
    # each row copied to contiguous arrays, so that moments compiles once, for the layout the
    # right-hand side passes (strided rows compiled a second signature: 0.24 s of a cold start)
    N = w.shape[0]
    a_t, s_t = np.empty(N), np.empty(N)
    for t in range(a.shape[0]):
        for i in range(N):
            a_t[i] = a[t, i]
            s_t[i] = s[t, i]
        moments(a_t, s_t, w, M)
        # a loop, not Mt[t, :] = M: Numba compiles an array-to-slice assignment with its
        # shape-mismatch message, about 3 s of a cold start
        for k in range(NM):
            Mt[t, k] = M[k]
        residuals(M, rt[t])
        Rt[t] = risk(M)
'''


