"""The classic Caffe2 data_workers API over Feed: same calls, BlobsQueues as the output."""

from __future__ import annotations

import asyncio
import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed import data_workers
from asyncfeed.data_workers import GlobalCoordinator, init_data_input_workers
from tests.conftest import CounterSource
from tests.sinks.caffe2_double import DeviceOption, Net, caffe2_double

STOP_BOUND_S = 2.0
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_coordinator() -> Iterator[GlobalCoordinator]:
    """Every test starts and ends with no feed registered on the process-wide coordinator."""
    coordinator = data_workers._coordinator
    yield coordinator
    try:
        coordinator.stop()
    except af.AsyncFeedError:
        pass  # an error the test provoked and did not read
    assert not coordinator._entries


def read(q: af.BlobsQueue) -> np.ndarray:
    record = q.dequeue(timeout=10)
    assert record is not None
    return record[0]


def test_signature_is_caffe2s() -> None:
    params = inspect.signature(init_data_input_workers).parameters
    assert [(p.name, p.default) for p in params.values()] == [
        ("net", inspect.Parameter.empty),
        ("input_blob_names", inspect.Parameter.empty),
        ("fetch_fun", inspect.Parameter.empty),
        ("batch_size", inspect.Parameter.empty),
        ("num_worker_threads", 2),
        ("input_source_name", "train"),
        ("max_buffered_batches", 800),
        ("init_fun", None),
        ("external_loggers", None),
        ("dont_rebatch", False),
        ("batch_columns", None),
        ("timeout", 600),
    ]


def test_every_call_returns_the_same_coordinator(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(3)

    first = init_data_input_workers(None, ["ids", "x"], fetch, 4)
    second = init_data_input_workers(None, ["ids", "x"], fetch, 4, input_source_name="test")
    assert first is second is data_workers._coordinator
    assert first.stop() is True


@pytest.mark.timeout(20)
def test_exact_batch_sizes_every_row_once(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(7)

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 16, num_worker_threads=1)
    coordinator.start()
    queues = coordinator.get_queues("train")
    ids: list[int] = []
    for _ in range(40):
        batch_ids, x = read(queues["ids"]), read(queues["x"])
        assert batch_ids.shape == (16,) and x.shape == (16, 4)
        assert np.array_equal(x[:, 0], batch_ids.astype(np.float32))
        ids.extend(batch_ids.tolist())
    assert coordinator.stop() is True
    assert ids == list(range(640))
    assert queues["ids"].closed and queues["x"].closed


@pytest.mark.timeout(20)
def test_sources_never_mix() -> None:
    def fetch_train(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros(3, np.int64)]

    async def fetch_test(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return [np.ones(5, np.int64)]

    coordinator = init_data_input_workers(None, ["v"], fetch_train, 4)
    init_data_input_workers(None, ["v"], fetch_test, 4, input_source_name="test")
    coordinator.start()
    train, test = coordinator.get_queues("train")["v"], coordinator.get_queues("test")["v"]
    for _ in range(20):
        assert read(train).tolist() == [0, 0, 0, 0]
        assert read(test).tolist() == [1, 1, 1, 1]
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_feeds_of_one_source_share_its_chunk_queue() -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.full(2, worker_id, np.int64)]

    def fetch_nothing(worker_id: int, batch_size: int) -> None:
        return None  # this device's own fetchers never produce anything

    coordinator = init_data_input_workers(None, ["w"], fetch, 4)
    init_data_input_workers(None, ["w"], fetch_nothing, 4)
    coordinator.start()
    producing = set(coordinator.get_worker_ids()[-4:-2])  # the first call's two workers
    second_device = coordinator.get_queues("train", index=1)["w"]
    assert set(read(second_device).tolist()) <= producing  # rows fetched by the first feed
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_fetcher_exception_surfaces_from_stop() -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        raise ValueError("bad shard")

    coordinator = init_data_input_workers(None, ["x"], fetch, 4)
    coordinator.start()
    assert coordinator.get_queues()["x"].dequeue(timeout=10) is None  # the feed stopped
    with pytest.raises(
        af.FetchError, match=r"fetch failed in worker \d+: ValueError: bad shard"
    ) as info:
        coordinator.stop()
    assert isinstance(info.value.__cause__, ValueError)
    assert coordinator.stop() is True  # reported once


@pytest.mark.timeout(20)
def test_a_fetcher_exception_read_before_stop_is_not_raised_again() -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        raise ValueError("bad shard")

    coordinator = init_data_input_workers(None, ["x"], fetch, 4)
    assert coordinator.take_error() is None
    coordinator.start()
    assert coordinator.get_queues()["x"].dequeue(timeout=10) is None
    error = coordinator.take_error()
    assert isinstance(error, af.FetchError) and "bad shard" in str(error)
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_none_is_tolerated(counter: CounterSource) -> None:
    calls = [0]

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray] | None:
        calls[0] += 1
        return counter.chunk(2) if calls[0] % 3 == 0 else None

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 4, num_worker_threads=1)
    coordinator.start()
    assert read(coordinator.get_queues()["ids"]).tolist() == [0, 1, 2, 3]
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_bad_chunks_give_a_clear_error() -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros(3), np.zeros(4)]

    coordinator = init_data_input_workers(None, ["data", "label"], fetch, 4)
    coordinator.start()
    assert coordinator.get_queues()["data"].dequeue(timeout=10) is None
    with pytest.raises(
        af.ChunkError, match=r"^blob 'label' from worker \d+: first dimensions differ"
    ):
        coordinator.stop()


