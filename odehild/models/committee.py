"""The committee family as a model kind (docs/committee.md): the declaration, its state map (the
upper triangle of Q, then R, then v), initial overlaps, the trajectory it produces, and the command
line. The expectation back ends it draws on are in :mod:`odehild.symbolic.committee` and
:mod:`odehild.codegen.committee_gen`; time is alpha = steps/d, output on the first axis.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from typing import Optional

import numpy as np
import sympy as sp

from ..checks import positive_int, seed_value
from ..codegen.committee_gen import TEMPLATE_SHA, committee_source
from ..codegen.numba_gen import compile_model
from ..errors import ExpressionError, InputError
from ..io import load_npz, save_npz
from ..solve.integrate import OdeProblem, solve
from ..solve.state import Block, StateMap
from ..symbolic.committee import (BACKENDS, DYNAMICS, GEOMETRIES, OUTPUTS, QUADRATURE_ACCURACY,
                                  COMMITTEE_FORMAT, _arc_cosine, _cov4, _erf_form, _I2, _I4, _J2, _relu_form,
                                  _scaled, _vanishes, a_sym, b_sym, c_sym, four_point_table, output_scale,
                                  polynomial_expectation)
from ..symbolic.hermite import hermite, kink_points
from ..symbolic.parse import parse_expression, z
from . import ModelKind, register


@register
@dataclasses.dataclass(frozen=True)
class CommitteeModel(ModelKind):
    """One member of the committee family; K and M come from the initial condition.

    ``kmax`` is the Hermite truncation of the ``hermite`` back end (sphere only); the other back
    ends are exact and ignore it."""

    sigma: str
    phi: str
    output: str = "sum"
    dynamics: str = "sgd"
    backend: str = "auto"
    geometry: str = "free"
    kmax: int = 6
    kind = "committee"
    cli_name = "committee"
    default_t_end = 1000.0

    def __post_init__(self):
        for name, value, allowed in (("output", self.output, OUTPUTS), ("dynamics", self.dynamics, DYNAMICS),
                                     ("backend", self.backend, BACKENDS), ("geometry", self.geometry, GEOMETRIES)):
            if value not in allowed:
                raise InputError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        if isinstance(self.kmax, bool) or not isinstance(self.kmax, (int, np.integer)) or not 1 <= self.kmax <= 12:
            raise InputError(f"kmax (the Hermite truncation) must be an integer in [1, 12], got {self.kmax!r}")
        object.__setattr__(self, "kmax", int(self.kmax))
        object.__setattr__(self, "sigma", str(self.sigma))
        object.__setattr__(self, "phi", str(self.phi))
        object.__setattr__(self, "backend", self._resolve_backend())
        if self.backend in ("hermite", "quadrature"):
            self.dsigma_expr  # noqa: B018 -- refuse a sigma without a derivative at declaration
        if self.backend == "quadrature":
            self.pieces  # noqa: B018 -- and a phi without one

    @functools.cached_property
    def sigma_expr(self) -> sp.Expr:
        return parse_expression(self.sigma)

    @functools.cached_property
    def phi_expr(self) -> sp.Expr:
        return parse_expression(self.phi)

    @functools.cached_property
    def dsigma_expr(self) -> sp.Expr:
        ds = sp.diff(self.sigma_expr, z)
        if ds.has(sp.DiracDelta):
            raise ExpressionError(f"sigma = {self.sigma} has a jump: sigma' is not a function, and online SGD "
                                  "and the flow need it")
        return ds

    def _resolve_backend(self) -> str:
        s, p = self.sigma_expr, self.phi_expr
        sphere = self.geometry == "sphere"
        usable = {"erf": _erf_form(s) is not None and _erf_form(p) is not None,
                  "polynomial": s.is_polynomial(z) and p.is_polynomial(z),
                  "relu": _relu_form(s) is not None and _relu_form(p) is not None, "hermite": sphere,
                  "quadrature": True}
        needs = {"erf": "sigma and phi of the form A*erf(b*z)", "polynomial": "polynomial sigma and phi",
                 "relu": "sigma and phi of the form A*relu(b*z), b > 0",
                 "hermite": "the sphere geometry (unit variances), --geometry sphere"}
        if self.backend != "auto":
            if not usable[self.backend]:
                raise InputError(f"the {self.backend} expectation back end needs {needs[self.backend]}; "
                                 f"got sigma = {self.sigma}, phi = {self.phi}, geometry = {self.geometry}")
            return self.backend
        for name in ("polynomial", "erf", "relu"):
            if usable[name]:
                return name
        # the Hermite series of a kinked sigma' converges slowly in the SGD term (series_warning)
        smooth = not kink_points(self.sigma_expr) and not kink_points(sp.diff(self.sigma_expr, z))
        return "hermite" if sphere and smooth else "quadrature"

    # ---- Hermite back end

    @functools.cached_property
    def expansions(self) -> dict:
        """Hermite expansions of sigma (to kmax), sigma' (to kmax - 1) and phi (to kmax)."""
        ds = self.dsigma_expr
        out = {"sigma": hermite(self.sigma_expr, self.kmax), "phi": hermite(self.phi_expr, self.kmax)}
        out["dsigma"] = hermite(ds, self.kmax - 1) if self.kmax > 1 else None
        return out

    def tails(self) -> dict:
        """Squared L2 errors of the truncated series of sigma, sigma' and phi (0 for exact back ends):
        a pair kernel's truncation error is at most sqrt(tail_f tail_g)."""
        if self.backend != "hermite":
            return {"sigma": 0.0, "dsigma": 0.0, "phi": 0.0}
        return {k: (float(v.tail) if v is not None else float("nan")) for k, v in self.expansions.items()}

    def series_warning(self) -> Optional[str]:
        """A caution when the Hermite back end's SGD term rests on a slowly converging sigma'."""
        if self.backend != "hermite" or self.dynamics == "gf" or self.tails()["dsigma"] <= 1e-3:
            return None
        return (f"sigma' is truncated at degree {self.kmax - 1} with squared L2 tail {self.tails()['dsigma']:.2g}: "
                "the SGD term's four-point expectations (products of four truncated series) converge more slowly "
                "than that tail suggests (relu' at kmax 6 and 10: 19% and 15% low on E[relu'(x)^2 relu(y) relu(w)]); "
                "prefer a smooth activation, the relu back end for relu, or --dynamics gf")

    # ---- quadrature back end

    def _symbolic_kernels(self):
        if self.backend == "quadrature":
            raise InputError("the quadrature back end has no symbolic pair kernels: the generated code integrates them")

    @functools.cached_property
    def pieces(self) -> dict:
        """For sigma', sigma and phi (the functions the quadrature back end integrates), the points
        where the function or its derivative has a kink or jump, and for each interval between them
        whether the function vanishes there identically (relu below 0): the quadrature splits its
        panels at the points and skips those intervals."""
        dphi = sp.diff(self.phi_expr, z)
        if dphi.has(sp.DiracDelta):
            raise ExpressionError(f"phi = {self.phi} has a jump: the flow needs phi' under the quadrature back end")
        out = {}
        for name, f, df in (("dsigma", self.dsigma_expr, sp.diff(self.dsigma_expr, z)),
                            ("sigma", self.sigma_expr, self.dsigma_expr), ("phi", self.phi_expr, dphi)):
            points = sorted(set(kink_points(f)) | set(p for p in kink_points(df.replace(
                lambda e: isinstance(e, sp.DiracDelta), lambda e: sp.Integer(0)))))
            out[name] = (points, [_vanishes(f, lo, hi) for lo, hi in zip([None] + points, points + [None])])
        return out

    # ---- kernels

    def _expect2(self, f, g):
        if self.backend == "polynomial":
            return polynomial_expectation([f, g], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        (Af, sf), (Ag, sg) = _erf_form(f), _erf_form(g)
        return Af * Ag * _I2(sf**2 * a_sym, sg**2 * b_sym, sf * sg * c_sym)

    @functools.cached_property
    def pair_kernels(self) -> dict:
        """P_ss, P_sp, P_pp as functions of (a, b, c)."""
        self._symbolic_kernels()
        if self.backend == "hermite":
            # on the sphere only the correlation varies: sum_k c_k(f) c_k(g) c^k
            cs, cp = self.expansions["sigma"].coefficients, self.expansions["phi"].coefficients
            series = lambda x, y: sp.Add(*[sp.Float(float(u * w), 17) * c_sym**k for k, (u, w) in enumerate(zip(x, y))])
            return {"ss": series(cs, cs), "sp": series(cs, cp), "pp": series(cp, cp)}
        s, p = self.sigma_expr, self.phi_expr
        if self.backend == "relu":
            al, be = _relu_form(s), _relu_form(p)
            k = _arc_cosine(a_sym, b_sym, c_sym)
            return {"ss": al * al * k, "sp": al * be * k, "pp": be * be * k}
        return {"ss": self._expect2(s, s), "sp": self._expect2(s, p), "pp": self._expect2(p, p)}

    def derivative(self, expr, *variables) -> sp.Expr:
        """d expr / d variables, simplified where the back end's kernels need it: the relu kernels'
        derivatives cancel terms like sqrt(1 - c^2/(a b)) against sqrt(a b - c^2), which SymPy
        leaves apart (their difference is 0 - 0 = nan on the diagonal, inf - inf near it)."""
        d = sp.diff(expr, *variables)
        if self.backend != "relu":
            return d
        A, B = sp.symbols("A B", positive=True)
        d = d.subs({a_sym: A, b_sym: B})
        d = d.subs(sp.sqrt(1 - c_sym**2 / (A * B)), sp.sqrt(A * B - c_sym**2) / sp.sqrt(A * B))
        return sp.simplify(d).subs({A: a_sym, B: b_sym})

    @functools.cached_property
    def pair_diagonals(self) -> Optional[dict]:
        """For kernels not smooth where c^2 = a b (relu: the square root and arccos), the value on
        the diagonal P(a, a, a) as a function of a; None where the general form is smooth there."""
        if self.backend != "relu":
            return None
        A = sp.Symbol("A", positive=True)
        kernels = {**self.pair_kernels, "J2": self.J2_kernel}
        return {name: sp.simplify(e.subs({a_sym: A, b_sym: A, c_sym: A})).subs(A, a_sym)
                for name, e in kernels.items()}

    @functools.cached_property
    def J2_kernel(self) -> sp.Expr:
        """E[sigma'(u) sigma'(w)] as a function of (a, b, c)."""
        self._symbolic_kernels()
        s = self.sigma_expr
        if self.backend == "hermite":
            cd = self.expansions["dsigma"].coefficients if self.kmax > 1 else [0.0]
            return sp.Add(*[sp.Float(float(u * u), 17) * c_sym**k for k, u in enumerate(cd)])
        if self.backend == "polynomial":
            ds = sp.diff(s, z)
            return polynomial_expectation([ds, ds], sp.Matrix([[a_sym, c_sym], [c_sym, b_sym]]))
        if self.backend == "relu":
            return _relu_form(s) ** 2 * (sp.pi - sp.acos(c_sym / sp.sqrt(a_sym * b_sym))) / (2 * sp.pi)
        A, sc = _erf_form(s)
        return A**2 * sc**2 * _J2(sc**2 * a_sym, sc**2 * b_sym, sc**2 * c_sym)

    @functools.cached_property
    def four_point_kernels(self) -> dict:
        """E4_ss, E4_sp, E4_pp = E[sigma'(x1) sigma'(x2) f(x3) g(x4)]: SymPy expressions in the symbols
        C4_SYMS, or (Hermite back end) :class:`MonomialTable` of the correlations, or (relu back end)
        the prefactor of E[x3 x4 1(x > 0)], an orthant moment computed in the generated code."""
        s, p = self.sigma_expr, self.phi_expr
        C = _cov4()
        out = {}
        if self.backend == "quadrature":  # which functions f, g (act codes: 1 sigma, 2 phi) codegen integrates
            return {"ss": (1, 1), "sp": (1, 2), "pp": (2, 2)}
        if self.backend == "relu":
            # prefactors of x3 x4 over the positive orthant (codegen evaluates that expectation)
            al, be = _relu_form(s), _relu_form(p)
            return {"ss": al**4, "sp": al**3 * be, "pp": al**2 * be**2}
        if self.backend == "hermite":
            e = self.expansions
            cd = e["dsigma"].coefficients if self.kmax > 1 else np.zeros(1)
            cs, cp = e["sigma"].coefficients, e["phi"].coefficients
            for name, (f, g) in {"ss": (cs, cs), "sp": (cs, cp), "pp": (cp, cp)}.items():
                out[name] = four_point_table([cd, cd, f, g])
            return out
        for name, (f, g) in {"ss": (s, s), "sp": (s, p), "pp": (p, p)}.items():
            if self.backend == "polynomial":
                ds = sp.diff(s, z)
                out[name] = polynomial_expectation([ds, ds, f, g], C)
            else:
                (As, ss), (Af, sf), (Ag, sg) = _erf_form(s), _erf_form(f), _erf_form(g)
                out[name] = As**2 * ss**2 * Af * Ag * _I4(_scaled(C, [ss, ss, sf, sg]))
        return out

    # ---- the kind's contract (odehild.models)

    def source(self) -> str:
        return committee_source(self)

    def backend_note(self) -> str:
        """What the back end's numbers rest on, for the run's first line ('' for exact back ends)."""
        if self.backend == "quadrature":
            return f" ({QUADRATURE_ACCURACY})"
        if self.backend != "hermite":
            return ""
        t = self.tails()
        caution = self.series_warning()
        return (f" (Hermite series to degree {self.kmax}; squared L2 tails: sigma {t['sigma']:.2g}, "
                f"sigma' {t['dsigma']:.2g}, phi {t['phi']:.2g})" + (f"\ncaution: {caution}" if caution else ""))

    @staticmethod
    def state_map(K: int, M: int) -> StateMap:
        """The upper triangle of Q, then R (K x M) row-major, then v (K)."""
        return StateMap(Block("Q", (K, K), "upper"), Block("R", (K, M)), Block("v", (K,)))

    def problem(self, init, *, lr: float = 0.5, lr2: float = 0.0, noise: float = 0.0, rates: dict = None,
                extra_meta: dict = None, time_name: str = "alpha", default_t_min: float = None,
                fast_eps: float = 1.0) -> OdeProblem:
        """``lr``, ``lr2`` and ``noise`` as in :func:`solve_committee`. ``rates`` (lr, lr2, lr_sq, noise2,
        c, ct of the generated ``rhs_jac``) replaces them where a caller maps another parametrisation
        onto this one (the founding model at rate gamma, :mod:`odehild.models.finite_width`)."""
        K, M = _check_init(self, init)
        if rates is None:
            lr, lr2 = check_rate("lr", lr, allow_zero=False), check_rate("lr2", lr2, allow_zero=True)
            noise = check_rate("noise", noise, allow_zero=True)
            rates = {"lr": lr, "lr2": lr2, "lr_sq": lr**2 if self.dynamics == "sgd" else 0.0, "noise2": noise**2,
                     "c": output_scale(self.output, K), "ct": output_scale(self.output, M)}
            extra_meta = {"lr": lr, "lr2": lr2, "noise": noise, **(extra_meta or {})}
        compiled = compile_model(self)
        T, A = np.ascontiguousarray(init.T), np.ascontiguousarray(init.A)
        args = (K, M, T, A, rates["lr"], rates["lr2"], rates["lr_sq"], rates["noise2"], rates["c"], rates["ct"],
                self.geometry == "sphere")
        spare = np.empty((1, 1))
        rhs_jac = compiled.rhs_jac

        def rhs(t, y, out):
            rhs_jac(y, *args, False, out, spare)

        def jac(t, y, J):
            rhs_jac(y, *args, True, np.empty(y.size), J)

        state = self.state_map(K, M)
        y0 = state.pack({"Q": init.Q, "R": init.R, "v": init.v})
        meta = {**self.meta(), "K": K, "M": M, **(extra_meta or {}), "init": init.description}
        return OdeProblem(y0, state, rhs, jac, compiled, meta,
                          default_method="LSODA" if self.backend in ("relu", "quadrature") else "Radau",
                          default_t_min=default_t_min, fast_eps=fast_eps, time_name=time_name,
                          context={"init": init, "rates": rates})

    def result(self, problem, t, Y, stats, meta, observed=None) -> "CommitteeTrajectory":
        init, rates = problem.context["init"], problem.context["rates"]
        K, M = init.K, init.M
        values = problem.state.unpack(Y)
        T, A = np.ascontiguousarray(init.T), np.ascontiguousarray(init.A)
        risk = problem.compiled.risk_series(Y, K, M, T, A, rates["c"], rates["ct"]) if len(Y) else np.empty(0)
        return CommitteeTrajectory(t, values["Q"], values["R"], values["v"], risk, T, A, stats, meta)

    def failure_hint(self, problem, state) -> str:
        init = problem.context["init"]
        grew = np.max(np.abs(state["Q"])) > 100 * max(np.max(np.abs(init.Q)), 1.0)
        if grew and problem.context["rates"]["lr_sq"] > 0:
            return ("; Q grew without bound: at this learning rate the SGD term outgrows the gradient term and "
                    "online SGD itself diverges, lower the learning rate")
        return ""

    @classmethod
    def solve_command(cls, args):
        return solve_committee_command(args)

    @classmethod
    def plot(cls, path, output):
        from ..solve.plot import plot_committee

        plot_committee(CommitteeTrajectory.load(path), output)

    # ---- bookkeeping

    def meta(self) -> dict:
        extra = ({"kmax": self.kmax, "tails": self.tails(), "caution": self.series_warning()}
                 if self.backend == "hermite" else {})
        if self.backend == "quadrature":
            extra = {"accuracy": QUADRATURE_ACCURACY}
        return {"model": self.kind, "sigma": self.sigma, "phi": self.phi, "output": self.output,
                "dynamics": self.dynamics, "backend": self.backend, "geometry": self.geometry, **extra,
                "time": "alpha = steps/d (Goldt et al.); SGD learning rate lr/sqrt(d) on the first layer"
                        " per sample in units where lambda = w.x/sqrt(d), lr2/d on the second"}

    def cache_key(self) -> str:
        """Content hash of what the generated code depends on (K, M, rates and noise are runtime)."""
        payload = {"kind": self.kind, "format": COMMITTEE_FORMAT, "sigma": sp.srepr(self.sigma_expr),
                   "phi": sp.srepr(self.phi_expr), "backend": self.backend,
                   "kmax": self.kmax if self.backend == "hermite" else None}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24] + TEMPLATE_SHA




