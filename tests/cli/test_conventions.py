"""The command line behaves as command-line users expect: --version, python -m,
usage on stderr with exit 2, a closed stdout and Ctrl-C end quietly (141/130, no
traceback), messages name flags, ``prepare`` offers what the single steps offer,
and ``bench`` sweeps concurrent clients into a table, JSON, CSV and a plot.
Everything runs the real CLI in a subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import fastort

import prep_models

FASTORT = [sys.executable, "-m", "fastort"]


def _cli(*args, timeout=180, **kwargs):
    return subprocess.run([*FASTORT, *args], capture_output=True, text=True, timeout=timeout, **kwargs)


def test_version():
    proc = _cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"fastort {fastort.__version__}"
    script = Path(sys.executable).with_name("fastort")
    if script.exists():  # the console script, as installed
        out = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.strip() == f"fastort {fastort.__version__}"


def test_no_arguments_is_usage_on_stderr_exit_2():
    proc = _cli()
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("usage: fastort") and "command is required" in proc.stderr
    assert _cli("--help").returncode == 0 and "COMMAND" in _cli("--help").stdout


def test_help_into_a_closed_pipe_ends_quietly():
    proc = subprocess.Popen([*FASTORT, "-h"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before fastort writes
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipeError" not in err, err.decode()
    assert proc.returncode in (0, 141)
    shell = subprocess.run(["bash", "-c", f"{sys.executable} -m fastort -h | head -1"], capture_output=True,
                           text=True, timeout=120)
    assert shell.stdout.startswith("usage: fastort") and shell.stderr == ""


def test_ctrl_c_exits_130_with_one_line():
    proc = subprocess.Popen([*FASTORT, "bench", "--clients", "1", "--seconds", "120"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(6)  # imports done, the sweep running
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (out, err)
    assert err.strip().splitlines() == ["fastort: interrupted"], err


@pytest.fixture
def mlp_path(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(prep_models.mlp((16, 64, 8)), path)
    return str(path)


def test_messages_name_flags(mlp_path, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "other.txt").write_text("x")
    proc = _cli("package", mlp_path, "-o", str(tmp_path / "pkg"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    proc = _cli("prepare", mlp_path, "-o", str(tmp_path / "pkg"), "--no-progress")
    assert proc.returncode == 1 and "--overwrite" in proc.stderr and "overwrite=True" not in proc.stderr
    proc = _cli("quantize", mlp_path, "-o", str(tmp_path / "q.onnx"), "--mode", "static")
    assert proc.returncode == 1 and "--calibration" in proc.stderr and "calibration=" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_prepare_offers_the_step_options(mlp_path, tmp_path):
    proc = _cli("prepare", mlp_path, "-o", str(tmp_path / "pkg"), "--quantize", "dynamic", "--op-type", "MatMul",
                "--rtol", "0.5", "--atol", "0.5", "--json", "--no-progress", "--latency-seconds", "0.1")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    quantize = next(s for s in data["steps"] if s["step"] == "quantize")
    assert quantize["settings"]["op_types"] == ["MatMul"] and quantize["settings"]["rtol"] == 0.5
    assert data["end_to_end"]["rtol"] == 0.5 and data["end_to_end"]["passed"]
    assert data["end_to_end"]["inputs"]["source"] == "synthetic"
    assert os.path.isfile(data["model_path"])
    for flag in ("--no-zipmap", "--no-dynamic-batch"):
        bad = _cli("prepare", mlp_path, "-o", str(tmp_path / "pkg2"), flag)
        assert bad.returncode == 2 and flag in bad.stderr


def test_prepare_no_zipmap_for_sklearn(tmp_path):
    pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    clf = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    with open(tmp_path / "clf.pkl", "wb") as f:
        pickle.dump(clf, f)
    np.save(tmp_path / "x.npy", x)
    proc = _cli("prepare", str(tmp_path / "clf.pkl"), "-o", str(tmp_path / "pkg"), "--inputs", str(tmp_path / "x.npy"),
                "--no-zipmap", "--json", "--no-progress", "--latency-seconds", "0.1")
    assert proc.returncode == 0, proc.stderr
    model = onnx.load(json.loads(proc.stdout)["model_path"])
    assert "ZipMap" not in {n.op_type for n in model.graph.node}


def test_bench_concurrency_sweep(tmp_path):
    out_csv, out_png = tmp_path / "sweep.csv", tmp_path / "sweep.png"
    proc = _cli("bench", "--clients", "1,2", "--seconds", "0.2", "--csv", str(out_csv), "--plot", str(out_png),
                "--json")
    assert proc.returncode == 0, proc.stderr
    points = json.loads(proc.stdout)["points"]
    assert sorted((p["clients"], p["method"].split()[0]) for p in points) == [
        (1, "InferenceSession.run"), (1, "fastort"), (2, "InferenceSession.run"), (2, "fastort")]
    assert all(p["requests"] > 0 and p["errors"] == 0 and p["p99_us"] >= p["p50_us"] > 0 for p in points)
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text())))
    assert len(rows) == 4 and {"clients", "rows_per_s", "p99_us"} <= set(rows[0])
    import importlib.util

    if importlib.util.find_spec("matplotlib") is not None:
        assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = _cli("bench", "--clients", "2", "--seconds", "0.2")
    assert table.returncode == 0 and "requests/s" in table.stdout and "p99" in table.stdout
    bad = _cli("bench", "--clients", "0,x")
    assert bad.returncode == 2 and "--clients" in bad.stderr
    assert _cli("bench", "--csv", "x.csv").returncode == 2


def test_bench_plot_without_matplotlib_says_so(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from fastort.cli import main\n"
            f"sys.exit(main(['bench', '--clients', '1', '--seconds', '0.2', '--plot', {str(tmp_path / 'p.png')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    assert "no plot written" in proc.stderr and "matplotlib" in proc.stderr
    assert not (tmp_path / "p.png").exists()
