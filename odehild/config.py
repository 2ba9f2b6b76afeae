"""Runs described by TOML files: ``odehild run config.toml``.

A config file names one sub-command and its options, spelled as on the command line without the
leading dashes (``t-end`` or ``t_end``); positional arguments go by their names (``traj``, ``sims``,
``expr``). For example::

    command = "solve"
    sigma = "h(0,z)+h(1,z)+h(2,z)+h(3,z)"
    phi = "h(1,z)+h(2,z)+h(3,z)"
    eps = 1e-10
    particles = 200
    out = "run.npz"

Unknown keys are refused with their name. Omitted options take the command line's defaults, and
paths are relative to the working directory, as on the command line. Every run (from a file or from
flags) that writes results also writes the values it used, defaults included and resolved
(the SGD step ``lr``, the first output time ``t-min``), next to every result file: ``FILE.toml``
for ``FILE`` (``run.npz.toml`` for ``--out run.npz``, ``sim_seed3.npz.toml`` for one seed of
``--seeds``), ``config.toml`` in the demo's folder. ``odehild run FILE.toml`` regenerates FILE.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import tomllib
from pathlib import Path

from .errors import InputError

_SKIP = {"help", "version"}


def _options(sub: argparse.ArgumentParser) -> dict:
    """{dest: action} of the options a config file may set for a sub-command."""
    return {a.dest: a for a in sub._actions if a.dest not in _SKIP}


def _check_value(key, value, action):
    many = action.nargs in ("+", "*")
    if many:
        if not isinstance(value, list) or not value:
            raise InputError(f"config key {key!r} takes a non-empty list, got {value!r}")
        values = value
    else:
        values = [value]
    is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
    for v in values:
        if is_flag:
            ok, want = isinstance(v, bool), "true or false"
        elif action.type is float:
            ok, want = isinstance(v, (int, float)) and not isinstance(v, bool), "a number"
        elif action.type is int:
            ok, want = isinstance(v, int) and not isinstance(v, bool), "an integer"
        else:
            ok, want = isinstance(v, str), "a string"
        if not ok:
            raise InputError(f"config key {key!r} takes {want}, got {v!r}")


def config_to_argv(config: dict, subparsers: dict) -> list:
    """Command-line arguments equivalent to a parsed config file."""
    allowed = ", ".join(sorted(c for c in subparsers if c != "run"))
    if "command" not in config:
        raise InputError(f"config has no 'command' key (allowed: {allowed})")
    command = config["command"]
    if not isinstance(command, str) or command not in subparsers or command == "run":
        raise InputError(f"config command {command!r} is not one of: {allowed}")
    options = _options(subparsers[command])
    argv, positional = [command], []
    for raw_key, value in config.items():
        if raw_key == "command":
            continue
        key = raw_key.replace("-", "_")
        action = options.get(key)
        if action is None:
            allowed = ", ".join(sorted(options))
            raise InputError(f"unknown config key {raw_key!r} for command {command!r} (allowed: {allowed})")
        _check_value(raw_key, value, action)
        values = [str(v) for v in (value if isinstance(value, list) else [value])]
        if not action.option_strings:
            positional.append((key, values))
        elif isinstance(action, argparse._StoreTrueAction):
            if value:
                argv.append(action.option_strings[-1])
        elif len(values) == 1 and values[0].startswith("-"):
            argv.append(f"{action.option_strings[-1]}={values[0]}")  # '-h(1,z)' is a value, not an option
        else:
            argv.append(action.option_strings[-1])
            argv.extend(values)
    given = {k.replace("-", "_") for k in config}
    missing = [a.dest for a in subparsers[command]._actions
               if (a.required or not a.option_strings) and a.dest not in given and a.dest not in _SKIP]
    if missing:
        raise InputError(f"config for command {command!r} lacks required key(s): "
                         f"{', '.join(m.replace('_', '-') for m in missing)}")
    if positional:
        order = [a.dest for a in subparsers[command]._actions if not a.option_strings]
        argv.append("--")  # positional values may start with '-' (an expression such as '-z')
        for _, values in sorted(positional, key=lambda kv: order.index(kv[0])):
            argv.extend(values)
    return argv


def load_config(path) -> dict:
    """A TOML config file, or the values stored in a result file's meta (``odehild run FILE.npz``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no such config file: {path}")
    if path.suffix == ".npz":
        from .io import load_npz

        values = load_npz(path)[1].get("values")
        if not isinstance(values, dict):
            raise InputError(f"{path} holds no 'values' in its meta (written by an older odehild, or not a result)")
        return values
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not valid TOML (UTF-8 text): {exc}") from None


def used_config(args: argparse.Namespace, sub: argparse.ArgumentParser) -> dict:
    """The values a parsed command ran with, defaults included, as a config dict."""
    out = {"command": args.command}
    for dest in _options(sub):
        value = getattr(args, dest, None)
        if value is None:
            continue
        out[dest] = value
    return out


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
        return repr(v)
    if isinstance(v, str):
        # JSON escapes are valid TOML basic-string escapes; TOML also forbids a raw DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(config: dict, header: str = "") -> str:
    """TOML text of a flat config dict (strings, numbers, booleans and lists of them)."""
    lines = [f"# {line}" for line in header.splitlines()]
    lines += [f"{k} = {_toml_value(v)}" for k, v in config.items()]
    return "\n".join(lines) + "\n"


def values_path(result) -> Path:
    """The values file of a result: ``FILE.toml`` next to ``FILE`` (``run.npz`` -> ``run.npz.toml``);
    ``config.toml`` inside a result folder (the demo's)."""
    result = Path(result)
    return result / "config.toml" if result.is_dir() else result.with_name(result.name + ".toml")


def merge_values(values: dict, overrides=None) -> dict:
    """``values`` with ``overrides`` on top (None removes a key): resolved defaults such as the SGD
    step, or the one seed a file holds."""
    out = dict(values)
    for key, value in (overrides or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def write_used_config(args: argparse.Namespace, sub: argparse.ArgumentParser, result, overrides=None) -> Path:
    """Write the values ``args`` ran with (defaults included, ``overrides`` on top) next to
    ``result``. A result file's own meta ``values`` holds the same dict and is the authority: this
    file is a readable copy, written after it."""
    from . import __version__
    from .io import write_text_atomic

    path = values_path(result)
    base = getattr(args, "values", None)  # set by the CLI before the run; the same dict the result holds
    values = merge_values(base if base is not None else used_config(args, sub), overrides)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    header = (f"Values used by 'odehild {args.command}' for {Path(result).name} (odehild {__version__}, {stamp}).\n"
              f"Regenerate with: odehild run {path}")
    return write_text_atomic(path, dumps(values, header))
