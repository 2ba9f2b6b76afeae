"""Progress bars on a terminal and in Jupyter, off in pipes and CI logs."""

from __future__ import annotations

import importlib.util
import sys


def interactive() -> bool:
    """True on a terminal or inside a Jupyter kernel (where stderr is not a tty)."""
    if sys.stderr.isatty():
        return True
    shell = sys.modules.get("IPython")
    ip = shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def progress_bar(total, desc: str, enabled=None, **kw):
    """A tqdm bar (notebook-aware through tqdm.auto), or None when progress is off.

    ``enabled`` None: on where :func:`interactive`. The bar appears only after 1 s, so short runs
    show none and the first ETA shown rests on a second of steps, not on the first few."""
    if enabled is None:
        enabled = interactive()
    if not enabled:
        return None
    # a widget bar in Jupyter where the optional ipywidgets is installed (extra "notebook"),
    # text on stderr otherwise; tqdm.auto picks the widget itself
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr, delay=1.0, **kw)
