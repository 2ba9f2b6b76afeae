"""What users of the founding model ask first: when is degree l learned, where are the plateaus,
and how do the learning times scale with eps."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError


def plateau_levels(phi_coefficients, phi_norm2=None, sigma_coefficients=None, s0_zero: bool = True) -> dict:
    """Risk levels between phases, {degree l: level once every reachable degree <= l is learned},
    -1 for the start. With ``sigma_coefficients`` only reachable degrees appear and unreachable ones
    stay in every level (sigma_k = 0, the s = 0 trap, the sign obstruction: see
    :mod:`odehild.symbolic.learnability`); without, every target degree is taken as reachable."""
    from ..symbolic.learnability import learnability

    phi = np.asarray(phi_coefficients, dtype=float)
    sig = np.ones_like(phi) if sigma_coefficients is None else sigma_coefficients
    return learnability(sig, phi, phi_norm2, s0_zero if sigma_coefficients is not None else False).levels


def residuals_from_particles(a, s, weights, sigma_coefficients, phi_coefficients) -> np.ndarray:
    """r_k = phi_k - sigma_k M_k with M_k = sum_j w_j a_j s_j^k, for arrays (T, N); returns (T, K+1)."""
    a, s = np.atleast_2d(a), np.atleast_2d(s)
    sig = np.asarray(sigma_coefficients, dtype=float)
    phi = np.asarray(phi_coefficients, dtype=float)
    powers = s[..., None] ** np.arange(sig.size)
    M = np.einsum("tn,n,tnk->tk", a, np.asarray(weights, dtype=float), powers)
    return phi - sig * M


def first_crossing(t, values, threshold) -> float:
    """First time at which ``values`` falls to ``threshold`` or below, NaN if never.

    Between output times the curve is interpolated in log-time by a monotone cubic (PCHIP) through
    the neighbouring points: linear interpolation on a log grid of 200 points is off by percents
    where |r_k| bends sharply, which is exactly where learning times sit."""
    from scipy.interpolate import PchipInterpolator
    from scipy.optimize import brentq

    t, values = np.asarray(t, dtype=float), np.asarray(values, dtype=float)
    below = np.flatnonzero(values <= threshold)
    if below.size == 0:
        return np.nan
    i = below[0]
    if i == 0 or t[i - 1] <= 0:
        return float(t[i])
    if values[i] == threshold:
        return float(t[i])
    lo, hi = max(i - 3, 0), min(i + 3, t.size)
    while t[lo] <= 0:
        lo += 1
    lt = np.log(t[lo:hi])
    f = PchipInterpolator(lt, values[lo:hi] - threshold)
    return float(np.exp(brentq(f, np.log(t[i - 1]), np.log(t[i]), xtol=1e-14)))


def learning_times(t, residuals, fraction: float = 0.5, floor: float = 1e-12) -> np.ndarray:
    """Per degree k, the first time |r_k| falls below ``fraction`` of |r_k(0)| (NaN if never, or
    if there is nothing to learn: |r_k(0)| < floor)."""
    res = np.abs(np.asarray(residuals))
    out = np.full(res.shape[1], np.nan)
    for k in range(res.shape[1]):
        if res[0, k] >= floor:
            out[k] = first_crossing(np.asarray(t), res[:, k], fraction * res[0, k])
    return out


@dataclasses.dataclass
class Plateau:
    """An interval of log-time where the risk stays flat. ``level_error`` is the discretisation
    error estimate of ``level`` (the same plateau in a run with half the particles; NaN if none was
    run); ``degree`` names the nearest level of the learnability report (-1: the start, None: not
    named) and ``expected_level`` is that level."""

    t_start: float
    t_end: float
    level: float
    level_error: float = float("nan")
    degree: Optional[int] = None
    expected_level: float = float("nan")

    @property
    def decades(self) -> float:
        return float(np.log10(self.t_end / self.t_start))

    def describe(self) -> str:
        err = f" ± {self.level_error:.1g}" if np.isfinite(self.level_error) else ""
        txt = (f"risk {self.level:.4g}{err} over {self.decades:.1f} decades "
               f"(t = {self.t_start:.2g} .. {self.t_end:.2g})")
        if self.degree is not None:
            name = "start" if self.degree < 0 else f"degree {self.degree} learned"
            txt += f"; nearest level {self.expected_level:.4g} ({name})"
        return txt

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in d.items()}


def find_plateaus(t, risk, tol: float = 0.02, min_decades: float = 0.5, coarse_risk=None,
                  levels: Optional[dict] = None) -> list:
    """Maximal intervals of log-time where the risk changes by less than ``tol`` (relative to its
    total drop) per decade, lasting at least ``min_decades``. Drops lie between them.

    ``coarse_risk``: the risk of the same run at a second resolution on the same times; each
    plateau's ``level_error`` is the difference of the two levels over its interval. ``levels``
    ({degree: level}, as in :attr:`Learnability.levels`) names each plateau by the nearest one.
    """
    t, risk = np.asarray(t, dtype=float), np.asarray(risk, dtype=float)
    if coarse_risk is not None:
        coarse_risk = np.asarray(coarse_risk, dtype=float)
        if coarse_risk.shape != risk.shape:
            raise InputError(f"coarse_risk has shape {coarse_risk.shape}, the risk {risk.shape}: "
                             "the second run must use the same output times")
    keep = t > 0
    t, risk = t[keep], risk[keep]
    coarse = coarse_risk[keep] if coarse_risk is not None else None
    if t.size < 3:
        return []
    span = max(risk.max() - risk.min(), 1e-300)
    lt = np.log10(t)
    slope = np.abs(np.gradient(risk, lt)) / span
    flat = slope < tol
    out, i = [], 0
    while i < t.size:
        if not flat[i]:
            i += 1
            continue
        j = i
        while j + 1 < t.size and flat[j + 1]:
            j += 1
        if lt[j] - lt[i] >= min_decades:
            p = Plateau(float(t[i]), float(t[j]), float(np.median(risk[i:j + 1])))
            if coarse is not None:
                p.level_error = float(abs(p.level - np.median(coarse[i:j + 1])))
            if levels:
                p.degree, p.expected_level = min(levels.items(), key=lambda kv: abs(kv[1] - p.level))
                p.expected_level = float(p.expected_level)
            out.append(p)
        i = j + 1
    return out


@dataclasses.dataclass
class ScalingFit:
    """Learning times t_k over an eps sweep and their eps exponents, with uncertainties.

    ``times`` (E, K+1) at N particles; ``time_error`` the discretisation error estimate
    |t(N) - t(N/2)| (NaN where no second resolution was run); ``separated`` whether degree k's phase
    is separated from its learned neighbours at that eps (ratio of learning times >= ``separation``).
    Fits use separated points only: ``slope`` (least squares of log10 t against log10 eps) with
    ``slope_stderr`` (regression) and ``slope_error`` (the time errors propagated), ``local_slope``
    between neighbouring eps with ``local_slope_error``, and ``expected`` the slope the scenario of
    docs/model.md section 3 gives over the same eps values (for degree 1 with its log(1/eps)
    factor). ``log_corrected_slope[1]`` fits t_1 / log(1/eps), whose scenario value is 1/2.
    ``plateaus[i]`` lists the plateaus of the run at ``eps[i]`` (:class:`Plateau`, with their
    discretisation errors).
    """

    eps: np.ndarray
    times: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray
    slope_stderr: np.ndarray
    time_error: Optional[np.ndarray] = None
    separated: Optional[np.ndarray] = None
    slope_error: Optional[np.ndarray] = None
    local_slope: Optional[np.ndarray] = None
    local_slope_error: Optional[np.ndarray] = None
    expected: Optional[np.ndarray] = None
    log_corrected_slope: Optional[np.ndarray] = None
    degrees: tuple = ()
    resolution: tuple = ()
    notes: list = dataclasses.field(default_factory=list)
    plateaus: list = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict:
        def clean(x):
            if x is None:
                return None
            x = np.asarray(x)
            if x.ndim == 2:
                return [clean(row) for row in x]
            return [None if not np.isfinite(v) else float(v) for v in x.astype(float)]

        return {"eps": clean(self.eps), "times": clean(self.times), "slope": clean(self.slope),
                "intercept": clean(self.intercept), "slope_stderr": clean(self.slope_stderr),
                "time_error": clean(self.time_error),
                "separated": None if self.separated is None else np.asarray(self.separated).tolist(),
                "slope_error": clean(self.slope_error), "local_slope": clean(self.local_slope),
                "local_slope_error": clean(self.local_slope_error), "expected_slope": clean(self.expected),
                "log_corrected_slope": clean(self.log_corrected_slope), "degrees": list(self.degrees),
                "resolution": list(self.resolution), "notes": list(self.notes),
                "plateaus": [[p.to_dict() for p in row] for row in self.plateaus]}


def _lsq(x, y, dy=None):
    """Slope, intercept, regression standard error and propagated error of a line through (x, y)."""
    A = np.vstack([x, np.ones_like(x)]).T
    (slope, icpt), *_ = np.linalg.lstsq(A, y, rcond=None)
    sxx = np.sum((x - x.mean()) ** 2)
    stderr = np.nan
    if x.size > 2:
        resid = y - A @ np.array([slope, icpt])
        stderr = np.sqrt(resid @ resid / (x.size - 2) / sxx)
    prop = np.nan if dy is None else float(np.sqrt(np.sum(((x - x.mean()) / sxx * dy) ** 2)))
    return float(slope), float(icpt), float(stderr), prop


def scenario_time(degree: int, eps):
    """The eps-dependence of t_l in the scenario of docs/model.md section 3, up to a constant:
    eps (l = 0), sqrt(eps) log(1/eps) (l = 1), eps^(1/(2l)) (l >= 2)."""
    eps = np.asarray(eps, dtype=float)
    if degree == 1:
        return np.sqrt(eps) * np.log(1 / eps)
    return eps ** predicted_exponent(degree)


def expected_slope(degree: int, eps) -> float:
    """The slope a least-squares fit of log t_l against log eps gives over these eps if t_l follows
    :func:`scenario_time` (for l = 1 below 1/2 at any finite eps)."""
    eps = np.asarray(eps, dtype=float)
    if eps.size < 2:
        return float(predicted_exponent(degree))
    x = np.log10(eps)
    return _lsq(x, np.log10(scenario_time(degree, eps)))[0]


def phase_separation(times, degrees, ratio: float = 2.0) -> np.ndarray:
    """(E, K+1) booleans: degree k's learning time is at least ``ratio`` away from those of the
    neighbouring learned degrees (in ``degrees``) at the same eps."""
    times = np.atleast_2d(np.asarray(times, dtype=float))
    out = np.zeros(times.shape, bool)
    for e, row in enumerate(times):
        learned = [k for k in degrees if np.isfinite(row[k]) and row[k] > 0]
        learned.sort(key=lambda k: row[k])
        for j, k in enumerate(learned):
            ok = True
            if j > 0:
                ok &= row[k] / row[learned[j - 1]] >= ratio
            if j + 1 < len(learned):
                ok &= row[learned[j + 1]] / row[k] >= ratio
            out[e, k] = ok
    return out


def fit_timescales(eps: Sequence[float], times, time_error=None, degrees=None,
                   separation: float = 2.0) -> ScalingFit:
    """Exponents of the learning times per degree, from the eps values where that degree's phase is
    separated (all finite values when ``degrees`` is None and separation is not checked)."""
    eps = np.asarray(eps, dtype=float)
    times = np.atleast_2d(np.asarray(times, dtype=float))
    if times.shape[0] != eps.size:
        raise InputError(f"need one row of times per eps: {times.shape[0]} rows for {eps.size} eps")
    E, K1 = times.shape
    err = np.full(times.shape, np.nan) if time_error is None else np.asarray(time_error, dtype=float)
    if degrees is None:
        degrees = tuple(k for k in range(K1) if np.isfinite(times[:, k]).any())
        sep = np.isfinite(times) & (times > 0)
    else:
        sep = phase_separation(times, degrees, separation)
    slope, icpt, stderr, serr, expected, logc = (np.full(K1, np.nan) for _ in range(6))
    local, local_err = np.full((max(E - 1, 0), K1), np.nan), np.full((max(E - 1, 0), K1), np.nan)
    x = np.log10(eps)
    for k in degrees:
        ok = sep[:, k] & np.isfinite(times[:, k]) & (times[:, k] > 0)
        y = np.log10(np.where(ok, times[:, k], 1.0))
        dy = err[:, k] / np.where(ok, times[:, k], 1.0) / np.log(10)
        for i in range(E - 1):
            if ok[i] and ok[i + 1]:
                local[i, k] = (y[i + 1] - y[i]) / (x[i + 1] - x[i])
                local_err[i, k] = np.hypot(dy[i], dy[i + 1]) / abs(x[i + 1] - x[i])
        if ok.sum() >= 2:
            slope[k], icpt[k], stderr[k], serr[k] = _lsq(x[ok], y[ok], dy[ok])
            expected[k] = expected_slope(k, eps[ok])
            if k == 1:
                logc[k] = _lsq(x[ok], y[ok] - np.log10(np.log(1 / eps[ok])))[0]
    return ScalingFit(eps, times, slope, icpt, stderr, err, sep, serr, local, local_err, expected, logc,
                      tuple(degrees))


def predicted_exponent(degree: int) -> Optional[float]:
    """Leading eps exponent of the degree-l learning time from docs/model.md section 3:
    1 for l = 0, 1/2 for l = 1 (up to the log factor), 1/(2l) for l >= 2."""
    if degree == 0:
        return 1.0
    return 0.5 if degree == 1 else 1.0 / (2 * degree)


LEARNING_TIME_POINTS = 2000


def timescale_sweep(model, eps_list, init=None, t_end: float = 5.0, fraction: float = 0.5,
                    progress=None, check_resolution: bool = True, resolution_tol: float = 0.01,
                    separation: float = 2.0, workers: int = 0, scheduler=None, **solve_kw):
    """Solve ``model`` at every eps, measure the learning time of each reachable target degree and
    fit the exponents. Returns (fit, trajectories).

    Output is on ``points`` (default 2000) log-spaced times: a drop spans less than 0.1 decade of
    time, and a learning time read off 200 points is off by up to 4%.

    With ``check_resolution`` and an initial condition built from a law, every eps is solved a
    second time with half the particles; |t(N) - t(N/2)| is the discretisation error estimate
    stored in ``fit.time_error`` (and in each trajectory's meta), and a :class:`ResolutionWarning`
    is issued where it exceeds ``resolution_tol`` relative to t. The plateaus of every run
    (``fit.plateaus``, meta ``plateaus``) carry the same estimate for their levels, with a warning
    where it exceeds ``resolution_tol`` of the risk's total drop.

    The eps values are tasks of :func:`odehild.sweep.engine.map_tasks`, the engine of ``odehild
    sweep``: one after the other in this process by default (``workers=0``), or on Dask
    (``scheduler``, or a local cluster of ``workers`` processes, None: one per core).
    """
    import warnings

    from ..errors import ResolutionWarning
    from ..symbolic.learnability import learnability
    from .trajectory import initial_condition

    eps_list = [float(e) for e in eps_list]
    if len(set(eps_list)) < 2 or len(set(eps_list)) != len(eps_list):
        raise InputError(f"an eps sweep needs at least two distinct values of eps, got {eps_list}")
    # drops span ~0.07 decades of time: learning times need a dense log grid
    solve_kw.setdefault("points", LEARNING_TIME_POINTS)
    if init is None:
        init = initial_condition()
    learn = learnability(model.sigma.coefficients, model.phi.coefficients, model.phi.norm2,
                         s0_zero=not np.any(init.s0))
    degrees = tuple(k for k in learn.reachable)
    coarse = init.at_resolution(init.N // 2) if check_resolution and init.N >= 4 else None
    from functools import partial

    from ..sweep.engine import map_tasks

    task = partial(_eps_run, model, init, coarse, t_end, fraction, degrees, learn,
                   progress if workers == 0 and not scheduler else False, solve_kw)
    runs = map_tasks(task, eps_list, workers=workers, scheduler=scheduler,
                     progress=False if workers == 0 and not scheduler else progress, desc="eps sweep")
    trajs = [r[0] for r in runs]
    times = [r[1] for r in runs]
    errors = [r[2] for r in runs]
    plateaus = [r[3] for r in runs]
    fit = fit_timescales(eps_list, np.array(times), np.array(errors), degrees, separation)
    fit.plateaus = plateaus
    fit.resolution = (init.N, coarse.N) if coarse is not None else (init.N,)
    fit.notes.extend(learn.reasons())
    if coarse is None:
        fit.notes.append("no discretisation error estimate: the initial condition was given as arrays"
                         if init.recipe is None else "no discretisation error estimate (not asked for)")
    for e, row, sep in zip(fit.eps, fit.times, fit.separated):
        together = [k for k in degrees if np.isfinite(row[k]) and not sep[k]]
        if together:
            fit.notes.append(f"eps = {e:.3g}: degrees {', '.join(map(str, together))} are not separated "
                             f"(learning times within a factor {separation:g}); their times are "
                             f"not used in the fits")
    rel = fit.time_error / np.where(np.isfinite(fit.times) & (fit.times > 0), fit.times, np.nan)
    bad = np.argwhere(rel > resolution_tol)
    # plateau levels: error relative to the total drop of the risk in that run
    for e, tr, row in zip(fit.eps, trajs, fit.plateaus):
        drop = float(np.ptp(tr.risk)) or 1.0
        for p in row:
            if p.level_error > resolution_tol * drop:
                msg = (f"discretisation error of the plateau at risk {p.level:.4g} (eps = {e:.3g}) is "
                       f"{p.level_error:.2g}, above {resolution_tol:.0%} of the risk's drop, between N = "
                       f"{fit.resolution[0]} and N = {fit.resolution[-1]}; use more particles")
                fit.notes.append("warning: " + msg)
                warnings.warn(msg, ResolutionWarning, stacklevel=2)
    if bad.size:
        worst = max(bad, key=lambda ek: rel[ek[0], ek[1]])
        msg = (f"discretisation error above {resolution_tol:.0%} at {len(bad)} learning time(s), worst "
               f"t_{worst[1]} at eps = {fit.eps[worst[0]]:.3g}: {rel[worst[0], worst[1]]:.1%} between N = "
               f"{fit.resolution[0]} and N = {fit.resolution[-1]}; use more particles")
        fit.notes.append("warning: " + msg)
        warnings.warn(msg, ResolutionWarning, stacklevel=2)
    return fit, trajs


def _eps_run(model, init, coarse, t_end, fraction, degrees, learn, progress, solve_kw, e):
    """One eps of :func:`timescale_sweep`: the solve, its learning times and plateaus, and the
    same at N/2 for their discretisation error."""
    from .integrate import solve

    tr = solve(model.with_eps(e), init, t_end, progress=progress, **solve_kw)
    lt = _restrict(learning_times(tr.t, tr.residuals, fraction), degrees)
    err = np.full_like(lt, np.nan)
    coarse_risk = None
    if coarse is not None:
        trc = solve(model.with_eps(e), coarse, t_end, progress=False, **solve_kw)
        err = np.abs(lt - _restrict(learning_times(trc.t, trc.residuals, fraction), degrees))
        coarse_risk = trc.risk
    found = find_plateaus(tr.t, tr.risk, coarse_risk=coarse_risk, levels=learn.levels)
    tr.meta["learning_times"] = [None if not np.isfinite(v) else float(v) for v in lt]
    tr.meta["learning_time_errors"] = [None if not np.isfinite(v) else float(v) for v in err]
    tr.meta["plateaus"] = [p.to_dict() for p in found]
    tr.meta["learnability"] = learn.to_dict()
    return tr, lt, err, found


def _restrict(times, degrees):
    out = np.full_like(times, np.nan)
    idx = [k for k in degrees if k < times.size]
    out[idx] = times[idx]
    return out
