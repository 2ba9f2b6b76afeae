"""``odehild demo``: the main job on built-in defaults."""


def run_demo(args):
    from .symbolic import hermite

    for expr in ("relu(z)", "erf(z/sqrt(2))", "tanh(z)", "h(1,z)+h(2,z)+h(3,z)"):
        h = hermite(expr, 6)
        kind = "exact" if h.is_exact else f"quadrature, error < {max(h.errors.max(), 1e-16):.0e}"
        print(f"{expr:>24}: c_0..c_6 = " + " ".join(f"{c:+.5f}" for c in h.coefficients)
              + f"  tail {h.tail:.2e}  ({kind})")
