"""Figures of a trajectory: risk staircase, residuals per degree, particles in the (s, a) plane."""

from __future__ import annotations

import numpy as np

from .analysis import find_plateaus, plateau_levels, scenario_time


def pyplot():
    """matplotlib.pyplot on a non-interactive backend unless one is already chosen."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish_figure(fig, path=None):
    """Tight layout, then an atomic save to ``path`` when given. Returns the figure."""
    from ..io import save_figure

    fig.tight_layout()
    if path is not None:
        save_figure(path, fig)
    return fig


def first_change_time(traj, fraction: float = 1e-3) -> float:
    """The first output time at which the risk has moved by ``fraction`` of its total change: the
    decades before it are a flat line, cropped from plots."""
    pos = traj.t > 0
    t, r = traj.t[pos], traj.risk[pos]
    span = np.ptp(traj.risk)
    moved = np.flatnonzero(np.abs(r - traj.risk[0]) > fraction * span) if span > 0 else []
    return float(t[moved[0]]) if len(moved) else float(t[0])


def plot_risk(ax, traj, label=None, levels=True):
    pos = traj.t > 0
    ax.semilogx(traj.t[pos], traj.risk[pos], lw=1.8, label=label)
    if levels and "phi_coefficients" in traj.meta and "sigma_coefficients" in traj.meta:
        # only levels the dynamics can reach (sigma_k = 0, the s = 0 trap, sign obstructions)
        lv = plateau_levels(traj.meta["phi_coefficients"], traj.meta.get("phi_norm2"),
                            traj.meta.get("sigma_coefficients"), not np.any(traj.s[0]))
        found = [p.level for p in find_plateaus(traj.t, traj.risk)]
        span = max(np.ptp(traj.risk), 1e-300)
        x = first_change_time(traj) / 10
        last = None
        for l, v in lv.items():
            if last is None or v < last - 1e-12:
                seen = any(abs(f - v) < 0.02 * span for f in found)
                ax.axhline(v, color="0.6", ls=":" if seen else (0, (1, 4)), lw=0.8)
                name = f"degree {l} learned" if l >= 0 else "start"
                ax.text(x, v, f" {name}" + ("" if seen else " (no plateau in this run)"),
                        va="bottom", fontsize=7, color="0.3" if seen else "0.6")
            last = v
    ax.set_xlabel("t")
    ax.set_ylabel("population risk R(t)")


def crop_flat_start(ax, trajs):
    """Start the time axis a decade before the first trajectory's risk starts to move."""
    t0 = min(first_change_time(tr) for tr in trajs)
    ax.set_xlim(left=t0 / 10)


