"""Argument checks shared by every stage: a clear InputError naming the value and what is allowed."""

import math

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
