"""Argument checks shared by every stage: a clear InputError naming the value and what is allowed."""

import math
import os

import numpy as np

from .errors import InputError


def positive_float(name: str, value, hint: str = "") -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(f"{name} must be a positive finite number{hint}, got {value!r}")
    return v


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def seed_value(name: str, seed):
    """A seed for NumPy's generators: None or a non-negative integer."""
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"{name} must be a non-negative integer, got {seed!r}")
    return int(seed)


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(nbytes: float, what: str):
    """Refuse, with the numbers, work whose arrays would not fit in this machine's memory."""
    have = physical_memory()
    if have and nbytes > 0.8 * have:
        raise InputError(f"{what} needs about {nbytes / 2**30:.3g} GiB of memory; this machine has "
                         f"{have / 2**30:.3g} GiB")
