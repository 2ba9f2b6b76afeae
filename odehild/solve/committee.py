"""Analysis of committee trajectories (:mod:`odehild.models.committee`): how far the student units
have specialised, when, and the plateaus of the risk, each labelled (Saad and Solla's symmetric
plateau among them)."""

from __future__ import annotations

import dataclasses

import numpy as np


def specialisation(traj) -> np.ndarray:
    """How far the student units have split among the teacher units, at each time (T,): the largest
    over teacher units n of max_i cos_in - min_i cos_in, cos_in = R_in / sqrt(Q_ii T_nn). 0 on the
    symmetric (unspecialised) plateau of Saad and Solla, where every student unit has the same overlap
    with a teacher unit; close to 1 once each student unit has taken one teacher unit (K = M)."""
    Q, R, T = np.asarray(traj.Q), np.asarray(traj.R), np.asarray(traj.T)
    qd = np.sqrt(np.maximum(np.diagonal(Q, axis1=1, axis2=2), 1e-300))
    cos = R / qd[:, :, None] / np.sqrt(np.maximum(np.diag(T), 1e-300))[None, None, :]
    if R.shape[1] < 2:
        return np.zeros(R.shape[0])
    return np.max(cos.max(axis=1) - cos.min(axis=1), axis=1)


def specialisation_time(traj, level: float = 0.5) -> float:
    """First output time at which :func:`specialisation` reaches ``level`` (inf if it never does;
    with one student unit there is nothing to split and the answer is nan)."""
    if np.asarray(traj.R).shape[1] < 2:
        return float("nan")
    hit = np.flatnonzero(specialisation(traj) >= level)
    return float(traj.t[hit[0]]) if hit.size else float("inf")


@dataclasses.dataclass
class CommitteePlateau:
    """An interval of log-time where log(risk) stays flat. ``kind``: "start" (nothing learned yet),
    "symmetric" (the unspecialised plateau: median specialisation below 0.1), "converged" (the risk
    at rounding level, below 1e-10 of its largest value) or "other"."""

    t_start: float
    t_end: float
    level: float
    kind: str


def committee_plateaus(traj, tol: float = 0.02, min_decades: float = 0.5) -> list:
    """Plateaus of a committee trajectory: flat stretches of log10(risk) against log10(alpha) (the
    criterion of :func:`odehild.solve.analysis.find_plateaus`, on the log of the risk, so that the
    final exponential approach to zero is not called flat), each labelled."""
    from .analysis import find_plateaus

    risk = np.asarray(traj.risk, float)
    top = max(np.max(np.abs(risk)), 1e-300)
    spec = specialisation(traj)
    t = np.asarray(traj.t, float)
    out = []
    for p in find_plateaus(t, np.log10(np.maximum(risk, 1e-14 * top)), tol=tol, min_decades=min_decades):
        inside = (t >= p.t_start) & (t <= p.t_end)
        if p.t_start <= t[t > 0][0]:
            kind = "start"
        elif np.median(risk[inside]) <= 1e-10 * top:
            kind = "converged"
        elif np.asarray(traj.R).shape[1] >= 2 and np.median(spec[inside]) < 0.1:
            kind = "symmetric"
        else:
            kind = "other"
        out.append(CommitteePlateau(p.t_start, p.t_end, float(np.median(risk[inside])), kind))
    return out
