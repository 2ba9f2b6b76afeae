"""Safe parsing of activation and link-function expressions (grammar in docs/conventions.md).

A string is parsed with :mod:`ast` and rebuilt node by node from a whitelist; it is never passed to
``eval`` or to a raw ``sympify``.
"""

from __future__ import annotations

import ast
import math

import sympy as sp

from ..errors import ExpressionError

#: The one variable of every activation and link function.
z = sp.Symbol("z", real=True)
#: The variables of a multi-index target (docs/conventions.md): z1 .. z9, z_j = <u*_j, x>.
MULTI_VARIABLES = tuple(sp.Symbol(f"z{j}", real=True) for j in range(1, 10))
_SINGLE = {"z": z}
_MULTI = {**_SINGLE, **{str(v): v for v in MULTI_VARIABLES}}

MAX_LENGTH = 2000
MAX_HERMITE_DEGREE = 200
MAX_INT_DIGITS = 50
MAX_EXPONENT = 256


def He_poly(k: int, x=z) -> sp.Expr:
    """Probabilists' Hermite polynomial He_k(x), built by the three-term recurrence."""
    prev, cur = sp.Integer(1), x
    if k == 0:
        return prev
    for j in range(1, k):
        prev, cur = cur, sp.expand(x * cur - j * prev)
    return cur


def h_poly(k: int, x=z) -> sp.Expr:
    """Normalized Hermite polynomial h_k = He_k / sqrt(k!)."""
    return He_poly(k, x) / sp.sqrt(sp.factorial(k))


def _relu(x):
    return sp.Max(x, 0)


def _sigmoid(x):
    return 1 / (1 + sp.exp(-x))


def _softplus(x):
    return sp.log(1 + sp.exp(x))


# name -> (builder, allowed argument counts); None means "two or more"
_FUNCTIONS = {
    "exp": (sp.exp, (1,)),
    "log": (sp.log, (1,)),
    "sqrt": (sp.sqrt, (1,)),
    "sin": (sp.sin, (1,)),
    "cos": (sp.cos, (1,)),
    "tan": (sp.tan, (1,)),
    "sinh": (sp.sinh, (1,)),
    "cosh": (sp.cosh, (1,)),
    "tanh": (sp.tanh, (1,)),
    "erf": (sp.erf, (1,)),
    "erfc": (sp.erfc, (1,)),
    "Abs": (sp.Abs, (1,)),
    "abs": (sp.Abs, (1,)),  # the Python spelling
    "sign": (sp.sign, (1,)),
    "Heaviside": (sp.Heaviside, (1,)),
    "Max": (sp.Max, None),
    "Min": (sp.Min, None),
    "relu": (_relu, (1,)),
    "sigmoid": (_sigmoid, (1,)),
    "softplus": (_softplus, (1,)),
}
_HERMITE = {"He": He_poly, "h": h_poly}
_CONSTANTS = {"pi": sp.pi, "E": sp.E}

ALLOWED_NAMES = sorted(["z", *_CONSTANTS, *_FUNCTIONS, *_HERMITE])

_OP_TOKENS = {
    ast.BitXor: "^ (use ** for powers)", ast.BitAnd: "&", ast.BitOr: "|", ast.FloorDiv: "//",
    ast.Mod: "%", ast.MatMult: "@", ast.LShift: "<<", ast.RShift: ">>", ast.Invert: "~",
    ast.Not: "not",
}
_NODE_TOKENS = {
    ast.Attribute: "attribute access '.'", ast.Subscript: "indexing '[...]'",
    ast.Compare: "comparison", ast.BoolOp: "boolean operator", ast.Lambda: "lambda",
    ast.IfExp: "conditional 'if'", ast.List: "list '[...]'", ast.Tuple: "tuple ','",
    ast.Dict: "dict '{...}'", ast.Set: "set '{...}'", ast.ListComp: "comprehension",
    ast.GeneratorExp: "generator", ast.DictComp: "comprehension", ast.SetComp: "comprehension",
    ast.Starred: "starred '*'", ast.NamedExpr: "assignment ':='", ast.JoinedStr: "f-string",
    ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.Slice: "slice ':'",
}


