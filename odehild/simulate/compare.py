"""Distance between an ODE trajectory and simulations of the finite network, and its decay with d."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.stats import wasserstein_distance

from ..errors import InputError
from ..solve.analysis import learning_times, residuals_from_particles
from ..symbolic.learnability import learnability


def _check_consistent(traj, sims):
    tm = traj.meta
    missing = [k for k in ("eps", "sigma_coefficients", "phi_coefficients") if k not in tm]
    if missing:
        raise InputError(f"the trajectory's meta lacks {', '.join(missing)}: not a trajectory odehild solved")
    for sim in sims:
        sm = sim.meta
        for key in ("eps",):
            if not math.isclose(float(tm.get(key, np.nan)), float(sm.get(key, np.nan)), rel_tol=1e-12):
                raise InputError(f"{key} differs: trajectory {tm.get(key)} vs simulation {sm.get(key)}")
        for key in ("sigma", "phi"):
            want = tm.get(f"{key}_expr_input", tm.get(key))
            if str(want).replace(" ", "") != str(sm.get(key)).replace(" ", ""):
                raise InputError(f"{key} differs: trajectory {want!r} vs simulation {sm.get(key)!r}")
    if len({tuple(np.round(s.t, 12)) for s in sims}) > 1:
        raise InputError("simulations were recorded at different times; compare runs of one configuration")


def _interp_log(t_src, values, t_dst):
    """Linear interpolation in log-time along the first axis (t = 0 kept as is)."""
    lt_src = np.log10(np.maximum(t_src, 1e-300))
    lt_dst = np.log10(np.maximum(t_dst, 1e-300))
    vals = np.asarray(values)
    flat = vals.reshape(vals.shape[0], -1)
    out = np.empty((t_dst.size, flat.shape[1]))
    for c in range(flat.shape[1]):
        out[:, c] = np.interp(lt_dst, lt_src, flat[:, c])
    return out.reshape((t_dst.size,) + vals.shape[1:])


def sliced_wasserstein(x, y, wx=None, wy=None, n_dirs: int = 64, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between weighted point clouds in R^n (averaged over directions;
    in R^2 half-circle angles, beyond uniform directions on the sphere)."""
    rng = np.random.default_rng(seed)
    if x.shape[1] == 2:
        ang = rng.uniform(0, np.pi, n_dirs)
        dirs = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    else:
        dirs = rng.standard_normal((n_dirs, x.shape[1]))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    return float(np.mean([wasserstein_distance(x @ v, y @ v, wx, wy) for v in dirs]))


def finite_list(x) -> list:
    """Floats for JSON, None where not finite."""
    return [None if not np.isfinite(v) else float(v) for v in np.ravel(x)]


@dataclasses.dataclass
class Comparison:
    t: np.ndarray
    ode_risk: np.ndarray
    sim_risk_mean: np.ndarray
    sim_risk_std: np.ndarray
    sup_risk_distance: float
    l2_risk_distance: float
    law_distance: float
    law_distance_t: np.ndarray
    ode_learning_times: np.ndarray
    sim_learning_times: np.ndarray
    meta: dict

    def to_dict(self) -> dict:
        clean = finite_list
        return {"sup_risk_distance": self.sup_risk_distance, "l2_risk_distance": self.l2_risk_distance,
                "law_distance": self.law_distance, "law_distance_t": clean(self.law_distance_t),
                "ode_learning_times": clean(self.ode_learning_times),
                "sim_learning_times": clean(self.sim_learning_times),
                "t": clean(self.t), "ode_risk": clean(self.ode_risk),
                "sim_risk_mean": clean(self.sim_risk_mean), "sim_risk_std": clean(self.sim_risk_std),
                "meta": self.meta}


