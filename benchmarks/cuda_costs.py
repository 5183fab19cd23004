"""``python -m benchmarks.cuda_costs``: µs per call of each step of ``TorchSink``'s CUDA path.

Each building block the sink calls per batch (``from_numpy``, ``is_pinned``, an event,
the stream context, a non-blocking copy, ``wait_event``, ``record_stream``, the staging copy
by torch and by numpy at three sizes), timed alone on one thread over ``--n`` calls
(median of 5 rounds), then ``put`` + ``get`` of a whole small batch on one thread. Where
the sink's per-batch cost goes, so changes to it are measured rather than guessed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import asyncfeed as af


def _us(fn: Callable[[], object], n: int) -> float:
    rounds = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        rounds.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(rounds)


def costs(n: int) -> list[dict[str, Any]]:
    dev = torch.device("cuda", 0)
    stream = torch.cuda.Stream()
    small = np.zeros((32, 3, 32, 32), np.float32)  # 393 KB: the handoff batch
    t_small = torch.from_numpy(small)
    pinned_small = t_small.pin_memory()
    done = torch.cuda.Event()
    done.record(stream)
    done.synchronize()
    out: list[dict[str, Any]] = []

    def add(what: str, fn: Callable[[], object], calls: int = n) -> None:
        torch.cuda.synchronize()
        out.append({"step": what, "µs per call": _us(fn, calls)})
        torch.cuda.synchronize()

    def event_record() -> None:
        torch.cuda.Event().record(stream)

    reused = torch.cuda.Event()

    def stream_ctx() -> None:
        with torch.cuda.stream(stream):
            pass

    def to_device() -> None:
        with torch.cuda.stream(stream):
            pinned_small.to(dev, non_blocking=True)

    def wait() -> None:
        torch.cuda.current_stream(dev).wait_event(done)

    dst = pinned_small.to(dev)

    add("torch.from_numpy", lambda: torch.from_numpy(small))
    add("is_pinned (pageable)", t_small.is_pinned)
    add("is_pinned (pinned)", pinned_small.is_pinned)
    add("Event() + record", event_record)
    add("reused event record", lambda: reused.record(stream))
    add("with torch.cuda.stream(s)", stream_ctx)
    add("pinned 393 KB .to(cuda, non_blocking) in stream ctx", to_device, n // 4)
    add("current_stream(dev)", lambda: torch.cuda.current_stream(dev))
    add("current_stream().wait_event", wait)
    add("record_stream", lambda: dst.record_stream(stream))
    add("event.synchronize (done)", done.synchronize)
    for mb_rows in (32, 800, 3200):  # 0.4, 9.8, 39 MB
        host = np.ones((mb_rows, 3, 32, 32), np.float32)
        buf = torch.empty(host.shape, dtype=torch.float32, pin_memory=True)
        view = buf.numpy()
        size = f"{host.nbytes / 1e6:.1f} MB"
        calls = max(10, n // mb_rows)
        add(
            f"staging {size}: pinned.copy_(from_numpy)",
            lambda b=buf, h=host: b.copy_(torch.from_numpy(h)),
            calls,
        )
        add(
            f"staging {size}: np.copyto(pinned view)", lambda v=view, h=host: np.copyto(v, h), calls
        )
    batch = {"data": small, "label": np.zeros(32, np.int64)}
    for label, pin in (("staged", True), ("pageable copy", False)):
        sink = af.TorchSink("cuda", capacity=2, pin_memory=pin)
        add(f"sink put+get, 393 KB batch, {label}", lambda s=sink: (s.put(batch), s.get()), n // 4)
    sink = af.TorchSink("cuda", capacity=2)
    own = {k: sink.allocate(a.shape, a.dtype) for k, a in batch.items()}
    add(
        "sink put+get, 393 KB batch, its pinned buffers",
        lambda: (sink.put(own), sink.get()),
        n // 4,
    )
    out.append({"step": "torch.get_num_threads()", "µs per call": float(torch.get_num_threads())})
    return out


def _streamed(sink: af.TorchSink, batch: dict[str, np.ndarray], n: int) -> float:
    """µs per batch: put on a producer thread, get on this one, as a feed and a trainer do."""

    def produce() -> None:
        for _ in range(n):
            sink.put(batch)
        sink.close()

    producer = threading.Thread(target=produce, name="bench-producer")
    start = time.perf_counter()
    producer.start()
    while sink.get(timeout=30) is not None:
        pass
    torch.cuda.current_stream().synchronize()
    producer.join()
    return (time.perf_counter() - start) / n * 1e6


def _ping_pong(sink: af.TorchSink, batch: dict[str, np.ndarray], n: int) -> float:
    """Median µs from put on one thread to get returning on another, one batch at a time."""
    turn = threading.Semaphore(0)
    put_at: list[float] = []

    def produce() -> None:
        for _ in range(n):
            put_at.append(time.perf_counter())
            sink.put(batch)
            turn.acquire()
        sink.close()

    lat = []
    producer = threading.Thread(target=produce, name="bench-producer")
    producer.start()
    while sink.get(timeout=30) is not None:
        lat.append((time.perf_counter() - put_at[len(lat)]) * 1e6)
        turn.release()
    producer.join()
    return float(np.median(lat[n // 10 :]))


def threaded(n: int) -> list[dict[str, Any]]:
    """The small batch across two threads: staged or in the sink's pinned buffers, with
    torch's default intra-op threads and with one."""
    rows = []
    default = torch.get_num_threads()
    small = {"data": np.zeros((32, 3, 32, 32), np.float32), "label": np.zeros(32, np.int64)}
    try:
        for threads in (default, 1):
            torch.set_num_threads(threads)
            for kind in ("pageable (staged)", "its pinned buffers"):
                row: dict[str, Any] = {"torch threads": threads, "batch": kind}
                for what, fn in (
                    ("streamed µs/batch", _streamed),
                    ("ping-pong p50 µs", _ping_pong),
                ):
                    sink = af.TorchSink("cuda", capacity=2)
                    batch = small
                    if kind != "pageable (staged)":
                        batch = {k: sink.allocate(a.shape, a.dtype) for k, a in small.items()}
                    fn(sink, batch, n // 10)  # warm-up
                    sink = af.TorchSink("cuda", capacity=2)
                    if kind != "pageable (staged)":
                        batch = {k: sink.allocate(a.shape, a.dtype) for k, a in small.items()}
                    row[what] = fn(sink, batch, n)
                rows.append(row)
    finally:
        torch.set_num_threads(default)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda_costs")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    rows = costs(args.n)
    print("| step | µs per call |\n|---|---|")
    for r in rows:
        print(f"| {r['step']} | {r['µs per call']:.2f} |")
    across = threaded(args.n)
    print("\n| torch threads | batch | streamed µs/batch | ping-pong p50 µs |\n|---|---|---|---|")
    for r in across:
        print(
            f"| {r['torch threads']} | {r['batch']} | {r['streamed µs/batch']:.1f} "
            f"| {r['ping-pong p50 µs']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"steps": rows, "threaded": across}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
