"""odehild: order-parameter ODEs of two-layer networks, derived, compiled, integrated and checked."""

from importlib.metadata import PackageNotFoundError, version as _version

from .errors import (ExpressionError, InputError, IntegrationError, OdehildError, ResolutionWarning,
                     StiffnessWarning)

try:
    __version__ = _version("odehild")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

# the symbolic stage (SymPy) is imported on first use, not by ``import odehild`` or ``odehild --help``
_SYMBOLIC = ("HermiteExpansion", "Kernel", "U_kernel", "V_kernel", "hermite", "parse_expression")


def __getattr__(name):
    if name in _SYMBOLIC:
        from . import symbolic

        return getattr(symbolic, name)
    raise AttributeError(f"module 'odehild' has no attribute {name!r}")


__all__ = ["ExpressionError", "InputError", "IntegrationError", "OdehildError", "ResolutionWarning", "StiffnessWarning",
           "HermiteExpansion", "Kernel", "U_kernel", "V_kernel", "hermite", "parse_expression",
           "__version__"]
