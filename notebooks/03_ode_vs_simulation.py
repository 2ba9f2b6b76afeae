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
# # The ODE against finite networks
#
# The mean-field ODE is a prediction for $m, d \to \infty$. Here it is checked against networks that
# are actually trained: online SGD on fresh Gaussian samples (step $\eta = 0.01/d$, time $t = \eta\cdot$
# step), with bands over seeds; and the exact population gradient flow at finite $(m, d)$ from random
# starts, whose distance to the ODE should shrink as $d$ grows with $m = d/8$.
#
# Model: the degree-2 staircase $\sigma = h_0 + h_1 + h_2$, $\varphi = h_1 + h_2$, $\varepsilon = 0.05$.
# Under `CI=true` the sizes are reduced.

# %%
import os
import time

import matplotlib.pyplot as plt
import numpy as np

from odehild.simulate import online_sgd
from odehild.simulate.compare import compare, convergence_study, plot_comparison, plot_convergence
from odehild.solve import initial_condition, solve
from odehild.models.meanfield import MeanFieldModel

QUICK = os.environ.get("CI", "").lower() == "true"
SIGMA, PHI, EPS, T_END = "h(0,z)+h(1,z)+h(2,z)", "h(1,z)+h(2,z)", 0.05, 3.0
WIDTH, DIM, SEEDS = (32, 256, 3) if QUICK else (64, 1000, 5)
started = time.perf_counter()  # this notebook reports its own run time at the end

# the ODE's output starts where SGD's first record is (one step, t = lr = 0.01/d), not at eps/100
ode = solve(MeanFieldModel(SIGMA, PHI, K=2, eps=EPS), initial_condition(400), T_END, t_min=0.01 / DIM,
            progress=False)
ode.meta.update({"sigma_expr_input": SIGMA, "phi_expr_input": PHI})
sims = [online_sgd(SIGMA, PHI, EPS, WIDTH, DIM, t_end=T_END, seed=s, kmax=2) for s in range(SEEDS)]
print(f"ODE: N = 400 particles, {ode.stats['solve_seconds']:.2f} s; SGD: m = {WIDTH}, d = {DIM}, "
      f"{SEEDS} seeds, {sum(s.meta['wall_seconds'] for s in sims):.1f} s")

# %% [markdown]
# ## Risk: ODE and the band over seeds
# The band is the range over seeds, the dashed line their mean. At finite width the risk cannot go
# below the floor $\approx \mathbb E[a^2]/m$ left by the finite number of neurons.

# %%
t = sims[0].t
risks = np.array([s.risk for s in sims])
fig, ax = plt.subplots(figsize=(7, 4))
ax.fill_between(t[1:], risks.min(0)[1:], risks.max(0)[1:], alpha=0.3, label=f"SGD, {SEEDS} seeds (range)")
ax.semilogx(t[1:], risks.mean(0)[1:], "--", label="SGD mean")
ax.semilogx(ode.t[1:], ode.risk[1:], "k", label="mean-field ODE")
ax.set_xlabel("t = lr * step")
ax.set_ylabel("population risk")
ax.legend()
plt.show()

cmp = compare(ode, sims)
print(f"sup risk distance {cmp.sup_risk_distance:.3f}, L2 (log-time) {cmp.l2_risk_distance:.3f}, "
      f"sliced W1 of the (a, s) laws at the end {cmp.law_distance:.3f}")

# %% [markdown]
# The same comparison as odehild draws it (`odehild compare ... --plot`): risks, learning times and the
# distance between the laws of $(a, s)$ over time.

# %%
plot_comparison(cmp)
plt.show()

# %% [markdown]
# ## Convergence in d
# Exact population gradient flow at finite $(m, d)$, $m = d/8$, three seeds per $d$: the distances
# to the ODE against $d$ on log-log axes, with fitted slopes. The test suite asserts an L2 slope in
# $[-1.5, -0.3]$ for $d = 32 \ldots 256$.
#
# The risk distances converge; the distance between the laws of $(a, s)$ at the end barely does at
# these sizes, and that is expected. It compares $m = d/8$ neurons (4 to 64 here) with the ODE's law, so
# it is dominated by the sampling error of $m$ draws: at the first time it is the distance of $m$
# samples of $a_0 \sim N(0,1)$ to the law itself, which falls like $m^{-1/2}$ (`law_distance_start`,
# slope near $-1/2$). By the end the $a$-marginal has spread (the ODE's tail particles reach $|a|$ of
# about 20) and a few neurons decide the distance, so it falls more slowly and noisily. The risk, an
# average over neurons, is the quantity that converges at these sizes.

# %%
dims = [32, 64, 128] if QUICK else [32, 64, 128, 256, 512]
rows, slopes = convergence_study(SIGMA, PHI, EPS, dims, width_of_d=lambda d: d // 8, seeds=(0, 1, 2),
                                 t_end=T_END, kmax=2)
for r in rows:
    print(f"d = {r['dim']:>4}, m = {r['width']:>3}: sup {r['sup_risk_distance']:.3f}, "
          f"L2 {r['l2_risk_distance']:.3f}, law at the end {r['law_distance']:.3f}, at the start {r['law_distance_start']:.3f}")
print("slopes:", {k: round(v, 2) for k, v in slopes.items()})
plot_convergence(rows, slopes)
plt.show()

# %%
print(f"notebook run time: {time.perf_counter() - started:.0f} s on this machine ({os.cpu_count()} cores)")
