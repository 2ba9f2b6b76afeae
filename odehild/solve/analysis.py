"""What users of the founding model ask first: when is degree l learned, where are the plateaus,
and how do the learning times scale with eps."""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence

import numpy as np

from ..errors import InputError


def plateau_levels(phi_coefficients, phi_norm2=None) -> np.ndarray:
    """Risk level once degrees 0..l are learned, (1/2) sum_{k>l} phi_k^2 (+ phi's tail), l = -1..K."""
    p2 = np.square(np.asarray(phi_coefficients, dtype=float))
    tail = 0.0 if phi_norm2 is None else max(phi_norm2 - p2.sum(), 0.0)
    return 0.5 * (np.array([p2[l + 1:].sum() for l in range(-1, p2.size)]) + tail)


def residuals_from_particles(a, s, weights, sigma_coefficients, phi_coefficients) -> np.ndarray:
    """r_k = phi_k - sigma_k M_k with M_k = sum_j w_j a_j s_j^k, for arrays (T, N); returns (T, K+1)."""
    a, s = np.atleast_2d(a), np.atleast_2d(s)
    sig = np.asarray(sigma_coefficients, dtype=float)
    phi = np.asarray(phi_coefficients, dtype=float)
    powers = s[..., None] ** np.arange(sig.size)
    M = np.einsum("tn,n,tnk->tk", a, np.asarray(weights, dtype=float), powers)
    return phi - sig * M


def first_crossing(t, values, threshold) -> float:
    """First time at which ``values`` falls to ``threshold`` or below (log-time interpolation), NaN if never."""
    below = np.flatnonzero(values <= threshold)
    if below.size == 0:
        return np.nan
    i = below[0]
    if i == 0 or t[i - 1] <= 0:
        return float(t[i])
    v0, v1 = values[i - 1], values[i]
    frac = (v0 - threshold) / (v0 - v1) if v0 != v1 else 1.0
    return float(10 ** (np.log10(t[i - 1]) + frac * (np.log10(t[i]) - np.log10(t[i - 1]))))


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
    t_start: float
    t_end: float
    level: float

    @property
    def decades(self) -> float:
        return float(np.log10(self.t_end / self.t_start))


def find_plateaus(t, risk, tol: float = 0.02, min_decades: float = 0.5) -> list:
    """Maximal intervals of log-time where the risk changes by less than ``tol`` (relative to its
    total drop) per decade, lasting at least ``min_decades``. Drops lie between them."""
    t, risk = np.asarray(t, dtype=float), np.asarray(risk, dtype=float)
    keep = t > 0
    t, risk = t[keep], risk[keep]
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
            out.append(Plateau(float(t[i]), float(t[j]), float(np.median(risk[i:j + 1]))))
        i = j + 1
    return out


@dataclasses.dataclass
class ScalingFit:
    """log10 t_k = slope * log10 eps + intercept, per degree k (NaN where not measurable)."""

    eps: np.ndarray
    times: np.ndarray  # (E, K+1)
    slope: np.ndarray
    intercept: np.ndarray
    slope_stderr: np.ndarray

    def to_dict(self) -> dict:
        def clean(x):
            return [None if not np.isfinite(v) else float(v) for v in np.ravel(x)]

        return {"eps": clean(self.eps), "times": [clean(row) for row in self.times],
                "slope": clean(self.slope), "intercept": clean(self.intercept),
                "slope_stderr": clean(self.slope_stderr)}


def fit_timescales(eps: Sequence[float], times) -> ScalingFit:
    """Least-squares slope of log(time) against log(eps) for each degree."""
    eps = np.asarray(eps, dtype=float)
    times = np.atleast_2d(np.asarray(times, dtype=float))
    if times.shape[0] != eps.size:
        raise InputError(f"need one row of times per eps: {times.shape[0]} rows for {eps.size} eps")
    K1 = times.shape[1]
    slope, icpt, err = (np.full(K1, np.nan) for _ in range(3))
    for k in range(K1):
        ok = np.isfinite(times[:, k]) & (times[:, k] > 0)
        if ok.sum() >= 2:
            x, y = np.log10(eps[ok]), np.log10(times[ok, k])
            A = np.vstack([x, np.ones_like(x)]).T
            coef, *_ = np.linalg.lstsq(A, y, rcond=None)
            slope[k], icpt[k] = coef
            if ok.sum() > 2:
                resid = y - A @ coef
                s2 = resid @ resid / (ok.sum() - 2)
                err[k] = np.sqrt(s2 / np.sum((x - x.mean()) ** 2))
    return ScalingFit(eps, times, slope, icpt, err)


def predicted_exponent(degree: int) -> Optional[float]:
    """Leading eps exponent of the degree-l learning time from bmz-model.md section 3:
    1 for l = 0, 1/2 for l = 1 (up to the log factor), 1/(2l) for l >= 2."""
    if degree == 0:
        return 1.0
    return 0.5 if degree == 1 else 1.0 / (2 * degree)


def timescale_sweep(model, eps_list, init=None, t_end: float = 5.0, fraction: float = 0.5,
                    progress=None, **solve_kw):
    """Solve ``model`` at every eps and fit the learning-time exponents. Returns (fit, trajectories)."""
    from .integrate import solve

    eps_list = [float(e) for e in eps_list]
    if len(eps_list) < 2:
        raise InputError("an eps sweep needs at least two values of eps")
    trajs = []
    for e in eps_list:
        trajs.append(solve(model.with_eps(e), init, t_end, progress=progress, **solve_kw))
    times = np.array([learning_times(tr.t, tr.residuals, fraction) for tr in trajs])
    return fit_timescales(eps_list, times), trajs
