"""Where :func:`odehild.symbolic.hermite.hermite` caches its expansions, and their numbers, without SymPy.

An expansion is cached by the expression as given (text, or SymPy's srepr) and kmax, under the hash
of the expanding module and the version. The full expansion (SymPy values included) is a pickle;
beside it a JSON file holds the numbers a solve needs (the expression's text, the coefficients and
E[f^2]), written when a declaration expands a string (:func:`odehild.symbolic.founding.as_function`)
and read by the next one without importing SymPy (0.3 s and 33 MB of a 1 s run).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

# entries of another version of the expanding code are not trusted (hashed without importing it)
HERMITE_SHA = hashlib.sha256(Path(__file__).with_name("hermite.py").read_bytes()).hexdigest()[:16]


def entry(given: str, kmax: int) -> Path:
    """The cache path of an expansion, without suffix: ``.pickle`` (the expansion), ``.json`` (its
    numbers)."""
    from .. import __version__
    from ..io import cache_dir

    key = hashlib.sha256(json.dumps([given, kmax, HERMITE_SHA, __version__]).encode()).hexdigest()[:32]
    return cache_dir() / "hermite" / key


def load_numbers(text: str, kmax: int):
    """{"expression", "coefficients" (kmax + 1 floats), "norm2"} of the expansion of ``text`` cached
    earlier, or None (never cached, damaged or foreign: the caller expands it)."""
    try:
        numbers = json.loads(entry(text, kmax).with_suffix(".json").read_text())
        coefficients = [float(c) for c in numbers["coefficients"]]
        norm2 = float(numbers["norm2"])
        expression = numbers["expression"]
    except Exception:  # missing, damaged or foreign: expand again
        return None
    if (not isinstance(expression, str) or len(coefficients) != kmax + 1
            or not all(math.isfinite(c) for c in coefficients + [norm2])):
        return None
    return {"expression": expression, "coefficients": coefficients, "norm2": norm2}


def store_numbers(text: str, expansion) -> None:
    """Write the numbers of ``expansion`` (of the string ``text``) beside its pickle."""
    from ..errors import OdehildError
    from ..io import atomic_write

    numbers = {"expression": expansion.expression, "coefficients": [float(c) for c in expansion.coefficients],
               "norm2": float(expansion.norm2)}
    try:
        with atomic_write(entry(text, expansion.kmax).with_suffix(".json"), "w") as fh:
            json.dump(numbers, fh)
    except (OdehildError, OSError):
        pass  # an unwritable cache only costs the next run SymPy's import
