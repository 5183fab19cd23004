"""The command line: the demo ends on its own (or on Ctrl-C) with a summary; serve-images serves."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from asyncfeed.demo import LEGEND
from asyncfeed.fetchers.service import synthetic_image
from tests.httpserver import png_bytes

CAUSES = "(sink|rebatch|fetch_limit|throttled|decode|source|workers)"
SUMMARY_ROWS = (
    "rows",
    "batches",
    "rows/s",
    "wait for a batch",
    "failures",
    "retried",
    "skipped",
)


def check_summary(stdout: str) -> dict[str, str]:
    table = {m.group(1): m.group(2) for m in re.finditer(r"^  (\S.*?)\s{2,}(\S.*)$", stdout, re.M)}
    for name in SUMMARY_ROWS:
        assert name in table, stdout
    assert int(table["rows"].replace(",", "")) > 0, stdout
    assert re.fullmatch(r"p50 [\d.]+ ms, p99 [\d.]+ ms", table["wait for a batch"])
    assert re.fullmatch(r"[\d,]+ failed requests sent again", table["retried"])
    assert re.fullmatch(
        r"[\d,]+ keys given up after their last attempt, at most --max-errors [\d,]+",
        table["skipped"],
    )
    assert re.fullmatch(r"none|[\d,]+ \((\w+ [\d,]+(, )?)+\)", table["failures"])
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
    cause = re.fullmatch(
        r"\d+% of the time, mostly (\w+) \(\d+% of the wait\)", table["consumer waiting"]
    )
    assert cause is not None and cause.group(1) in CAUSES, table["consumer waiting"]
    assert proc.stderr.startswith(LEGEND + "\n")
    progress = re.findall(
        r"chunks=\d+, batches=\d+, retried=\d+, skipped=\d+, waiting=\d+%( \w+)?, loss=[\d.]+",
        proc.stderr,
    )
    assert progress, proc.stderr
    errors = re.fullmatch(r"([\d,]+) \(http_503 ([\d,]+)\)", table["failures"])
    assert errors is not None and errors.group(1) == errors.group(2)  # 2% injected 503s
    assert table["retried"].startswith(errors.group(1) + " ")  # every one retried...
    assert table["skipped"].startswith("0 keys")  # ...and no key lost


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
            with urllib.request.urlopen(template.format(i=1), timeout=10) as resp:
                assert resp.headers["Content-Type"] == "image/png"
                assert resp.read() == (tmp_path / "1.png").read_bytes()
            index = template.rsplit("/img/", 1)[0] + "/"
            with urllib.request.urlopen(index, timeout=10) as resp:
                info = json.load(resp)
            assert info["count"] == 3 and info["names"] == ["0.png", "1.png", "2.png"]
            with urllib.request.urlopen(index + "files/2.png", timeout=10) as resp:
                assert resp.read() == (tmp_path / "2.png").read_bytes()
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(template.format(i=3), timeout=10)
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
    waiting = r"\d+% of the time(, mostly " + CAUSES + r" \(\d+% of the wait\))?"
    assert re.fullmatch(waiting, table["consumer waiting"]), table["consumer waiting"]
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


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("url", "reason"),
    [
        (
            "http://127.0.0.1:{port}/img/{{i}}.jpg",
            r"GET http://127\.0\.0\.1:\d+/img/0\.jpg failed after 3 attempts: no response "
            r"\(status none\), ClientConnectorError: .*",
        ),
        ("http://127.0.0.1:{port}/img/7.jpg", r"has no \{i\} field for the image number"),
        (
            "http://127.0.0.1:{port}/img/{{j}}.jpg",
            r"not a URL template with \{i\} \(KeyError\('j'\)\)",
        ),
    ],
)
def test_demo_refuses_a_bad_url_in_one_line(url: str, reason: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = url.format(port=port)
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--url", url],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert re.fullmatch(
        rf"python -m asyncfeed demo: --url {re.escape(url)}: {reason}\n", proc.stderr
    ), proc.stderr


@pytest.mark.timeout(90)
def test_demo_stopped_by_its_error_budget_summarises_and_says_why_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "asyncfeed", "demo", "--error-rate", "1", "--max-errors", "3"],
        capture_output=True,
        text=True,
        timeout=80,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("asyncfeed demo: embedded service ")
    last = proc.stderr.splitlines()[-1]
    assert re.fullmatch(
        r"python -m asyncfeed demo: the feed stopped: FetchError: .*max_errors=3.*HTTP 503 .*",
        last,
    ), last
