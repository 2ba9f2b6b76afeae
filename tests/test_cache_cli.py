"""Code cache across processes, the solve/plot/timescales CLI, and the rendered derivations."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from odehild.solve import Trajectory

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, sys, time
import numpy as np
from odehild.models.meanfield import MeanFieldModel
from odehild.codegen import compile_model
t0 = time.perf_counter()
m = MeanFieldModel([0.3, 1, 0.5], [0, 1, 0.7], K=2, eps=1e-3)
c = compile_model(m)
y = np.zeros(8); y[:4] = [1, -1, 0.5, 2]; dy = np.empty(8)
c.rhs(0.0, y, np.full(4, 0.25), 1e3, dy)
print(json.dumps({"from_cache": c.from_cache, "derive": c.derive_seconds,
                  "total": time.perf_counter() - t0, "dy": dy.tolist(), "path": str(c.path)}))
"""


def probe(cache):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={"ODEHILD_CACHE_DIR": str(cache), "PATH": "/usr/bin:/bin",
                              "HOME": str(cache), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_second_process_loads_from_cache_and_damage_is_rebuilt(tmp_path):
    first = probe(tmp_path)
    second = probe(tmp_path)
    assert not first["from_cache"] and first["derive"] > 0
    assert second["from_cache"] and second["derive"] == 0
    assert second["dy"] == first["dy"]
    # numba's own cache files exist next to the generated module: no recompilation next time
    assert list(Path(first["path"]).glob("__pycache__/*.nbi"))
    print(f"first run {first['total']:.2f} s, second run {second['total']:.2f} s")
    # damage the generated source: the manifest hash no longer matches, the entry is rebuilt
    src = Path(first["path"]) / "generated.py"
    src.write_text(src.read_text().replace("def rhs", "def broken_rhs"))
    third = probe(tmp_path)
    assert not third["from_cache"] and third["dy"] == first["dy"]
    # a foreign manifest (another key) is rebuilt too
    man = Path(first["path"]) / "manifest.json"
    data = json.loads(man.read_text())
    data["key"] = "somebody-else"
    man.write_text(json.dumps(data))
    assert not probe(tmp_path)["from_cache"]
    man.write_text("{not json")
    assert not probe(tmp_path)["from_cache"]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "odehild.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_solve_plot_and_init_file(tmp_path):
    out = tmp_path / "run.npz"
    res = run_cli("solve", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--eps", "1e-6",
                  "--kmax", "2", "--particles", "30", "--t-end", "2", "--points", "50", "--out", str(out))
    assert res.returncode == 0, res.stderr
    tr = Trajectory.load(out)
    assert tr.t.size == 51 and tr.t[0] == 0 and tr.t[-1] == 2.0
    assert np.allclose(np.diff(np.log10(tr.t[1:])), np.log10(tr.t[2] / tr.t[1]))
    assert tr.meta["eps"] == 1e-6 and tr.meta["kmax"] == 2
    fig = tmp_path / "run.png"
    res = run_cli("plot", str(out), "-o", str(fig))
    assert res.returncode == 0 and fig.stat().st_size > 10_000
    # single-precision particles: the same risk, a file and a figure as before
    half = tmp_path / "half.npz"
    res = run_cli("solve", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--eps", "1e-6",
                  "--kmax", "2", "--particles", "30", "--t-end", "2", "--points", "50", "--output-precision",
                  "float32", "--out", str(half))
    assert res.returncode == 0, res.stderr
    tr32 = Trajectory.load(half)
    assert tr32.s.dtype == np.float32 and tr32.meta["output_precision"] == "float32"
    np.testing.assert_array_equal(tr32.risk, tr.risk)
    assert run_cli("plot", str(half), "-o", str(tmp_path / "half.png")).returncode == 0
    # --init with a0, s0, weights
    init = tmp_path / "init.npz"
    np.savez(init, a0=np.array([1.0, -0.5, 2.0]), s0=np.zeros(3), weights=np.array([0.5, 0.25, 0.25]))
    res = run_cli("solve", "--sigma", "h(0,z)+h(1,z)", "--phi", "h(1,z)", "--eps", "1e-3", "--kmax", "1",
                  "--init", str(init), "--t-end", "1", "--points", "10", "--out", str(tmp_path / "b.npz"))
    assert res.returncode == 0, res.stderr
    assert np.allclose(Trajectory.load(tmp_path / "b.npz").weights, [0.5, 0.25, 0.25])


@pytest.mark.parametrize("args, needle", [
    (["--eps", "0"], "eps"), (["--eps", "1e-3", "--kmax", "0"], "K"),
    (["--eps", "1e-3", "--method", "Euler"], "Euler"), (["--eps", "1e-3", "--t-end", "-1"], "t_end"),
    (["--eps", "1e-3", "--init", "/nonexistent.npz"], "no such file"),
    (["--eps", "1e-3", "--a0", "cauchy"], "cauchy"),
])
def test_cli_solve_bad_input(args, needle, tmp_path):
    res = run_cli("solve", "--sigma", "relu(z)", "--phi", "z", *args, "--out", str(tmp_path / "x.npz"))
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x.npz").exists()


def test_cli_timescales_json():
    res = run_cli("timescales", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--kmax", "2",
                  "--eps-list", "1e-4", "1e-6", "1e-8", "--particles", "40", "--t-end", "3", "--json", "--quiet")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    t = np.array(data["times"], dtype=float)
    assert np.all(np.diff(t[:, 1]) < 0) and np.all(np.diff(t[:, 2]) < 0)  # faster at smaller eps
    assert 0.3 < data["slope"][1] < 0.6  # sqrt(eps) log(1/eps) gives a slope a bit below 1/2
    assert 0.15 < data["slope"][2] < 0.4  # eps^(1/4)
    weighted = run_cli("timescales", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--kmax", "2",
                       "--eps-list", "1e-4", "1e-6", "1e-8", "--particles", "40", "--t-end", "3", "--json", "--quiet",
                       "--error-norm", "weighted")
    assert weighted.returncode == 0, weighted.stderr
    tw = np.array(json.loads(weighted.stdout)["times"], dtype=float)
    np.testing.assert_allclose(tw[:, 1:], t[:, 1:], rtol=1e-6)


def test_rendered_derivations_are_up_to_date():
    sys.path.insert(0, str(ROOT / "derivations"))
    try:
        import render
    finally:
        sys.path.pop(0)
    for name, text in render.render_all().items():
        path = ROOT / "derivations" / name
        assert path.exists(), f"{name} missing: run python derivations/render.py"
        assert path.read_text() == text, f"{name} is stale: run python derivations/render.py"


def test_demo_quick_produces_every_file(tmp_path):
    res = run_cli("demo", "--quick", "--quiet", "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stderr
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"equations.md", "eps_sweep.png", "trajectory_smallest_eps.png", "trajectory_smallest_eps.npz",
            "ode_vs_sgd.png", "comparison.json", "report.md", "config.toml"} <= files
    report = (tmp_path / "out" / "report.md").read_text()
    assert "fitted slope" in report and "sup risk distance" in report
    for ref in re.findall(r"[\w./-]*[\w-]\.md\b", report):  # every cited document exists
        assert (ROOT / ref).exists() or (tmp_path / "out" / ref).exists(), ref
    rep = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert np.isfinite(rep["sup_risk_distance"]) and np.isfinite(rep["law_distance"])


def test_damaged_numba_cache_files_are_rebuilt(tmp_path):
    first = probe(tmp_path)
    for damage in ("truncate", "garble"):  # one cold compile for both
        files = list(Path(first["path"]).glob("__pycache__/*.nb[ic]"))
        assert files
        for f in files:
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2] if damage == "truncate" else data[:20] + b"\x00garbage" + data[28:])
        again = probe(tmp_path)  # would raise EOFError / UnpicklingError on the first call if trusted
        assert not again["from_cache"] and again["dy"] == first["dy"], damage
    assert probe(tmp_path)["from_cache"]


