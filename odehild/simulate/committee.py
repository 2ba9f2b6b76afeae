"""Online SGD of the real committee network (free first layer) from weights drawn once, and its
distance to the overlap ODE started from the same weights' overlaps."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .. import __version__
from ..checks import positive_float, positive_int, seed_value
from ..codegen.numba_gen import compile_model
from ..errors import InputError, IntegrationError
from ..io import load_npz, save_npz
from ..models.committee import CommitteeInit, CommitteeModel, overlaps, pack, random_weights
from ..symbolic.committee import output_scale
from ..threads import blas_threads
from .networks import record_steps, sample_stream

DIVERGED = 1e6  # |overlap| beyond this: the run diverged (learning rate too large)


@dataclasses.dataclass
class CommitteeSimulation:
    """Overlaps of one SGD run at recorded steps: ``t`` = alpha = step/d (T,), ``Q``, ``R``, ``v``,
    ``risk`` (population risk of the network at those weights, exact from the overlaps)."""

    t: np.ndarray
    step: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    v: np.ndarray
    risk: np.ndarray
    T: np.ndarray
    A: np.ndarray
    meta: dict = dataclasses.field(default_factory=dict)

    ARRAYS = ("t", "step", "Q", "R", "v", "risk", "T", "A")

    def save(self, path):
        return save_npz(path, {k: getattr(self, k) for k in self.ARRAYS}, self.meta)

    @classmethod
    def load(cls, path) -> "CommitteeSimulation":
        arrays, meta = load_npz(path, required=cls.ARRAYS)
        return cls(**{k: arrays[k] for k in cls.ARRAYS}, meta=meta)

    @property
    def init(self) -> CommitteeInit:
        """The overlaps this run started from: the ODE's initial condition."""
        return CommitteeInit(self.Q[0], self.R[0], self.T, self.v[0], self.A, "overlaps of the simulation's start")


def simulate_committee(model: CommitteeModel, K: int, M: int, d: int, *, lr: float, lr2: float = 0.0,
                       noise: float = 0.0, alpha_end: float = 100.0, points: int = 100, seed=0,
                       scale: float = None, v0=None, A=None, weights=None) -> CommitteeSimulation:
    """Online SGD at input dimension d for alpha_end * d steps, overlaps recorded at ``points``
    log-spaced steps. The student starts with i.i.d. N(0, scale^2) weights (Q close to scale^2 I,
    default scale 0.5; on the sphere rows of norm sqrt(d), Q_ii = 1), the teacher with T = I; v0 and
    A default to ones. ``weights`` = (W, W*)
    overrides the draw. The ODE's initial condition is ``result.init``: the same weights' overlaps."""
    if model.dynamics != "sgd":
        raise InputError("a simulation is online SGD: declare the model with dynamics='sgd'")
    K, M, d = positive_int("K", K), positive_int("M", M), positive_int("d", d)
    lr = positive_float("lr", lr)
    alpha_end = positive_float("alpha_end", alpha_end)
    if lr2 < 0 or noise < 0:
        raise InputError(f"lr2 and noise must be >= 0, got {lr2!r}, {noise!r}")
    seed = seed_value("seed", seed)
    sphere = model.geometry == "sphere"
    if weights is None:
        W, Ws = random_weights(K, M, d, scale=0.5 if scale is None else scale, seed=seed, sphere=sphere)
    else:
        W, Ws = (np.array(w, dtype=float) for w in weights)
        if W.shape != (K, d) or Ws.shape != (M, d):
            raise InputError(f"weights must have shapes {(K, d)} and {(M, d)}, got {W.shape}, {Ws.shape}")
        if sphere:
            W *= np.sqrt(d) / np.linalg.norm(W, axis=1, keepdims=True)
            Ws *= np.sqrt(d) / np.linalg.norm(Ws, axis=1, keepdims=True)
    v = np.ones(K) if v0 is None else np.array(v0, dtype=float)
    A = np.ones(M) if A is None else np.array(A, dtype=float)
    compiled = compile_model(model)
    c, ct = output_scale(model.output, K), output_scale(model.output, M)
    nsteps = int(round(alpha_end * d))
    steps = record_steps(nsteps, points)
    rng = sample_stream(seed)
    Qs, Rs, vs, done = [], [], [], 0
    wall = time.perf_counter()
    with blas_threads(1):  # the overlaps at each record are small products: one BLAS thread
        for target in steps:
            if target > done:
                ran = compiled.sgd_steps(W, Ws, v, A, int(target - done), lr, lr2, noise, c, ct, sphere, rng)
                done += ran
            init = overlaps(W, Ws, v, A) if np.all(np.isfinite(W)) else None
            if init is None or np.max(np.abs(init.Q)) > DIVERGED:
                raise IntegrationError(f"SGD diverged at alpha = {done / d:.4g} (lr = {lr:g}): overlaps beyond "
                                       f"{DIVERGED:g}; lower the learning rate", t_fail=done / d)
            Qs.append(init.Q), Rs.append(init.R), vs.append(init.v.copy())
    T = Ws @ Ws.T / d
    Y = np.array([pack(CommitteeInit(q, r, T, vv, A)) for q, r, vv in zip(Qs, Rs, vs)])
    risk = compiled.risk_series(Y, K, M, T, A, c, ct)
    meta = {**model.meta(), "K": K, "M": M, "d": d, "lr": lr, "lr2": lr2, "noise": noise, "seed": seed,
            "alpha_end": alpha_end, "wall_seconds": time.perf_counter() - wall, "odehild": __version__}
    return CommitteeSimulation(steps / d, steps, np.array(Qs), np.array(Rs), np.array(vs), risk, T, A, meta)


