"""odehild: order-parameter ODEs of two-layer networks, derived, compiled, integrated and checked."""

from importlib.metadata import PackageNotFoundError, version as _version

from .errors import (ExpressionError, InputError, IntegrationError, OdehildError, ResolutionWarning,
                     StiffnessWarning)
from .symbolic import HermiteExpansion, Kernel, U_kernel, V_kernel, hermite, parse_expression

try:
    __version__ = _version("odehild")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+local"

__all__ = ["ExpressionError", "InputError", "IntegrationError", "OdehildError", "ResolutionWarning", "StiffnessWarning",
           "HermiteExpansion", "Kernel", "U_kernel", "V_kernel", "hermite", "parse_expression",
           "__version__"]
