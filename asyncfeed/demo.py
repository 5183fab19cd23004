"""The demo: an image service → ``HttpFetcher`` → feed → a small training step, with progress.

``python -m asyncfeed demo`` starts the embedded :class:`~asyncfeed.service.ImageService`
(unless ``--url`` names a real one), streams its images through the HTTP fetcher into a
consumer (a tiny torch model trained on CPU when torch is installed, else a numpy
reduction), shows a live progress bar and ends with a summary table. With ``--device
cuda``, batches go through a :class:`~asyncfeed.sinks.TorchSink` to the GPU and the model
trains there, read from the sink by a training thread. Everything it starts it stops, also
on Ctrl-C, after which the summary of what ran is printed all the same.

A ``--url`` is checked before the feed starts (``{i}`` in it, image 0 fetched and decoded):
a bad one is a :class:`DemoError`, which the command line prints as one line.

With ``--adaptive`` the fetcher limits each host adaptively (``asyncfeed.adaptive``),
starting from ``--concurrency``, and the embedded service serves at most
:data:`DEMO_MAX_CONCURRENT` images at once (429 with ``Retry-After`` above) unless
``--max-concurrent`` or ``--max-rate`` says otherwise: the progress bar shows the host's
limit, and the summary the path it took.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

import aiohttp
import numpy as np
from tqdm import tqdm

from .adaptive import Adaptive
from .bridge import DaemonThreadPool
from .demoreport import LEGEND, DemoReport
from .errors import FetchError
from .feed import Feed
from .fetchers.decode import ImageOptions
from .fetchers.http import HttpFetcher
from .fetchers.retry import Retry
from .fetchers.service import ImageService
from .sinks import TorchSink

__all__ = ["DEMO_MAX_CONCURRENT", "LEGEND", "DemoError", "DemoReport", "check_url", "run_demo"]

CLASSES = 10
#: What the embedded service serves at once with ``--adaptive`` and no other limit.
DEMO_MAX_CONCURRENT = 16


class DemoError(Exception):
    """The demo cannot run as asked; ``str()`` is a one-line reason for the command line."""


Step = Callable[[Mapping[str, Any]], float]


def _make_step(threads: int, device: str | None) -> tuple[str, Step]:
    """A training step: a tiny torch CNN on ``device`` when torch is installed, else numpy.

    The step takes a batch of numpy arrays on the CPU, or of tensors already on ``device``.
    """
    if importlib.util.find_spec("torch") is None:
        weights = np.zeros((3, CLASSES), np.float32)

        def numpy_step(batch: Mapping[str, Any]) -> float:
            feats = batch["data"].mean(axis=(1, 2), dtype=np.float32) / 255.0  # [N, 3]
            logits = feats @ weights
            probs = np.exp(logits - logits.max(1, keepdims=True))
            probs /= probs.sum(1, keepdims=True)
            labels = batch["label"]
            loss = float(-np.log(probs[np.arange(len(labels)), labels] + 1e-9).mean())
            probs[np.arange(len(labels)), labels] -= 1.0
            weights[...] -= 5.0 * feats.T @ probs / len(labels)
            return loss

        return "numpy", numpy_step

    import torch

    torch.set_num_threads(threads)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, kernel_size=8, stride=8),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, CLASSES),
    ).to(device or "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def torch_step(batch: Mapping[str, Any]) -> float:
        data, labels = batch["data"], batch["label"]
        if isinstance(data, np.ndarray):  # uint8 NHWC from `async for`
            data, labels = torch.from_numpy(data), torch.from_numpy(labels)
            images = data.permute(0, 3, 1, 2).float().div_(255.0)
        else:  # from the TorchSink: uint8 copied, made float NCHW in [0, 1] on the device
            images = data
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        return float(loss.item())  # waits for the step: the loss curve is real

    return "torch", torch_step


def _keys(template: str, count: int, label: Callable[[int], int]) -> Iterator[tuple[str, int]]:
    for i in itertools.cycle(range(count)):
        yield template.format(i=i), label(i)


async def check_url(template: str, image_size: int) -> None:
    """Fetch and decode image 0 of ``template`` (a few quick retries).

    Raises:
        DemoError: ``template`` has no ``{i}`` field, or image 0 cannot be fetched or
            decoded; the message is one line naming the URL.
    """
    try:
        url, other = template.format(i=0), template.format(i=1)
    except (KeyError, IndexError, ValueError) as exc:
        raise DemoError(f"--url {template}: not a URL template with {{i}} ({exc!r})") from None
    if url == other:
        raise DemoError(f"--url {template}: has no {{i}} field for the image number")
    probe = HttpFetcher(
        image=ImageOptions(size=(image_size, image_size)),
        retry=Retry(attempts=3, backoff=0.2, deadline=5.0),
        timeout=aiohttp.ClientTimeout(total=15.0, connect=5.0),
        decode_threads=1,
    )
    try:
        async with probe:
            await probe(url)
    except FetchError as exc:
        reason = " ".join(str(exc).split())
        raise DemoError(f"--url {template}: {reason}") from None


async def run_demo(args: argparse.Namespace, report: DemoReport, out: TextIO) -> None:
    """Run the demo described by ``args``, filling ``report`` as it goes."""
    if args.url is not None:
        await check_url(args.url, args.image_size)
    async with contextlib.AsyncExitStack() as stack:
        trainer = DaemonThreadPool(1, "asyncfeed-demo-train")
        stack.callback(trainer.shutdown, wait=False)
        device = args.device
        report.device = device
        make_step = trainer.submit(_make_step, 1, device)  # imports torch meanwhile
        if args.url is None:
            max_concurrent, max_rate = args.max_concurrent, args.max_rate
            if args.adaptive and max_concurrent is None and max_rate is None:
                max_concurrent = DEMO_MAX_CONCURRENT
            service = ImageService(
                count=args.count,
                latency_ms=args.latency_ms,
                error_rate=args.error_rate,
                max_concurrent=max_concurrent,
                max_rate=max_rate,
                retry_after=args.retry_after,
            )
            if max_concurrent is not None:
                report.service_limit = f"{max_concurrent} at once"
            elif max_rate is not None:
                report.service_limit = f"{max_rate:g} per second"
            await stack.enter_async_context(service)
            template, label = service.url_template, service.label
            report.source = (
                f"embedded service {template} ({args.latency_ms:g} ms latency, "
                f"{args.error_rate:.0%} errors)"
            )
        else:
            template = args.url
            report.source = template

            def label(i: int) -> int:
                return i % CLASSES

        report.consumer, step = await asyncio.wrap_future(make_step)
        report.batch_size = args.batch_size
        report.max_errors = args.max_errors
        concurrency: int | Adaptive = args.concurrency
        if args.adaptive:  # the feed and its host limits adapt, from --concurrency down
            concurrency = Adaptive(max=args.concurrency, start=args.concurrency)
            report.limits.append((args.concurrency, "start"))
        fetcher = HttpFetcher(  # follows the feed's policy
            image=ImageOptions(size=(args.image_size, args.image_size)),
            retry=Retry(attempts=4, backoff=0.05, deadline=10.0),
        )
        sink = None
        if device is not None:  # uint8 crosses to the device, converted there
            sink = TorchSink(device, capacity=4, layout="NCHW", dtype="float32")
        feed = Feed.from_keys(
            _keys(template, args.count, label),
            fetcher,
            blobs=["data", "label"],
            batch_size=args.batch_size,
            concurrency=concurrency,
            max_errors=args.max_errors,
            log_interval=None,
            sink=sink,
        )
        print(LEGEND, file=out, flush=True)
        progress = stack.enter_context(
            tqdm(unit=" rows", unit_scale=True, mininterval=0.5, file=out, leave=False)
        )
        report.started = time.perf_counter()
        await stack.enter_async_context(feed)
        deadline = asyncio.get_running_loop().time() + args.seconds
        try:
            async with asyncio.timeout_at(deadline):
                if sink is None:
                    await _consume(feed, step, trainer, report, progress)
                else:
                    await _consume_sink(feed, sink, step, trainer, report, progress)
        except TimeoutError:
            pass  # the demo's time is up
        finally:
            report.ended = time.perf_counter()
            _account(feed, report)


async def _consume(
    feed: Feed,
    step: Step,
    trainer: DaemonThreadPool,
    report: DemoReport,
    progress: tqdm[Any],
) -> None:
    while True:
        start = time.perf_counter()
        try:
            batch = await anext(feed)
        except StopAsyncIteration:
            return
        report.waits.append(time.perf_counter() - start)
        report.losses.append(await asyncio.wrap_future(trainer.submit(step, batch)))
        report.rows += batch.rows
        report.batches += 1
        _progress(feed, report, progress, batch.rows)


async def _consume_sink(
    feed: Feed,
    sink: TorchSink,
    step: Step,
    trainer: DaemonThreadPool,
    report: DemoReport,
    progress: tqdm[Any],
) -> None:
    """Train on the trainer thread from the sink, as a training loop on a GPU would."""
    stop = threading.Event()
    loop = asyncio.get_running_loop()

    def train() -> None:
        while not stop.is_set():
            start = time.perf_counter()
            tensors = sink.get()
            if tensors is None:  # closed: the feed stopped
                return
            report.waits.append(time.perf_counter() - start)
            report.losses.append(step(tensors))
            rows = int(tensors["label"].shape[0])
            del tensors
            report.rows += rows
            report.batches += 1
            loop.call_soon_threadsafe(_progress, feed, report, progress, rows)

    try:
        await asyncio.wrap_future(trainer.submit(train))
    finally:
        stop.set()  # on the demo's deadline or Ctrl-C; stopping the feed closes the sink


def _progress(feed: Feed, report: DemoReport, progress: tqdm[Any], rows: int) -> None:
    progress.update(rows)
    if report.batches % 8 == 0 and report.losses:
        _account(feed, report)
        stats = feed.stats()
        labels = {  # in this order (keyword arguments would be sorted)
            "chunks": stats.chunk_queue_depth,
            "batches": stats.batch_queue_depth,
            "retried": report.retries,
            "skipped": report.skipped,
            "waiting": f"{report.waiting_share:.0%}"
            + ("" if report.main_cause is None else f" {report.main_cause}"),
            "loss": f"{report.losses[-1]:.2f}",
        }
        if report.limits:
            labels["limit"] = report.limits[-1][0]
        progress.set_postfix(labels, refresh=False)


def _account(feed: Feed, report: DemoReport) -> None:
    stats = feed.stats()
    report.wait_causes = dict(stats.consumer_wait_by_cause)
    if stats.concurrency_reason != "fixed":
        report.feed_limit = (stats.concurrency_limit, stats.concurrency_reason)
    report.skipped = stats.fetch_errors
    errors: dict[str, int] = {}
    report.retries = 0
    report.throttled = 0
    for host in stats.hosts.values():
        report.retries += host["retries"]
        report.throttled += host["errors"].get("http_429", 0)
        for kind, n in host["errors"].items():
            errors[kind] = errors.get(kind, 0) + n
        limit = host.get("limit")
        if limit is not None and (not report.limits or report.limits[-1][0] != limit):
            report.limits.append((int(limit), str(host.get("limit_reason", ""))))
        elif limit is not None:
            report.limits[-1] = (int(limit), str(host.get("limit_reason", "")))
    report.errors = errors