def compare(traj, sims) -> Comparison:
    """Distances between an ODE trajectory and one or more simulations (seeds) of one configuration.

    On the simulations' log-time grid (within the trajectory's range): mean and spread of the
    simulated risk; sup and L2 (uniform in log-time) distance of the mean risk to the ODE's; the
    sliced Wasserstein-1 distance between the empirical law of (a, s) (all seeds pooled) and the
    ODE particles (reported at the final time as ``law_distance``); and the per-degree learning
    times (|r_k| halved) of both, with r_k computed from the particles in the same way.
    """
    sims = list(sims)
    if not sims:
        raise InputError("compare needs at least one simulation")
    _check_consistent(traj, sims)
    t = sims[0].t
    keep = (t > 0) & (t <= traj.t[-1] * (1 + 1e-9)) & (t >= traj.t[traj.t > 0][0])
    if keep.sum() < 2:
        raise InputError("the simulations and the trajectory share fewer than 2 output times")
    tc = t[keep]
    risks = np.array([s.risk[keep] for s in sims])
    mean, std = risks.mean(axis=0), risks.std(axis=0, ddof=1) if len(sims) > 1 else np.zeros(tc.size)
    ode_risk = _interp_log(traj.t, traj.risk, tc)
    diff = np.abs(mean - ode_risk)
    lt = np.log10(tc)
    l2 = float(np.sqrt(np.trapezoid(diff**2, lt) / (lt[-1] - lt[0])))
    A_ode = _interp_log(traj.t, traj.a, tc)
    S_ode = _interp_log(traj.t, traj.s, tc)
    law_t = np.empty(tc.size)
    for i in range(tc.size):
        pts_sim = np.concatenate([np.stack([s.a[keep][i], s.s[keep][i]], 1) for s in sims])
        law_t[i] = sliced_wasserstein(pts_sim, np.stack([A_ode[i], S_ode[i]], 1), None, traj.weights)
    sig, phi = traj.meta["sigma_coefficients"], traj.meta["phi_coefficients"]
    res_ode = residuals_from_particles(traj.a, traj.s, traj.weights, sig, phi)
    res_sim = np.mean([residuals_from_particles(s.a, s.s, np.full(s.a.shape[1], 1 / s.a.shape[1]), sig, phi)
                       for s in sims], axis=0)
    meta = {"n_simulations": len(sims), "eps": traj.meta.get("eps"), "sigma": traj.meta.get("sigma"),
            "particles": int(traj.a.shape[1]),
            "phi": traj.meta.get("phi"), "width": sims[0].meta.get("width"), "dim": sims[0].meta.get("dim"),
            "algo": sims[0].meta.get("algo"), "seeds": [s.meta.get("seed") for s in sims]}
    # learning times only for degrees the ODE has to learn (a target degree it can reach and whose
    # residual does not start at 0): elsewhere a simulation's "learning time" is a halving of noise
    learn = learnability(sig, phi, traj.meta.get("phi_norm2"), s0_zero=not np.any(traj.s[0]))
    lt_ode, lt_sim = learning_times(traj.t, res_ode), learning_times(sims[0].t, res_sim)
    for k in range(lt_ode.size):
        if k not in learn.reachable or not np.isfinite(lt_ode[k]):
            lt_ode[k] = lt_sim[k] = np.nan
    meta["learning_time_degrees"] = [k for k in range(lt_ode.size) if np.isfinite(lt_ode[k])]
    return Comparison(tc, ode_risk, mean, std, float(diff.max()), l2, float(law_t[-1]), law_t,
                      lt_ode, lt_sim, meta)


def fit_slope(x, y) -> tuple:
    """Least-squares slope and intercept of log10 y against log10 x."""
    coef = np.polyfit(np.log10(np.asarray(x, float)), np.log10(np.asarray(y, float)), 1)
    return float(coef[0]), float(coef[1])


