"""``RayActors``: validated at construction, importable without Ray, and the call helpers."""

from __future__ import annotations

import asyncio
import importlib.util
import pickle
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.options import FeedOptions
from asyncfeed.ray.actor import pack_error
from asyncfeed.ray.calls import Call, copy_out, describe_calls, unpack_error
from asyncfeed.ray.options import KEYS_PER_CALL

# RayActors(...) needs Ray installed (it is never imported here: tests/ray/conftest.py
# sets Ray's loopback switch before the first import).
pytestmark = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray")


def fetch_one(key: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n": 0}, r"^RayActors n must be >= 1, got 0$"),
        ({"n": True}, r"^RayActors n must be an int, got True$"),
        ({"n": 2, "concurrency_per_actor": 0}, r"^concurrency_per_actor must be >= 1, got 0$"),
        ({"n": 2, "keys_per_call": 1.5}, r"^keys_per_call must be an int, got 1.5$"),
        ({"n": 2, "max_restarts": -1}, r"^max_restarts must be >= 0, got -1$"),
        ({"n": 2, "resources": ["fetch"]}, r"^resources must be a mapping of name to amount"),
        ({"n": 2, "resources": {"fetch": -1}}, r"^resource 'fetch' must be a number >= 0, got -1$"),
        ({"n": 2, "resources": {"": 1}}, r"^resource names must be non-empty strings, got ''$"),
        ({"n": 2, "scheduling_strategy": "PACK"}, r"^scheduling_strategy must be 'SPREAD', 'DEF"),
        ({"n": 2, "scheduling_strategy": 3}, r"^scheduling_strategy must be 'SPREAD', 'DEFAULT'"),
        ({"n": 2, "runtime_env": "x"}, r"^runtime_env must be a mapping, got 'x'$"),
        ({"n": 2, "worker_init": 3}, r"^worker_init must be callable, got 3$"),
    ],
)
def test_invalid_values_are_config_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.RayActors(**kwargs)


def test_without_ray_installed_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # find_spec("ray") -> None
    message = (
        r"^RayActors needs Ray, which is not installed: "
        r"pip install 'asyncfeed\[ray\]' \(ray==2\.60\.0\)$"
    )
    with pytest.raises(af.ConfigError, match=message):
        af.RayActors(2)


def test_defaults_and_ray_options() -> None:
    workers = af.RayActors(3, resources={"fetch": 1, "CPU": 0.5, "memory": 2**30})
    assert workers.calls_per_batch == KEYS_PER_CALL
    assert workers.per_actor(64) == 22
    assert af.RayActors(3, concurrency_per_actor=5).per_actor(64) == 5
    assert workers.actor_options() == {
        "scheduling_strategy": "SPREAD",
        "resources": {"fetch": 1},
        "num_cpus": 0.5,
        "memory": 2**30,
    }
    assert workers.spec(fetch_one, threads=22, source="s").threads == 22
    with pytest.raises(AttributeError):
        workers.n = 4  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(af.RayActors(2, max_restarts=1))).max_restarts == 1


def test_feed_options_take_ray_actors() -> None:
    workers = af.RayActors(2)
    opts = FeedOptions.check(blobs=["x"], batch_size=4, concurrency=8, workers=workers)
    assert opts.workers is workers
    with pytest.raises(af.ConfigError, match=r"^concurrency must be >= the number of Ray actors"):
        FeedOptions.check(blobs=["x"], batch_size=4, concurrency=1, workers=workers)
    with (
        ThreadPoolExecutor(1) as pool,
        pytest.raises(af.ConfigError, match=r"^executor cannot be used with RayActors"),
    ):
        FeedOptions.check(blobs=["x"], batch_size=4, executor=pool, workers=workers)
    with pytest.raises(af.ConfigError, match=r"^give workers= or its shorthand"):
        FeedOptions.check(blobs=["x"], batch_size=4, workers=workers, processes=2)


def test_a_feed_with_ray_actors_is_made_without_importing_ray() -> None:
    code = (
        "import sys, asyncfeed as af\n"
        "def f(key): return None\n"
        "feed = af.Feed.from_keys(range(3), f, blobs=['x'], batch_size=1, concurrency=2,\n"
        "                         workers=af.RayActors(2))\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], timeout=60, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "False"


def test_outcomes_are_copied_out_of_read_only_views() -> None:
    buffer = np.arange(8, dtype=np.int64)
    view = buffer[2:6]
    view.flags.writeable = False
    (returned, value), (failed, err) = copy_out(
        [(True, [view, {"a": view}], 0.1), (False, "e", 0.0)]
    )
    assert returned and not failed and err == "e"
    assert value[0].base is None and value[0].flags.writeable
    assert value[1]["a"].base is None and np.array_equal(value[1]["a"], view)


def test_remote_errors_come_back_with_their_traceback() -> None:
    try:
        raise ValueError("bad key 7")
    except ValueError as exc:
        packed = pack_error(exc)
    err = unpack_error(packed)
    assert type(err) is ValueError and str(err) == "bad key 7"
    assert isinstance(err.__cause__, af.RemoteTraceback) and "bad key 7" in err.__cause__.text

    class Local(Exception):  # cannot be pickled
        pass

    blob, text = pack_error(Local("x"))
    assert blob is None
    assert isinstance(unpack_error((blob, text)), af.RemoteTraceback)


def test_calls_are_described_by_key_or_worker() -> None:
    loop = asyncio.new_event_loop()
    try:
        keyed = [Call((k,), k, None, loop.create_future()) for k in range(10)]
        seeded = [Call((3, 8), None, 3, loop.create_future())]
    finally:
        loop.close()
    assert describe_calls(keyed) == "10 keys [0, 1, 2, 3, 4, 5, 6, 7 and 2 more]"
    assert describe_calls(keyed[:1]) == "1 key [0]"
    assert describe_calls(seeded) == "1 call of worker [3]"
    assert describe_calls([]) == "no calls"
