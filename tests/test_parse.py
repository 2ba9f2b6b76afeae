import builtins

import pytest
import sympy as sp
from hypothesis import given, settings, strategies as st

from odehild import ExpressionError, parse_expression
from odehild.symbolic.parse import z


@pytest.mark.parametrize("text, expected", [
    ("relu(z)", sp.Max(z, 0)),
    ("1/3*z", z / 3),
    ("0.1*z", sp.Rational(1, 10) * z),
    ("sigmoid(z)", 1 / (1 + sp.exp(-z))),
    ("softplus(z)", sp.log(1 + sp.exp(z))),
    ("He(3, z)", z**3 - 3 * z),
    ("h(2, z)", (z**2 - 1) / sp.sqrt(2)),
    ("erf(z/sqrt(2)) + pi*E", sp.erf(z / sp.sqrt(2)) + sp.pi * sp.E),
    ("Max(z, 0, -z)", sp.Max(z, 0, -z)),
    ("-(z**2) + +z", -z**2 + z),
])
def test_grammar_accepts(text, expected):
    assert sp.simplify(parse_expression(text) - expected) == 0


@pytest.mark.parametrize("text, token", [
    ("", "empty"),
    ("   ", "empty"),
    ("foo(z)", "'foo'"),
    ("x + z", "'x'"),
    ("z.real", "attribute"),
    ("__import__('os').system('true')", "'.system'"),
    ("__import__('os')", "'__import__'"),
    ("(lambda: 1)()", "calls of named functions"),
    ("z[0]", "indexing"),
    ("z ^ 2", "^"),
    ("z if z else 1", "conditional"),
    ("exp", "without arguments"),
    ("exp(z, 2)", "takes 1"),
    ("He(-1, z)", "He(k, z)"),
    ("He(z, z)", "He(k, z)"),
    ("'abc'", "not a real number"),
    ("True", "not a real number"),
    ("1j*z", "not a real number"),
    ("9**9**9", "exponent"),
    ("z/0", "division by zero"),
    ("exp(x=z)", "keyword"),
    ("z < 1", "comparison"),
    ("z +", "syntax error"),
    ("1e999*z", "not finite"),
    ("sqrt(-1)*z", "not real"),
    ("(" * 500 + "z" + ")" * 500, "nested"),
])
def test_grammar_refuses_with_token(text, token):
    with pytest.raises(ExpressionError) as err:
        parse_expression(text)
    assert token in str(err.value)


def test_sympy_input_other_symbols_refused():
    x = sp.Symbol("x")
    with pytest.raises(ExpressionError, match="x"):
        parse_expression(x + 1)
    # a plain Symbol('z') is mapped onto odehild's real z
    assert parse_expression(sp.Symbol("z") ** 2) == z**2


def test_non_string_input_refused():
    with pytest.raises(ExpressionError, match="list"):
        parse_expression([1, 2])


_TOKENS = ["z", "pi", "E", "relu", "exp", "log", "He", "h", "Max", "(", ")", ",", "+", "-", "*",
           "/", "**", "1", "2.5", "0", "__class__", ".", "[", "]", "'", "lambda", ":", "import",
           "os", "eval", "^", "%", "@", " ", "{", "}", "1e308", "\\", "#", ";", "=", "!"]


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(st.sampled_from(_TOKENS), max_size=25).map("".join)))
def test_random_junk_only_raises_our_error_and_executes_nothing(monkeypatch_text):
    called = []
    saved = builtins.eval, builtins.exec, builtins.__import__

    def trap(*a, **k):
        called.append(a)
        raise AssertionError("code execution attempted")

    builtins.eval = builtins.exec = trap
    try:
        try:
            out = parse_expression(monkeypatch_text)
        except ExpressionError:
            pass
        else:
            assert isinstance(out, sp.Expr)
            assert out.free_symbols <= {z}
    finally:
        builtins.eval, builtins.exec, builtins.__import__ = saved
    assert not called
