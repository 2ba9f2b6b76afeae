"""Bad input, numerical failure and faults end in one line and the right exit code, never in a
traceback or a wrong number (the reproducers of a reliability campaign)."""

import os

import numpy as np
import pytest

from odehild.cli import main
from odehild.io import load_npz
from helpers import default_sigint

S = ["--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--kmax", "2"]
NET = [*S, "--width", "4", "--dim", "16", "--quiet"]


@pytest.mark.parametrize("argv, needle", [
    (["solve", *S, "--eps", "1e-300", "--out", "a.npz"], "eps must lie in [1e-18, 1e+06]"),
    (["solve", *S, "--eps", "1e-200", "--method", "BDF", "--out", "a.npz"], "eps must lie in"),
    (["timescales", *S, "--eps-list", "1e-300", "1e-4"], "eps must lie in"),
    (["simulate", *NET, "--algo", "gf", "--eps", "1e-300", "--out", "s.npz"], "eps must lie in"),
    (["solve", "--sigma", "1e150*z", "--phi", "z", "--eps", "1e-3", "--out", "a.npz"], "beyond what odehild computes"),
    (["solve", "--sigma", "relu(z)", "--phi", "z**256", "--eps", "1e-3", "--out", "a.npz"], "beyond what odehild"),
    (["simulate", *NET, "--phi", "exp(27*z)", "--eps", "0.1", "--out", "s.npz"], "beyond what odehild"),
    (["solve", *S, "--eps", "1e-3", "--out", "/proc/x.npz"], "cannot write /proc/x.npz"),
    (["solve", *S, "--eps", "1e-3", "--out", ""], "must end in .npz"),
    (["solve", *S, "--eps", "1e-3", "--out", "/dev/null"], "must end in .npz"),
    (["solve", *S, "--eps", "1e-3", "--seed", "-1", "--out", "a.npz"], "seed must be a non-negative integer"),
    (["simulate", *NET, "--eps", "0.1", "--seed", "-1", "--out", "s.npz"], "seed must be a non-negative"),
    (["simulate", *NET, "--eps", "0.1", "--points", "-1", "--out", "s.npz"], "points must be a positive"),
    (["simulate", *NET, "--eps", "0.1", "--points", "0", "--out", "s.npz"], "points must be a positive"),
    (["timescales", *S, "--eps-list", "1e-3", "1e-4", "--points", "0"], "points must be a positive"),
    (["timescales", *S, "--eps-list", "1e-2", "1e-2"], "two distinct values of eps"),
    (["solve", *S, "--eps", "1e-3", "--rtol", "1e-20", "--out", "a.npz"], "rtol must be at least"),
    (["simulate", *NET, "--eps", "0.1", "--lr", "1e-300", "--t-end", "1e300", "--out", "s.npz"], "steps"),
    (["simulate", *S, "--width", "1000000000", "--dim", "16", "--eps", "0.1", "--out", "s.npz"], "GiB of memory"),
    (["solve", *S, "--eps", "1e-3", "--particles", "1000000000", "--out", "a.npz"], "GiB of memory"),
    (["simulate", "--sigma", "sign(z)", "--phi", "z", "--width", "4", "--dim", "16", "--eps", "0.1", "--out", "s.npz"],
     "jumps"),
    (["simulate", *NET, "--algo", "gd", "--samples", "50", "--noise", "-1", "--eps", "0.1", "--out", "g.npz"],
     "label noise must be a non-negative number"),
    (["hermite", "1/relu(z)"], "cannot compute its Hermite coefficients"),
    (["solve", *S, "--eps", "1e-3", "--error-norm", "weighted", "--method", "BDF", "--out", "a.npz"],
     "error_norm='weighted' is implemented in the compiled structured Radau only"),
    (["timescales", *S, "--eps-list", "1e-3", "1e-4", "--error-norm", "weighted", "--method", "LSODA"],
     "error_norm='weighted' is implemented in the compiled structured Radau only"),
    (["solve", "--model", "committee", "--sigma", "erf(z/sqrt(2))", "--phi", "erf(z/sqrt(2))", "--lr", "0.1",
      "--error-norm", "weighted", "--out", "a.npz"], "--error-norm weighted weighs particles"),
    (["solve", "--model", "committee", "--sigma", "erf(z/sqrt(2))", "--phi", "erf(z/sqrt(2))", "--lr", "0.1",
      "--output-precision", "float32", "--out", "a.npz"], "--output-precision float32 stores particles"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, argv, needle):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1, err
    assert not [p for p in tmp_path.iterdir()], "a refused run left files"


@pytest.mark.parametrize("out, needle", [("f/x.npz", "cannot write f/x.npz: Not a directory"),
                                         ("f/new/x.npz", "cannot write f/new/x.npz: Not a directory")])
def test_an_unwritable_result_path_is_refused_before_any_work(tmp_path, monkeypatch, capsys, out, needle):
    """Not after the solve: the learnability summary, a solve's first output, is never printed, and the
    probe leaves no temporary behind."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "f").write_text("a file where a folder should be")
    assert main(["solve", *S, "--eps", "1e-3", "--out", out]) == 2
    captured = capsys.readouterr()
    assert needle in captured.err and captured.out == "", captured
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


@pytest.mark.parametrize("toml, needle", [
    ('command = ["solve"]\n', "is not one of"),
    ("command = \"solve\"\nparticles = 99999999999999999999\n", "lacks required key"),
    (b"\xff\xfe", "not valid TOML"),
])
def test_malformed_config_files(tmp_path, monkeypatch, capsys, toml, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    assert main(["run", "c.toml"]) == 2
    assert needle in capsys.readouterr().err


@pytest.mark.parametrize("arrays, command, needle", [
    (dict(meta=np.array("not json"), a0=np.zeros(3), s0=np.zeros(3)), "init", "not JSON"),
    (dict(meta=np.array("{}"), t=np.zeros(3), a=np.zeros(3), s=np.zeros(3), risk=np.zeros(3)), "plot", "shape (T, N)"),
    (dict(meta=np.array("{}"), t=np.zeros(0), a=np.zeros((0, 2)), s=np.zeros((0, 2)), risk=np.zeros(0)), "plot",
     "non-empty"),
    (dict(meta=np.array("{}"), t=np.arange(3.0), a=np.zeros((3, 2)), s=np.zeros((3, 2)), risk=np.zeros(3)), "compare",
     "meta lacks"),
])
def test_malformed_result_files(tmp_path, monkeypatch, capsys, arrays, command, needle):
    monkeypatch.chdir(tmp_path)
    np.savez("bad.npz", **arrays)
    argv = {"init": ["solve", *S, "--eps", "1e-3", "--init", "bad.npz", "--out", "a.npz"],
            "plot": ["plot", "bad.npz", "-o", "p.png"],
            "compare": ["compare", "bad.npz", "bad.npz"]}[command]
    if command == "compare":
        sim = dict(arrays, step=np.arange(3))
        np.savez("sim.npz", **sim)
        argv = ["compare", "bad.npz", "sim.npz"]
    assert main(argv) == 2
    assert needle in capsys.readouterr().err


def test_expressions_starting_with_a_minus_round_trip(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["hermite", "-z", "--kmax", "2", "--json"]) == 0
    assert '"coefficients": [0.0, -1.0, 0.0]' in capsys.readouterr().out.replace("-0.0", "0.0")
    assert main(["solve", "--sigma", "-h(1,z)", "--phi", "z", "--kmax", "1", "--eps", "1e-2", "--particles", "10",
                 "--points", "10", "--quiet", "--out", "n.npz"]) == 0
    before = load_npz("n.npz")[0]["risk"]
    assert main(["run", "n.npz.toml"]) == 0
    np.testing.assert_array_equal(before, load_npz("n.npz")[0]["risk"])


def test_the_record_grid_never_changes_the_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for points in ("1", "40"):
        assert main(["simulate", *NET, "--eps", "0.1", "--t-end", "0.5", "--points", points, "--out", f"p{points}.npz"]) == 0
    one, many = load_npz("p1.npz")[0], load_npz("p40.npz")[0]
    assert one["step"][-1] == many["step"][-1] == round(0.5 / (0.01 / 16))
    # same seed, same steps: the same weights up to the rounding of where the chunks end
    np.testing.assert_allclose(one["a"][-1], many["a"][-1], rtol=1e-12)


def test_diverging_sgd_fails_and_keeps_what_it_computed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["simulate", *NET, "--eps", "0.1", "--lr", "1", "--t-end", "50", "--out", "s.npz"]) == 1
    err = capsys.readouterr().err
    assert "diverged" in err and "s.partial.npz" in err
    arrays, meta = load_npz("s.partial.npz")
    assert meta["partial"] is True and np.all(np.isfinite(arrays["risk"]))
    assert not (tmp_path / "s.npz").exists()


def test_result_files_carry_their_values_and_stale_temporaries_are_removed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    stale = tmp_path / ".r.npz.999999999.x1y2.tmp"  # left by a killed writer (no such process)
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".r.npz.{os.getpid()}.zz.tmp"  # a writer still running: kept
    alive.write_bytes(b"")
    argv = ["solve", "--sigma", "h(0,z)+h(1,z)", "--phi", "h(1,z)", "--kmax", "1", "--eps", "1e-2",
            "--particles", "10", "--points", "10", "--quiet", "--out", "r.npz"]
    assert main(argv) == 0
    assert not stale.exists() and alive.exists()
    # the result's own meta holds the values (the authority; r.npz.toml is a copy written after it)
    arrays, meta = load_npz("r.npz")
    assert meta["values"]["eps"] == 1e-2 and meta["values"]["t_min"] == pytest.approx(arrays["t"][1])
    (tmp_path / "r.npz.toml").unlink()
    before = arrays["risk"]
    assert main(["run", "r.npz"]) == 0
    np.testing.assert_array_equal(before, load_npz("r.npz")[0]["risk"])


def test_ctrl_c_in_sgd_exits_130_promptly_with_the_partial_file(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from odehild.simulate import online_sgd

    # compiled into the cache (Numba compiles on the first call): the child trains at once
    online_sgd("h(0,z)+h(1,z)+h(2,z)", "h(1,z)+h(2,z)", 0.05, 4, 16, t_end=0.01, kmax=2)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "-m", "odehild", "simulate", *S, "--eps", "0.05", "--width", "64",
                             "--dim", "1000", "--t-end", "30", "--out", "s.npz"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(root)},
                            preexec_fn=default_sigint)
    time.sleep(5.0)  # the run takes far longer: 3e6 steps, about 50 s (t_end 3 took 5.0 s on 2026-12-02)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert time.perf_counter() - sent < 10.0  # chunks of about 0.2 s; one long chunk was half the run
    assert "interrupted" in err and "s.partial.npz" in err and "Traceback" not in err
    arrays, meta = load_npz(tmp_path / "s.partial.npz")
    assert meta["partial"] is True and arrays["step"][-1] > 0
