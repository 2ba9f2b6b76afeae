"""Model kinds: one module each, one registration each.

A kind's module is its home: the declaration, the derivation from its risk (with the symbolic
stage's tools), the generated source (with the codegen stage's printer and cache), its
:class:`~odehild.solve.state.StateMap`, the result type and its observables, and the command-line
handler of ``odehild solve --model NAME``. The solve stage sees only what
:meth:`ModelKind.problem` returns: arrays, a state map and compiled callables.

Adding a kind means adding one module here whose class derives from :class:`ModelKind` and carries
``@register``; it is found by name (``--model``: the module's name with dashes, so that the command
line lists the kinds without importing them) and by the ``model`` entry of a result's meta.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..errors import InputError

_KINDS: dict = {}


class ModelKind:
    """What every model kind provides (the contract the solve stage and the command line rely on).

    Class attributes: ``kind`` (the name in result files' meta), ``cli_name`` (``--model``),
    ``result_type`` (a dataclass with ``load``), ``default_t_end``.
    """

    kind = ""
    cli_name = ""
    result_type = None
    default_t_end = None  # None: solve() needs t_end

    def cache_key(self) -> str:
        """Content hash of everything the generated source depends on."""
        raise NotImplementedError

    def meta(self) -> dict:
        raise NotImplementedError

    def source(self) -> str:
        """The generated Numba module (text)."""
        raise NotImplementedError

    def problem(self, init, **runtime):
        """An :class:`odehild.solve.integrate.OdeProblem` for this declaration from ``init``."""
        raise NotImplementedError

    def result(self, problem, t, Y, stats: dict, meta: dict, observed=None):
        """The kind's result object from output times ``t`` (T,) and packed states ``Y`` (T, n);
        ``observed``: the problem's observables taken at the output times, passed only with
        ``output_precision="float32"`` (a kind without ``OdeProblem.observables`` never gets it)."""
        raise NotImplementedError

    def failure_hint(self, problem, state: dict) -> str:
        """Extra words for a failed solve ending in ``state`` (unpacked), or ''."""
        return ""

    @classmethod
    def solve_command(cls, args):
        """``odehild solve --model cli_name``: returns [(path, resolved values)]."""
        raise NotImplementedError

    @classmethod
    def plot(cls, path, output):
        from ..solve.plot import plot_trajectory

        plot_trajectory(cls.result_type.load(path), output)


def register(cls):
    """Class decorator: make a model kind known by its ``kind`` and ``cli_name``."""
    if not (isinstance(cls, type) and issubclass(cls, ModelKind)) or not cls.kind or not cls.cli_name:
        raise TypeError(f"{cls!r} is not a ModelKind with kind and cli_name")
    if cls.__module__ != f"{__name__}.{cls.cli_name.replace('-', '_')}":
        raise TypeError(f"{cls.__name__}: the kind named {cls.cli_name!r} lives in "
                        f"{__name__}.{cls.cli_name.replace('-', '_')}")
    for other in _KINDS.values():
        if other is not cls and (other.kind == cls.kind or other.cli_name == cls.cli_name):
            raise TypeError(f"{cls.__name__} reuses the name of {other.__name__}")
    _KINDS[cls.kind] = cls
    return cls


def cli_names() -> list:
    """The ``--model`` names of the kinds in this package (without importing them)."""
    return sorted(info.name.replace("_", "-") for info in pkgutil.iter_modules(__path__)
                  if not info.name.startswith("_"))


def kinds() -> dict:
    """{kind: class} of every kind module in this package, imported on first use."""
    for name in cli_names():
        importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    return dict(_KINDS)


def kind_for_cli(name: str):
    """The kind called ``name`` on the command line (its module alone is imported)."""
    if name not in cli_names():
        raise InputError(f"unknown model {name!r} (allowed: {', '.join(cli_names())})")
    importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    return next(c for c in _KINDS.values() if c.cli_name == name)


def kind_of_result(meta: dict):
    """The kind that wrote a result file, from its meta ``model`` entry. Any other file (a simulation,
    no ``model`` entry) is read as the founding model's trajectory, whose loader says what is wrong."""
    found = kinds()
    return found.get(meta.get("model"), found["meanfield"])


def check_model(model):
    if not isinstance(model, ModelKind):
        names = ", ".join(c.__name__ for c in kinds().values())
        raise InputError(f"model must be a declared model kind ({names}), got {type(model).__name__}")
    return model


def __getattr__(name):
    # a declaration by its class name (``from odehild.models import MeanFieldModel``), found through
    # the registry, so that a new kind needs no entry here. The module named like the class is tried
    # first (MeanFieldModel: meanfield), so that a warm mean-field run does not import the other
    # kinds, which import SymPy
    stem = name.lower().removesuffix("model")
    for module in cli_names():
        if module.replace("-", "") == stem:
            kind_for_cli(module)
            found = [cls for cls in _KINDS.values() if cls.__name__ == name]
            if found:
                return found[0]
    for cls in kinds().values():
        if cls.__name__ == name:
            return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
