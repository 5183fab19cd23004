"""Every example runs to completion with no arguments, against the embedded image service."""

from __future__ import annotations

import os
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


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(150)
def test_ray_example_starts_a_local_ray_on_loopback() -> None:
    """examples/ray_feed.py with no Ray running: the feed starts one, on 127.0.0.1 only."""
    pytest.importorskip("ray")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "ray_feed.py")],
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Ray nodes at ['127.0.0.1']; batch data (32, 64, 64, 3)"), lines
    assert lines[-1] == "512 images in 16 batches from 2 Ray actors (512 requests)", lines
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr, proc.stderr