def committee_distance(traj, sim) -> dict:
    """Sup over the simulation's times of |risk_sim - risk_ode| and of the largest overlap
    difference (Q, R, v), the ODE interpolated in log-alpha."""
    t = sim.t
    if traj.t[-1] < t[-1] * (1 - 1e-9):
        raise InputError(f"the trajectory ends at alpha = {traj.t[-1]:g}, before the simulation ({t[-1]:g})")
    lt = np.log10(np.maximum(traj.t, 1e-300))
    at = np.log10(np.maximum(t, 1e-300))

    def interp(values):
        flat = values.reshape(values.shape[0], -1)
        return np.stack([np.interp(at, lt, flat[:, j]) for j in range(flat.shape[1])], axis=1).reshape(
            (t.size,) + values.shape[1:])

    risk = interp(traj.risk[:, None])[:, 0]
    dQ = np.abs(interp(traj.Q) - sim.Q).reshape(t.size, -1).max(axis=1)
    dR = np.abs(interp(traj.R) - sim.R).reshape(t.size, -1).max(axis=1)
    dv = np.abs(interp(traj.v) - sim.v).max(axis=1)
    return {"risk_sup": float(np.max(np.abs(risk - sim.risk))),
            "overlap_sup": float(max(dQ.max(), dR.max(), dv.max())), "d": sim.meta.get("d")}


def plot_committee_comparison(traj, sims, path=None):
    """Risk and the student-teacher overlaps R of the ODE (lines) and of each simulation (dots)
    against log alpha."""
    from ..solve.plot import finish_figure, pyplot

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    pos = traj.t > 0
    floor = 1e-15 * max(np.max(np.abs(traj.risk)), 1e-300)
    axes[0].loglog(traj.t[pos], np.maximum(traj.risk[pos], floor), color="k", lw=1.6, label="ODE")
    K, M = traj.v.shape[1], traj.A.size
    for j, sim in enumerate(sims):
        sp_ = sim.t > 0
        axes[0].loglog(sim.t[sp_], np.maximum(sim.risk[sp_], floor), ".", ms=3, alpha=0.7,
                       label=f"SGD seed {sim.meta.get('seed')}" if j < 6 else None)
        for i in range(K):
            for n in range(M):
                axes[1].semilogx(sim.t[sp_], sim.R[sp_, i, n], ".", ms=2, color=f"C{(i * M + n) % 10}", alpha=0.5)
    for i in range(K):
        for n in range(M):
            axes[1].semilogx(traj.t[pos], traj.R[pos, i, n], color=f"C{(i * M + n) % 10}", lw=1.2)
    axes[0].set_ylabel("risk (noise-free)")
    axes[1].set_ylabel("R_in (lines: ODE, dots: SGD)")
    for ax in axes:
        ax.set_xlabel("alpha = steps / d")
    axes[0].legend(fontsize=7)
    d = sims[0].meta.get("d") if sims else None
    fig.suptitle(f"committee K = {K}, M = {M}, d = {d}: online SGD against the overlap ODE", fontsize=10)
    return finish_figure(fig, path)
