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
# # Deriving the ODEs for a new activation or link function
#
# A model is declared once, from expressions in `z` (parsed safely, never evaluated): odehild expands
# them in normalized Hermite polynomials $He_k/\sqrt{k!}$, derives the mean-field risk, right-hand side
# and Jacobian symbolically, and generates cached Numba code. Here: three link functions on the same
# activation, and what changes.
#
# - `tanh(z)`: odd, information exponent 1, no closed-form coefficients (certified quadrature);
# - `relu(z)`: exact coefficients, slowly decaying Hermite tail;
# - a user polynomial, `z**3 - 3*z` + `z**2 - 1` = $\sqrt6\,h_3 + \sqrt2\,h_2$: information exponent 2, so
#   the first-degree phase is absent and learning starts on the slower degree-2 time scale.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Markdown, display

from odehild import hermite
from odehild.solve import initial_condition, solve
from odehild.solve.analysis import learning_times
from odehild.models.meanfield import MeanFieldModel
from odehild.symbolic.render import render_meanfield

QUICK = os.environ.get("CI", "").lower() == "true"
K = 4 if QUICK else 6
SIGMA = "h(0,z)+h(1,z)+h(2,z)+h(3,z)+h(4,z)"
LINKS = {"tanh": "tanh(z)", "ReLU": "relu(z)", "polynomial": "z**3 - 3*z + z**2 - 1"}

# %% [markdown]
# ## Hermite coefficients
# `hermite(expr, kmax)` returns exact SymPy values where it can find them and otherwise quadrature
# with a certified error bound; `tail` is what the truncation at K leaves out of $\mathbb E[\varphi^2]$.

# %%
expansions = {name: hermite(expr, K) for name, expr in LINKS.items()}
for name, h in expansions.items():
    exact = [str(e) if e is not None else f"{c:.6g}" for c, e in zip(h.coefficients, h.exact)]
    print(f"{name:>10}: information exponent {h.information_exponent}, tail {h.tail:.2e}")
    print(" " * 12 + ", ".join(exact))

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
width = 0.27
for j, (name, h) in enumerate(expansions.items()):
    ax.bar(np.arange(K + 1) + (j - 1) * width, np.abs(h.coefficients), width, label=name)
ax.set_yscale("log")
ax.set_ylim(1e-4, 5)
ax.set_xlabel("degree k")
ax.set_ylabel("|phi_k|")
ax.legend()
plt.show()

# %% [markdown]
# ## The derived equations
# The same symbolic declaration renders to Markdown with LaTeX (this is what `derivations/` holds).
# Shown for the polynomial link; the others differ only in the coefficients.

# %%
models = {name: MeanFieldModel(SIGMA, expr, K=K, eps=1e-6) for name, expr in LINKS.items()}
display(Markdown(render_meanfield(models["polynomial"])))

# %% [markdown]
# ## What changes in the dynamics
# Same activation, same eps, same initial particles. Before integrating, `model.learnability()` says
# from the Hermite data alone which degrees can be learned and where the risk must end (the floor).
# The polynomial has $\varphi_1 = 0$: from $s(0) = 0$ the alignment stays 0 for ever (docs/model.md,
# section 5) and nothing but the constant is learned. A small random initial alignment $s(0) = \pm s_0$
# (the size of $1/\sqrt d$) lets it escape after a delay of order $\log(1/s_0)$: the escape time is set
# by $s_0$, not by the degree-2 time scale $\varepsilon^{1/4}$.

# %%
from odehild.solve import InitialCondition

init = initial_condition(60 if QUICK else 200)
rng = np.random.default_rng(0)
tilted = InitialCondition(init.a0, 0.01 * rng.choice([-1.0, 1.0], init.N), init.weights,
                          description="s0 = +-0.01")
runs = {name: (model, init) for name, model in models.items()}
runs["polynomial, s0 = +-0.01"] = (models["polynomial"], tilted)
for name, model in models.items():
    print(f"{name}:\n" + model.learnability().summary())

fig, ax = plt.subplots(figsize=(7, 4))
for name, (model, start) in runs.items():
    tr = solve(model, start, t_end=20.0, progress=False)
    lt = learning_times(tr.t, tr.residuals)
    ax.loglog(tr.t[1:], tr.risk[1:] / tr.risk[0], label=f"{name} (R(0) = {tr.risk[0]:.3g})")
    shown = ", ".join(f"t_{k} = {v:.2g}" for k, v in enumerate(lt) if np.isfinite(v))
    print(f"{name:>24}: risk {tr.risk[0]:.3f} -> {tr.risk[-1]:.2e}, max |s| {np.abs(tr.s[-1]).max():.2f}; "
          f"learning times {shown or 'none'}")
