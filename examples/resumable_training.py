"""A training job that survives being killed: the feed's position is saved with the model.

Every ``--save-every`` steps the loop writes one checkpoint holding the model, the optimizer
and ``feed.state_dict()`` (the position right after the last batch the loop took from the
sink: positions in the key order, never the keys). Killed at any moment (even ``kill -9``),
the next run loads the checkpoint and resumes with ``Feed.from_keys(..., state=...)``: the
steps after the checkpoint see exactly the images an uninterrupted run would have seen, and
with ``ordered=True`` the trained weights come out bit-identical::

    python examples/resumable_training.py            # trains; kill it whenever you like
    python examples/resumable_training.py            # resumes from the last checkpoint
    python examples/resumable_training.py --fresh    # starts over

The images come over HTTP from the embedded image service (new port each run: the keys
change, their positions do not). ``--trace FILE`` appends each step's image indices, cut back
to the checkpoint on resume, so a test can compare runs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

import asyncfeed as af

CLASSES = 10
IMAGES = 1000
EPOCHS = 3
BATCH = 16


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, kernel_size=4, stride=4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(8, CLASSES),
    )


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    tmp = path.with_suffix(".tmp")
    torch.save(checkpoint, tmp)
    os.replace(tmp, path)


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def train(
    feed: af.Feed, sink: af.TorchSink, args: argparse.Namespace, start: dict[str, Any] | None
) -> None:
    """The training loop, in its own thread: take a batch from the sink, step, checkpoint."""
    torch.set_num_threads(1)
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = 0
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        step = start["step"]
    trace = None if args.trace is None else open(args.trace, "a", encoding="utf-8")  # noqa: SIM115
    try:
        while (batch := sink.get(timeout=60)) is not None:
            images = batch["data"].permute(0, 3, 1, 2).float().div_(255.0)
            index = batch["label"]  # the key's second item: the image's index
            loss = torch.nn.functional.cross_entropy(model(images), index % CLASSES)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            if trace is not None:
                trace.write(" ".join(map(str, index.tolist())) + "\n")
                trace.flush()
            print(f"step {step}  loss {loss.item():.3f}", flush=True)
            if step % args.save_every == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
                save(args.checkpoint, {**state, "step": step, "feed": feed.state_dict()})
                print(f"checkpoint at step {step}", flush=True)
    finally:
        if trace is not None:
            trace.close()
    print(f"trained {step} steps, {EPOCHS} epochs of {IMAGES} images; weights {digest(model)}")


def resume(args: argparse.Namespace) -> dict[str, Any] | None:
    """The last checkpoint, or None; the trace is cut back to its step."""
    if args.fresh or not args.checkpoint.exists():
        if args.trace is not None:
            args.trace.write_text("")
        return None
    start: dict[str, Any] = torch.load(args.checkpoint, weights_only=True)
    if args.trace is not None:
        lines = args.trace.read_text().splitlines(keepends=True)[: start["step"]]
        args.trace.write_text("".join(lines))
    position = start["feed"]
    print(f"resuming at step {start['step']} (epoch {position['epoch']})", flush=True)
    return start


async def main(args: argparse.Namespace) -> None:
    start = resume(args)
    sink = af.TorchSink("cpu", capacity=4)
    async with af.ImageService(count=IMAGES, size=32, latency_ms=1, seed=0) as service:
        keys = [(url, i) for i, url in enumerate(service.urls())]
        feed = af.Feed.from_keys(
            keys,
            af.HttpFetcher(image=af.ImageOptions(size=(16, 16))),
            blobs=["data", "label"],
            batch_size=BATCH,
            concurrency=32,
            ordered=True,  # the same batches every run: resumed weights are bit-identical
            epochs=EPOCHS,
            shuffle=True,
            seed=0,
            state=None if start is None else start["feed"],
            log_interval=None,
            sink=sink,
        )
        async with feed:
            await asyncio.to_thread(train, feed, sink, args, start)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(tempfile.gettempdir()) / "asyncfeed-resumable-training.pt"
    parser.add_argument("--checkpoint", type=Path, default=default)
    parser.add_argument("--save-every", type=int, default=10, metavar="STEPS")
    parser.add_argument("--trace", type=Path, default=None)
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
