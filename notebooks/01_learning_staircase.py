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
# # The learning staircase of the founding model
#
# A two-layer network $f(x) = \frac1m \sum_i a_i \sigma(\langle w_i, x\rangle)$ learns a single-index
# target $\varphi(\langle u_*, x\rangle)$; the second layer moves $1/\varepsilon$ times faster than the
# first. In the mean-field limit each neuron is a particle $(a, s)$, $s = \langle w, u_*\rangle$, and
# the population risk only depends on the moments $M_k = \mathbb E[a s^k]$ (normalized Hermite
# coefficients $\sigma_k, \varphi_k$). The scenario (bmz-model.md, section 3): degree $l$ is learned
# on the time scale $t_1 \sim \sqrt\varepsilon \log(1/\varepsilon)$, $t_l \sim \varepsilon^{1/(2l)}$ for
# $l \ge 2$, with plateaus at $\frac12 \sum_{k>l} \varphi_k^2$ in between.
#
# This notebook integrates an eps sweep, marks the plateaus, collapses the drops in rescaled time and
# fits the exponents. Under `CI=true` it runs on reduced sizes.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from odehild.solve import initial_condition
from odehild.solve.analysis import find_plateaus, plateau_levels, predicted_exponent, timescale_sweep
from odehild.symbolic.models import MeanFieldModel

QUICK = os.environ.get("CI", "").lower() == "true"
SIGMA = "h(0,z)+h(1,z)+h(2,z)+h(3,z)"
PHI = "h(1,z)+h(2,z)+h(3,z)"
EPS = [1e-4, 1e-6, 1e-8] if QUICK else [1e-4, 1e-6, 1e-8, 1e-10, 1e-12]
N = 60 if QUICK else 400  # particles: quantiles of a0 ~ N(0, 1), s0 = 0

model = MeanFieldModel(SIGMA, PHI, K=3, eps=EPS[0])
fit, trajs = timescale_sweep(model, EPS, initial_condition(N), t_end=5.0, progress=False)
for tr in trajs:
    st = tr.stats
    print(f"eps = {tr.meta['eps']:.0e}: {st['nsteps']} Radau steps, {st['solve_seconds']:.2f} s, "
          f"risk {tr.risk[0]:.3f} -> {tr.risk[-1]:.2e}")

# %% [markdown]
# ## Risk against log-time, with the plateau levels
# The dotted lines are $\frac12\sum_{k>l}\varphi_k^2$ for $l = 0, 1, 2, 3$: 1.5, 1.0, 0.5 and 0.

# %%
levels = plateau_levels(model.phi.coefficients, model.phi.norm2)
fig, ax = plt.subplots(figsize=(7, 4))
colors = plt.cm.viridis(np.linspace(0, 0.9, len(trajs)))
for tr, c in zip(trajs, colors):
    ax.semilogx(tr.t[1:], tr.risk[1:], color=c, label=f"eps = {tr.meta['eps']:.0e}")
for lev in levels:
    ax.axhline(lev, ls=":", color="gray", lw=0.8)
ax.set_xlabel("t")
ax.set_ylabel("population risk")
ax.legend(fontsize=8)
plt.show()

smallest = trajs[-1]
for p in find_plateaus(smallest.t, smallest.risk):
    print(f"plateau at risk {p.level:.3f} over {p.decades:.1f} decades of time "
          f"(t = {p.t_start:.2e} .. {p.t_end:.2e})")

# %% [markdown]
# ## Collapse in rescaled time
# If degree $l$ is learned at $t_l \propto \varepsilon^{1/(2l)}$ ($\sqrt\varepsilon\log(1/\varepsilon)$
# for $l = 1$), the residual $r_l(t) = \varphi_l - \sigma_l M_l(t)$ plotted against $t / t_l^{\rm
# scenario}$ falls on one curve for every eps. Leading-order scaling only: the collapse sharpens as
# eps decreases.

# %%
def scenario_time(l, eps):
    return np.sqrt(eps) * np.log(1 / eps) if l == 1 else eps ** (1 / (2 * l))


fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharey=True)
for ax, l in zip(axes, (1, 2, 3)):
    for tr, c in zip(trajs, colors):
        e = tr.meta["eps"]
        ax.semilogx(tr.t[1:] / scenario_time(l, e), np.abs(tr.residuals[1:, l]), color=c, label=f"{e:.0e}")
    ax.set_xlim(1e-2, 1e2)
    ax.set_title(f"degree {l}: t / " + ("sqrt(eps) log(1/eps)" if l == 1 else f"eps^(1/{2 * l})"))
    ax.set_xlabel("rescaled time")
axes[0].set_ylabel("|r_l|")
axes[-1].legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Fitted exponents against the scenario
# Learning time of degree $k$: first time $|r_k| \le |r_k(0)|/2$. Slope of $\log t_k$ against
# $\log\varepsilon$. Degree 0 has nothing to learn here ($r_0(0) = 0$: the a0 quantiles are
# symmetric). The log factor of degree 1 pulls its slope below 1/2 at these eps.

# %%
print(f"{'degree':>6} {'fitted slope':>13} {'scenario':>9}")
for k in range(1, model.K + 1):
    print(f"{k:>6} {fit.slope[k]:>13.3f} {predicted_exponent(k):>9.3f}")

fig, ax = plt.subplots(figsize=(5, 4))
for k in range(1, model.K + 1):
    ax.loglog(fit.eps, fit.times[:, k], "o-", label=f"k = {k}: slope {fit.slope[k]:.3f} "
              f"(scenario {predicted_exponent(k):.3f})")
ax.set_xlabel("eps")
ax.set_ylabel("learning time t_k")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Particles in the (s, a) plane
# Late phases: small alignments $s \sim \varepsilon^{1/(2l)}$ and large second-layer weights
# $a \sim \varepsilon^{-(l-1)/(2l)}$.

# %%
from odehild.solve.plot import plot_trajectory

plot_trajectory(smallest)
plt.show()
