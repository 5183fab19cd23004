"""``python -m benchmarks.cuda``: TorchSink on a GPU, measured against plain torch copies.

Three parts, each printed as a markdown table (and written with ``--json``):

- **h2d** — GB/s host → device of the same batches (uint8 224×224×3 images + int64
  labels), interleaved over ``--reps`` repetitions, medians: a plain pinned ``copy_``
  (pinned tensor → device, ``non_blocking``, the DMA ceiling); the same from pageable numpy
  staged by hand (``pinned.copy_(from_numpy)`` then the device copy, two buffers); the sink
  fed pageable batches (its staging ring); the sink fed batches in its own pinned buffers
  (``TorchSink.allocate``, no staging); and a whole ``Feed`` (rebatching 32-image chunks
  into the sink's pinned buffers) → sink. Producer and consumer are separate threads, as in
  a feed; the clock stops when the last batch is complete on the device.
- **handoff** — µs per batch for a small batch (32 rows): one at a time (put on one
  thread → ``get`` returns on another, then also until ready on the device) and streamed
  through a feed's bridge thread (``benchmarks.handoff``).
- **e2e** — the image service (its own process, 20 ms latency) → ``HttpFetcher`` →
  ``Feed.from_keys`` → ``TorchSink("cuda")`` → a training step on the GPU in a consumer
  thread: rows/s and the consumer's share of wall time spent waiting in ``get``.

Without CUDA only the handoff part runs, on the CPU sink (a smoke run of the script).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

import asyncfeed as af

from .handoff import measure_handoff
from .http_bench import serve_in_subprocess

IMAGE = (224, 224, 3)
H2D_ROWS = (8, 64, 256)  # 1.2, 9.6, 38.5 MB a batch
H2D_BYTES = 2e9  # moved per measurement


def _batch(rows: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "data": rng.integers(0, 255, (rows, *IMAGE), dtype=np.uint8),
        "label": np.arange(seed * rows, (seed + 1) * rows, dtype=np.int64),
    }


def _nbytes(batch: dict[str, np.ndarray]) -> int:
    return sum(a.nbytes for a in batch.values())


def _plain_pinned(batches: list[dict[str, np.ndarray]], n: int) -> float:
    """Seconds for n device copies from pinned tensors (the DMA ceiling)."""
    pinned = [{k: torch.from_numpy(a).pin_memory() for k, a in b.items()} for b in batches]
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        dev = [{k: torch.empty_like(t, device="cuda") for k, t in p.items()} for p in pinned]
        stream.synchronize()
        start = time.perf_counter()
        for i in range(n):
            src, dst = pinned[i % len(pinned)], dev[i % len(dev)]
            for k, t in src.items():
                dst[k].copy_(t, non_blocking=True)
        stream.synchronize()
    return time.perf_counter() - start


def _by_hand(batches: list[dict[str, np.ndarray]], n: int) -> float:
    """Seconds for n batches from pageable numpy: staged into two pinned buffers by hand."""
    slots = [{k: torch.empty(a.shape, dtype=torch.from_numpy(a).dtype).pin_memory()
              for k, a in batches[0].items()} for _ in range(2)]  # fmt: skip
    events: list[torch.cuda.Event | None] = [None, None]
    stream = torch.cuda.Stream()
    start = time.perf_counter()
    with torch.cuda.stream(stream):
        for i in range(n):
            slot, ev = slots[i % 2], events[i % 2]
            if ev is not None:
                ev.synchronize()
            out = {}
            for k, a in batches[i % len(batches)].items():
                slot[k].copy_(torch.from_numpy(a))
                out[k] = slot[k].to("cuda", non_blocking=True)
            events[i % 2] = torch.cuda.Event()
            events[i % 2].record(stream)  # type: ignore[union-attr]
            del out
        stream.synchronize()
    return time.perf_counter() - start


def _through_sink(sink: af.TorchSink, make: Callable[[int], Any], n: int) -> float:
    """Seconds for n batches put from a producer thread and read until ready on the device."""

    def produce() -> None:
        for i in range(n):
            if not sink.put(make(i)):
                return
        sink.close()

    producer = threading.Thread(target=produce, name="bench-producer")
    start = time.perf_counter()
    producer.start()
    got = 0
    while (out := sink.get(timeout=60)) is not None:
        got += 1
        del out
    torch.cuda.current_stream().synchronize()
    elapsed = time.perf_counter() - start
    producer.join()
    if got != n:
        raise RuntimeError(f"the sink delivered {got} of {n} batches")
    return elapsed


def _sink_staged(batches: list[dict[str, np.ndarray]], n: int) -> float:
    sink = af.TorchSink("cuda", capacity=2)
    return _through_sink(sink, lambda i: batches[i % len(batches)], n)


def _sink_pinned(batches: list[dict[str, np.ndarray]], n: int) -> float:
    sink = af.TorchSink("cuda", capacity=2)
    own = []
    for b in batches:
        copy = {k: sink.allocate(a.shape, a.dtype) for k, a in b.items()}
        for k, a in b.items():
            copy[k][...] = a
        own.append(copy)
    elapsed = _through_sink(sink, lambda i: own[i % len(own)], n)
    if sink.stats().staged:
        raise RuntimeError("pinned batches were staged")
    return elapsed


def _feed_sink(batches: list[dict[str, np.ndarray]], n: int) -> float:
    """A feed cutting 32-image chunks into batches built in the sink's pinned buffers."""
    rows = batches[0]["label"].shape[0]
    pool = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    total = pool["label"].shape[0]
    chunk = min(32, rows // 2)  # smaller than a batch: never passed through uncopied
    offsets = itertools.cycle(range(0, total - chunk + 1, chunk))

    async def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
        at = next(offsets)
        return [pool["data"][at : at + chunk], pool["label"][at : at + chunk]]

    sink = af.TorchSink("cuda", capacity=2)
    feed = af.Feed(fetch, blobs=["data", "label"], batch_size=rows, concurrency=4, sink=sink)
    feed.start()
    try:
        for _ in range(3):  # warm: pinned buffers allocated, loop thread running
            sink.get(timeout=60)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            out = sink.get(timeout=60)
            if out is None:
                raise RuntimeError(f"the feed stopped: {feed.error!r}")
            del out
        torch.cuda.current_stream().synchronize()
        elapsed = time.perf_counter() - start
    finally:
        feed.stop(timeout=10)
    if sink.stats().staged:
        raise RuntimeError("a feed's batches were staged, not built in pinned memory")
    return elapsed


H2D_MODES: dict[str, Callable[[list[dict[str, np.ndarray]], int], float]] = {
    "plain pinned copy_": _plain_pinned,
    "by hand: pageable → pinned → device": _by_hand,
    "TorchSink, pageable batches (staged)": _sink_staged,
    "TorchSink, batches in its pinned buffers": _sink_pinned,
    "Feed → TorchSink (rebatched into pinned buffers)": _feed_sink,
}


def h2d(reps: int, quick: bool) -> list[dict[str, Any]]:
    rows_out = []
    for rows in H2D_ROWS:
        batches = [_batch(rows, seed) for seed in range(4)]
        nbytes = _nbytes(batches[0])
        n = max(8, int((H2D_BYTES / 10 if quick else H2D_BYTES) / nbytes))
        samples: dict[str, list[float]] = {m: [] for m in H2D_MODES}
        failed: dict[str, str] = {}
        for rep in range(reps + 1):  # the first round warms up: allocations, pinned caches
            for mode, fn in H2D_MODES.items():
                if mode in failed:
                    continue
                try:
                    seconds = fn(batches, n if rep else max(4, n // 10))
                except Exception as exc:  # one mode failing must not lose the others
                    failed[mode] = repr(exc)[:200]
                    print(f"h2d {rows} rows, {mode}: {failed[mode]}", flush=True)
                    continue
                if rep:
                    samples[mode].append(n * nbytes / seconds / 1e9)
        row: dict[str, Any] = {"batch": f"{rows} images, {nbytes / 1e6:.1f} MB", "batches": n}
        for mode, values in samples.items():
            row[mode] = statistics.median(values) if values else float("nan")
        rows_out.append(row)
    return rows_out


def handoff(device: str, n: int = 2000) -> dict[str, Any]:
    """µs per small batch: one at a time across two threads, and streamed through a bridge."""
    cuda = device == "cuda"
    sink = af.TorchSink(device, capacity=2)
    batch = {"data": np.zeros((32, 3, 32, 32), np.float32), "label": np.zeros(32, np.int64)}
    turn = threading.Semaphore(0)
    put_at: list[float] = []

    def produce() -> None:
        for _ in range(n):
            put_at.append(time.perf_counter())
            sink.put(batch)
            turn.acquire()  # one batch at a time: the latency, not the queueing
        sink.close()

    got_us, ready_us = [], []
    producer = threading.Thread(target=produce, name="bench-producer")
    producer.start()
    while (out := sink.get(timeout=30)) is not None:
        got = time.perf_counter()
        if cuda:
            torch.cuda.current_stream().synchronize()
        ready = time.perf_counter()
        got_us.append((got - put_at[len(got_us)]) * 1e6)
        ready_us.append((ready - put_at[len(ready_us)]) * 1e6)
        del out
        turn.release()
    producer.join()
    streamed = measure_handoff(batches=n, repeats=5, sinks=(f"torch_{device}",))
    return {
        "device": device,
        "put→get p50 µs": float(np.percentile(got_us[100:], 50)),
        "put→get p99 µs": float(np.percentile(got_us[100:], 99)),
        "put→ready on device p50 µs": float(np.percentile(ready_us[100:], 50)),
        "streamed through a feed's bridge µs/batch": streamed[f"torch_{device}_us_per_batch"],
        "thread-to-thread floor µs/batch": streamed["direct_blobs_queue_us_per_batch"],
    }


def _model(kind: str) -> torch.nn.Module:
    if kind == "resnet18":
        import torchvision

        return torchvision.models.resnet18(num_classes=10)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 4, stride=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(32, 64, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(64, 10),
    )


def e2e(
    model_kind: str, concurrency: int, processes: int | None, seconds: float, device: str
) -> dict[str, Any]:
    model = _model(model_kind).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with serve_in_subprocess(20.0, count=512, size=256) as template:
        keys = ((template.format(i=i), i % 10) for i in itertools.cycle(range(512)))
        fetcher = af.HttpFetcher(image=af.ImageOptions(size=(224, 224)))
        sink = af.TorchSink(device, capacity=4)
        feed = af.Feed.from_keys(
            keys, fetcher, blobs=["data", "label"], batch_size=128,
            concurrency=concurrency, processes=processes, sink=sink, max_errors=100,
        )  # fmt: skip
        waited = steps = rows = 0.0
        feed.start()
        try:
            for _ in range(5):  # warm-up: connections, cuDNN autotune
                sink.get(timeout=60)
            start = time.perf_counter()
            while (now := time.perf_counter()) - start < seconds:
                tensors = sink.get(timeout=60)
                waited += time.perf_counter() - now
                assert tensors is not None
                x = tensors["data"].permute(0, 3, 1, 2).float().div_(255.0)
                loss = torch.nn.functional.cross_entropy(model(x), tensors["label"])
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss.item()  # the step is done before the next wait is timed
                steps += 1
                rows += tensors["label"].shape[0]
            elapsed = time.perf_counter() - start
        finally:
            feed.stop(timeout=10)
    return {
        "model": model_kind,
        "concurrency": concurrency,
        "processes": processes or 0,
        "rows/s": rows / elapsed,
        "steps/s": steps / elapsed,
        "consumer waiting %": 100 * waited / elapsed,
        "skipped": feed.stats().fetch_errors,
    }


def _table(rows: Sequence[dict[str, Any]]) -> str:
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(r[c]) for c in cols) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.2f}"
    return str(v)


def _env() -> dict[str, Any]:
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load": os.getloadavg(),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cuda")
    parser.add_argument("parts", nargs="*", default=["h2d", "handoff", "e2e"])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="e2e window per config")
    parser.add_argument("--quick", action="store_true", help="smaller runs")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--e2e-on-cpu", action="store_true", help="smoke-test e2e without CUDA")
    args = parser.parse_args(argv)
    cuda = torch.cuda.is_available()
    results: dict[str, Any] = {"env": _env()}
    print(f"env: {json.dumps(results['env'])}", flush=True)
    if "h2d" in args.parts and cuda:
        results["h2d"] = h2d(args.reps, args.quick)
        print("\n## host → device, GB/s (median of reps)\n\n" + _table(results["h2d"]), flush=True)
    if "handoff" in args.parts:
        results["handoff"] = [handoff(device) for device in (["cpu", "cuda"] if cuda else ["cpu"])]
        print("\n## handoff of a 32-row batch\n\n" + _table(results["handoff"]), flush=True)
    if "e2e" in args.parts and (cuda or args.e2e_on_cpu):
        runs = []
        configs = [("tiny", 256, None), ("tiny", 256, 4), ("resnet18", 256, 4)]
        device = "cuda" if cuda else "cpu"
        for model, conc, procs in configs:
            try:
                seconds = args.seconds / (3 if args.quick else 1)
                runs.append(e2e(model, conc, procs, seconds, device))
            except Exception as exc:  # one config failing must not lose the others
                runs.append({"model": model, "concurrency": conc, "error": repr(exc)[:200]})
            print(json.dumps(runs[-1]), flush=True)
        results["e2e"] = runs
        ok = [r for r in runs if "error" not in r]
        if ok:
            print("\n## end to end: image service → TorchSink(cuda) → train\n\n" + _table(ok))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
