"""The result store of a sweep: a folder that survives the driver.

    STORE/runs/KEY.npz (or .json)   the run's result, KEY the content hash of its configuration
    STORE/runs/KEY.npz.toml         the values it ran with (``odehild run`` regenerates it)
    STORE/runs/KEY.ode.npz          simulate with ode = true: the ODE of the same run
    STORE/runs/KEY.log              what the run printed
    STORE/runs/KEY.record.json      status, message, wall time, key figures, files: written last,
                                    atomically, by the worker itself
    STORE/index.json, index.csv     one row per run of the sweep, rebuilt from the records

Every file is written under a temporary name and renamed, so a killed driver or worker leaves
either a whole file or none. A run counts as finished only if its record says so and every file it
names is still there and readable (a zip archive that tests clean, a JSON that parses).
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

from ..io import json_safe, write_text_atomic

INDEX_COLUMNS = ("key", "status", "wall_seconds", "path", "message")


class ResultStore:
    def __init__(self, root):
        self.root = Path(root)
        self.runs = self.root / "runs"

    def create(self):
        self.runs.mkdir(parents=True, exist_ok=True)
        return self

    def stem(self, key: str) -> Path:
        return self.runs / key

    def record_path(self, key: str) -> Path:
        return self.runs / f"{key}.record.json"

    def write_record(self, record: dict):
        write_text_atomic(self.record_path(record["key"]), json.dumps(json_safe(record), indent=1))

    def record(self, key: str):
        """The run's record, or None if it has none or it does not parse."""
        try:
            return json.loads(self.record_path(key).read_text())
        except (OSError, ValueError):
            return None

    def finished(self, key: str):
        """The record of a run that finished (done or failed) with its files intact, else None."""
        rec = self.record(key)
        if rec is None or rec.get("status") not in ("done", "failed"):
            return None
        if rec["status"] == "done" and not all(_readable(self.root / f) for f in rec.get("files", [])):
            return None
        return rec

    def write_index(self, runs, records: dict, swept: list):
        """index.json and index.csv: one row per run, in the sweep's order (runs not finished yet
        are listed as 'pending')."""
        rows = []
        figure_names = []
        for run in runs:
            rec = records.get(run.key) or {"status": "pending"}
            figures = rec.get("figures") or {}
            figure_names += [f for f in figures if f not in figure_names]
            rows.append({"key": run.key, **{p: run.params.get(p) for p in swept}, "status": rec["status"],
                         "wall_seconds": rec.get("wall_seconds"), "path": rec.get("path"),
                         "message": rec.get("message", ""), **figures})
        write_text_atomic(self.root / "index.json", json.dumps(json_safe(rows), indent=1))
        buf = io.StringIO()
        columns = ["key", *swept, "status", "wall_seconds", *figure_names, "path", "message"]
        writer = csv.DictWriter(buf, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.root / "index.csv", buf.getvalue())
        return rows

    def index(self) -> list:
        try:
            return json.loads((self.root / "index.json").read_text())
        except (OSError, ValueError):
            return []


def _readable(path: Path) -> bool:
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                return bool(z.namelist()) and z.testzip() is None
        if path.suffix == ".json":
            json.loads(path.read_text())
            return True
        return path.is_file()
    except (OSError, ValueError, zipfile.BadZipFile):
        return False
