"""Symbolic stage: expression parsing, Hermite expansions, kernels and ODE derivations.

The names below are imported on first use: a warm solve reads its Hermite numbers and
learnability through submodules that do not import SymPy (0.3 s and 33 MB of a 1 s run)."""

import importlib
import sys
import types

_LAZY = {"HermiteExpansion": "hermite", "hermite": "hermite", "Kernel": "kernels", "U_kernel": "kernels",
         "V_kernel": "kernels", "kernel": "kernels", "parse_expression": "parse", "z": "parse"}

__all__ = ["HermiteExpansion", "hermite", "Kernel", "U_kernel", "V_kernel", "kernel",
           "parse_expression", "z"]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """``odehild.symbolic.hermite`` stays the function: importing the submodule of that name would
    otherwise bind the module over it, as an eager ``from .hermite import hermite`` used to undo."""

    def __setattr__(self, name, value):
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