def plot_trajectory(traj, path=None, n_particles: int = 24, title=None):
    """Three panels; saved to ``path`` (PNG/PDF/SVG) when given. Returns the figure."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    pos = traj.t > 0
    plot_risk(axes[0], traj)
    for p in find_plateaus(traj.t, traj.risk):
        axes[0].axvspan(p.t_start, p.t_end, color="C2", alpha=0.08)
    axes[0].set_title("risk against log-time (plateaus shaded)")
    crop_flat_start(axes[0], [traj])

    ax = axes[1]
    if traj.residuals is not None:
        for k in range(traj.residuals.shape[1]):
            r = np.abs(traj.residuals[pos, k])
            if r.max() > 1e-12:
                ax.loglog(traj.t[pos], np.maximum(r, 1e-300), label=f"|r_{k}|")
        top = np.abs(traj.residuals).max()
        ax.set_ylim(1e-12, 3 * top if top > 0 else 1.0)
        ax.legend(fontsize=7, ncol=2)
        crop_flat_start(ax, [traj])
        ax.set_ylabel("|r_k(t)|")
        ax.set_title("residuals r_k = phi_k - sigma_k M_k per degree k", fontsize=10)
    elif traj.r is not None:  # finite width: the neurons' overlaps with each other
        iu = np.triu_indices(traj.r.shape[1], 1)
        for n, (i, j) in enumerate(zip(*iu)):
            ax.semilogx(traj.t[pos], traj.r[pos, i, j], color="C0", lw=0.7, alpha=0.6,
                        label="r_ij = <u_i, u_j>" if n == 0 else None)
        ax.set_ylim(-1.05, 1.05)
        ax.legend(fontsize=7)
        ax.set_ylabel("overlap r_ij")
        gamma = traj.meta.get("gamma")
        ax.set_title("overlaps between neurons" + (f" (gamma = {gamma:g})" if gamma is not None else ""), fontsize=10)
    ax.set_xlabel("t")

    ax = axes[2]
    N = traj.a.shape[1]
    pick = np.unique(np.linspace(0, N - 1, min(n_particles, N)).astype(int))
    cmap = plt.get_cmap("viridis")
    a0 = traj.a[0, pick]
    norm = plt.Normalize(a0.min(), a0.max() if a0.max() > a0.min() else a0.min() + 1)
    for i, start in zip(pick, a0):
        ax.plot(traj.s[:, i], traj.a[:, i], color=cmap(norm(start)), lw=0.9)
        ax.plot(traj.s[-1, i], traj.a[-1, i], "o", ms=2.5, color=cmap(norm(start)))
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label="initial weight a0 of the particle")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("alignment s = <u, u*>")
    ax.set_ylabel("second-layer weight a (symlog)")
    ax.set_title(f"paths in (s, a) of {len(pick)} of {N} particles; dots: final state", fontsize=9)
    meta = traj.meta
    fig.suptitle(title or f"sigma = {meta.get('sigma', '?')},  phi = {meta.get('phi', '?')},  "
                 f"eps = {meta.get('eps', float('nan')):.3g}, "
                 + (f"finite width m = {N}, {meta.get('backend')} expectations" if traj.r is not None
                    else f"K = {meta.get('kmax', '?')}"), fontsize=10)
    return finish_figure(fig, path)


def plot_sweep(fit, trajs, path=None):
    """Risk curves of an eps sweep and the fitted learning-time exponents."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for tr, e in zip(trajs, fit.eps):
        plot_risk(axes[0], tr, label=f"eps = {e:.0e}", levels=tr is trajs[-1])
    crop_flat_start(axes[0], trajs)
    axes[0].legend(fontsize=7)
    axes[0].set_title("dotted: levels this model can reach (learnability report)", fontsize=8)
    ax = axes[1]
    err = fit.time_error if fit.time_error is not None else np.full_like(fit.times, np.nan)
    sep = fit.separated if fit.separated is not None else np.isfinite(fit.times)
    drawn = False
    for k in fit.degrees or range(fit.times.shape[1]):
        ok = np.isfinite(fit.times[:, k])
        if not ok.any():
            continue
        label = f"degree {k}"
        if np.isfinite(fit.slope[k]):
            label += f": slope {fit.slope[k]:.3f}"
            if fit.slope_error is not None and np.isfinite(fit.slope_error[k]):
                label += f" ± {fit.slope_error[k]:.3f}"
            if fit.expected is not None and np.isfinite(fit.expected[k]):
                label += f" (scenario {fit.expected[k]:.3f})"
        line, = ax.loglog(fit.eps[ok], fit.times[ok, k], "-", lw=1, label=label)
        anchor = np.flatnonzero(ok & sep[:, k])
        if anchor.size and k in fit.degrees:
            # the scenario's shape through the separated point at the smallest eps
            i = anchor[np.argmin(fit.eps[anchor])]
            shape = scenario_time(k, fit.eps[ok]) / scenario_time(k, fit.eps[i])
            ax.loglog(fit.eps[ok], fit.times[i, k] * shape, "--", lw=0.8, color=line.get_color(),
                      label=f"scenario for degree {k}")
        yerr = np.where(np.isfinite(err[ok, k]), err[ok, k], 0.0)
        for filled in (True, False):
            pick = sep[ok, k] == filled
            if pick.any():
                ax.errorbar(fit.eps[ok][pick], fit.times[ok, k][pick], yerr=yerr[pick], fmt="o", ms=5,
                            color=line.get_color(), mfc=line.get_color() if filled else "white", capsize=2)
        drawn = True
    ax.set_xlabel("eps")
    ax.set_ylabel("learning time t_k (|r_k| halved)")
    ax.set_title("hollow: phase not separated from a neighbour (not fitted)", fontsize=8)
    if drawn:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no degree was learned", ha="center", transform=ax.transAxes)
    return finish_figure(fig, path)


