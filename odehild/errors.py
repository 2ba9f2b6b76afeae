"""Error types raised by odehild. Every user-facing failure is one of these."""


class OdehildError(Exception):
    """Base class: a problem the user can act on (bad input, failed integration)."""


class ExpressionError(OdehildError, ValueError):
    """An activation or link-function expression is outside the grammar or not usable."""


class InputError(OdehildError, ValueError):
    """A numerical argument (eps, K, initial condition, file) is out of its allowed range."""


class IntegrationError(OdehildError, RuntimeError):
    """A solver failed; ``partial`` holds what was computed up to ``t_fail``."""

    def __init__(self, message, t_fail=None, state=None, partial=None, interrupted=False):
        super().__init__(message)
        self.t_fail = t_fail
        self.state = state
        self.partial = partial
        self.interrupted = interrupted  # stopped by Ctrl-C, not by the solver


class ResolutionWarning(UserWarning):
    """A reported number changed by more than its tolerance between two resolutions (N and N/2)."""


class StiffnessWarning(UserWarning):
    """An explicit method was asked for a stiff problem (small eps): it will crawl."""
