"""What the founding model's mean-field dynamics can learn, from the Hermite data alone.

Before integrating, the normalized coefficients of sigma and phi (truncated at K) already say which
degrees the risk can shed and so which plateaus a run can show (docs/model.md sections 2b and 3):

- degree k is a **target degree** when phi_k != 0;
- it is **unrepresentable** when sigma_k = 0: r_k = phi_k - sigma_k M_k cannot move;
- with s0 = 0 and phi_1 sigma_1 = 0, s = 0 is invariant (**trapped**): only degree 0 is learned;
- with s0 = 0, phase 1 leaves a s with the sign of sigma_1 phi_1 on every particle, so for odd
  l >= 3, M_l = E[a s^l] = E[a s s^(l-1)] keeps that sign and r_l cannot vanish when
  sigma_1 phi_1 sigma_l phi_l < 0 (**sign obstruction**). The run then stalls near the floor; the
  stall is not a fixed point, and a finite-d start (s0 ~ d^(-1/2) >> sqrt(eps)) escapes it.

The risk the dynamics can reach (the **floor**) is half the squared norm of the unreachable
target degrees plus half of phi's tail beyond K.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Learnability:
    """Which target degrees can be learned, and the risk levels between phases."""

    target_degrees: tuple
    unrepresentable: tuple
    trapped: tuple
    sign_obstructed: tuple
    reachable: tuple
    floor: float
    levels: dict  # {degree l: risk once every reachable degree <= l is learned}; -1: the start
    tail: float
    s0_zero: bool

    @property
    def unreachable(self) -> tuple:
        return tuple(sorted(set(self.unrepresentable) | set(self.trapped) | set(self.sign_obstructed)))

    @property
    def learns_nothing(self) -> bool:
        return not [k for k in self.reachable if k >= 1]

    def reasons(self) -> list:
        """One line per unreachable degree, and what would change it."""
        out = []
        for k in self.unrepresentable:
            out.append(f"degree {k}: sigma_{k} = 0, the activation cannot represent it "
                       f"(choose an activation with sigma_{k} != 0)")
        for k in self.trapped:
            out.append(f"degree {k}: phi_1 sigma_1 = 0 and s0 = 0, so s = 0 is invariant "
                       f"(start from s0 != 0, e.g. a finite-d start s0 ~ N(0, 1/d))")
        for k in self.sign_obstructed:
            out.append(f"degree {k}: sigma_1 phi_1 sigma_{k} phi_{k} < 0: after phase 1 every a s has the sign "
                       f"of sigma_1 phi_1, so M_{k} = E[a s^{k}] cannot reach phi_{k}/sigma_{k} from s0 = 0 "
                       f"(flip the sign of sigma_{k}, or start from s0 != 0)")
        return out

    def summary(self) -> str:
        lines = [f"target degrees (phi_k != 0, k <= K): {list(self.target_degrees) or 'none'}",
                 f"reachable: {list(self.reachable) or 'none'}; risk floor {self.floor:.6g}"
                 + (f" (includes half of phi's tail beyond K, {self.tail / 2:.3g})" if self.tail > 0 else "")]
        lines += ["  " + r for r in self.reasons()]
        if self.learns_nothing and self.target_degrees != (0,) and self.target_degrees:
            lines.append("  this run will only sit on a plateau: nothing beyond degree 0 can be learned")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"target_degrees": list(self.target_degrees), "unrepresentable": list(self.unrepresentable),
                "trapped": list(self.trapped), "sign_obstructed": list(self.sign_obstructed),
                "reachable": list(self.reachable), "floor": self.floor,
                "levels": {str(k): v for k, v in self.levels.items()}, "tail": self.tail, "s0_zero": self.s0_zero}


def learnability(sigma_coefficients, phi_coefficients, phi_norm2=None, s0_zero: bool = True,
                 tol: float = 1e-12) -> Learnability:
    """Learnability of phi by sigma (normalized Hermite coefficients c_0..c_K) in the mean-field
    dynamics, from s0 = 0 (the paper's start) or from s0 != 0 (``s0_zero=False``).
    ``phi_norm2`` (E[phi^2]) adds phi's tail beyond K to every level."""
    sig = np.asarray(sigma_coefficients, dtype=float)
    phi = np.asarray(phi_coefficients, dtype=float)
    K = min(sig.size, phi.size) - 1
    sig, phi = sig[: K + 1], phi[: K + 1]
    p2 = phi**2
    tail = 0.0 if phi_norm2 is None else max(float(phi_norm2) - float(p2.sum()), 0.0)
    target = tuple(k for k in range(K + 1) if abs(phi[k]) > tol)
    unrep = tuple(k for k in target if abs(sig[k]) <= tol)
    trapped, obstructed = (), ()
    if s0_zero and K >= 1:
        if abs(sig[1] * phi[1]) <= tol:
            trapped = tuple(k for k in target if k >= 1 and k not in unrep)
        else:
            obstructed = tuple(k for k in target if k >= 3 and k % 2 == 1 and k not in unrep
                               and sig[1] * phi[1] * sig[k] * phi[k] < 0)
    blocked = set(unrep) | set(trapped) | set(obstructed)
    reachable = tuple(k for k in target if k not in blocked)
    floor = 0.5 * (sum(p2[k] for k in blocked) + tail)
    levels = {-1: 0.5 * (float(p2.sum()) + tail)}
    for l in reachable:
        levels[l] = 0.5 * (sum(p2[k] for k in target if k > l or k in blocked) + tail)
    return Learnability(target, unrep, trapped, obstructed, reachable, float(floor),
                        {k: float(v) for k, v in levels.items()}, float(tail), bool(s0_zero))
