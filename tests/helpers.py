"""Independent plain-NumPy implementations of docs/model.md, written from the spec, not from the
generated code."""

import numpy as np


def meanfield_rhs(a, s, w, sigma, phi, eps):
    """Section 2b: eps da/dt = F(s), ds/dt = (1 - s^2) a F'(s)."""
    K = len(sigma) - 1
    M = np.array([np.sum(w * a * s**k) for k in range(K + 1)])
    r = np.asarray(phi) - np.asarray(sigma) * M
    F = np.polynomial.Polynomial(np.asarray(sigma) * r)
    return F(s) / eps, (1 - s**2) * a * F.deriv()(s)


def meanfield_risk(a, s, w, sigma, phi, tail=0.0):
    K = len(sigma) - 1
    M = np.array([np.sum(w * a * s**k) for k in range(K + 1)])
    r = np.asarray(phi) - np.asarray(sigma) * M
    return 0.5 * np.sum(r**2) + 0.5 * tail


def kernels(sigma, phi):
    V = np.polynomial.Polynomial(np.asarray(sigma) * np.asarray(phi))
    U = np.polynomial.Polynomial(np.asarray(sigma) ** 2)
    return V, U


def finite_width_rhs(a, s, R, sigma, phi, eps):
    """Section 2a, literally."""
    m = a.size
    V, U = kernels(sigma, phi)
    dV, dU = V.deriv(), U.deriv()
    da = np.array([V(s[i]) - np.sum(a * U(R[i])) / m for i in range(m)]) / eps
    W = np.outer(a, a) * dU(R) / m
    np.fill_diagonal(W, 0.0)
    ds = a * dV(s) * (1 - s**2) - np.array([np.sum(W[i] * (s - R[i] * s[i])) for i in range(m)])
    G = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            G[i, j] = a[i] * dV(s[i]) * (s[j] - s[i] * R[i, j]) - np.sum(W[i] * (R[:, j] - R[i] * R[i, j]))
    dR = G + G.T
    np.fill_diagonal(dR, 0.0)
    return da, ds, dR


def weight_space_rhs(a, Umat, ustar, sigma, phi, eps):
    """Projected population gradient flow of the weights in R^d (section 2):
    eps da_i/dt = -m dR/da_i, du_i/dt = -m (I - u_i u_i^T) grad_{u_i} R."""
    m = a.size
    V, U = kernels(sigma, phi)
    dV, dU = V.deriv(), U.deriv()
    s = Umat @ ustar
    R = Umat @ Umat.T
    da = (V(s) - (U(R) @ a) / m) / eps
    # grad_{u_i} R = -(1/m) a_i V'(s_i) u* + (1/m^2) sum_j a_i a_j U'(r_ij) u_j (j = i: along u_i)
    grad = -(a * dV(s))[:, None] * ustar[None, :] / m + ((np.outer(a, a) * dU(R)) @ Umat) / m**2
    du = -m * (grad - np.sum(grad * Umat, axis=1)[:, None] * Umat)
    return da, du


def break_rhs_after(monkeypatch, model, t_break: float = 0.01):
    """Make the generated RHS of ``model`` return NaN after ``t_break`` (a solver failure on demand)."""
    from odehild.codegen import numba_gen

    compiled = numba_gen.compile_model(model)
    real = compiled.module.rhs
    real_chart = getattr(compiled.module, "rhs_chart", None)  # what a mean-field solve calls

    class Broken:
        def __getattr__(self, name):
            return getattr(compiled.module, name)

        @staticmethod
        def rhs(t, y, w, inv_eps, dy):
            real(t, y, w, inv_eps, dy)
            if t > t_break:
                dy[:] = np.nan

        @staticmethod
        def rhs_chart(t, y, s, w, inv_eps, dy):
            real_chart(t, y, s, w, inv_eps, dy)
            if t > t_break:
                dy[:] = np.nan

    fake = numba_gen.CompiledModel(Broken(), compiled.key, compiled.path, True, 0.0, 0.0)
    monkeypatch.setitem(numba_gen._loaded, compiled.key, fake)


def default_sigint():
    """``preexec_fn`` of a child a test interrupts: a runner that started the tests in the background
    ignores SIGINT, the child would inherit that and never see Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
