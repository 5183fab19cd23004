"""A feed inside an asyncio application: training, periodic evaluation and checkpoints.

Everything runs on one event loop and shares one ``aiohttp.ClientSession``: the training
feed, an evaluation task that runs a finite feed over a held-out set every second, and a
checkpoint writer that saves the model every 1.5 s. After a fixed number of steps the
application cancels its tasks; every feed, session and server closes cleanly::

    python examples/orchestrator.py
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from pathlib import Path

import aiofiles
import aiohttp
import numpy as np

import asyncfeed as af

CLASSES = 10
STEPS = 500


class Model:
    """A linear classifier on per-channel means: enough to watch accuracy rise."""

    def __init__(self) -> None:
        self.weights = np.zeros((4, CLASSES), np.float32)
        self.steps = 0

    @staticmethod
    def features(images: np.ndarray) -> np.ndarray:
        means = images.mean(axis=(1, 2), dtype=np.float32) / 255.0
        return np.concatenate([means, np.ones((len(images), 1), np.float32)], axis=1)

    def predict(self, images: np.ndarray) -> np.ndarray:
        logits = self.features(images) @ self.weights
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return probs / probs.sum(axis=1, keepdims=True)

    def train_step(self, images: np.ndarray, labels: np.ndarray) -> None:
        probs = self.predict(images)
        probs[np.arange(len(labels)), labels] -= 1.0
        self.weights -= 20.0 * self.features(images).T @ probs / len(labels)
        self.steps += 1


async def evaluate(model: Model, fetcher: af.HttpFetcher, records: list[tuple[str, int]]) -> None:
    """Every second: accuracy over the held-out records, through a finite feed."""
    while True:
        await asyncio.sleep(1.0)
        feed = af.Feed.from_keys(
            records,
            fetcher,
            blobs=["data", "label"],
            batch_size=50,
            concurrency=8,
            source="eval",
            log_interval=None,
        )
        correct = total = 0
        async with feed:
            async for batch in feed:
                predicted = model.predict(batch["data"]).argmax(axis=1)
                correct += int((predicted == batch["label"]).sum())
                total += batch.rows
        print(f"  eval after {model.steps} steps: accuracy {correct / total:.0%} on {total}")


async def checkpoint(model: Model, directory: Path) -> None:
    """Every 1.5 s: write the weights without blocking the loop."""
    for n in itertools.count():
        await asyncio.sleep(1.5)
        path = directory / f"model-{n}.npy"
        async with aiofiles.open(path, "wb") as f:
            await f.write(model.weights.tobytes())
        print(f"  checkpoint {path.name} at step {model.steps}")


async def train(model: Model, fetcher: af.HttpFetcher, records: list[tuple[str, int]]) -> None:
    feed = af.Feed(
        fetcher.seed(itertools.cycle(records)),  # endless: one image per call
        blobs=["data", "label"],
        batch_size=32,
        concurrency=32,
        log_interval=None,
    )
    async with feed:
        async for batch in feed:
            model.train_step(batch["data"], batch["label"])
            if model.steps >= STEPS:
                return


async def main() -> None:
    async with (
        af.ImageService(count=300, size=64, latency_ms=5) as service,
        aiohttp.ClientSession() as session,  # one session for the whole application
    ):
        records = service.records(300)
        train_set, eval_set = records[:250], records[250:]
        fetcher = af.HttpFetcher(session=session, image=af.ImageOptions(size=(32, 32)))
        model = Model()
        with tempfile.TemporaryDirectory() as tmp:
            async with asyncio.TaskGroup() as tg:
                background = [
                    tg.create_task(evaluate(model, fetcher, eval_set)),
                    tg.create_task(checkpoint(model, Path(tmp))),
                ]
                await train(model, fetcher, train_set)
                for task in background:  # training is done: stop the helpers
                    task.cancel()
        print(f"trained {model.steps} steps; session still open: {not session.closed}")


if __name__ == "__main__":
    asyncio.run(main())
