"""Caffe2Sink against a test double of the Caffe2 calls; one test against real Caffe2."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import asyncfeed as af
from asyncfeed.sinks.caffe2 import Caffe2Sink, load_caffe2
from tests.conftest import CounterSource
from tests.sinks.caffe2_double import DeviceOption, Net, Workspace, caffe2_double

STILL_BLOCKED_S = 0.2  # a put into a full queue never completes; this long a wait shows a bug
GPU1 = DeviceOption(1, 1)


def make_sink(**kwargs: object) -> tuple[Caffe2Sink, Net, Workspace]:
    c2, ws, core, _ = caffe2_double()
    net = Net(core)
    sink = Caffe2Sink(net, ["data", "label"], caffe2=c2, **kwargs)  # type: ignore[arg-type]
    return sink, net, ws


def test_construction_creates_a_queue_per_blob_and_dequeue_ops_in_the_net() -> None:
    sink, net, ws = make_sink(source="test", device_option=GPU1, namescope="gpu_1/", timeout=30)
    creates = [op for op in ws.ops_run if op.type == "CreateBlobsQueue"]
    assert [(op.output, op.arg) for op in creates] == [
        (["gpu_1/data_c2queue_test"], {"num_blobs": 1, "capacity": 4}),
        (["gpu_1/label_c2queue_test"], {"num_blobs": 1, "capacity": 4}),
    ]
    assert [(op.type, op.input, op.output, op.arg) for op in net.ops] == [
        ("DequeueBlobs", ["gpu_1/data_c2queue_test"], ["data"], {"timeout_secs": 30.0}),
        ("DequeueBlobs", ["gpu_1/label_c2queue_test"], ["label"], {"timeout_secs": 30.0}),
    ]
    scratch = [name for name, dev in ws.log if name.startswith("FeedBlob:")]
    assert scratch == [
        "FeedBlob:gpu_1/data_scratch_test",
        "FeedBlob:gpu_1/label_scratch_test",
        "FeedBlob:gpu_1/data_scratch_test_status",
        "FeedBlob:gpu_1/label_scratch_test_status",
    ]
    assert {dev for _, dev in ws.log if dev is not None} == {GPU1}
    assert not sink.closed


def test_names_are_scoped_once_under_an_active_name_scope() -> None:
    c2, ws, core, scope = caffe2_double()
    scope.namescope = "gpu_0/"  # data_workers runs inside the caller's name scope
    net = Net(core)
    Caffe2Sink(net, ["data"], caffe2=c2, namescope=scope.CurrentNameScope())
    assert "gpu_0/data_c2queue_train" in ws.blobs
    assert [(op.input, op.output) for op in net.ops] == [
        (["gpu_0/data_c2queue_train"], ["gpu_0/data"])
    ]


def test_put_feeds_scratch_blobs_and_runs_safe_enqueue_on_the_device() -> None:
    sink, net, ws = make_sink(device_option=GPU1)
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    label = np.array([1, 2, 3], np.int32)
    ws.log.clear()
    assert sink.put({"data": data, "label": label})
    assert ws.log == [
        ("FeedBlob:data_scratch_train", GPU1),
        ("SafeEnqueueBlobs", GPU1),
        ("FeedBlob:label_scratch_train", GPU1),
        ("SafeEnqueueBlobs", GPU1),
    ]
    ws.RunNetOnce(net)
    assert np.array_equal(ws.FetchBlob("data"), data)
    assert np.array_equal(ws.FetchBlob("label"), label)


def test_default_device_option_is_cpu() -> None:
    sink, _, _ = make_sink()
    assert sink.device_option == DeviceOption(0, 0)


def test_wrong_blobs_are_refused() -> None:
    sink, _, _ = make_sink()
    with pytest.raises(
        af.RecordError, match=r"^expected blobs \['data', 'label'\], got \['label', 'data'\]$"
    ):
        sink.put({"label": np.zeros(1), "data": np.zeros(1)})


def test_a_queue_closed_by_the_consumer_makes_put_return_false() -> None:
    sink, _, ws = make_sink()
    ws.RunOperatorOnce(ws.core_op("CloseBlobsQueue", ["label_c2queue_train"]))
    assert not sink.put({"data": np.zeros(2), "label": np.zeros(2)})  # status output: true
    assert sink.closed


@pytest.mark.timeout(10)
def test_close_wakes_a_put_blocked_on_a_full_queue_and_ends_the_net() -> None:
    sink, net, ws = make_sink(timeout=5)
    batch = {"data": np.zeros(2), "label": np.zeros(2)}
    for _ in range(4):
        assert sink.put(batch)  # capacity 4, as data_workers had it
    done = threading.Event()
    result: list[bool] = []

    def put() -> None:
        result.append(sink.put(batch))
        done.set()

    writer = threading.Thread(target=put, name="writer")
    writer.start()
    assert not done.wait(STILL_BLOCKED_S)
    sink.close()
    writer.join(5)
    assert result == [False] and sink.closed
    closes = [op for op in ws.ops_run if op.type == "CloseBlobsQueue"]
    assert len(closes) == 2
    for _ in range(4):  # what was enqueued before the close is still read by the net
        ws.RunNetOnce(net)
    with pytest.raises(RuntimeError, match="DequeueBlobs: queue closed"):
        ws.RunNetOnce(net)


@pytest.mark.timeout(20)
def test_a_feed_into_caffe2_queues_read_by_the_net(counter: CounterSource) -> None:
    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        await asyncio.sleep(0)
        return counter.chunk(3)

    c2, ws, core, _ = caffe2_double()
    net = Net(core)
    sink = Caffe2Sink(net, list(counter.blobs), caffe2=c2, timeout=10)
    feed = af.Feed(fetch, blobs=counter.blobs, batch_size=4, concurrency=1, sink=sink)
    feed.start()
    ids: list[int] = []
    try:
        for _ in range(25):
            ws.RunNetOnce(net)
            batch_ids, x = ws.FetchBlob("ids"), ws.FetchBlob("x")
            assert batch_ids.shape == (4,) and x.shape == (4, 4)
            assert np.array_equal(x[:, 0], batch_ids.astype(np.float32))
            ids.extend(batch_ids.tolist())
    finally:
        feed.stop()
    assert ids == list(range(100))
    assert sink.closed


def test_against_real_caffe2() -> None:
    c2 = load_caffe2()
    if c2 is None:
        pytest.skip("caffe2.python does not import (Caffe2 is end-of-life)")
    net = c2.core.Net("asyncfeed_test")
    sink = Caffe2Sink(net, ["data"], source="real", caffe2=c2, timeout=5)
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert sink.put({"data": data})
    c2.workspace.RunNetOnce(net)
    assert np.array_equal(c2.workspace.FetchBlob("data"), data)
    sink.close()
    assert not sink.put({"data": data})