# the learning rates and noise the committee solver is tested on
MAX_RATE = 1e3


@dataclasses.dataclass
class CommitteeInit:
    """Initial overlaps: Q (K, K), R (K, M), T (M, M), v (K,) and the teacher's A (M,)."""

    Q: np.ndarray
    R: np.ndarray
    T: np.ndarray
    v: np.ndarray
    A: np.ndarray
    description: str = "given"

    ARRAYS = ("Q", "R", "T", "v", "A")

    def __post_init__(self):
        for name in self.ARRAYS:
            value = getattr(self, name)
            try:
                arr = np.asarray(value)
                if np.iscomplexobj(arr):
                    raise InputError(f"initial {name} must be real, got a complex array")
                arr = arr.astype(float)
            except (TypeError, ValueError):
                raise InputError(f"initial {name} must be a real array, got {type(value).__name__}") from None
            if not np.all(np.isfinite(arr)):
                raise InputError(f"initial {name} has non-finite entries")
            setattr(self, name, arr)
        K, M = self.v.size, self.A.size
        shapes = {"Q": (K, K), "R": (K, M), "T": (M, M), "v": (K,), "A": (M,)}
        for name, shape in shapes.items():
            if getattr(self, name).shape != shape:
                raise InputError(f"initial {name} must have shape {shape} (K = {K} from v, M = {M} from A), "
                                 f"got {getattr(self, name).shape}")
        if K < 1 or M < 1:
            raise InputError("the student and the teacher need at least one unit (v and A non-empty)")
        for name in ("Q", "T"):
            X = getattr(self, name)
            if not np.allclose(X, X.T, rtol=0, atol=1e-12 * max(1.0, np.max(np.abs(X)))):
                raise InputError(f"initial {name} must be symmetric")
        C = np.block([[self.Q, self.R], [self.R.T, self.T]])
        low = np.linalg.eigvalsh(C)[0]
        if low < -1e-10 * max(1.0, np.max(np.abs(C))):
            raise InputError(f"the overlaps [[Q, R], [R^T, T]] are not a covariance (smallest eigenvalue "
                             f"{low:.3g}): no weights have them")

    @property
    def K(self) -> int:
        return self.v.size

    @property
    def M(self) -> int:
        return self.A.size

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, {"description": self.description})

    @classmethod
    def load(cls, path) -> "CommitteeInit":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, description=f"file {path}")