ax.set_xlabel("t")
ax.set_ylabel("risk / initial risk (truncated at K)")
ax.set_title(f"sigma = {SIGMA}, eps = 1e-6: risks of different sizes, normalised")
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ### The escape from s0 != 0 is a log(1/s0) delay

# %%
for s0 in ([1e-2, 1e-3] if QUICK else [1e-2, 1e-3, 1e-4]):
    start = InitialCondition(init.a0, s0 * rng.choice([-1.0, 1.0], init.N), init.weights, description=f"s0 = +-{s0:g}")
    tr = solve(models["polynomial"], start, t_end=20.0, points=1000, progress=False)
    print(f"s0 = {s0:g}: t_2 = {learning_times(tr.t, tr.residuals)[2]:.3g}")

# %% [markdown]
# ## A sign obstruction: tanh stalls after degree 1
# With $\sigma = h_0 + \dots + h_4$ the tanh link cannot be learned beyond degree 1 from $s_0 = 0$, for
# two reasons the learnability report names:
#
# - $\sigma_5 = 0$: degree 5 is out of reach of this activation whatever happens;
# - degree 3 is **sign-obstructed**. The degree-1 phase drives every particle to
#   $\mathrm{sign}(s) = \mathrm{sign}(a\,\sigma_1\varphi_1)$, so afterwards $a s\,\sigma_1\varphi_1 > 0$ for all
#   of them and $M_3 = \mathbb E[a s^3] = \mathbb E[a s \cdot s^2]$ has the sign of $\sigma_1\varphi_1 > 0$; the
#   target $M_3 = \varphi_3/\sigma_3 < 0$ is out of reach: in phase $l$ (odd) $|s|$ grows only if
#   $\sigma_1\varphi_1\sigma_l\varphi_l > 0$.
#
# So the risk stalls near $\frac12(\varphi_3^2 + \varphi_5^2)$ plus half the tail beyond K, not at
# $\frac12\varphi_3^2$ + tail/2. The stall is not a fixed point: the alignments keep shrinking slowly
# (median $|s|$ decays like $t^{-1/4}$). Flipping the sign of $\sigma_3$ removes the obstruction, and a
# finite-d start escapes it too when $s_0 \sim d^{-1/2} \gg \sqrt\varepsilon$: below, $s_0 \sim 10^{-2}$
# at $\varepsilon = 10^{-10}$ (a factor 1000) learns degree 3 before $t = 0.1$; at $\varepsilon = 10^{-8}$
# (a factor 100) the same start still stalls at $t = 20$ (measured; not shown).

# %%
TANH_EPS = 1e-10
tanh_model = MeanFieldModel(SIGMA, "tanh(z)", K=K, eps=TANH_EPS)
learn = tanh_model.learnability()
print(learn.summary())
fig, ax = plt.subplots(figsize=(7, 4))
sign_start = InitialCondition(init.a0, 1e-2 * rng.standard_normal(init.N), init.weights, description="s0 ~ N(0, 1e-4)")
cases = [(SIGMA, init, "s0 = 0"), ("h(0,z)+h(1,z)+h(2,z)-h(3,z)+h(4,z)", init, "s0 = 0"), (SIGMA, sign_start, "s0 ~ N(0, 1e-4)")]
for sig, start, how in cases:
    tr = solve(MeanFieldModel(sig, "tanh(z)", K=K, eps=TANH_EPS), start, t_end=20.0, progress=False)
    lt = learning_times(tr.t, tr.residuals)
    ax.semilogx(tr.t[1:], tr.risk[1:], label=f"sigma = {sig}, {how}")
    print(f"sigma = {sig}, {how}: final risk {tr.risk[-1]:.5f}, r_3 = {tr.residuals[-1, 3]:+.4f}, t_3 = {lt[3]:.3g}, "
          f"median |s| {np.median(np.abs(tr.s[-1])):.3g}")
ax.axhline(learn.floor, ls=":", color="gray")
ax.text(1e-11, learn.floor, f" floor (phi_3^2 + phi_5^2)/2 + tail/2 = {learn.floor:.5f}", va="bottom", fontsize=7)
ax.set_xlabel("t")
ax.set_ylabel("population risk, phi = tanh")
ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## Expressions are parsed, never evaluated
# Only a whitelist of symbols and functions is accepted; anything else is refused by name.

# %%
from odehild import ExpressionError

for bad in ("__import__('os').system('ls')", "x + 1", "open('f')"):
    try:
        hermite(bad, 2)
    except ExpressionError as exc:
        print(f"{bad!r}: {exc}")
