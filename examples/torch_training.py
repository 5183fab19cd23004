"""Feed → torch training loop on CPU, with images streamed over HTTP.

Each batch's numpy arrays become tensors without a copy (``torch.from_numpy``); the training
step runs in a worker thread so the event loop keeps fetching while the model trains::

    python examples/torch_training.py

(The dedicated torch sink, with pinned staging buffers and CUDA streams, replaces the
hand-off below once it lands; this loop is what it does on CPU.)
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


async def main() -> None:
    torch.set_num_threads(1)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def step(batch: af.Batch) -> float:
        images = torch.from_numpy(batch["data"]).permute(0, 3, 1, 2).float().div_(255.0)
        labels = torch.from_numpy(batch["label"])
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return float(loss.item())

    async with af.ImageService(count=300, size=128, latency_ms=10, error_rate=0.01) as service:
        fetcher = af.HttpFetcher(image=af.ImageOptions(size=(64, 64)))
        feed = af.Feed(
            fetcher.seed(itertools.cycle(service.records())),
            blobs=["data", "label"],
            batch_size=32,
            concurrency=32,
            max_errors=100,  # skip the rare image that fails all its retries
            log_interval=None,
        )
        async with feed:
            async for batch in feed:
                loss = await asyncio.to_thread(step, batch)
                if batch.index % 20 == 0:
                    print(f"step {batch.index:4d}  loss {loss:.3f}")
                if batch.index + 1 >= STEPS:
                    break
        stats = feed.stats()
        retries = sum(h["retries"] for h in stats.hosts.values())
        print(
            f"{stats.rows_delivered} images, {stats.inputs_per_sec:.0f} images/s, "
            f"{retries} retries, {stats.fetch_errors} skipped"
        )


if __name__ == "__main__":
    asyncio.run(main())