@pytest.mark.timeout(20)
def test_stop_while_fetchers_block_returns_promptly() -> None:
    release = threading.Event()
    entered = threading.Barrier(3)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        entered.wait()
        release.wait(10)
        return [np.zeros(1)]

    coordinator = init_data_input_workers(None, ["x"], fetch, 4)
    coordinator.start()
    entered.wait(5)  # both workers are inside the fetcher
    start = time.monotonic()
    assert coordinator.stop() is True
    assert time.monotonic() - start < STOP_BOUND_S
    release.set()  # the abandoned calls finish on their own


@pytest.mark.timeout(20)
def test_start_twice_adds_no_workers(counter: CounterSource) -> None:
    seen: set[int] = set()

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        seen.add(worker_id)
        return counter.chunk(4)

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 4, num_worker_threads=3)
    ids = coordinator.get_worker_ids()
    coordinator.start()
    threads = threading.active_count()
    coordinator.start()
    assert threading.active_count() == threads
    assert coordinator.get_worker_ids() == ids
    queues = coordinator.get_queues()
    for _ in range(30):
        read(queues["ids"]), read(queues["x"])
    assert coordinator.stop() is True
    assert seen <= set(ids[-3:])


def test_worker_ids_are_unique(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> None:
        return None

    before = len(data_workers._coordinator.get_worker_ids())
    coordinator = init_data_input_workers(None, ["x"], fetch, 4, num_worker_threads=3)
    init_data_input_workers(None, ["x"], fetch, 4, num_worker_threads=2, input_source_name="t")
    ids = coordinator.get_worker_ids()
    assert len(ids) == before + 5 and len(set(ids)) == len(ids)  # unique in the process
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_init_fun_gets_caffe2s_two_coordinators_once_before_any_fetch(
    counter: CounterSource,
) -> None:
    events: list[str] = []

    def init(
        data_coordinator: data_workers.DataInputCoordinator,
        global_coordinator: GlobalCoordinator,
    ) -> None:
        assert global_coordinator is data_workers._coordinator
        assert not data_coordinator.is_active()  # its fetchers have not started
        ids = data_coordinator.get_worker_ids()
        events.append(f"init {data_coordinator.input_source_name} {len(ids)}")

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        events.append("fetch")
        return counter.chunk(4)

    coordinator = init_data_input_workers(
        None, ["ids", "x"], fetch, 4, num_worker_threads=2, init_fun=init
    )
    init_data_input_workers(None, ["ids", "x"], fetch, 4, input_source_name="test", init_fun=init)
    coordinator.start()
    read(coordinator.get_queues()["ids"])
    coordinator.start()
    assert coordinator.stop() is True
    assert events[:2] == ["init train 2", "init test 2"]  # every init before any fetch
    assert events.count("init train 2") == 1 and "fetch" in events


def test_a_failing_init_fun_starts_no_feed_and_names_the_source(counter: CounterSource) -> None:
    def init(data_coordinator: object, global_coordinator: object) -> None:
        raise RuntimeError("no device")

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 4, init_fun=init)
    with pytest.raises(
        af.FetchError, match=r"^init_fun of input source 'train' failed: RuntimeError: no device$"
    ) as info:
        coordinator.start()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert counter.issued == 0
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_external_loggers_get_caffe2_metric_names(counter: CounterSource) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.calls: list[dict[str, Any]] = []

        def log(self, metrics: dict[str, Any]) -> None:
            self.calls.append(metrics)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    recorder = Recorder()
    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 4, external_loggers=[recorder])
    coordinator.start()
    read(coordinator.get_queues()["ids"])
    assert coordinator.stop() is True  # Caffe2 logged its metrics once more at stop
    assert recorder.calls
    metrics = recorder.calls[-1]
    for name in ("fetcher_time", "enqueue_time", "inputs_per_sec", "queue_size", "time_elapsed"):
        assert isinstance(metrics[name], int | float), name
    assert metrics["time_elapsed"] > 0 and metrics["source"] == "train"


