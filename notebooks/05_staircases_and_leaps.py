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
# # Staircases and leaps: multi-index targets in the mean-field dynamics
#
# The target depends on $M$ directions, $y = \varphi(z_1, \dots, z_M)$ with $z = U_*^T x$. Each neuron
# is a particle $(a, s)$ with alignment $s = U_*^T u \in \mathbb R^M$; the risk depends on the moments
# $M_\alpha = \sum_j w_j a_j s_j^\alpha$ through the multivariate Hermite coefficients $\varphi_\alpha$
# (docs/multi-index.md). The **leap complexity** of the target (Abbe, Boix-Adsera, Misiakiewicz 2023)
# says how many new directions one term must bring at once: 1 for a staircase, which the mean-field flow
# learns direction by direction from $s = 0$; 2 or more for a leap, which leaves $s = 0$ invariant, so
# it is learned only from a finite-$d$ start $s \sim N(0, 1/d)$, at a time that grows with $d$.
# Under `CI=true` the notebook runs on reduced sizes.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

from odehild.models.multi_index import MultiIndexModel, multi_index_start
from odehild.solve import solve
from odehild.solve.plot import plot_multi_index
from odehild.symbolic.multi_hermite import learning_order, multi_hermite

CI = os.environ.get("CI") == "true"
N = 60 if CI else 500
SIGMA = "h(0,z)+h(1,z)+h(2,z)+h(3,z)"

# %% [markdown]
# ## Hermite data and leap complexity

# %%
for phi in ["z1 + z1*z2 + z1*z2*z3", "z1*z2", "z1 + z1*z2*z3", "h(2,z1) + z1*z2"]:
    h = multi_hermite(phi, 3)
    order = [[f"z{j + 1}" for j in step] for step in learning_order(h.support)]
    print(f"{phi:>22}: leap {h.leap}, order {order}")

# %% [markdown]
# ## The staircase $z_1 + z_1 z_2 + z_1 z_2 z_3$, learned direction by direction
# Three drops, one per direction: the risk panel names the terms still unlearned in each phase, the
# alignment panel shows each direction turning on at its learning time (dashed).

# %%
staircase = MultiIndexModel(SIGMA, "z1 + z1*z2 + z1*z2*z3", K=3, eps=1e-6)
tr = solve(staircase, multi_index_start(N, 3), 5.0, progress=False)
print("learning time per direction:", tr.direction_times())
plot_multi_index(tr)
plt.show()

# %% [markdown]
# ## A leap-2 target: $z_1 z_2$
# From $s = 0$ the subspace stays invariant and the risk stays on its plateau forever; the model says
# so before integrating. From a finite-$d$ start the plateau ends, later for larger $d$.

# %%
leap = MultiIndexModel(SIGMA, "z1*z2", K=3, eps=1e-4)
print(leap.invariance_report(np.zeros((N, 2))))
dims = [100, 1000] if CI else [100, 1000, 10000, 100000]
fig, ax = plt.subplots(figsize=(6, 4))
flat = solve(leap, multi_index_start(N, 2), 200.0, progress=False)
ax.semilogx(flat.t[1:], flat.risk[1:], "k--", label="s0 = 0 (mean-field limit)")
leave = []
for d in dims:
    run = solve(leap, multi_index_start(N, 2, s0_dim=d, s0_seed=1), 200.0, progress=False)
    leave.append(run.learning_times()[(1, 1)])
    ax.semilogx(run.t[1:], run.risk[1:], label=f"s0 ~ N(0, 1/d), d = {d}")
ax.set_xlabel("t")
ax.set_ylabel("risk")
ax.legend(fontsize=8)
ax.set_title("z1*z2: the plateau ends only at finite d")
plt.show()
print("time to learn z1*z2 against d:", dict(zip(dims, np.round(leave, 3))))

# %% [markdown]
# ## Learning times over an eps sweep
# Each direction's learning time (the first time the residual of the first term that uses it halves)
# against eps, with the fitted power law.

# %%
eps_list = [1e-3, 1e-6] if CI else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-8]
times = []
for eps in eps_list:
    run = solve(staircase.with_eps(eps), multi_index_start(N, 3), 5.0, progress=False)
    times.append(run.direction_times())
times = np.array(times)
fig, ax = plt.subplots(figsize=(6, 4))
for j in range(3):
    slope = np.polyfit(np.log10(eps_list), np.log10(times[:, j]), 1)[0]
    ax.loglog(eps_list, times[:, j], "o-", label=f"direction z{j + 1}: slope {slope:.3f}")
ax.set_xlabel("eps")
ax.set_ylabel("learning time")
ax.legend(fontsize=8)
ax.set_title("staircase: learning time per direction")
plt.show()
print(np.column_stack([eps_list, times]))
