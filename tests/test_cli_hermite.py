import json
import subprocess
import sys

import pytest

from odehild.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "odehild.cli", *args], capture_output=True, text=True)


def test_relu_json_documented_keys():
    out = run_cli("hermite", "relu(z)", "--kmax", "8", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data) == {"expression", "kmax", "coefficients", "exact", "norm2", "tail",
                         "information_exponent"}
    assert data["kmax"] == 8 and len(data["coefficients"]) == 9
    assert data["exact"][1] == "1/2" and data["exact"][3] == "0"
    assert data["information_exponent"] == 1
    assert data["norm2"] == pytest.approx(0.5)


@pytest.mark.parametrize("args, needle", [
    (["hermite", "foo(z)"], "'foo'"),
    (["hermite", "z.__class__"], "attribute"),
    (["hermite", ""], "empty"),
    (["hermite", "exp(z**2)"], "square-integrable"),
    (["hermite", "z", "--kmax", "-3"], "kmax"),
    (["hermite", "z", "--kmax", "abc"], "invalid int"),
    (["hermite"], "required"),
])
def test_bad_input_exit_2_no_traceback(args, needle):
    out = run_cli(*args)
    assert out.returncode == 2
    assert needle in out.stderr
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 3


def test_table_output(capsys):
    assert main(["hermite", "tanh(z)", "--kmax", "3"]) == 0
    out = capsys.readouterr().out
    assert "information exponent: 1" in out and "quadrature" in out
