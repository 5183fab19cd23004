"""The command line: the demo ends on its own (or on Ctrl-C) with a summary; serve-images serves."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import png_bytes

SUMMARY_ROWS = ("rows", "batches", "rows/s", "wait for a batch", "retries", "skipped")


def check_summary(stdout: str) -> dict[str, str]:
    table = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S.*?)\s{2,}(\S.*)$", stdout, re.M)}
    for name in SUMMARY_ROWS:
        assert name in table, stdout
    assert int(table["rows"].replace(",", "")) > 0, stdout
    assert re.fullmatch(r"p50 [\d.]+ ms, p99 [\d.]+ ms", table["wait for a batch"])
    return table


@pytest.mark.timeout(90)
def test_demo_runs_and_summarises() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--seconds", "3"],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("asyncfeed demo: embedded service http://127.0.0.1:")
    table = check_summary(proc.stdout)
    assert table["batches"].endswith(" of 32")


@pytest.mark.timeout(90)
def test_demo_stops_cleanly_on_ctrl_c_with_the_summary() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "asyncfeed", "demo", "--seconds", "60", "--error-rate", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stderr is not None
            seen = ""
            while "rows [" not in seen or "k rows" not in seen:  # streaming for a while
                char = proc.stderr.read(1)
                assert char, f"the demo ended early: {seen}"
                seen += char
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 130
    assert ", interrupted" in out.splitlines()[0]
    check_summary(out)


@pytest.mark.timeout(60)
def test_serve_images_serves_a_folder_until_ctrl_c(tmp_path: Path) -> None:
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(synthetic_image(i, 8)))
    with subprocess.Popen(
        [sys.executable, "-m", "asyncfeed", "serve-images", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            pattern = r"serving 3 images at (http://127\.0\.0\.1:\d+/img/\{i\}) .*\n"
            match = re.fullmatch(pattern, line)
            assert match, line
            template = match.group(1)
            with urllib.request.urlopen(template.format(i=4), timeout=10) as resp:
                assert resp.headers["Content-Type"] == "image/png"
                assert resp.read() == (tmp_path / "1.png").read_bytes()
            index = template.rsplit("/img/", 1)[0] + "/"
            with urllib.request.urlopen(index, timeout=10) as resp:
                assert json.load(resp)["count"] == 3
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0 and out.strip() == "stopped"


@pytest.mark.timeout(90)
def test_demo_trains_from_a_torch_sink_with_device() -> None:
    pytest.importorskip("torch")
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--seconds", "3", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].endswith(", cpu via TorchSink")
    table = check_summary(proc.stdout)
    assert re.fullmatch(r"\d+% of the time", table["consumer waiting"])
    assert table["torch loss"]


@pytest.mark.timeout(60)
def test_demo_refuses_a_device_it_cannot_use_in_one_line() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--device", "cuda:0"],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        "python -m asyncfeed demo: --device cuda:0: device 'cuda:0' was asked for, "
        "but CUDA is not available\n"
    )
