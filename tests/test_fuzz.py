"""Hypothesis over the expression grammar plus hostile shapes: every input ends in finite Hermite
data or in odehild's own error, within the symbolic time budget."""

import importlib
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from odehild import OdehildError

hermite_module = importlib.import_module("odehild.symbolic.hermite")
BUDGET = 3.0

numbers = st.sampled_from(["0", "1", "2", "3", "-1", "0.5", "1/3", "100", "1e10", "1e-300", "1e308", "pi", "E",
                           "2**256", "(-2)"])
atoms = st.one_of(numbers, st.just("z"), st.builds(lambda k: f"h({k},z)", st.integers(0, 9)),
                  st.builds(lambda k: f"He({k},z)", st.integers(0, 9)))
UNARY = ["exp", "log", "sqrt", "sin", "cos", "tan", "sinh", "cosh", "tanh", "erf", "erfc", "Abs", "abs", "sign",
         "Heaviside", "relu", "sigmoid", "softplus"]


def extend(inner):
    return st.one_of(
        st.builds(lambda f, a: f"{f}({a})", st.sampled_from(UNARY), inner),
        st.builds(lambda a, op, b: f"({a}){op}({b})", inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner),
        st.builds(lambda f, xs: f"{f}({', '.join(xs)})", st.sampled_from(["Max", "Min"]),
                  st.lists(inner, min_size=2, max_size=3)),
        st.builds(lambda a: f"-{a}", inner),
    )


expressions = st.recursive(atoms, extend, max_leaves=6)


# no shrinking or explain phase: they replay SymPy under a tracer for minutes; the failing input is
# printed as generated, and derandomize keeps CI reproducible
FUZZ = dict(deadline=None, derandomize=True, phases=(Phase.explicit, Phase.generate),
            suppress_health_check=[HealthCheck.too_slow])


@settings(max_examples=40, **FUZZ)
@given(expressions)
def test_any_expression_ends_in_finite_data_or_our_error(expr):
    check_expression(expr)


@pytest.mark.slow
@settings(max_examples=300, **FUZZ)
@given(expressions)
def test_many_more_expressions_end_in_finite_data_or_our_error(expr):
    check_expression(expr)


def check_expression(expr):
    old = hermite_module.SYMBOLIC_BUDGET
    hermite_module.SYMBOLIC_BUDGET = BUDGET
    # this thread's CPU time, not wall time or the process's: the alarm is wall-clock, so on a loaded
    # machine CPU time past the budget is what our code did after the alarm (a wall-clock check once
    # failed at 8.4 s under load; process CPU time at 32 s, counting other threads of the test run)
    start = time.thread_time()
    try:
        h = hermite_module.hermite(expr, 4)
    except OdehildError:
        return
    finally:
        hermite_module.SYMBOLIC_BUDGET = old
        assert time.thread_time() - start < BUDGET + 5, f"{expr!r} ran past its budget"
    assert np.all(np.isfinite(h.coefficients)) and math.isfinite(h.norm2) and math.isfinite(h.tail), expr
    assert h.norm2 >= float(np.sum(h.coefficients**2)) - 1e-8 * max(1.0, h.norm2), expr