def test_unwritable_cache_entry_falls_back_with_a_warning(tmp_path):
    first = probe(tmp_path)
    entry = Path(first["path"])
    for f in sorted(entry.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    entry.rmdir()
    entry.write_text("an entry that is a file")
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         env={"ODEHILD_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path), "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "cannot write the code cache" in out.stderr
    assert json.loads(out.stdout)["dy"] == first["dy"]


@pytest.mark.parametrize("argv, code", [(["hermite", "tanh(z)", "--kmax", "12", "--json"], 0),
                                         (["hermite", "tanh(z)", "--kmax", "-1"], 2)])
def test_console_fast_exit_keeps_exit_code_output_and_exit_handlers(argv, code):
    script = ("import atexit; from odehild.cli import console; "
              "atexit.register(lambda: print('exit handler ran')); "
              f"console({argv!r})")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == code, res.stderr
    lines = res.stdout.splitlines()
    assert lines[-1] == "exit handler ran"
    if code == 0:
        assert len(json.loads("\n".join(lines[:-1]))["coefficients"]) == 13
    else:
        assert "kmax" in res.stderr and "Traceback" not in res.stderr


WARM_SOLVE = """
import sys
from odehild.cli import main
main(sys.argv[1:])
print("sympy imported:", "sympy" in sys.modules)
"""


def test_warm_solve_reads_cached_numbers_without_sympy_and_gives_the_same_result(tmp_path):
    from odehild.symbolic import hermite_cache

    # the run's shared cache (the generated code of this model is compiled once per run), with this
    # test's Hermite entries removed: its first solve expands the strings again
    sigma, phi = "h(0,z) + h(1,z) + h(2,z)", "h(1,z) + h(2,z)"
    for text in (sigma, phi):
        for suffix in (".pickle", ".json"):
            hermite_cache.entry(text, 2).with_suffix(suffix).unlink(missing_ok=True)
    args = ["solve", "--sigma", sigma, "--phi", phi, "--kmax", "2", "--eps", "1e-4", "--particles", "20",
            "--t-end", "2", "--points", "20", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = []
    for name in ("cold.npz", "warm.npz"):
        res = subprocess.run([sys.executable, "-c", WARM_SOLVE, *args, "--out", str(tmp_path / name)],
                             capture_output=True, text=True, env=env)
        assert res.returncode == 0, res.stderr
        runs.append(res.stdout)
    # the first run parses and expands (SymPy); the second reads the numbers it cached
    assert "sympy imported: True" in runs[0] and "sympy imported: False" in runs[1]
    cold, warm = Trajectory.load(tmp_path / "cold.npz"), Trajectory.load(tmp_path / "warm.npz")
    assert np.array_equal(cold.a, warm.a) and np.array_equal(cold.s, warm.s) and np.array_equal(cold.risk, warm.risk)
    for key in ("sigma", "phi", "sigma_coefficients", "phi_coefficients", "phi_norm2", "sigma_norm2", "learnability"):
        assert cold.meta[key] == warm.meta[key], key
    # a damaged numbers file is not trusted: the run expands again and writes it anew
    numbers = [hermite_cache.entry(text, 2).with_suffix(".json") for text in (sigma, phi)]
    for f in numbers:
        f.write_text('{"expression": "h(1,z)", "coefficients": [1.0]')
    res = subprocess.run([sys.executable, "-c", WARM_SOLVE, *args, "--out", str(tmp_path / "again.npz")],
                         capture_output=True, text=True, env=env)
    assert res.returncode == 0 and "sympy imported: True" in res.stdout, res.stderr
    assert np.array_equal(Trajectory.load(tmp_path / "again.npz").a, cold.a)
    assert all(len(json.loads(f.read_text())["coefficients"]) == 3 for f in numbers)


def test_meanfield_declaration_by_class_name_imports_neither_sympy_nor_other_kinds():
    script = ("import sys; from odehild.models import MeanFieldModel; "
              "print(MeanFieldModel.__module__, 'sympy' in sys.modules, "
              "sorted(m for m in sys.modules if m.startswith('odehild.models.')))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split()[:2] == ["odehild.models.meanfield", "False"]
    assert "finite_width" not in res.stdout and "committee" not in res.stdout
