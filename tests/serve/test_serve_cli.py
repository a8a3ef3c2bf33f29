"""``fastort serve`` without the serve extra, and bad repositories: clear messages, exit 1."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_missing_extra_names_it(tmp_path) -> None:
    # uvicorn blocked as if not installed
    r = run("import sys; sys.modules['uvicorn'] = None\n"
            "from fastort.cli import main\n"
            f"sys.exit(main(['serve', {str(tmp_path)!r}, '--http-port', '0']))")
    assert r.returncode == 1, r.stderr
    assert "MissingDependencyError" in r.stderr and "pip install 'fastort[serve]'" in r.stderr and "uvicorn" in r.stderr


def test_missing_repository_is_an_error(tmp_path) -> None:
    r = run("import sys\nfrom fastort.cli import main\n"
            f"sys.exit(main(['serve', {str(tmp_path / 'nope')!r}, '--http-port', '0', '--grpc-port', '0', "
            "'--metrics-port', '0']))")
    assert r.returncode == 1 and "does not exist" in r.stderr, r.stderr
