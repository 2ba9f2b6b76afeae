"""odehild sweep: the same numbers as runs done one by one, resume after a killed driver, failed runs
recorded, a cache filled by many processes at once, bad sweep files refused."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from odehild.cli import main
from odehild.io import load_npz
from odehild.sweep import load_sweep, run_sweep

STAIR = 'sigma = "h(0,z)+h(1,z)+h(2,z)+h(3,z)"\nphi = "h(1,z)+h(2,z)+h(3,z)"\nkmax = 3\n'


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def solve_sweep(tmp_path, eps="[1e-2, 1e-3, 1e-4]", particles=30, extra=""):
    return write(tmp_path, f'command = "solve"\n{STAIR}particles = {particles}\nt-end = 5.0\n{extra}\n'
                           f'[grid]\neps = {eps}\n')


def test_local_cluster_sweep_equals_runs_one_by_one(tmp_path, capsys):
    path = write(tmp_path, f'command = "simulate"\n{STAIR}eps = 0.1\nwidth = 4\nt-end = 0.3\npoints = 8\n'
                           f'ode = true\nparticles = 50\n[grid]\ndim = [16, 32]\nseed = [0, 1]\n')
    assert main(["sweep", str(path), "--workers", "2", "--quiet"]) == 0
    rows = json.loads((tmp_path / "s-store" / "index.json").read_text())
    assert len(rows) == 4 and all(r["status"] == "done" for r in rows)
    for row in rows:
        own = tmp_path / f"own_{row['key']}.npz"
        assert main(["simulate", "--sigma", "h(0,z)+h(1,z)+h(2,z)+h(3,z)", "--phi", "h(1,z)+h(2,z)+h(3,z)",
                     "--kmax", "3", "--eps", "0.1", "--width", "4", "--dim", str(row["dim"]), "--seed",
                     str(row["seed"]), "--t-end", "0.3", "--points", "8", "--quiet", "--out", str(own)]) == 0
        a, b = load_npz(own)[0], load_npz(tmp_path / "s-store" / row["path"])[0]
        np.testing.assert_array_equal(a["risk"], b["risk"])
        np.testing.assert_array_equal(a["s"], b["s"])
        assert row["final_risk"] == float(a["risk"][-1])
        assert 0 < row["sup_risk_distance"] < 5
    # the store regenerates each run: its values file is an `odehild run` config
    values = tmp_path / "s-store" / (rows[0]["path"] + ".toml")
    assert main(["run", str(values)]) == 0


def test_killed_driver_resumes_without_recomputing(tmp_path):
    path = solve_sweep(tmp_path, eps="[1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8]", particles=400)
    runs_dir = tmp_path / "s-store" / "runs"
    # the driver and its local cluster in one process group: SIGKILL takes all of them at once
    proc = subprocess.Popen([sys.executable, "-m", "odehild", "sweep", str(path), "--workers", "1", "--quiet"],
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(runs_dir.glob("*.record.json"))) < 2:
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_text() for p in runs_dir.glob("*.record.json")}
    assert 2 <= len(before) < 8, f"{len(before)} runs had finished when the driver was killed"
    sweep = load_sweep(path)
    run_sweep(sweep, workers=0, progress=False)
    after = {p.name: p.read_text() for p in runs_dir.glob("*.record.json")}
    assert len(after) == 8
    assert all(after[name] == text for name, text in before.items())  # not recomputed
    rows = json.loads((tmp_path / "s-store" / "index.json").read_text())
    assert sorted(r["key"] for r in rows) == sorted(r.key for r in sweep.runs)  # every run exactly once
    assert all(r["status"] == "done" for r in rows)


def test_a_failing_run_is_recorded_and_the_others_finish(tmp_path, capsys):
    path = solve_sweep(tmp_path, eps="[1e-2, -1.0, 1e-3]")
    assert main(["sweep", str(path), "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "2 done, 1 failed" in out
    rows = {r["eps"]: r for r in json.loads((tmp_path / "s-store" / "index.json").read_text())}
    assert rows[-1.0]["status"] == "failed" and "eps" in rows[-1.0]["message"] and "-1" in rows[-1.0]["message"]
    assert rows[1e-2]["status"] == rows[1e-3]["status"] == "done"
    # a second pass skips all three; --retry-failed runs only the failed one again
    sweep = load_sweep(path)
    seen = []
    run_sweep(sweep, workers=0, progress=False, on_record=seen.append)
    assert seen == []
    run_sweep(sweep, workers=0, progress=False, retry_failed=True, on_record=seen.append)
    assert [r["key"] for r in seen] == [rows[-1.0]["key"]]


def test_a_damaged_result_is_run_again(tmp_path):
    path = solve_sweep(tmp_path, eps="[1e-2, 1e-3]")
    sweep = load_sweep(path)
    run_sweep(sweep, workers=0, progress=False)
    victim = sweep.store / "runs" / f"{sweep.runs[0].key}.npz"
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated file
    seen = []
    run_sweep(sweep, workers=0, progress=False, on_record=seen.append)
    assert [r["key"] for r in seen] == [sweep.runs[0].key]
    assert load_npz(victim)[0]["risk"].size > 10


def test_many_processes_fill_an_empty_cache_at_once(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "ODEHILD_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "odehild", "solve", "--sigma", "relu(z)", "--phi", "h(1,z)+h(2,z)", "--kmax", "4",
           "--eps", "1e-3", "--particles", "20", "--quiet"]
    procs = [subprocess.Popen(cmd + ["--out", str(tmp_path / f"r{i}.npz")], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1].decode()[-500:] for o in outs]
    risks = [load_npz(tmp_path / f"r{i}.npz")[0]["risk"] for i in range(3)]
    for r in risks[1:]:
        np.testing.assert_array_equal(r, risks[0])
    leftovers = [p for p in cache.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("tmp"))]
    assert leftovers == []
    # the entries they left load: a fourth run compiles nothing and gives the same numbers
    out = subprocess.run(cmd + ["--out", str(tmp_path / "r3.npz")], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and "cached" in out.stdout + out.stderr
    np.testing.assert_array_equal(load_npz(tmp_path / "r3.npz")[0]["risk"], risks[0])


@pytest.mark.parametrize("text, names", [
    (f'command = "solve"\n{STAIR}particls = 30\n[grid]\neps = [0.1]\n', "particls"),
    (f'command = "solve"\n{STAIR}[grid]\neps = []\n', "eps"),
    (f'command = "slove"\n{STAIR}[grid]\neps = [0.1]\n', "slove"),
    ('command = "plot"\n[grid]\ntraj = ["a.npz"]\n', "plot"),
    (f'command = "solve"\n{STAIR}out = "x.npz"\n[grid]\neps = [0.1]\n', "out"),
    (f'command = "solve"\n{STAIR}[grid]\neps = [0.1, 0.2]\n[[points]]\neps = 0.3\n', "eps"),
    (f'command = "solve"\n{STAIR}[grid]\neps = [0.1]\n[sweep]\nworkrs = 2\n', "workrs"),
    (f'command = "solve"\n{STAIR}[grid]\neps = ["small"]\n', "eps"),
])
def test_bad_sweep_files_are_refused_by_name(tmp_path, capsys, text, names):
    path = write(tmp_path, text)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert names in err and "Traceback" not in err


def test_dry_run_and_summary(tmp_path, capsys):
    path = write(tmp_path, f'command = "solve"\n{STAIR}t-end = 5.0\n[grid]\neps = [1e-2, 1e-3, 1e-4]\n'
                           f'[[points]]\nparticles = 20\n[[points]]\nparticles = 40\n')
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "6 runs of 'solve'" in out and out.count("odehild solve") == 6
    assert main(["sweep", str(path), "--workers", "0", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "s-store")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "s-store" / "summary" / "eps.png").stat().st_size > 10_000
    # the printed slope of t_learn_1 against eps at particles = 40 is the least-squares slope of the index
    rows = [r for r in json.loads((tmp_path / "s-store" / "index.json").read_text()) if r["particles"] == 40]
    ref = np.polyfit(np.log10([r["eps"] for r in rows]), np.log10([r["t_learn_1"] for r in rows]), 1)[0]
    line = next(x for x in out.splitlines() if x.startswith("t_learn_1 against eps (particles = 40)"))
    assert f"slope {ref:.3f}" in line


def test_timescale_sweep_on_two_workers_matches_in_process():
    from odehild.models import MeanFieldModel
    from odehild.solve import initial_condition
    from odehild.solve.analysis import timescale_sweep

    model = MeanFieldModel("h(0,z)+h(1,z)+h(2,z)+h(3,z)", "h(1,z)+h(2,z)+h(3,z)", K=3, eps=1e-3)
    init = initial_condition(60)
    a, _ = timescale_sweep(model, [1e-3, 1e-4, 1e-5], init, progress=False, points=400)
    b, _ = timescale_sweep(model, [1e-3, 1e-4, 1e-5], init, progress=False, points=400, workers=2)
    np.testing.assert_array_equal(a.times, b.times)
    assert np.isfinite(a.times[:, 1]).all()


def test_scheduler_address_that_does_not_answer_is_refused(tmp_path, capsys):
    path = solve_sweep(tmp_path, eps="[1e-2, 1e-3]")
    assert main(["sweep", str(path), "--scheduler", "tcp://127.0.0.1:9", "--quiet"]) == 2
    assert "tcp://127.0.0.1:9" in capsys.readouterr().err
    assert Path(tmp_path / "s-store" / "index.json").exists()  # nothing ran, nothing lost


def test_an_existing_scheduler_runs_the_same_file(tmp_path, capsys):
    from distributed import LocalCluster

    path = solve_sweep(tmp_path, eps="[1e-2, 1e-3]")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert main(["sweep", str(path), "--scheduler", cluster.scheduler_address, "--quiet"]) == 0
    assert "2 done, 0 failed" in capsys.readouterr().out
