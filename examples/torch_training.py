"""Feed → torch sink → training loop, with images streamed over HTTP.

The feed runs on the event loop and hands every batch to a :class:`asyncfeed.TorchSink`
(pinned staging and an asynchronous copy on CUDA; zero-copy ``torch.from_numpy`` on the
CPU). The training loop is ordinary blocking code in its own thread: it calls
``sink.get()`` and trains, while the loop keeps fetching::

    python examples/torch_training.py
"""

from __future__ import annotations

import asyncio
import itertools

import torch

import asyncfeed as af

CLASSES = 10
STEPS = 120


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, kernel_size=4, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, CLASSES),
    )


def train(sink: af.TorchSink, device: torch.device) -> None:
    """A plain training loop: one batch from the sink per step."""
    torch.set_num_threads(1)
    model = make_model().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(STEPS):
        batch = sink.get(timeout=30)
        if batch is None:  # the feed stopped
            return
        images = batch["data"].permute(0, 3, 1, 2).float().div_(255.0)  # NHWC uint8 → NCHW
        loss = torch.nn.functional.cross_entropy(model(images), batch["label"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 20 == 0:
            print(f"step {step:4d}  loss {loss.item():.3f}")


async def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sink = af.TorchSink(device, capacity=4)
    async with af.ImageService(count=300, size=128, latency_ms=10, error_rate=0.01) as service:
        fetcher = af.HttpFetcher(image=af.ImageOptions(size=(64, 64)))
        feed = af.Feed(
            fetcher.seed(itertools.cycle(service.records())),
            blobs=["data", "label"],
            batch_size=32,
            concurrency=32,
            max_errors=100,  # skip the rare image that fails all its retries
            log_interval=None,
            sink=sink,
        )
        async with feed:
            await asyncio.to_thread(train, sink, device)  # the loop keeps fetching meanwhile
        stats = feed.stats()
        retries = sum(h["retries"] for h in stats.hosts.values())
        print(
            f"{STEPS} steps on {device}: {stats.rows_delivered} images delivered, "
            f"{retries} retries, {stats.fetch_errors} skipped"
        )


if __name__ == "__main__":
    asyncio.run(main())
