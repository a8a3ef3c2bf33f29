"""Every script in examples/ runs, as a user runs it (``python examples/X.py``),
against the *installed* fastort, in its ``--quick`` mode (small data: seconds).

An example names the modules it needs in a ``# example-requires: a b`` line;
when one is missing the example skips, naming it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))


def test_examples_are_found() -> None:
    assert SCRIPTS, f"no examples in {EXAMPLES}"


def _requires(script: Path) -> "list[str]":
    match = re.search(r"^# example-requires:(.*)$", script.read_text(), re.M)
    return match.group(1).split() if match else []


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_example_runs(script: Path, tmp_path: Path) -> None:
    missing = [m for m in _requires(script) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{script.name} needs {', '.join(missing)} (not installed)")
    env = dict(os.environ, PYTHONPATH="")  # the installed package, never the checkout's python/
    proc = subprocess.run([sys.executable, str(script), "--quick", "--out", str(tmp_path / "out")], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert os.listdir(tmp_path / "out"), "the example wrote nothing into --out"