@pytest.mark.timeout(20)
async def test_the_sync_api_works_inside_a_running_event_loop(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(3)

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 6)
    coordinator.start()  # blocking calls from a coroutine: the feeds run on their own loop
    q = coordinator.get_queues()["ids"]
    record = await asyncio.wait_for(q.dequeue_async(), 10)
    assert record is not None and record[0].tolist() == list(range(6))
    assert coordinator.stop() is True
    assert await q.dequeue_async() is None or q.closed


@pytest.mark.timeout(20)
def test_stop_coordinator_stops_only_its_source(counter: CounterSource) -> None:
    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(2)

    coordinator = init_data_input_workers(None, ["ids", "x"], fetch, 4)
    init_data_input_workers(None, ["ids", "x"], fetch, 4, input_source_name="test")
    coordinator.start()
    train, test = coordinator.get_queues("train")["ids"], coordinator.get_queues("test")["ids"]
    assert coordinator.stop_coordinator("train") is True
    assert train.closed and not test.closed
    read(test)
    with pytest.raises(
        af.FeedStateError, match=r"^no feed #0 for input source 'train' \(0 added\)$"
    ):
        coordinator.get_queues("train")
    assert coordinator.stop() is True


@pytest.mark.timeout(20)
def test_dont_rebatch_passes_chunks_as_they_come() -> None:
    sizes = iter([3, 5, 2] * 100)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return [np.zeros(next(sizes))]

    coordinator = init_data_input_workers(
        None, ["x"], fetch, 4, num_worker_threads=1, dont_rebatch=True
    )
    coordinator.start()
    q = coordinator.get_queues()["x"]
    assert [len(read(q)) for _ in range(6)] == [3, 5, 2, 3, 5, 2]
    assert coordinator.stop() is True


def test_unsupported_arguments_are_refused() -> None:
    def fetch(worker_id: int, batch_size: int) -> None:
        return None

    with pytest.raises(
        af.ConfigError, match=r"^batch_columns other than 0 are not supported, got \[0, 1\]$"
    ):
        init_data_input_workers(None, ["a", "b"], fetch, 4, batch_columns=[0, 1])
    with pytest.raises(
        af.ConfigError, match=r"^a Caffe2 net was given, but caffe2\.python does not import"
    ):
        init_data_input_workers(object(), ["a"], fetch, 4)
    with pytest.raises(af.ConfigError, match=r"^batch_size must be >= 1, got 0$"):
        init_data_input_workers(None, ["a"], fetch, 0)
    with pytest.raises(af.ConfigError, match=r"^num_worker_threads must be >= 1, got 0$"):
        init_data_input_workers(None, ["a"], fetch, 4, num_worker_threads=0)
    assert not data_workers._coordinator._entries


def test_a_bad_argument_adds_no_op_to_the_caffe2_net(monkeypatch: pytest.MonkeyPatch) -> None:
    c2, ws, core, _ = caffe2_double()
    monkeypatch.setattr(data_workers, "load_caffe2", lambda: c2)
    net = Net(core)
    with pytest.raises(af.ConfigError, match=r"^max_buffered_batches must be >= 1, got 0$"):
        init_data_input_workers(net, ["a"], print, 4, max_buffered_batches=0)
    assert net.ops == [] and ws.blobs == {}


def test_with_a_caffe2_net_the_caffe2_sink_uses_the_current_scope(
    monkeypatch: pytest.MonkeyPatch, counter: CounterSource
) -> None:
    c2, ws, core, scope = caffe2_double()
    monkeypatch.setattr(data_workers, "load_caffe2", lambda: c2)
    scope.namescope, scope.device_scope = "gpu_1/", DeviceOption(1, 1)
    net = Net(core)

    def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(4)

    coordinator = init_data_input_workers(net, ["ids", "x"], fetch, 4, timeout=10)
    scope.namescope, scope.device_scope = "", None
    assert [op.input for op in net.ops] == [["gpu_1/ids_c2queue_train"], ["gpu_1/x_c2queue_train"]]
    with pytest.raises(af.FeedStateError, match="feeds a Caffe2 net"):
        coordinator.get_queues()
    coordinator.start()
    ws.RunNetOnce(net)
    ids = ws.FetchBlob("gpu_1/ids").tolist()  # one worker's chunk: four consecutive ids
    assert len(ids) == 4 and ids[0] % 4 == 0 and ids == list(range(ids[0], ids[0] + 4))
    assert ("SafeEnqueueBlobs", DeviceOption(1, 1)) in ws.log
    assert coordinator.stop() is True


@pytest.mark.timeout(60)
def test_the_example_runs_to_completion() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "classic_data_workers.py")],
        capture_output=True,
        text=True,
        timeout=50,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "done" in proc.stdout
