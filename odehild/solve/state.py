"""The one map between named, shaped order parameters and the flat vector the solvers integrate.

Every model kind describes its state as a :class:`StateMap` of blocks; packing, unpacking (time on
the first axis) and the description of a state in an error message all go through it, so a
symmetric matrix is stored as its upper triangle in one place only.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..errors import InputError

LAYOUTS = ("full", "upper", "offdiag")
CHARTS = ("identity", "artanh")
# a block in the artanh chart stores u = artanh(x); |x| = 1 is a fixed point of the flows that use it,
# kept as the u whose tanh rounds to +-1
U_AT_UNIT_OVERLAP = 20.0


@dataclasses.dataclass(frozen=True)
class Block:
    """One named order parameter.

    ``layout``: ``full`` (every entry), ``upper`` (a symmetric (n, n) matrix by its upper triangle,
    diagonal included, row-major) or ``offdiag`` (a symmetric matrix with unit diagonal by its strict
    upper triangle). ``chart``: ``identity``, or ``artanh`` (values in [-1, 1] stored as artanh).
    """

    name: str
    shape: tuple
    layout: str = "full"
    chart: str = "identity"

    def __post_init__(self):
        if self.layout not in LAYOUTS or self.chart not in CHARTS:
            raise ValueError(f"block {self.name}: layout {self.layout!r} / chart {self.chart!r} unknown")
        if self.layout != "full" and (len(self.shape) != 2 or self.shape[0] != self.shape[1]):
            raise ValueError(f"block {self.name}: a symmetric layout needs a square shape, got {self.shape}")

    @property
    def size(self) -> int:
        if self.layout == "full":
            return int(np.prod(self.shape, dtype=np.int64))
        n = self.shape[0]
        return n * (n + 1) // 2 if self.layout == "upper" else n * (n - 1) // 2

    def _triangle(self):
        return np.triu_indices(self.shape[0], 0 if self.layout == "upper" else 1)

    def pack(self, value) -> np.ndarray:
        x = np.asarray(value, dtype=float)
        if x.shape != self.shape:
            raise InputError(f"{self.name} must have shape {self.shape}, got {x.shape}")
        flat = x.ravel() if self.layout == "full" else x[self._triangle()]
        if self.chart == "artanh":
            unit = np.abs(flat) >= 1
            with np.errstate(divide="ignore"):
                flat = np.where(unit, np.sign(flat) * U_AT_UNIT_OVERLAP, np.arctanh(np.where(unit, 0.0, flat)))
        return flat

    def unpack(self, Y: np.ndarray, consume: bool = False) -> np.ndarray:
        """Values (T, *shape) from the block's columns Y (T, size); with ``consume`` the chart is
        applied in place and a full block comes back as a view of Y."""
        if self.chart == "artanh":
            Y = np.tanh(Y, out=Y) if consume else np.tanh(Y)
        T = Y.shape[0]
        if self.layout == "full":
            return Y.reshape((T,) + tuple(self.shape))
        n = self.shape[0]
        out = np.repeat(np.eye(n)[None], T, axis=0) if self.layout == "offdiag" else np.empty((T, n, n))
        iu = self._triangle()
        out[:, iu[0], iu[1]] = Y
        out[:, iu[1], iu[0]] = Y
        return out


class StateMap:
    """Named blocks laid out one after the other in the flat state vector."""

    def __init__(self, *blocks: Block):
        self.blocks = blocks
        self.slices, start = {}, 0
        for b in blocks:
            self.slices[b.name] = slice(start, start + b.size)
            start += b.size
        self.size = start

    @property
    def names(self) -> tuple:
        return tuple(b.name for b in self.blocks)

    def pack(self, values: dict) -> np.ndarray:
        return np.concatenate([b.pack(values[b.name]) for b in self.blocks]) if self.blocks else np.empty(0)

    def unpack(self, Y, consume: bool = False) -> dict:
        """{name: array}; with time on the first axis for Y of shape (T, size), without for (size,).
        ``consume=True`` lets Y be overwritten and its full blocks be returned as views (no copy of a
        (T, N) output at 10^5 particles). A float32 Y stays float32."""
        Y = np.asarray(Y)
        if Y.dtype != np.float32:
            Y = Y.astype(float, copy=False)
        single = Y.ndim == 1
        Y2 = Y[None] if single else Y
        if Y2.ndim != 2 or Y2.shape[1] != self.size:
            raise ValueError(f"state of shape {Y.shape} does not fit a map of size {self.size}")
        out = {b.name: b.unpack(Y2[:, self.slices[b.name]], consume) for b in self.blocks}
        return {k: v[0] for k, v in out.items()} if single else out

    def describe(self, y) -> str:
        """``|a| max = 1.2, |s| max = 0.3``: the size of each block of one state, for error messages."""
        parts = []
        for name, value in self.unpack(y).items():
            parts.append(f"|{name}| max = {np.max(np.abs(value)) if np.size(value) else 0.0:.3g}")
        return ", ".join(parts)

    def __repr__(self):
        return "StateMap(" + ", ".join(f"{b.name}{list(b.shape)}:{b.layout}" for b in self.blocks) + ")"
