"""File conventions shared by every stage: .npz arrays plus a JSON ``meta`` string, written atomically."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from .errors import InputError


def cache_dir() -> Path:
    """Where generated modules and Hermite expansions are cached: $ODEHILD_CACHE_DIR, else
    ~/.cache/odehild."""
    root = os.environ.get("ODEHILD_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "odehild")
    return Path(root)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_stale_temporaries(path: Path):
    """Temporaries ``.NAME.PID.*.tmp`` left by a killed writer of ``path`` (its process is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (PermissionError, OSError):
            pass  # alive (another user's process) or unknowable: leave it


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file next to ``path`` and rename it onto ``path`` when the block ends
    without error; on error (or Ctrl-C) the old file, if any, is left as it was. The result gets
    the permissions any new file gets (0666 less the umask), not mkstemp's 0600."""
    path = Path(path)
    if not path.name or path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: not a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
        raise


def check_writable(path) -> Path:
    """Refuse, before any work, a result path that cannot be written: a folder, or a place where
    no file can be created (probed with a temporary next to it, removed at once), so that a long
    run does not end in "cannot write"."""
    path = Path(path)
    if not path.name or path.is_dir():
        raise InputError(f"cannot write {str(path)!r}: not a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # atomic_write creates missing folders
        folder = folder.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def save_npz(path, arrays: dict, meta: dict) -> Path:
    """Write arrays and meta to ``path`` (.npz appended if missing, as NumPy does) atomically."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    with atomic_write(path) as fh:
        np.savez(fh, meta=np.array(json.dumps(meta, default=_json_default)), **arrays)
    return path


def load_npz(path, required=()) -> tuple:
    """(arrays, meta) from a file written by :func:`save_npz`; clear errors for wrong files."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile/pickle errors: not one of our files
        raise InputError(f"{path} is not a readable .npz file ({exc.__class__.__name__})") from None
    try:
        meta = json.loads(str(arrays.pop("meta"))) if "meta" in arrays else {}
    except json.JSONDecodeError:
        raise InputError(f"{path}: its 'meta' array is not JSON: not a file odehild wrote") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}: its 'meta' is not a JSON object: not a file odehild wrote")
    missing = [k for k in required if k not in arrays]
    if missing:
        raise InputError(f"{path} lacks arrays {missing} (has {sorted(arrays)})")
    return arrays, meta


def write_text_atomic(path, text: str) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def json_safe(obj):
    """``obj`` with NumPy values made plain and non-finite floats made None: strict JSON, which
    has no NaN or Infinity."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in meta")


def figure_formats() -> list:
    """File suffixes matplotlib can write (png, pdf, svg, ...)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    return sorted(FigureCanvasAgg(Figure()).get_supported_filetypes())


def check_figure_path(path, option: str = "the figure file") -> Path:
    """Refuse a figure path whose suffix matplotlib cannot write, naming the allowed ones."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    allowed = figure_formats()
    if fmt not in allowed:
        raise InputError(f"{option} {str(path)!r} must end in one of: {', '.join('.' + f for f in allowed)}")
    return path


def save_figure(path, figure) -> Path:
    """Save a matplotlib figure atomically, in the format its suffix names."""
    path = check_figure_path(path)
    with atomic_write(path) as fh:
        figure.savefig(fh, format=path.suffix.lstrip(".").lower(), dpi=120)
    return path