def random_weights(K: int, M: int, d: int, *, scale: float = 1e-3, seed=None, orthonormal_teacher=True,
                   sphere=False):
    """Student weights W (K, d) with i.i.d. N(0, scale^2) entries (Q close to scale^2 I) and teacher
    weights W* (M, d) with T = I exactly (orthonormal rows times sqrt(d)) or Gaussian rows. With
    ``sphere`` every row has norm sqrt(d) (Q_ii = T_nn = 1, random directions)."""
    K, M, d = positive_int("K", K), positive_int("M", M), positive_int("d", d)
    rng = np.random.default_rng(seed_value("seed", seed))
    teacher = rng.normal(size=(M, d))
    if orthonormal_teacher:
        if M > d:
            raise InputError(f"an orthonormal teacher needs M <= d, got M = {M}, d = {d}")
        teacher = np.linalg.qr(teacher.T)[0].T * np.sqrt(d)
    student = scale * rng.normal(size=(K, d))
    if sphere:
        student *= np.sqrt(d) / np.linalg.norm(student, axis=1, keepdims=True)
        teacher *= np.sqrt(d) / np.linalg.norm(teacher, axis=1, keepdims=True)
    return student, teacher


def overlaps(student, teacher, v, A, description="from weights") -> CommitteeInit:
    """The overlaps of given weights (rows are units; inputs of dimension d = number of columns)."""
    d = student.shape[1]
    return CommitteeInit(student @ student.T / d, student @ teacher.T / d, teacher @ teacher.T / d,
                         np.asarray(v, float), np.asarray(A, float), description)


