"""What a new user meets first: the learnability report, clean stdout, output files that follow one
rule, permissions, the partial file of a failed solve, and documentation that resolves."""

import json
import os
import re
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from odehild.cli import build_parser, main
from helpers import break_rhs_after, default_sigint
from odehild.io import load_npz
from odehild.models.meanfield import MeanFieldModel

ROOT = Path(__file__).resolve().parents[1]


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "odehild", *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# ---------------------------------------------------------------------------- learnability report

@pytest.mark.parametrize("sigma, phi, reachable, floor", [
    # relu: sigma_3 = 0 (c_3 = 0, docs/model.md 5); the link z + z^3/6 = 1.5 h_1 + h_3/sqrt(6)
    ("relu(z)", "z + z**3/6", [1], 1 / 12),
    # tanh is odd: sigma_2 = 0; and phi_1 = 0 traps s = 0, so nothing is learned: floor E[phi^2]/2 = (2+6)/2
    ("tanh(z)", "He(2,z)+He(3,z)", [], 4.0),
    # phi_1 = 0 with an activation that has every degree: the s = 0 trap alone
    ("h(0,z)+h(1,z)+h(2,z)", "h(2,z)", [], 0.5),
    # a staircase: everything reachable, floor 0
    ("h(0,z)+h(1,z)+h(2,z)", "h(1,z)+h(2,z)", [1, 2], 0.0),
])
def test_learnability_report_from_the_hermite_data(sigma, phi, reachable, floor):
    learn = MeanFieldModel(sigma, phi, K=4, eps=1e-4).learnability()
    assert list(learn.reachable) == reachable
    assert learn.floor == pytest.approx(floor, abs=1e-12)
    assert learn.learns_nothing == (not reachable)
    if not reachable:
        assert "only sit on a plateau" in learn.summary()


def test_solve_prints_the_report_and_stores_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["solve", "--sigma", "tanh(z)", "--phi", "He(2,z)+He(3,z)", "--eps", "1e-4", "--particles", "20",
                 "--points", "20", "--quiet", "--out", "r.npz"]) == 0
    out = capsys.readouterr().out
    assert out.index("sigma_2 = 0") < out.index("r.npz:")  # reported before the run's result line
    assert "phi_1 sigma_1 = 0" in out and "floor 4" in out
    _, meta = load_npz("r.npz")
    assert meta["learnability"]["reachable"] == [] and meta["learnability"]["floor"] == pytest.approx(4.0)


# ------------------------------------------------------------------------------------ outputs

def test_json_stdout_is_one_object_and_messages_go_to_stderr(tmp_path):
    res = cli("timescales", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--eps-list", "1e-3", "1e-4",
              "--particles", "20", "--points", "200", "--json", "--plot", "sweep.png", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)  # the whole of stdout, nothing after it
    assert data["learnability"]["reachable"] == [1, 2]
    assert "values used: sweep.png.toml" in res.stderr
    assert "NaN" not in res.stdout and "Infinity" not in res.stdout


