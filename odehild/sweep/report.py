"""What a sweep found: its index as a table, and one figure per swept parameter.

Runs that differ only in ``seed`` are replicates: each point of a figure is their mean, with the
standard error over seeds as error bar. Where every x and y of a curve is positive the axes are
log-log and the least-squares slope of log y against log x is drawn and printed (for example the
sup distance to the ODE against d, or learning times against eps)."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..errors import InputError
from .store import INDEX_COLUMNS, ResultStore

REPLICATE = "seed"


def load_index(root):
    root = Path(root)
    meta_path = root / "sweep.json"
    if not meta_path.is_file():
        raise InputError(f"{root} is not a sweep store (no sweep.json; run 'odehild sweep FILE.toml' first)")
    meta = json.loads(meta_path.read_text())
    return meta, ResultStore(root).index()


def figure_names(rows, swept) -> list:
    names = []
    for row in rows:
        for k, v in row.items():
            if k in INDEX_COLUMNS or k in swept or k in names:
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                names.append(k)
    return names


def table(rows, swept) -> str:
    figs = figure_names(rows, swept)
    cols = [*swept, "status", "wall_seconds", *figs]
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    failed = [r for r in rows if r.get("status") == "failed"]
    lines += [f"failed {r['key']}: {r.get('message', '')}" for r in failed]
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def curves(rows, param, figure, swept):
    """{label of the other swept values: (x, mean, standard error, count)} for ``figure`` against
    ``param``, replicates (seeds) averaged."""
    others = [p for p in swept if p not in (param, REPLICATE)]
    groups = defaultdict(lambda: defaultdict(list))
    for r in rows:
        x, y = r.get(param), r.get(figure)
        if r.get("status") != "done" or not _number(x) or not _number(y):
            continue
        label = ", ".join(f"{p} = {r.get(p)}" for p in others)
        groups[label][float(x)].append(float(y))
    out = {}
    for label, by_x in groups.items():
        xs = np.array(sorted(by_x))
        ys = [np.array(by_x[x]) for x in xs]
        mean = np.array([y.mean() for y in ys])
        se = np.array([y.std(ddof=1) / math.sqrt(y.size) if y.size > 1 else 0.0 for y in ys])
        out[label] = (xs, mean, se, np.array([y.size for y in ys]))
    return out


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def summarize(root, out_dir=None, figures: bool = True) -> tuple:
    """(text, figure paths): the index table, and per swept parameter a figure of every key figure
    against it (with fitted log-log slopes), written to ``out_dir`` (default STORE/summary)."""
    from ..simulate.compare import fit_slope

    meta, rows = load_index(root)
    swept = meta["swept"]
    text = [f"sweep {meta.get('file', '')}: command {meta['command']}, {len(rows)} runs "
            f"({sum(r.get('status') == 'done' for r in rows)} done, "
            f"{sum(r.get('status') == 'failed' for r in rows)} failed)", table(rows, swept)]
    paths = []
    figs = figure_names(rows, swept)
    params = [p for p in swept if p != REPLICATE and len({r.get(p) for r in rows if _number(r.get(p))}) >= 2]
    out_dir = Path(out_dir or Path(root) / "summary")
    for param in params:
        panels = [(f, curves(rows, param, f, swept)) for f in figs]
        panels = [(f, c) for f, c in panels if any(v[0].size >= 2 for v in c.values())]
        if not panels:
            continue
        slopes = []
        for f, c in panels:
            for label, (x, m, se, n) in c.items():
                if x.size >= 2 and np.all(x > 0) and np.all(m > 0):
                    s, icpt = fit_slope(x, m)
                    slopes.append((f, label, s, icpt))
                    text.append(f"{f} against {param}{' (' + label + ')' if label else ''}: log-log slope {s:.3f} "
                                f"over {x.size} values (mean of {int(n.min())}..{int(n.max())} seeds per point)")
        if figures:
            paths.append(_plot(param, panels, slopes, out_dir / f"{param}.png"))
    return "\n".join(text), paths


def _plot(param, panels, slopes, path):
    from ..io import check_figure_path
    from ..solve.plot import finish_figure, pyplot

    plt = pyplot()
    n = len(panels)
    cols = min(n, 3)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(4.2 * cols, 3.4 * rows_), squeeze=False)
    for ax, (f, c) in zip(axes.flat, panels):
        loglog = True
        for label, (x, m, se, _) in c.items():
            ax.errorbar(x, m, yerr=se, marker="o", capsize=3, label=label or None)
            loglog &= bool(np.all(x > 0) and np.all(m > 0))
        for fname, label, s, icpt in slopes:
            if fname == f:
                x = c[label][0]
                xx = np.geomspace(x.min(), x.max(), 20)
                ax.plot(xx, 10 ** (icpt + s * np.log10(xx)), "k--", lw=0.8, label=f"slope {s:.2f}")
        if loglog:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.set_yscale("log")
            xs = sorted({float(v) for x, *_ in c.values() for v in x})
            if len(xs) <= 8:  # the swept values themselves, not crowded minor labels
                ax.xaxis.set_minor_formatter(NullFormatter())
                ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.set_xlabel(param)
        ax.set_ylabel(f)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"against {param} (mean ± s.e. over seeds)")
    path.parent.mkdir(parents=True, exist_ok=True)
    check_figure_path(str(path), "summary")
    finish_figure(fig, path)
    return path
