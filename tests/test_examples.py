"""Every example runs to completion with no arguments, against the embedded image service."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "last_line"),
    [
        ("http_images.py", "200 images in 7 batches"),
        ("orchestrator.py", "trained 500 steps; session still open: True"),
        ("torch_training.py", "120 steps on "),
    ],
)
def test_example_runs_to_completion(name: str, last_line: str) -> None:
    if name.startswith("torch"):
        pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith(last_line), proc.stdout
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
