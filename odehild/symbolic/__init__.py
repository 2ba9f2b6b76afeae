"""Symbolic stage: expression parsing, Hermite expansions, kernels and ODE derivations."""

from .hermite import HermiteExpansion, hermite
from .kernels import Kernel, U_kernel, V_kernel, kernel
from .parse import parse_expression, z

__all__ = ["HermiteExpansion", "hermite", "Kernel", "U_kernel", "V_kernel", "kernel",
           "parse_expression", "z"]