def _fail(msg: str, text: str) -> ExpressionError:
    return ExpressionError(f"{msg} in expression {text!r}")


def _number(value, text: str) -> sp.Expr:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(f"literal {value!r} is not a real number", text)
    if isinstance(value, int):
        if len(str(abs(value))) > MAX_INT_DIGITS:
            raise _fail(f"integer literal with more than {MAX_INT_DIGITS} digits", text)
        return sp.Integer(value)
    if not math.isfinite(value):
        raise _fail(f"literal {value!r} is not finite", text)
    # repr is the shortest round-trip form, so 0.1 becomes exactly 1/10
    return sp.Rational(repr(value))


def _build(node: ast.AST, text: str, variables: dict = _SINGLE) -> sp.Expr:
    if isinstance(node, ast.Expression):
        return _build(node.body, text, variables)
    if isinstance(node, ast.Constant):
        return _number(node.value, text)
    if isinstance(node, ast.Name):
        if node.id in variables:
            return variables[node.id]
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        if node.id in _FUNCTIONS or node.id in _HERMITE:
            raise _fail(f"function name {node.id!r} used without arguments", text)
        allowed = ALLOWED_NAMES if variables is _SINGLE else sorted([*variables, *_CONSTANTS, *_FUNCTIONS, *_HERMITE])
        if variables is _SINGLE and node.id in _MULTI:
            raise _fail(f"name {node.id!r}: z1 .. z9 are the variables of a multi-index target (MultiIndexModel; "
                        "odehild solve picks it from --phi), here only z is allowed", text)
        raise _fail(f"unknown name {node.id!r} (allowed: {', '.join(allowed)})", text)
    if isinstance(node, ast.UnaryOp):
        if isinstance(node.op, ast.USub):
            return -_build(node.operand, text, variables)
        if isinstance(node.op, ast.UAdd):
            return _build(node.operand, text, variables)
        raise _fail(f"operator {_OP_TOKENS.get(type(node.op), type(node.op).__name__)!r} is not allowed", text)
    if isinstance(node, ast.BinOp):
        op = type(node.op)
        if op not in (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow):
            raise _fail(f"operator {_OP_TOKENS.get(op, op.__name__)!r} is not allowed", text)
        left, right = _build(node.left, text, variables), _build(node.right, text, variables)
        if op is ast.Add:
            return left + right
        if op is ast.Sub:
            return left - right
        if op is ast.Mult:
            return left * right
        if op is ast.Div:
            if right == 0:
                raise _fail("division by zero", text)
            return left / right
        if right.is_number and (not right.is_finite or abs(float(right)) > MAX_EXPONENT):
            raise _fail(f"exponent {right} is outside [-{MAX_EXPONENT}, {MAX_EXPONENT}]", text)
        if left.is_number and right.is_number and left == 0 and float(right) < 0:
            raise _fail("division by zero", text)
        return left**right
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            raise _fail(f"attribute access '.{node.func.attr}' is not allowed", text)
        if not isinstance(node.func, ast.Name):
            raise _fail("only calls of named functions are allowed", text)
        name = node.func.id
        if node.keywords:
            raise _fail(f"keyword arguments in call of {name!r} are not allowed", text)
        if name in _HERMITE:
            if len(node.args) != 2:
                raise _fail(f"{name}(k, z) takes 2 arguments, got {len(node.args)}", text)
            k_node = node.args[0]
            if not (isinstance(k_node, ast.Constant) and type(k_node.value) is int
                    and 0 <= k_node.value <= MAX_HERMITE_DEGREE):
                raise _fail(f"{name}(k, z) needs k a literal integer in [0, {MAX_HERMITE_DEGREE}]", text)
            return _HERMITE[name](k_node.value, _build(node.args[1], text, variables))
        if name not in _FUNCTIONS:
            raise _fail(f"unknown function {name!r} (allowed: {', '.join(sorted([*_FUNCTIONS, *_HERMITE]))})", text)
        builder, nargs = _FUNCTIONS[name]
        if (nargs is None and len(node.args) < 2) or (nargs is not None and len(node.args) not in nargs):
            want = "2 or more" if nargs is None else str(nargs[0])
            raise _fail(f"function {name!r} takes {want} argument(s), got {len(node.args)}", text)
        out = builder(*[_build(a, text, variables) for a in node.args])
        if out.is_number and not out.free_symbols:
            # a constant beyond double range (exp(1e10), sinh(1e10)) would make any function around it
            # evaluate with gigabytes of precision (tanh(sinh(1e10)): 3.8 GB, not interruptible)
            try:
                size = abs(complex(out.evalf(5)))
            except (TypeError, ValueError, OverflowError):
                size = math.inf
            if not size <= 1e308:
                raise _fail(f"constant {name}(...) = {sp.N(out, 5)} is beyond double precision (|x| > 1e308)", text)
        return out
    if isinstance(node, ast.Attribute):
        raise _fail(f"attribute access '.{node.attr}' is not allowed", text)
    token = _NODE_TOKENS.get(type(node), type(node).__name__)
    raise _fail(f"{token} is not allowed", text)


