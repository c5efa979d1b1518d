"""``ruff check`` on the whole repository (configuration in pyproject.toml), as part of the suite."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_check_passes():
    pytest.importorskip("ruff", reason="ruff is in the test extra: pip install '.[test]'")
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", REPO],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