def plot_comparison(cmp: Comparison, path=None, title=None):
    from ..solve.plot import finish_figure, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    ax.semilogx(cmp.t, cmp.ode_risk, "k-", lw=2, label="ODE (mean field)")
    ax.semilogx(cmp.t, cmp.sim_risk_mean, "C1-", label=f"simulation mean ({cmp.meta['n_simulations']} seeds)")
    ax.fill_between(cmp.t, cmp.sim_risk_mean - 2 * cmp.sim_risk_std, cmp.sim_risk_mean + 2 * cmp.sim_risk_std,
                    color="C1", alpha=0.25, label="+- 2 std over seeds")
    ax.set_xlabel("t")
    ax.set_ylabel("population risk")
    ax.legend(fontsize=8)
    ax.set_title(f"sup distance {cmp.sup_risk_distance:.3g}, L2 {cmp.l2_risk_distance:.3g}")
    ax = axes[1]
    ax.loglog(cmp.t, cmp.law_distance_t, "C0-")
    ax.set_xlabel("t")
    ax.set_ylabel("sliced W1 between laws of (a, s)")
    ax.set_title(f"distance between the particle laws (final {cmp.law_distance:.3g})")
    m = cmp.meta
    fig.suptitle(title or f"sigma = {m.get('sigma')}, phi = {m.get('phi')}, eps = {m['eps']:g}: {m['algo']} with "
                          f"m = {m['width']}, d = {m['dim']} against the mean-field ODE with N = "
                          f"{m.get('particles', '?')} particles", fontsize=9)
    return finish_figure(fig, path)


# what convergence_study reports: risk distances, and the law distance at the end and at the first time
# (the latter is the sampling error of m neurons' initial a0, about m^(-1/2))
DISTANCES = ("sup_risk_distance", "l2_risk_distance", "law_distance", "law_distance_start")


def convergence_study(sigma, phi, eps, dims, width_of_d=lambda d: max(2, d // 16), seeds=(0,), algo="gf",
                      t_end=3.0, particles=400, kmax=None, workers=0, scheduler=None, **sim_kw):
    """Run one configuration at several d (width m = width_of_d(d)), compare each with the ODE and
    fit the slope of log(distance) against log(d). Returns (rows, slopes).

    The (d, seed) simulations are tasks of :func:`odehild.sweep.engine.map_tasks`, the engine of
    ``odehild sweep``: in this process by default (``workers=0``), else on Dask (``scheduler``, or a
    local cluster of ``workers`` processes, None: one per core)."""
    from functools import partial

    from ..solve import initial_condition, solve
    from ..models.meanfield import MeanFieldModel
    from ..sweep.engine import map_tasks

    kmax = kmax or 6
    model = MeanFieldModel(sigma, phi, kmax, eps)
    traj = solve(model, initial_condition(particles), t_end, progress=False)
    traj.meta.update({"sigma_expr_input": sigma, "phi_expr_input": phi})
    runs = [(d, width_of_d(d), s) for d in dims for s in seeds]
    task = partial(_simulate_one, algo, dict(sigma=sigma, phi=phi, eps=eps, t_end=t_end, kmax=kmax, **sim_kw))
    sims = dict(zip(runs, map_tasks(task, runs, workers=workers, scheduler=scheduler, desc="simulations")))
    rows = []
    for d in dims:
        c = compare(traj, [sims[(d, width_of_d(d), s)] for s in seeds])
        rows.append({"dim": d, "width": width_of_d(d), "sup_risk_distance": c.sup_risk_distance,
                     "l2_risk_distance": c.l2_risk_distance, "law_distance": c.law_distance,
                     "law_distance_start": float(c.law_distance_t[0])})
    slopes = {k: fit_slope([r["dim"] for r in rows], [r[k] for r in rows])[0] for k in DISTANCES}
    return rows, slopes


def _simulate_one(algo, kw, run):
    from .networks import simulate

    d, m, seed = run
    return simulate(algo, width=m, dim=d, seed=seed, **kw)


def plot_convergence(rows, slopes, path=None):
    from ..solve.plot import finish_figure, pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    d = np.array([r["dim"] for r in rows])
    for key, style in zip(DISTANCES, ("o-", "s-", "^-", "v:")):
        if key in slopes:
            ax.loglog(d, [r[key] for r in rows], style, label=f"{key}: slope {slopes[key]:.2f}")
    ax.set_xlabel("dimension d (width m grows with d)")
    ax.set_ylabel("distance to the ODE")
    ax.legend(fontsize=8)
    return finish_figure(fig, path)
