# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Committee machines: the plateau, specialisation, and SGD against the ODE at finite learning rate
#
# A $K$-unit student learns a $K$-unit teacher, $\sigma = \varphi = \mathrm{erf}(z/\sqrt2)$, sum
# outputs, $v = A = 1$ (Saad and Solla's soft committee machine; docs/committee.md). Three things:
#
# 1. from a nearly symmetric start the overlaps sit on the **symmetric plateau** (every student unit
#    equally aligned with every teacher unit), then **specialise**; the plateau's length grows like
#    $\ln(1/\delta_0)$ with the initial asymmetry $\delta_0$;
# 2. at a finite learning rate the $\eta^2$ terms of online SGD change the curve, and the real network
#    follows the SGD ODE, not the gradient flow;
# 3. the founding model at a finite SGD rate $\gamma = \eta d$: the gamma-ODE against online SGD.
#
# Under `CI=true` the sizes are reduced.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from odehild.simulate.committee import committee_distance, simulate_committee
from odehild.models.committee import CommitteeInit, CommitteeModel, solve_committee
from odehild.solve.committee import committee_plateaus, specialisation, specialisation_time
from odehild.models.finite_width import solve_finite_width

QUICK = os.environ.get("CI", "").lower() == "true"
ERF = "erf(z/sqrt(2))"
started = time.perf_counter()

# %% [markdown]
# ## 1. The symmetric plateau and specialisation (gradient flow, $K = M = 2$)
# The published plateau risk is $(K/\pi)[\pi/6 - K \arcsin(1/(2K))] = 0.011611$ for $K = 2$.

# %%
gf = CommitteeModel(ERF, ERF, dynamics="gf")
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
for delta in (1e-2, 1e-3, 1e-4, 1e-5):
    R0 = 1e-3 + delta * np.array([[1.0, -1.0], [-1.0, 1.0]])
    traj = solve_committee(gf, CommitteeInit(0.2 * np.eye(2), R0, np.eye(2), np.ones(2), np.ones(2)), 1e3, lr=1.0,
                           points=400, rtol=1e-10, atol=1e-12)
    sym = [p for p in committee_plateaus(traj) if p.kind == "symmetric"]
    t_spec = specialisation_time(traj)
    print(f"delta0 = {delta:.0e}: symmetric plateau at risk {sym[0].level:.5f} for alpha in "
          f"[{sym[0].t_start:.3g}, {sym[0].t_end:.3g}], specialisation at alpha = {t_spec:.1f}")
    axes[0].loglog(traj.t[1:], np.maximum(traj.risk[1:], 1e-14), label=f"delta0 = {delta:.0e}")
    axes[1].semilogx(traj.t[1:], specialisation(traj)[1:])
axes[0].axhline(0.011611, color="k", lw=0.6, ls=":")
axes[0].set_xlabel("alpha")
axes[0].set_ylabel("risk")
axes[0].legend(fontsize=7)
axes[1].set_xlabel("alpha")
axes[1].set_ylabel("specialisation")
plt.tight_layout()

# %% [markdown]
# Each factor 10 in $\delta_0$ adds the same time $\ln 10/\lambda_+$ to the plateau.
#
# ## 2. SGD at a finite learning rate: the $\eta^2$ terms matter
# $\eta = 1$: the gradient flow (same time unit) against the SGD ODE and online SGD of the real network,
# each ODE started from the simulation's own initial overlaps.

# %%
sgd = CommitteeModel(ERF, ERF)
d = 500 if QUICK else 2000
seeds = range(2 if QUICK else 4)
fig, ax = plt.subplots(figsize=(6, 4))
dist = []
for seed in seeds:
    sim = simulate_committee(sgd, 2, 2, d, lr=1.0, alpha_end=100, points=60, seed=seed)
    ode = solve_committee(sgd, sim.init, 100, lr=1.0, t_eval=sim.t)
    dist.append(committee_distance(ode, sim)["risk_sup"])
    ax.loglog(sim.t[1:], sim.risk[1:], ".", ms=3, color="C0", alpha=0.6, label="online SGD" if seed == 0 else None)
flow = solve_committee(gf, sim.init, 100, lr=1.0, t_eval=sim.t)
ax.loglog(ode.t[1:], ode.risk[1:], color="C1", label="SGD ODE (eta^2 terms)")
ax.loglog(flow.t[1:], flow.risk[1:], color="C2", ls="--", label="gradient flow")
ax.set_xlabel("alpha = steps / d")
ax.set_ylabel("risk")
ax.legend(fontsize=8)
print(f"d = {d}: sup risk distance SGD - ODE over {len(dist)} seeds: {np.mean(dist):.3g} ± "
      f"{np.std(dist, ddof=1) / np.sqrt(len(dist)):.2g}")

# %% [markdown]
# ## 3. The founding model at a finite SGD rate
# $m = 4$ neurons on the sphere, $\sigma = h_0 + h_1 + 0.5 h_2$, $\varphi = h_1 + 0.5 h_2$,
# $\varepsilon = 0.05$, online SGD at $\eta = \gamma / d$ against the gamma-ODE and the gradient flow.

# %%
from odehild.simulate.networks import online_sgd
from odehild.solve import InitialCondition

SIG, PHI = "h(0,z)+h(1,z)+0.5*h(2,z)", "h(1,z)+0.5*h(2,z)"
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
for ax, gamma in zip(axes, (0.2, 0.4)):
    sim = online_sgd(SIG, PHI, 0.05, 4, d, lr=gamma / d, t_end=3.0, seed=1, points=40)
    init = InitialCondition(sim.a[0], sim.s[0], None, sim.r0)
    for g, style, label in ((gamma, "-", f"gamma-ODE, gamma = {gamma}"), (0.0, "--", "gradient flow")):
        ode = solve_finite_width(SIG, PHI, init, 0.05, 3.0, gamma=g, t_eval=sim.t)
        ax.semilogx(ode.t[1:], ode.risk[1:], style, label=label)
    ax.semilogx(sim.t[1:], sim.risk[1:], ".", ms=4, label=f"online SGD, d = {d}")
    ax.set_xlabel("t = steps * eta")
    ax.legend(fontsize=7)
axes[0].set_ylabel("risk")
plt.tight_layout()
print(f"run time {time.perf_counter() - started:.0f} s")
