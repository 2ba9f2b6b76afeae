"""The base the founding model's two kinds share (mean field and finite width): sigma and phi
through their Hermite data up to K, the rate ratio eps, learnability and meta. Not a kind itself."""

from __future__ import annotations

from ..symbolic.founding import check_eps, check_kmax
from . import ModelKind


class FoundingDeclaration(ModelKind):
    """sigma and phi (:class:`~odehild.symbolic.founding.Function1D`), truncation K and eps."""

    default_t_end = 5.0

    def _check_common(self):
        self.eps = check_eps(self.eps)
        self.K = check_kmax(self.K)

    def with_eps(self, eps):
        """The same declaration at another eps (shares the compiled code)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.eps = check_eps(eps)
        return new

    def learnability(self, s0_zero: bool = True):
        """Which target degrees the dynamics can learn, the risk levels between phases and the floor
        (:mod:`odehild.symbolic.learnability`), from s0 = 0 or from s0 != 0."""
        from ..symbolic.learnability import learnability

        return learnability(self.sigma.coefficients, self.phi.coefficients, self.phi.norm2, s0_zero)

    def meta(self) -> dict:
        return {"model": self.kind, "sigma": self.sigma.name, "phi": self.phi.name,
                "sigma_coefficients": list(self.sigma.coefficients),
                "phi_coefficients": list(self.phi.coefficients), "kmax": self.K, "eps": self.eps,
                "phi_norm2": self.phi.norm2, "sigma_norm2": self.sigma.norm2}