def plot_committee(traj, path=None):
    """Risk against alpha (log-log), the teacher overlaps R_in and the student overlaps Q_ik against
    log alpha: the symmetric plateau is where the R_in of one teacher unit are equal, specialisation
    where they split."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    pos = traj.t > 0
    t = traj.t[pos]
    # below 1e-15 of its scale the risk is rounding noise (it can come out negative): drawn as the floor
    risk = np.maximum(traj.risk[pos], 1e-15 * max(np.max(np.abs(traj.risk)), 1e-300))
    axes[0].loglog(t, risk, lw=1.8)
    from .committee import committee_plateaus, specialisation_time

    for p in committee_plateaus(traj):
        if p.kind == "converged":
            continue
        axes[0].axvspan(p.t_start, p.t_end, color="C2" if p.kind == "symmetric" else "0.5", alpha=0.12)
        if p.kind == "symmetric":
            axes[0].annotate(f"symmetric plateau\n{p.level:.4g}", (np.sqrt(p.t_start * p.t_end), p.level),
                             fontsize=7, ha="center", va="bottom")
    t_spec = specialisation_time(traj)
    if np.isfinite(t_spec):
        for ax in axes:
            ax.axvline(t_spec, color="C3", lw=0.8, ls=":")
        axes[1].annotate("specialisation", (t_spec, 0.02), xycoords=("data", "axes fraction"), fontsize=7,
                         color="C3", rotation=90, ha="right", va="bottom")
    axes[0].set_xlabel("alpha = steps / d")
    axes[0].set_ylabel("risk (noise-free)")
    K, M = traj.v.shape[1], traj.A.size
    for i in range(K):
        for n in range(M):
            axes[1].semilogx(t, traj.R[pos, i, n], lw=1.2, label=f"R[{i},{n}]" if K * M <= 9 else None)
        for k in range(i, K):
            axes[2].semilogx(t, traj.Q[pos, i, k], lw=1.2, ls="-" if i == k else "--",
                             label=f"Q[{i},{k}]" if K <= 4 else None)
    axes[1].set_title("student-teacher overlaps R")
    axes[2].set_title("student overlaps Q (dashed: i != k)")
    for ax in axes[1:]:
        ax.set_xlabel("alpha = steps / d")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, ncol=2)
    meta = traj.meta
    fig.suptitle(f"committee K = {K}, M = {M}: sigma = {meta.get('sigma')}, phi = {meta.get('phi')}, "
                 f"{meta.get('output')} outputs, {meta.get('geometry', 'free')} geometry, {meta.get('dynamics')}, "
                 f"lr = {meta.get('lr')}, {meta.get('backend')} expectations", fontsize=10)
    return finish_figure(fig, path)


def plot_multi_index(traj, path=None, title=None):
    """A multi-index trajectory: risk against log-time with each plateau labelled by the target's
    monomials still unlearned there; the alignment of each direction; the residual of each term of
    the target. Saved to ``path`` when given. Returns the figure."""
    from ..symbolic.multi_hermite import monomial_name

    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    pos = traj.t > 0
    t = traj.t[pos]
    times = traj.direction_times()
    ax = axes[0]
    ax.semilogx(t, traj.risk[pos], lw=1.8, color="k")
    span = max(np.ptp(traj.risk), 1e-300)
    for p in find_plateaus(traj.t, traj.risk, tol=0.05, min_decades=0.3):
        ax.axvspan(p.t_start, p.t_end, color="C2", alpha=0.08)
    # one label per phase between successive learning times: the terms still unlearned there
    learned = sorted({tl for tl in traj.learning_times().values() if np.isfinite(tl)})
    edges = [first_change_time(traj) / 10, *learned, float(t[-1])]
    for lo, hi in zip(edges[:-1], edges[1:]):
        mid = float(np.sqrt(lo * hi))
        k = min(int(np.searchsorted(traj.t, mid)), len(traj) - 1)
        left = traj.unlearned(k)
        label = ("unlearned:\n" + "\n".join(monomial_name(a) for a in left)) if left else "all learned"
        ax.text(mid, traj.risk[k] + 0.03 * span, label, ha="center", va="bottom", fontsize=7)
    for j, tj in enumerate(times):
        if np.isfinite(tj):
            ax.axvline(tj, color=f"C{j}", ls="--", lw=0.8)
    ax.set_ylim(top=traj.risk.max() + 0.3 * span)
    ax.set_xlabel("t")
    ax.set_ylabel("population risk R(t)")
    ax.set_title("risk against log-time (plateaus shaded; terms unlearned in each phase)", fontsize=10)
    crop_flat_start(ax, [traj])

    ax = axes[1]
    align = traj.alignment()[pos]
    for j in range(traj.M):
        when = f", learned at t = {times[j]:.3g}" if np.isfinite(times[j]) else ", not learned"
        ax.semilogx(t, align[:, j], color=f"C{j}", lw=1.6, label=f"direction z{j + 1}{when}")
        if np.isfinite(times[j]):
            ax.axvline(times[j], color=f"C{j}", ls="--", lw=0.8)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("t")
    ax.set_ylabel("RMS alignment sqrt(sum_i w_i s_ij^2)")
    ax.set_title("alignment with each direction", fontsize=10)
    ax.legend(fontsize=7)
    crop_flat_start(ax, [traj])

    ax = axes[2]
    support = [tuple(a) for a in traj.meta["support"]]
    for n, alpha in enumerate(support):
        col = traj.multi_indices.index(alpha)
        r = np.abs(traj.residuals[pos, col])
        ax.loglog(t, np.maximum(r, 1e-300), lw=1.4, label=f"|r| of {monomial_name(alpha)}")
    ax.set_ylim(1e-12, 3 * max(np.abs(traj.residuals).max(), 1e-12))
    ax.set_xlabel("t")
    ax.set_ylabel("|r_alpha(t)|")
    ax.set_title("residual of each term of the target", fontsize=10)
    ax.legend(fontsize=7)
    crop_flat_start(ax, [traj])
    meta = traj.meta
    fig.suptitle(title or f"sigma = {meta.get('sigma', '?')},  phi = {meta.get('phi', '?')} (M = {traj.M}, leap "
                 f"{meta.get('leap_complexity', '?')}),  eps = {meta.get('eps', float('nan')):.3g}, K = "
                 f"{meta.get('kmax', '?')}, N = {traj.a.shape[1]}", fontsize=10)
    return finish_figure(fig, path)
