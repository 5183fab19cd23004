"""TorchSink on the CPU with real tensors; the CUDA path runs only where CUDA is available."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Mapping

import numpy as np
import pytest

import asyncfeed as af
from tests.conftest import CounterSource

torch = pytest.importorskip("torch")

STILL_BLOCKED_S = 0.2  # a put into a full sink never completes; this long a wait shows a bug

SUPPORTED = [
    "bool",
    "uint8",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint16",
    "uint32",
    "uint64",
    "float16",
    "float32",
    "float64",
    "complex64",
    "complex128",
]


def batch(i: int, rows: int = 3) -> dict[str, np.ndarray]:
    ids = np.arange(i * rows, (i + 1) * rows, dtype=np.int64)
    return {"ids": ids, "x": np.repeat(ids.astype(np.float32)[:, None], 4, axis=1)}


def test_cpu_tensors_share_memory_with_the_batch_and_keep_values() -> None:
    sink = af.TorchSink("cpu", capacity=2)
    b = batch(0)
    assert sink.put(b)
    out = sink.get(timeout=1)
    assert out is not None and list(out) == ["ids", "x"]
    assert out["ids"].dtype == torch.int64 and out["x"].dtype == torch.float32
    assert tuple(out["x"].shape) == (3, 4) and out["x"].device.type == "cpu"
    assert out["ids"].tolist() == [0, 1, 2]
    assert np.shares_memory(out["x"].numpy(), b["x"])  # zero-copy


@pytest.mark.parametrize("name", SUPPORTED)
def test_every_supported_dtype_maps_to_its_torch_dtype(name: str) -> None:
    sink = af.TorchSink("cpu")
    arr = (np.arange(6) % 2).astype(name).reshape(3, 2)
    assert sink.put({"a": arr})
    out = sink.get(timeout=1)
    assert out is not None
    assert out["a"].dtype == getattr(torch, name)
    assert np.array_equal(out["a"].numpy(), arr)


@pytest.mark.parametrize("dtype", ["datetime64[s]", "U3", "S2", "V4", np.longdouble])
def test_unsupported_dtypes_are_refused_naming_the_blob(dtype: object) -> None:
    sink = af.TorchSink("cpu")
    with pytest.raises(
        af.RecordError,
        match=r"^blob 'bad': numpy dtype .* has no torch equivalent \(supported: bool, uint8, ",
    ):
        sink.put({"ok": np.zeros(2), "bad": np.zeros(2, dtype=dtype)})  # type: ignore[call-overload]
    assert len(sink) == 0  # nothing half-put; the place is given back
    assert sink.put({"ok": np.zeros(2)})


def test_arrays_torch_cannot_share_are_copied_without_warnings() -> None:
    sink = af.TorchSink("cpu", capacity=4)
    readonly = np.arange(4, dtype=np.int32)
    readonly.setflags(write=False)
    reversed_ = np.arange(4, dtype=np.int32)[::-1]
    big_endian = np.arange(4, dtype=">i4")
    for arr in (readonly, reversed_, big_endian):
        assert sink.put({"a": arr})
        out = sink.get(timeout=1)
        assert out is not None
        assert out["a"].tolist() == arr.tolist() and out["a"].dtype == torch.int32
        assert not np.shares_memory(out["a"].numpy(), arr)


def test_batches_come_out_in_order() -> None:
    sink = af.TorchSink("cpu", capacity=8)
    for i in range(8):
        assert sink.put(batch(i))
    got = [sink.get(timeout=1) for _ in range(8)]
    assert [g["ids"].tolist() for g in got if g is not None] == [
        [3 * i, 3 * i + 1, 3 * i + 2] for i in range(8)
    ]


@pytest.mark.timeout(10)
def test_put_blocks_while_full_and_resumes_after_a_get() -> None:
    sink = af.TorchSink("cpu", capacity=1)
    assert sink.put(batch(0))
    done = threading.Event()
    result: list[bool] = []

    def put() -> None:
        result.append(sink.put(batch(1)))
        done.set()

    writer = threading.Thread(target=put, name="writer")
    writer.start()
    assert not done.wait(STILL_BLOCKED_S)
    first = sink.get(timeout=1)
    writer.join(5)
    assert result == [True]
    second = sink.get(timeout=1)
    assert first is not None and second is not None
    assert first["ids"].tolist() == [0, 1, 2] and second["ids"].tolist() == [3, 4, 5]


@pytest.mark.timeout(10)
def test_close_wakes_put_and_get_and_keeps_what_was_queued() -> None:
    full = af.TorchSink("cpu", capacity=1)
    full.put(batch(0))
    empty = af.TorchSink("cpu", capacity=1)
    outcomes: dict[str, object] = {}
    gate = threading.Barrier(3)

    def put() -> None:
        gate.wait()
        outcomes["put"] = full.put(batch(1))

    def get() -> None:
        gate.wait()
        outcomes["get"] = empty.get()

    threads = [threading.Thread(target=f, name=f.__name__) for f in (put, get)]
    for t in threads:
        t.start()
    gate.wait()
    full.close()
    empty.close()
    for t in threads:
        t.join(5)
    assert outcomes == {"put": False, "get": None}
    kept = full.get(timeout=1)
    assert kept is not None and kept["ids"].tolist() == [0, 1, 2]
    assert full.get(timeout=1) is None and full.closed
    assert not full.put(batch(2))


def test_get_times_out_on_an_open_empty_sink() -> None:
    sink = af.TorchSink("cpu")
    with pytest.raises(af.FeedTimeoutError):
        sink.get(timeout=0.01)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"device": "tpu"}, r"^device must name a torch device, got 'tpu'$"),
        ({"device": "meta"}, r"^device must be 'cpu' or 'cuda\[:N\]', got 'meta'$"),
        ({"capacity": 0}, r"^capacity must be >= 1, got 0$"),
        ({"pin_memory": "yes"}, r"^pin_memory must be a bool, got 'yes'$"),
    ],
)
def test_invalid_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.TorchSink(**kwargs)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(
        af.ConfigError, match=r"^device 'cuda:0' was asked for, but CUDA is not available$"
    ):
        af.TorchSink("cuda:0")


@pytest.mark.timeout(20)
def test_a_feed_into_a_torch_sink(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(5)

    sink = af.TorchSink("cpu", capacity=2)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1, sink=sink)
    feed.start()
    ids: list[int] = []
    try:
        for _ in range(30):
            out = sink.get(timeout=10)
            assert out is not None
            assert tuple(out["x"].shape) == (8, 4) and out["ids"].dtype == torch.int64
            assert torch.equal(out["x"][:, 0], out["ids"].to(torch.float32))
            ids.extend(out["ids"].tolist())
    finally:
        feed.stop()
    assert ids == list(range(240))
    assert sink.closed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pin_memory", [True, False])
def test_cuda_batches_arrive_intact_on_the_consumer_stream(pin_memory: bool) -> None:
    sink = af.TorchSink("cuda", capacity=2, pin_memory=pin_memory)
    results: list[list[int]] = []

    def produce() -> None:
        for i in range(20):
            sink.put(batch(i, rows=1024))
        sink.close()

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        while (out := sink.get(timeout=10)) is not None:
            assert out["x"].is_cuda
            total = (out["x"][:, 0] - out["ids"].to(torch.float32)).abs().sum()
            results.append([int(out["ids"][0]), int(total)])
    producer.join(10)
    assert [r[0] for r in results] == [i * 1024 for i in range(20)]
    assert all(r[1] == 0 for r in results)


def test_importing_asyncfeed_and_its_sinks_never_imports_torch() -> None:
    code = (
        "import sys, asyncfeed, asyncfeed.sinks, asyncfeed.sinks.torch, asyncfeed.sinks.caffe2,"
        " asyncfeed.data_workers; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 0


def test_a_cpu_sink_allocates_plain_host_arrays() -> None:
    sink = af.TorchSink("cpu")
    arr = sink.allocate((5, 3), np.dtype(np.float16))
    assert arr.shape == (5, 3) and arr.dtype == np.float16 and arr.flags.writeable


class AllocatingSink:
    """A BlobsQueue that hands out its own batch arrays and remembers them."""

    def __init__(self) -> None:
        self.queue = af.BlobsQueue(capacity=4, num_blobs=2)
        self.made: list[np.ndarray] = []

    def put(self, batch: Mapping[str, np.ndarray], /) -> bool:
        return self.queue.put(batch)

    def close(self) -> None:
        self.queue.close()

    @property
    def closed(self) -> bool:
        return self.queue.closed

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        arr = np.empty(shape, dtype)
        self.made.append(arr)
        return arr


@pytest.mark.timeout(20)
def test_a_feed_builds_its_batches_in_arrays_its_sink_allocates(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        return counter.chunk(3)

    sink = AllocatingSink()
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=8, concurrency=1, sink=sink)
    feed.start()
    try:
        records = [sink.queue.dequeue(timeout=10) for _ in range(20)]
    finally:
        feed.stop()
    assert sink.made, "the sink was never asked for a batch array"
    for i, record in enumerate(records):
        assert record is not None
        ids, x = record
        assert ids.tolist() == list(range(8 * i, 8 * i + 8))
        assert any(np.shares_memory(ids, m) for m in sink.made)
        assert any(np.shares_memory(x, m) for m in sink.made)
