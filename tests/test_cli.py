"""The command line ends on its own and prints a summary."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(60)
def test_demo_runs_and_summarises() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--seconds", "1"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "rows/s" in proc.stdout and "batches" in proc.stdout
