"""Every example runs to completion with no arguments, against the embedded image service."""

from __future__ import annotations

import os
import signal
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
@pytest.mark.timeout(180)
def test_resumable_training_resumes_after_sigkill_as_if_never_killed(tmp_path: Path) -> None:
    """Killed with SIGKILL past a checkpoint, the example resumes from it: every step's images
    and the final weights are those of a run that was never killed."""
    pytest.importorskip("torch")
    script = str(EXAMPLES / "resumable_training.py")

    def run(name: str, *extra: str) -> subprocess.CompletedProcess[str]:
        args = ["--checkpoint", str(tmp_path / f"{name}.pt"), "--trace", str(tmp_path / name)]
        return subprocess.run(
            [sys.executable, script, *args, *extra],
            capture_output=True, text=True, timeout=150, check=False,
        )  # fmt: skip

    whole = run("whole")
    assert whole.returncode == 0, whole.stderr

    args = ["--checkpoint", str(tmp_path / "killed.pt"), "--trace", str(tmp_path / "killed")]
    with subprocess.Popen(
        [sys.executable, script, *args], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        seen_checkpoint = False
        for line in proc.stdout:  # kill a few steps after the second checkpoint
            seen_checkpoint |= line.startswith("checkpoint at step 20")
            if seen_checkpoint and line.startswith("step 23 "):
                proc.send_signal(signal.SIGKILL)
                break
        assert proc.wait(timeout=30) == -signal.SIGKILL
    assert len((tmp_path / "killed").read_text().splitlines()) < 189  # it was cut short

    resumed = run("killed")
    assert resumed.returncode == 0, resumed.stderr
    lines = resumed.stdout.splitlines()
    assert lines[0] == "resuming at step 20 (epoch 0)"
    assert lines[-1] == whole.stdout.splitlines()[-1]  # same steps, same weights
    assert lines[-1].startswith("trained 189 steps")
    assert (tmp_path / "killed").read_text() == (tmp_path / "whole").read_text()
    epoch = sorted(int(i) for line in (tmp_path / "whole").read_text().splitlines()[:63]
                   for i in line.split())  # fmt: skip
    assert epoch == list(range(1000))  # each image once in the first epoch


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
