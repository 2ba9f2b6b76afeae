"""Generated right-hand sides and Jacobians against independent implementations and finite
differences."""

import numpy as np
import pytest

from helpers import finite_width_rhs, meanfield_rhs
from odehild.codegen import compile_model
from odehild.models.finite_width import FiniteWidthModel
from odehild.models.meanfield import MeanFieldModel

STAIR = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")


@pytest.fixture(scope="module")
def mf_models():
    return [MeanFieldModel(*STAIR, K=3, eps=1e-3), MeanFieldModel("relu(z)", "tanh(z)", K=6, eps=0.3)]


def random_state(rng, N):
    a = rng.normal(size=N) * 2
    s = rng.uniform(-0.9, 0.9, size=N)
    w = rng.uniform(0.5, 1.5, size=N)
    return a, s, w / w.sum()


def fd_jacobian(f, y, h=1e-6):
    J = np.empty((y.size, y.size))
    for c in range(y.size):
        e = np.zeros_like(y)
        e[c] = h * max(1.0, abs(y[c]))
        J[:, c] = (f(y + e) - f(y - e)) / (2 * e[c])
    return J


def test_meanfield_rhs_matches_numpy(mf_models, rng):
    for model in mf_models:
        c = compile_model(model)
        for N in (1, 7, 64, 2500):  # 2500: the particle loop's chunks of 1024, the last one partial
            a, s, w = random_state(rng, N)
            dy = np.empty(2 * N)
            # the state is (a, u) with s = tanh(u): du/dt = (ds/dt) / (1 - s^2)
            c.rhs(0.0, np.concatenate([a, np.arctanh(s)]), w, 1 / model.eps, dy)
            da, ds = meanfield_rhs(a, s, w, model.sigma.coefficients, model.phi.coefficients, model.eps)
            np.testing.assert_allclose(dy[:N], da, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(dy[N:] * (1 - s**2), ds, rtol=1e-11, atol=1e-12)


def test_meanfield_moments_match_exactly_rounded_sums(mf_models, rng):
    """The moment sums against math.fsum of the same terms, within a few roundings of the sum of
    their magnitudes."""
    import math

    for model in mf_models:
        c = compile_model(model)
        a, s, w = random_state(rng, 3001)
        M = np.empty(model.K + 1)
        c.moments(a, s, w, M)
        for k in range(model.K + 1):
            terms = w * (a * s**k)
            assert abs(M[k] - math.fsum(terms)) <= 1e-14 * np.sum(np.abs(terms)), k


def test_meanfield_moments_are_compensated_sums(mf_models, rng):
    """Terms that are exact in floating point (s in {0, +-1/4, +-1/2, +-1}, w = 2^-13) and cancel:
    each a_j with its negative, so M_0 = 0 from terms of magnitude up to 25, over two chunks and a
    partial one (codegen.numba_gen.MOMENT_CHUNK). The compensated sums are the exact sums rounded
    once (within an ulp, and 0 for M_0), where a plain sum in particle order errs by about 1e-16."""
    import math

    from odehild.codegen.numba_gen import MOMENT_CHUNK

    half = MOMENT_CHUNK + 517
    a = rng.uniform(-25.0, 25.0, size=half)
    s = rng.choice([0.0, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0], size=half)
    a, s = np.concatenate([a, -a]), np.concatenate([s, s])
    order = rng.permutation(a.size)
    a, s, w = a[order], s[order], np.full(a.size, 2.0 ** -13)
    for model in mf_models:
        M = np.empty(model.K + 1)
        compile_model(model).moments(a, s, w, M)
        for k in range(model.K + 1):
            terms = w * (a * s**k)
            exact = math.fsum(terms)
            assert abs(M[k] - exact) <= np.spacing(abs(exact)), (k, M[k], exact)
            if k == 0:
                assert exact == 0.0 and M[0] == 0.0
                plain = 0.0
                for x in terms:
                    plain += x
                assert abs(plain) > 1e-17  # the case is not trivial for a plain sum


def test_meanfield_tanh_chart_is_within_two_ulp_of_libm(mf_models, rng):
    tanh_chart = compile_model(mf_models[0]).module.tanh_chart
    u = np.concatenate([rng.normal(size=2000) * 10.0 ** rng.integers(-12, 2, size=2000),
                        [0.0, -0.0, 5e-324, 1e-300, 0.5, 19.0, 19.1, 400.0, 1e308, np.inf, -np.inf]])
    got = np.array([tanh_chart(x) for x in u])
    ulp = np.spacing(np.abs(np.tanh(u)))
    assert np.all(np.abs(got - np.tanh(u)) <= 2 * ulp)
    assert np.array_equal(np.signbit(got), np.signbit(np.tanh(u)))
    assert np.isnan(tanh_chart(np.nan))


@pytest.mark.parametrize("vector_tanh", [True, False])
def test_meanfield_solve_rhs_matches_numpy(mf_models, rng, monkeypatch, vector_tanh):
    """The solve's right-hand side (s = tanh(u) by the generated tanh within the moments' pass,
    rhs_tanh, where it vectorises; by NumPy's ufunc and rhs_chart elsewhere), on one thread and (for
    the first model: the parallel variants are one template, and each takes 4 to 10 s to compile)
    on two, against the NumPy formula, and the chart values against a 200-bit reference."""
    import mpmath as mp

    import odehild.models.meanfield as meanfield
    from odehild.solve.trajectory import InitialCondition
    from odehild.threads import compiled_threads

    monkeypatch.setattr(meanfield, "vector_int_conversions", lambda: vector_tanh)
    monkeypatch.setattr(meanfield, "VECTOR_TANH_MIN_PARTICLES", 1)
    for n, model in enumerate(mf_models):
        N = 40
        a, s, w = random_state(rng, N)
        problem = model.problem(InitialCondition(a, s, w))
        y = problem.y0.copy()
        dy, dy2 = np.empty(2 * N), np.empty(2 * N)
        problem.rhs(0.0, y, dy)
        if n == 0:
            with compiled_threads(2):
                problem.parallel_rhs()(0.0, y, dy2)
        da, ds = meanfield_rhs(a, s, w, model.sigma.coefficients, model.phi.coefficients, model.eps)
        for got in (dy, dy2) if n == 0 else (dy,):
            np.testing.assert_allclose(got[:N], da, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[N:] * (1 - s**2), ds, rtol=1e-11, atol=1e-12)
        direct = np.empty(2 * N)
        compile_model(model).rhs(0.0, y, w, 1 / model.eps, direct)  # the scalar tanh_chart
        np.testing.assert_allclose(dy, direct, rtol=1e-13, atol=1e-13 * np.abs(direct).max())
    u = np.concatenate([rng.normal(size=500) * 10.0 ** rng.integers(-12, 2, size=500), [0.5, 19.1, 400.0]])
    with mp.workdps(60):
        ref = np.array([float(mp.tanh(mp.mpf(x))) for x in u])
    assert np.all(np.abs(np.tanh(u) - ref) <= 2 * np.spacing(np.abs(ref)))


def test_meanfield_vector_tanh_is_within_three_ulp_of_a_50_digit_tanh(mf_models, rng):
    """The generated vectorisable tanh (the solve's where the CPU converts int64 in vector registers,
    ``tanh_block``) against mpmath, and as the parallel variant of the moments' pass writes it chunk
    by chunk (elementwise: the same bits), over N = 9000 (two full chunks of 4096 and a partial one)
    and the edges: signed zeros, subnormals, the clamp at |u| = 20, where tanh rounds to 1,
    infinities and NaN."""
    import mpmath as mp

    from odehild.threads import compiled_threads, parallel_variant

    module = compile_model(mf_models[0]).module
    edges = [0.0, -0.0, 5e-324, -1e-310, 1e-300, 0.3465, 0.3466, 0.5, 19.0, 19.07, 19.1, 20.0, 20.5, -400.0,
             1e308, np.inf, -np.inf]
    n = 9000 - len(edges) - 1
    u = np.concatenate([rng.normal(size=n) * 10.0 ** rng.integers(-14, 2, size=n), edges, [np.nan]])
    s, s2 = np.empty_like(u), np.empty_like(u)
    module.tanh_block(u, s)
    with compiled_threads(2):
        parallel_variant(module.moments_tanh)(np.ones(u.size), u, s2, np.ones(u.size), np.empty(module.NM))
    assert np.array_equal(s, s2, equal_nan=True)
    assert np.isnan(s[-1])
    with mp.workdps(50):
        # mpmath has no signed zero: the sign of tanh is the sign of u
        ref = np.copysign([float(mp.tanh(mp.mpf(x))) if np.isfinite(x) else 1.0 for x in u[:-1]], u[:-1])
    assert np.all(np.abs(s[:-1] - ref) <= 3 * np.spacing(np.abs(ref)))
    assert np.array_equal(np.signbit(s[:-1]), np.signbit(ref))


def test_vector_int_conversions_follows_numba_cpu_features(monkeypatch):
    """The vectorised tanh is chosen by the features Numba compiles for: NUMBA_CPU_FEATURES when set."""
    from numba.core import config

    from odehild.codegen.numba_gen import vector_int_conversions

    for features, expected in [("+avx2,+fma,-avx512dq", False), ("+avx2,+avx512f,+avx512dq", True), ("+neon", False)]:
        monkeypatch.setattr(config, "CPU_FEATURES", features)
        assert vector_int_conversions.__wrapped__() is expected


def test_meanfield_jacobian_matches_finite_differences(mf_models, rng):
    for model in mf_models:
        c = compile_model(model)
        N = 9
        a, s, w = random_state(rng, N)
        y = np.concatenate([a, np.arctanh(s)])

        def f(y):
            out = np.empty(2 * N)
            c.rhs(0.0, y, w, 1 / model.eps, out)
            return out

        J = np.empty((2 * N, 2 * N))
        c.jac(0.0, y, w, 1 / model.eps, J)
        Jfd = fd_jacobian(f, y)
        np.testing.assert_allclose(J, Jfd, rtol=1e-6, atol=1e-6 * np.abs(Jfd).max())


def random_overlaps(rng, m, d=20):
    U = rng.normal(size=(m + 1, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    ustar, W = U[0], U[1:]
    return W @ ustar, W @ W.T


@pytest.mark.parametrize("sigma, phi, K, kernels", [
    (*STAIR, 3, "series"), ("relu(z)", "z + z**3/6", 5, "series"),
    ("relu(z)", "relu(z)", 4, "closed"), ("erf(z)", "erf(2*z)", 4, "closed")])
def test_finite_width_rhs_and_jacobian(sigma, phi, K, kernels, rng):
    """The analytic Jacobian against central differences, series and closed-form (asin, acos) kernels."""
    model = FiniteWidthModel(sigma, phi, K, eps=0.05, kernels=kernels)
    c = compile_model(model)
    m = 5
    s, R = random_overlaps(rng, m)
    a = rng.normal(size=m)
    state = FiniteWidthModel.state_map(m)
    y = state.pack({"a": a, "s": s, "r": R})
    dy = np.empty_like(y)
    c.rhs(0.0, y, m, 1 / model.eps, dy)
    if kernels == "series":
        da, ds, dR = finite_width_rhs(a, s, R, model.sigma.coefficients, model.phi.coefficients, model.eps)
        np.testing.assert_allclose(dy[:m], da, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(dy[m:2 * m], ds, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(state.unpack(dy)["r"] - np.eye(m), dR, rtol=1e-12, atol=1e-12)

    def f(y):
        out = np.empty_like(y)
        c.rhs(0.0, y, m, 1 / model.eps, out)
        return out

    J = np.empty((y.size, y.size))
    c.jac(0.0, y, m, 1 / model.eps, J)
    Jfd = fd_jacobian(f, y)
    np.testing.assert_allclose(J, Jfd, rtol=1e-6, atol=1e-7 * np.abs(Jfd).max())


def test_closed_form_kernels_for_relu(rng):
    """kernels='closed' uses the arc-cosine kernel: compare with its series at high K."""
    closed = compile_model(FiniteWidthModel("relu(z)", "relu(z)", 4, 0.1, kernels="closed"))
    series = compile_model(FiniteWidthModel("relu(z)", "relu(z)", 30, 0.1))
    for r in (-0.6, 0.0, 0.4):
        assert closed.U(r) == pytest.approx(series.U(r), abs=5e-4)
        th = np.arccos(r)
        assert closed.U(r) == pytest.approx((np.sin(th) + (np.pi - th) * np.cos(th)) / (2 * np.pi), abs=1e-14)


def _array_to_slice_assignments(source):
    """Lines of ``source`` that assign (or add, subtract, ...) an array to a slice of an array."""
    import ast

    def has_slice(node):
        return any(isinstance(n, ast.Slice) for n in ast.walk(node.slice))

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            sliced = any(isinstance(t, ast.Subscript) and has_slice(t) for t in targets)
            value = node.value.operand if isinstance(node.value, ast.UnaryOp) else node.value
            if sliced and not isinstance(value, ast.Constant):  # a number fills without the check
                lines.append(ast.get_source_segment(source, node))
    return lines


def test_generated_modules_assign_no_array_to_a_slice():
    """Numba compiles an array-to-slice assignment with its shape-mismatch message: about 3 s of
    every cold start that compiled one (K = 3 mean-field solve from cold, 6.1 s -> 3.0 s without)."""
    from odehild.models.committee import CommitteeModel
    from odehild.models.multi_index import MultiIndexModel
    from odehild.simulate.networks import _KERNELS

    sources = {"meanfield": MeanFieldModel(*STAIR, K=3, eps=1e-3).source(),
               "finite width": FiniteWidthModel(*STAIR, K=3, eps=1e-3).source(),
               "multi-index": MultiIndexModel("relu(z)", "z1 + z1*z2", K=3, eps=0.3).source(),
               "committee": CommitteeModel("erf(z)", "erf(z)").source(), "network kernels": _KERNELS}
    # the check itself finds one
    assert _array_to_slice_assignments("def f(J, A, B):\n    J[:, :] = A @ B\n    J[0, :] -= 2 * A[1, :]\n") == [
        "J[:, :] = A @ B", "J[0, :] -= 2 * A[1, :]"]
    for kind, source in sources.items():
        assert _array_to_slice_assignments(source) == [], kind