def test_files_get_the_permissions_of_the_umask(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        assert main(["solve", "--sigma", "z", "--phi", "z", "--eps", "0.1", "--kmax", "1", "--particles", "5",
                     "--points", "10", "--quiet", "--out", "t.npz"]) == 0
        assert main(["plot", "t.npz", "-o", "t.png"]) == 0
    finally:
        os.umask(old)
    for name in ("t.npz", "t.npz.toml", "t.png", "t.png.toml"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


@pytest.mark.parametrize("argv, needle", [
    (["solve", "--sigma", "z", "--phi", "z", "--eps", "0.1", "--out", "a.txt"], "--out 'a.txt' must end in .npz"),
    (["plot", "t.npz", "-o", "x.jpgg"], ".png"),
    (["compare", "t.npz", "s.npz", "--report", "r.txt"], "--report 'r.txt' must end in .json"),
])
def test_result_paths_that_do_not_name_their_format_are_refused(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())  # refused before any work


def test_each_seed_file_has_values_that_regenerate_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["simulate", "--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--eps", "0.1", "--width", "4",
            "--dim", "16", "--t-end", "0.05", "--points", "5", "--kmax", "2", "--quiet"]
    assert main([*args, "--seeds", "2", "--out", "sim.npz"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["sim_seed0.npz", "sim_seed0.npz.toml", "sim_seed1.npz", "sim_seed1.npz.toml"]
    values = tomllib.loads((tmp_path / "sim_seed1.npz.toml").read_text())
    # the resolved SGD step (0.01 / d) is recorded, and the file stands for its own seed
    assert values["lr"] == pytest.approx(0.01 / 16) and values["seed"] == 1 and values["seeds"] == 1
    before = load_npz("sim_seed1.npz")[0]
    (tmp_path / "sim_seed1.npz").unlink()
    assert main(["run", "sim_seed1.npz.toml"]) == 0
    after = load_npz("sim_seed1.npz")[0]
    for k in ("risk", "a", "s"):
        np.testing.assert_array_equal(before[k], after[k])


def test_a_failed_solve_writes_its_partial_trajectory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = MeanFieldModel("h(0,z)+h(1,z)", "h(1,z)", K=1, eps=1e-3)
    break_rhs_after(monkeypatch, model, 0.01)
    assert main(["solve", "--sigma", "h(0,z)+h(1,z)", "--phi", "h(1,z)", "--kmax", "1", "--eps", "1e-3",
                 "--particles", "10", "--t-end", "1", "--quiet", "--out", "run.npz"]) == 1
    err = capsys.readouterr().err
    assert "what was computed is in run.partial.npz" in err
    arrays, meta = load_npz("run.partial.npz")
    assert meta["partial"] is True and "failed at t = " in meta["failure"]
    assert 0 < arrays["t"][-1] <= 0.02 and not (tmp_path / "run.npz").exists()


# ------------------------------------------------------------------------------ documentation

MD_REF = re.compile(r"[\w./-]*[\w-]\.md\b")


def _unresolved(text, here: Path, also=()):
    bad = []
    for ref in set(MD_REF.findall(text)):
        if ref in also:
            continue
        if not ((ROOT / ref).exists() or (here / ref).exists()):
            bad.append(ref)
    return bad


def test_every_cited_document_exists_in_the_repository():
    sources = [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("notebooks/*.py"),
               *ROOT.glob("derivations/*.md"), *ROOT.glob("odehild/**/*.py"), *ROOT.glob("benchmarks/*.py")]
    bad = {str(p.relative_to(ROOT)): _unresolved(p.read_text(), p.parent, also=("equations.md", "report.md"))
           for p in sources}
    assert {k: v for k, v in bad.items() if v} == {}
    parser = build_parser()
    helps = [parser.format_help()] + [sub.format_help() for sub in parser.subcommands.values()]
    assert _unresolved("\n".join(helps), ROOT) == []
    assert (ROOT / "docs" / "model.md").exists() and (ROOT / "docs" / "conventions.md").exists()


def test_ctrl_c_in_solve_exits_130_and_names_the_partial_file(tmp_path):
    import signal
    import time

    from odehild.solve import initial_condition, solve

    sigma, phi = "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)"
    # compiled into the cache (Numba compiles on the first call): the child starts solving at once
    solve(MeanFieldModel(sigma, phi, K=3, eps=1e-14), initial_condition(4), 1e-12, points=3, progress=False)
    proc = subprocess.Popen([sys.executable, "-m", "odehild", "solve", "--sigma", sigma, "--phi", phi, "--kmax", "3",
                             "--eps", "1e-14", "--t-end", "1e6", "--rtol", "1e-13", "--atol", "1e-15",
                             "--out", "run.npz"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=default_sigint)
    proc.stdout.readline()  # the learnability report comes before the integration
    time.sleep(4.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "run.partial.npz" in err and "Traceback" not in err
    arrays, meta = load_npz(tmp_path / "run.partial.npz")
    assert meta["partial"] is True and arrays["t"].size >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.partial.npz"]
