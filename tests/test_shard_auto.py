"""``shard="auto"``: the trainer's rank from torch.distributed, else RANK / WORLD_SIZE."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import asyncfeed as af
from asyncfeed.keys import auto_shard, check_shard


@pytest.fixture(autouse=True)
def _no_launcher_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def test_one_rank_without_a_group_or_env() -> None:
    assert auto_shard() == (0, 1)
    assert check_shard("auto") == (0, 1)


def test_rank_and_world_size_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert check_shard("auto") == (2, 4)


@pytest.mark.parametrize(
    ("rank", "world", "message"),
    [
        (
            "1",
            None,
            r"^shard='auto' needs RANK and WORLD_SIZE to be ints, got RANK='1' and "
            r"WORLD_SIZE=None$",
        ),
        ("x", "2", r"^shard='auto' needs RANK and WORLD_SIZE to be ints, got RANK='x'"),
        (
            "3",
            "2",
            r"^shard='auto' from RANK and WORLD_SIZE: shard rank must be in \[0, 2\), "
            r"got 3$",
        ),
    ],
)
def test_malformed_environment_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, rank: str, world: str | None, message: str
) -> None:
    monkeypatch.setenv("RANK", rank)
    if world is not None:
        monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(af.ConfigError, match=message):
        check_shard("auto")


def test_from_keys_takes_this_ranks_share(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")

    def fetch_one(key: int) -> None:
        return None

    feed = af.Feed.from_keys(range(10), fetch_one, blobs=["x"], batch_size=2, shard="auto")
    assert feed._spec.keys is not None and feed._spec.keys.shard == (1, 3)


def test_an_initialised_torch_distributed_group_wins_over_the_environment() -> None:
    pytest.importorskip("torch")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = f"""
import os
os.environ["RANK"], os.environ["WORLD_SIZE"] = "5", "8"
from asyncfeed.keys import auto_shard
assert auto_shard() == (5, 8), auto_shard()
import torch.distributed as dist
dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1)
try:
    print(auto_shard())
finally:
    dist.destroy_process_group()
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(0, 1)"
