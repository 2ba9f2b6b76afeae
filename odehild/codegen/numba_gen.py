"""SymPy derivations to Numba source, compiled once and cached on disk.

Generated modules fill preallocated output arrays, loop over particles, and contain only floats and
arrays in their inner loops. Parameter values (Hermite coefficients) are hoisted into module
constants; eps and the particle weights are runtime arguments, so an eps sweep compiles once.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
import textwrap
import time
from pathlib import Path

from .. import __version__
from ..io import cache_dir
MANIFEST = "manifest.json"
MODULE = "generated.py"


@functools.lru_cache(maxsize=None)
def _printer():
    """The printer, built on first use: a warm run loads generated code without importing SymPy."""
    from sympy.printing.pycode import PythonCodePrinter

    class _Printer(PythonCodePrinter):
        """Plain-float Python for Numba: math functions, integer powers as products."""

        def _print_Pow(self, expr, rational=False):
            base, ex = expr.as_base_exp()
            if ex.is_Integer and 1 < int(ex) <= 8:
                b = self.parenthesize(base, 100)
                return "(" + "*".join([b] * int(ex)) + ")"  # parenthesised: it may be a denominator
            if ex == -1:
                return f"(1.0/{self.parenthesize(base, 100)})"
            return super()._print_Pow(expr, rational)

        def _print_Float(self, expr):
            return repr(float(expr))

        def _print_Rational(self, expr):
            return repr(float(expr))

        def _print_Integer(self, expr):
            return f"{int(expr)}.0"

        def _print_Heaviside(self, expr):
            return f"(1.0 if {self._print(expr.args[0])} > 0 else 0.0)"

        def _print_sign(self, expr):
            x = self._print(expr.args[0])
            return f"(1.0 if {x} > 0 else (-1.0 if {x} < 0 else 0.0))"

        def _print_Max(self, expr):
            return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

        def _print_Min(self, expr):
            return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"

    return _Printer({"fully_qualified_modules": True, "standard": "python3"})


def _code(expr) -> str:
    return _printer().doprint(expr)


def emit_block(outputs: list, indent: int, prefix: str = "x") -> str:
    """Assignments ``target = expr`` for (target, expr) pairs, common subexpressions eliminated."""
    import sympy as sp

    targets = [t for t, _ in outputs]
    exprs = [sp.sympify(e) for _, e in outputs]
    syms = sp.numbered_symbols(prefix + "_")
    reps, reduced = sp.cse(exprs, symbols=syms, optimizations="basic")
    lines = [f"{sym} = {_code(val)}" for sym, val in reps]
    lines += [f"{t} = {_code(e)}" for t, e in zip(targets, reduced)]
    return textwrap.indent("\n".join(lines), " " * indent)


# Compensated moment sums. At a learned state a moment can vanish from terms whose magnitudes sum
# to tens (M_0 = sum w a = 0 with |a| up to 25), and the rounding of a plain sum, times 1/eps in the
# right-hand side, set a noise floor that depends on the summation order: a solve that passed with one
# order stalled with another. TwoSum (Knuth) carries each addition's rounding error exactly; the
# particles are summed in MOMENT_LANES lanes (whose updates vectorise from 32 lanes on; with 16 they
# did not, and ran 3x slower than one plain sum) within chunks of MOMENT_CHUNK particles fixed by N
# alone, so the sums are the same on any number of threads.
MOMENT_LANES = 32
MOMENT_CHUNK = 4096


def _two_sum_lines(total: str, comp: str, x: str, indent: int) -> str:
    """Knuth's TwoSum: total += x, and comp += that addition's rounding error, exactly. Written out:
    as an inlined function it cost 0.1 to 0.15 s more of compilation."""
    lines = [f"x = {x}", f"s_old = {total}", "t = s_old + x", "z = t - s_old",
             f"{comp} += (s_old - (t - z)) + (x - z)", f"{total} = t"]
    return "\n".join(" " * indent + line for line in lines)


def compensated_moments(signature: str, doc: str, n: int, arrays: list, moment_block: str, weight: str,
                        prelude: str = "", chunk_prelude: str = "") -> str:
    """Source of ``def signature`` writing the n moments M[k] = sum_i weight * m_k, compensated, in
    lanes and chunks (see MOMENT_LANES). ``arrays``: (array, local) name pairs, 1-D arrays of the
    particles (the first one's length is N) whose i-th values the locals hold;
    ``moment_block`` (not indented) assigns m_0 .. m_(n-1) from the locals; ``prelude`` (indented 4, after N
    is set) may bind the arrays as views of an argument; ``chunk_prelude`` (one line, run for each
    chunk of particles [lo, hi) before its sums) may write the chunk of an array the sums then read
    while it is in the cache. The lanes read slices of fixed width:
    indexed from j + l, LLVM cannot rule out negative indices and does not vectorise; with the
    width of the last block variable, the loop ran 1.3x (serial) to 3.5x (two threads) slower. A
    chunk's remainder goes to lane 0."""
    L = MOMENT_LANES
    views = "\n".join(f"        S_{k}, C_{k} = part[c, {2 * k}], part[c, {2 * k + 1}]" for k in range(n))
    lanes = "\n".join(_two_sum_lines(f"S_{k}[l]", f"C_{k}[l]", f"{weight} * m_{k}", 16) for k in range(n))
    tails = "\n".join(_two_sum_lines(f"S_{k}[0]", f"C_{k}[0]", f"{weight} * m_{k}", 12) for k in range(n))
    slices = ", ".join(f"{x}[j:j + {L}]" for x, _ in arrays)
    block_names = ", ".join(f"{x}_b" for x, _ in arrays)
    load_lane = "\n".join(f"                {v} = {x}_b[l]" for x, v in arrays)
    load_tail = "\n".join(f"            {v} = {x}[i]" for x, v in arrays)
    return f'''@njit(cache=True)
def {signature}:
    """{doc}"""
    N = {arrays[0][0]}.shape[0]
{prelude}{chr(10) if prelude else ""}    nchunk = (N + {MOMENT_CHUNK - 1}) // {MOMENT_CHUNK}
    part = np.zeros((nchunk, {2 * n}, {L}))  # per chunk and moment: lane sums, their errors
    for c in prange(nchunk):
        lo = {MOMENT_CHUNK} * c
        hi = min(lo + {MOMENT_CHUNK}, N)
{" " * 8 + chunk_prelude + chr(10) if chunk_prelude else ""}{views}
        nb = (hi - lo) // {L}
        for b in range(nb):
            j = lo + {L} * b
            {block_names} = {slices}
            for l in range({L}):
{load_lane}
{textwrap.indent(moment_block, ' ' * 16)}
{lanes}
        for i in range(lo + {L} * nb, hi):
{load_tail}
{textwrap.indent(moment_block, ' ' * 12)}
{tails}
    for k in range({n}):
        total = 0.0
        comp = 0.0
        for c in range(nchunk):
            for l in range({L}):
{_two_sum_lines("total", "comp", "part[c, 2 * k, l]", 16)}
                comp += part[c, 2 * k + 1, l]
        M[k] = total + comp
'''


@functools.lru_cache(maxsize=None)
def vector_int_conversions() -> bool:
    """Whether Numba's code for this CPU converts float64 to and from int64 in vector registers
    (AVX-512DQ). Arithmetic that needs them (the models' ``tanh_lanes``) vectorises only there:
    with AVX2 alone it ran 2 to 4x slower than NumPy's ufunc, so callers fall back on that."""
    from numba.core import config

    features = config.CPU_FEATURES
    if features is None:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    return "+avx512dq" in features.split(",")


HEADER = '''\
# Generated by odehild {version} from {kind} model {key}. Do not edit: regenerated on demand.
import math
import numpy as np
from numba import njit, prange
'''


# ----------------------------------------------------------------------------------- cache


class CompiledModel:
    """The generated module of a model plus how it was obtained (for honest timings)."""

    def __init__(self, module, key, path, from_cache, derive_seconds, load_seconds):
        self.module = module
        self.key = key
        self.path = path
        self.from_cache = from_cache
        self.derive_seconds = derive_seconds
        self.load_seconds = load_seconds

    def __getattr__(self, name):
        return getattr(self.module, name)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _write_atomic(path: Path, text: str):
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


# entries made by another version of these templates are rebuilt, not trusted
GENERATOR_SHA = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _entry_valid(folder: Path, key: str, generator: str) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        source = (folder / MODULE).read_text()
    except (OSError, ValueError):
        return False
    return (manifest.get("key") == key and manifest.get("sha256") == _sha(source)
            and manifest.get("odehild") == __version__ and manifest.get("generator") == generator)


def _numba_files_intact(folder: Path) -> bool:
    """Numba's cache files of an entry parse as pickles (read, never executed: pickletools walks
    the opcodes). A truncated or garbled file would otherwise fail every later run."""
    import pickle
    import pickletools

    for path in folder.glob("__pycache__/*.nb[ic]"):
        try:
            data = path.read_bytes()
            if path.suffix == ".nbi":  # a version pickle, then the index pickle
                with open(path, "rb") as fh:
                    pickle.load(fh)
                    data = fh.read()
            ops = list(pickletools.genops(data))
            if not ops or ops[-1][0].name != "STOP":
                return False
        except Exception:  # any damage: rebuild
            return False
    return True


def _writable_entry(folder: Path) -> Path:
    """``folder``, or a private temporary one when the cache cannot be written there (an entry that
    is a file, a read-only cache directory): the run goes on uncached, with a warning."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        return folder
    except OSError as exc:
        import tempfile
        import warnings

        fallback = Path(tempfile.mkdtemp(prefix="odehild-cache-")) / folder.name
        fallback.mkdir()
        warnings.warn(f"cannot write the code cache at {folder} ({exc.strerror or exc}); compiling into "
                      f"{fallback} for this run (set ODEHILD_CACHE_DIR to a writable folder)", stacklevel=3)
        return fallback


def _import(folder: Path, key: str):
    name = f"odehild_generated_{key}"
    spec = importlib.util.spec_from_file_location(name, folder / MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_loaded: dict = {}


def compile_source(key: str, build_source, declaration: dict, kind: str, template: str = "") -> CompiledModel:
    """Import the generated module cached under ``key``, building it with ``build_source()`` when the
    entry is missing, damaged or foreign (manifest: key, source hash, odehild version, and the hash of
    this generator plus ``template``, the hash of the code that wrote the source)."""
    generator = GENERATOR_SHA + template
    if key in _loaded:
        return _loaded[key]
    folder = cache_dir() / key
    start = time.perf_counter()
    from_cache = _entry_valid(folder, key, generator) and _numba_files_intact(folder)
    derive_seconds = 0.0
    if not from_cache:
        source = build_source()
        derive_seconds = time.perf_counter() - start
        folder = _writable_entry(folder)
        for stale in folder.glob("__pycache__/*"):
            stale.unlink(missing_ok=True)
        _write_atomic(folder / MODULE, source)
        _write_atomic(folder / MANIFEST, json.dumps(
            {"key": key, "sha256": _sha(source), "odehild": __version__, "generator": generator, "kind": kind,
             "declaration": declaration}, indent=1))
    t0 = time.perf_counter()
    module = _import(folder, key)
    compiled = CompiledModel(module, key, folder, from_cache, derive_seconds, time.perf_counter() - t0)
    _loaded[key] = compiled
    return compiled


@functools.lru_cache(maxsize=None)
def _file_sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def compile_model(model) -> CompiledModel:
    """Generated, Numba-compiled functions of any model kind (:mod:`odehild.models`): its
    ``source()`` under its ``cache_key()``, from the disk cache when that holds them. An entry written
    by another version of the kind's module is rebuilt."""
    template = _file_sha(sys.modules[type(model).__module__].__file__)
    return compile_source(model.cache_key(), model.source, model.meta(), model.kind, template)


def scalar_functions_source(functions: dict) -> str:
    """Numba functions of one variable ``x`` for {name: SymPy expression in z}."""
    import sympy as sp

    from ..symbolic.parse import z

    out = []
    for name, expr in functions.items():
        body = emit_block([("val", sp.sympify(expr).xreplace({z: sp.Symbol("x")}))], 4, "x" + name)
        out.append(f"@njit(cache=True, inline='always')\ndef {name}(x):\n{body}\n    return val\n")
    return "\n\n".join(out)


def digest(payload: dict) -> str:
    """Content hash for a cache key (JSON of the declaration, sorted keys)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]
