"""The launched half of tests/unit/test_check_data.py: The data checker finds every planted bad file, with its path."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.fixtures.check_data import (
    plant,
)


@pytest.mark.launch
def test_checker_cli_reports_and_exits_nonzero(tmp_path):
    plant(tmp_path / "faces")
    out = tmp_path / "report.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "crossres_dist.data.check",
            str(tmp_path / "faces"),
            "--json",
            str(out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "truncated: 1" in result.stdout and "cut.jpg" in result.stdout
    assert json.loads(out.read_text())["files"] == 22
