"""Runs described by TOML files against the same runs from command-line flags."""

import tomllib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odehild.cli import main
from odehild.config import dumps
from odehild.io import load_npz

STAIR = ("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)")


def assert_same_run(p, q):
    (x, mx), (y, my) = load_npz(p), load_npz(q)
    assert sorted(x) == sorted(y)
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    for k in ("sigma", "phi", "eps", "K", "method", "rtol", "atol", "t_end", "init"):
        if k in mx:
            assert mx[k] == my[k], k


def test_solve_from_toml_equals_solve_from_flags(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flags = ["solve", "--sigma", STAIR[0], "--phi", STAIR[1], "--eps", "1e-6", "--particles", "30",
             "--t-end", "3", "--rtol", "1e-9", "--seed", "4", "--quiet"]
    assert main(flags + ["--out", "flags.npz"]) == 0
    (tmp_path / "run.toml").write_text(
        f'command = "solve"\nsigma = "{STAIR[0]}"\nphi = "{STAIR[1]}"\neps = 1e-6\nparticles = 30\n'
        't-end = 3\nrtol = 1e-9\nseed = 4\nquiet = true\nout = "toml.npz"\n')
    assert main(["run", "run.toml"]) == 0
    assert_same_run("flags.npz", "toml.npz")

    # the values used, written next to the results, hold the flags and every default
    used = tomllib.loads((tmp_path / "flags.npz.toml").read_text())
    assert used == {"command": "solve", "model": "meanfield", "sigma": STAIR[0], "phi": STAIR[1], "eps": 1e-6, "kmax": 6,
                    "particles": 30, "a0": "normal", "seed": 4, "nodes": "quadrature", "t_end": 3.0, "points": 200,
                    "method": "Radau", "rtol": 1e-9, "atol": 1e-10, "quiet": True, "out": "flags.npz",
                    "max_wall": 3600.0, "threads": 1, "error_norm": "state", "output_precision": "float64",
                    "t_min": pytest.approx(1e-8, rel=1e-12)}  # resolved default: eps / 100
    # and regenerate the same results
    before = load_npz("flags.npz")[0]
    (tmp_path / "flags.npz").unlink()
    assert main(["run", "flags.npz.toml"]) == 0
    after = load_npz("flags.npz")[0]
    for k in before:
        np.testing.assert_array_equal(before[k], after[k])


def test_plot_and_simulate_from_toml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sim = ["--sigma", "h(0,z)+h(1,z)+h(2,z)", "--phi", "h(1,z)+h(2,z)", "--eps", "0.1", "--width", "4",
           "--dim", "16", "--algo", "gf", "--t-end", "0.5", "--points", "10", "--kmax", "2", "--quiet"]
    assert main(["simulate", *sim, "--out", "flags.npz"]) == 0
    (tmp_path / "sim.toml").write_text(
        'command = "simulate"\nsigma = "h(0,z)+h(1,z)+h(2,z)"\nphi = "h(1,z)+h(2,z)"\neps = 0.1\nwidth = 4\n'
        'dim = 16\nalgo = "gf"\nt_end = 0.5\npoints = 10\nkmax = 2\nquiet = true\nout = "toml.npz"\n')
    assert main(["run", "sim.toml"]) == 0
    x, y = load_npz("flags.npz")[0], load_npz("toml.npz")[0]
    for k in ("t", "risk", "a", "s"):
        if k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert tomllib.loads((tmp_path / "flags.npz.toml").read_text())["algo"] == "gf"

    assert main(["solve", "--sigma", "z", "--phi", "z", "--eps", "0.1", "--kmax", "1", "--particles", "5",
                 "--quiet", "--out", "traj.npz"]) == 0
    (tmp_path / "plot.toml").write_text('command = "plot"\ntraj = "traj.npz"\noutput = "fig.png"\n')
    assert main(["run", "plot.toml"]) == 0
    assert (tmp_path / "fig.png").read_bytes()[:4] == b"\x89PNG"
    assert tomllib.loads((tmp_path / "fig.png.toml").read_text()) == {
        "command": "plot", "traj": "traj.npz", "output": "fig.png"}


@pytest.mark.parametrize("text, needle", [
    ('command = "solve"\nsigma = "z"\nphi = "z"\neps = 0.1\nout = "x.npz"\nepsilon = 2\n', "'epsilon'"),
    ('command = "solve"\nsigma = "z"\nphi = "z"\neps = "small"\nout = "x.npz"\n', "'eps' takes a number"),
    ('command = "solve"\nsigma = "z"\nphi = "z"\neps = 0.1\nparticles = 2.5\nout = "x.npz"\n', "'particles' takes an integer"),
    ('command = "timescales"\nsigma = "z"\nphi = "z"\neps_list = 0.1\n', "'eps_list' takes a non-empty list"),
    ('sigma = "z"\n', "no 'command' key"),
    ('command = "fly"\n', "'fly' is not one of"),
    ('command = "run"\nconfig = "x.toml"\n', "'run' is not one of"),
    ('command = [\n', "not valid TOML"),
])
def test_bad_configs_are_refused_by_name(tmp_path, monkeypatch, capsys, text, needle):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(text)
    assert main(["run", "c.toml"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "x.npz").exists()


_scalars = st.one_of(st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False),
                     st.text(st.characters(exclude_categories=("Cs",)), max_size=20))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True),
                       st.one_of(_scalars, st.lists(st.floats(allow_nan=False), min_size=1, max_size=4))))
def test_written_toml_reads_back_exactly(config):
    assert tomllib.loads(dumps(config, header="a\nb")) == config
