"""The code passes the linter and the formatter configured in pyproject.toml (ruff), as CI runs them."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ["labkit", "tests", "benchmarks"]


def _ruff(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is not installed: it is a dev dependency (pip install -e '.[dev]', which `make test` runs)"
    return subprocess.run([exe, *args, *TARGETS], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check_passes():
    """`ruff check` finds nothing (rules and line length from pyproject.toml)."""
    result = _ruff("check", "--output-format", "concise")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_ruff_format_is_a_no_op():
    """`ruff format --check` would change no file."""
    result = _ruff("format", "--check")
    assert 0 == result.returncode, result.stdout + result.stderr