def parse_expression(expr) -> sp.Expr:
    """Return the SymPy expression in ``z`` for a string or SymPy expression.

    Strings follow the grammar of docs/conventions.md; anything else raises :class:`ExpressionError`
    naming the offending token. A SymPy expression may only depend on a symbol named ``z``.
    """
    return _parse(expr, _SINGLE)


def target_variables(expr) -> tuple:
    """The multi-index variables z1 .. z9 an expression uses (empty for a function of z), without
    building it twice for the caller: ``odehild solve`` picks the model kind from this."""
    return parse_target(expr)[1]


def parse_target(expr) -> tuple:
    """``(expression, variables)`` for a link function of z or of z1 .. z9 (docs/conventions.md).

    ``variables`` is () for a function of z alone, else the tuple (z1, .., zM) with M the largest
    index used (the target's number of directions). Mixing z with z1 .. is refused, naming both.
    """
    out = _parse(expr, _MULTI)
    used = out.free_symbols
    multi = sorted((v for v in used if v in MULTI_VARIABLES), key=MULTI_VARIABLES.index)
    if z in used and multi:
        raise ExpressionError(f"expression {expr!r} mixes z with {', '.join(map(str, multi))}: a single-index "
                              "target uses z, a multi-index target z1 .. z9 only")
    if not multi:
        return out, ()
    M = max(MULTI_VARIABLES.index(v) for v in multi) + 1
    return out, MULTI_VARIABLES[:M]


def _parse(expr, variables: dict) -> sp.Expr:
    if isinstance(expr, sp.Basic):
        free = expr.free_symbols
        bad = sorted(str(s) for s in free if str(s) not in variables)
        if bad:
            allowed = "z" if variables is _SINGLE else "z or z1 .. z9"
            raise ExpressionError(f"expression {expr} depends on {', '.join(bad)}; only {allowed} allowed")
        out = expr.xreplace({s: variables[str(s)] for s in free})
    elif isinstance(expr, (int, float)) and not isinstance(expr, bool):
        out = _number(expr, repr(expr))
    elif isinstance(expr, str):
        text = expr.strip()
        if not text:
            raise ExpressionError("empty expression: give a function of z, e.g. 'relu(z)'")
        if len(text) > MAX_LENGTH:
            raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as exc:
            where = f" at column {exc.offset}" if exc.offset else ""
            raise ExpressionError(f"syntax error ({exc.msg}){where} in expression {text!r}") from None
        except (RecursionError, MemoryError, ValueError):
            raise ExpressionError(f"expression {text[:40]!r}... is nested too deeply or malformed") from None
        try:
            out = _build(tree, text, variables)
        except ExpressionError:
            raise
        except RecursionError:
            raise ExpressionError(f"expression {text[:40]!r}... is nested too deeply") from None
        except (TypeError, ValueError, ArithmeticError, sp.SympifyError) as exc:
            raise ExpressionError(f"cannot build expression {text!r}: {exc}") from None
    else:
        raise ExpressionError(
            f"expression must be a string or a SymPy expression in z, got {type(expr).__name__}")
    if out.has(sp.zoo, sp.oo, -sp.oo, sp.nan):
        raise ExpressionError(f"expression {expr!r} is not finite")
    if out.has(sp.I):
        raise ExpressionError(f"expression {expr!r} is not real-valued")
    return out