@dataclasses.dataclass
class CommitteeTrajectory:
    """``t`` (T,), ``Q`` (T, K, K), ``R`` (T, K, M), ``v`` (T, K), ``risk`` (T,) (noise-free, in the
    declaration's output convention), the constant ``T`` (M, M) and ``A`` (M,); stats and meta."""

    t: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    risk: np.ndarray
    T: np.ndarray
    A: np.ndarray
    stats: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "Q", "R", "v", "risk", "T", "A")

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, {**self.meta, "stats": self.stats})

    @classmethod
    def load(cls, path) -> "CommitteeTrajectory":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        stats_ = meta.pop("stats", {})
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, stats=stats_, meta=meta)

    def __len__(self):
        return self.t.size

    def __repr__(self):
        return (f"CommitteeTrajectory(T={self.t.size}, K={self.v.shape[1]}, M={self.A.size}, "
                f"alpha=[{self.t[0]:g}, {self.t[-1]:g}], risk {self.risk[0]:.4g} -> {self.risk[-1]:.4g}, "
                f"status={self.stats.get('status')})")


def check_rate(name, value, allow_zero):
    """A learning rate or noise level as a float in the range the committee solver is tested on."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    low_ok = v >= 0 if allow_zero else v > 0
    if not (low_ok and v <= MAX_RATE):
        span = "[0, " if allow_zero else "(0, "
        raise InputError(f"{name} must lie in {span}{MAX_RATE:g}], got {value!r}")
    return v


def solve_committee(model: CommitteeModel, init: CommitteeInit, t_end: float = 1000.0, *, lr: float = 0.5,
                    lr2: float = 0.0, noise: float = 0.0, t_eval=None, points: int = 200, t_min=None,
                    method: str = None, rtol: float = 1e-8, atol: float = 1e-10, max_wall=None,
                    progress=None, threads: int = 1) -> CommitteeTrajectory:
    """Integrate the overlap ODE of a committee declaration, SciPy style.

    ``lr`` is the first-layer rate eta, ``lr2`` the second layer's (0: fixed), ``noise`` the label
    noise's standard deviation. With ``dynamics="gf"`` the eta^2 terms are dropped (gradient flow in
    the same time alpha). Output at ``t_eval``, by default 0 and ``points`` log-spaced times from
    t_min (default 1e-3 t_end) to t_end. A failed solve raises :class:`IntegrationError` with the time,
    the state and the partial trajectory. On the sphere the diagonal of Q must be 1.

    ``method`` defaults to Radau, and to LSODA for the relu back end: where a student unit aligns
    with a teacher unit the overlap chart is singular (the relu kernels' second derivatives grow like
    1/sqrt(1 - rho^2)), Radau's Newton iterations stall there (K = M = 2, lr = 0.5: 10513 steps in 47 s
    to alpha = 157), while LSODA, which drops the Jacobian once the problem is not stiff, reaches
    alpha = 1000 in 885 steps, 0.3 s. The quadrature back end also defaults to LSODA: its Jacobian
    leaves out the SGD term's dependence on the overlaps, and its right-hand side is smooth only to
    the quadrature's accuracy (about 1e-12), which Radau's error control resolves with tiny steps
    once the risk is that small (erf, K = M = 2, lr = 0.5: LSODA reaches alpha = 1000 in 7 s; Radau
    had not in 12 minutes).
    """
    if not isinstance(model, CommitteeModel):
        raise InputError(f"model must be a CommitteeModel, got {type(model).__name__}")
    return solve(model, init, t_end, lr=lr, lr2=lr2, noise=noise, t_eval=t_eval, points=points, t_min=t_min,
                 method=method, rtol=rtol, atol=atol, max_wall=max_wall, progress=progress, threads=threads)


def _check_init(model, init):
    if not isinstance(init, CommitteeInit):
        raise InputError(f"init must be a CommitteeInit, got {type(init).__name__}")
    if model.geometry == "sphere":
        for name, X in (("Q", init.Q), ("T", init.T)):
            dev = np.max(np.abs(np.diag(X) - 1.0))
            if dev > 1e-8:
                raise InputError(f"on the sphere every unit has norm 1: the diagonal of initial {name} must be 1, "
                                 f"it deviates by {dev:.3g}")
            np.fill_diagonal(X, 1.0)
    return init.K, init.M




def pack(init: CommitteeInit) -> np.ndarray:
    """The packed state of initial overlaps (through :meth:`CommitteeModel.state_map`)."""
    return CommitteeModel.state_map(init.K, init.M).pack({"Q": init.Q, "R": init.R, "v": init.v})


def unpack(Y: np.ndarray, K: int, M: int) -> tuple:
    """(Q (T, K, K), R (T, K, M), v (T, K)) from packed states (T, n)."""
    values = CommitteeModel.state_map(K, M).unpack(np.atleast_2d(Y))
    return values["Q"], values["R"], values["v"]


# ------------------------------------------------------------------------------ command line


def solve_committee_command(args):
    """``odehild solve --model committee``."""
    from ..checks import positive_float
    from ..commands import solver_summary, stop_if_out_of_time, keep_partial
    from ..config import merge_values

    unused = [f for f, v in (("--eps", args.eps), ("--gamma", args.gamma), ("--particles", args.particles),
                             ("--a0", args.a0), ("--seed", args.seed), ("--nodes", args.nodes)) if v is not None]
    if unused:
        raise InputError(f"{', '.join(unused)} {'belongs' if len(unused) == 1 else 'belong'} to the mean-field model; "
                         "a committee run takes its "
                         "initial overlaps from --init IC.npz (Q, R, T, v, A)")
    if not args.init:
        raise InputError("--model committee needs --init IC.npz with arrays Q (K, K), R (K, M), T (M, M), v (K,), A (M,)")
    if args.lr is None:
        raise InputError("--model committee needs --lr (the first layer's learning rate eta)")
    model = CommitteeModel(args.sigma, args.phi, output=args.output_scaling or "sum",
                           dynamics=args.dynamics or "sgd", backend=args.backend or "auto",
                           geometry=args.geometry or "free", kmax=args.kmax)
    init = CommitteeInit.load(args.init)
    args.t_end = 1000.0 if args.t_end is None else args.t_end
    positive_float("--max-wall", args.max_wall)
    info = {"sigma_expr_input": args.sigma, "phi_expr_input": args.phi, "points": args.points}
    print(f"committee: K = {init.K}, M = {init.M}, sigma = {model.sigma}, phi = {model.phi}, {model.output} outputs, "
          f"{model.geometry} geometry, {model.dynamics}, expectations by the {model.backend} back end"
          + model.backend_note(), flush=True)
    with keep_partial(args.out, info):
        traj = solve_committee(model, init, args.t_end, lr=args.lr, lr2=args.lr2 or 0.0, noise=args.noise or 0.0,
                               points=args.points, t_min=args.t_min, method=args.method, rtol=args.rtol,
                               atol=args.atol, max_wall=args.max_wall, threads=args.threads,
                               progress=False if args.quiet else None)
        stop_if_out_of_time(traj, args, "alpha")
    resolved = {"t_min": float(traj.t[1]) if len(traj) > 1 else None, "t_end": args.t_end,
                "method": traj.meta["method"]}
    analysis = committee_analysis(traj)
    traj.meta.update(info, values=merge_values(args.values, resolved), analysis=analysis)
    path = traj.save(args.out)
    print(f"{path}: T = {len(traj)}, K = {init.K}, M = {init.M}, risk {traj.risk[0]:.6g} -> {traj.risk[-1]:.3g}; "
          + solver_summary(traj.stats))
    for line in analysis["summary"]:
        print("  " + line)
    return [(path, resolved)]


def committee_analysis(traj) -> dict:
    """Plateaus and specialisation of a solved committee, with the lines the run prints."""
    from ..solve.committee import committee_plateaus, specialisation_time

    plateaus = committee_plateaus(traj)
    t_spec = specialisation_time(traj)
    lines = [f"{p.kind} plateau at risk {p.level:.5g} for alpha in [{p.t_start:.3g}, {p.t_end:.3g}]"
             for p in plateaus if p.kind in ("symmetric", "other")]
    lines += [f"converged (risk below 1e-10 of its largest value) from alpha = {p.t_start:.3g}"
              for p in plateaus if p.kind == "converged"]
    if np.isfinite(t_spec):
        lines.append(f"specialisation (student units split among teacher units) at alpha = {t_spec:.4g}")
    elif t_spec == np.inf:
        lines.append("no specialisation by the end of the run")
    return {"plateaus": [dataclasses.asdict(p) for p in plateaus], "specialisation_time": t_spec,
            "summary": lines}
