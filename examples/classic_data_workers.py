"""A training loop written for Caffe2's data_workers, ported by changing one import.

The Caffe2 original::

    from caffe2.python import data_workers, workspace

    coordinator = data_workers.init_data_input_workers(
        train_net, ["data", "label"], fetch, BATCH_SIZE, num_worker_threads=4
    )
    coordinator.start()
    for step in range(STEPS):
        workspace.RunNet(train_net)  # its DequeueBlobs ops read one batch per blob
    coordinator.stop()

Ported: the import below is the only change to the data loading. There is no Caffe2 net
here (``net=None``), so the loop reads each batch from the blob's BlobsQueue, and a small
numpy logistic regression stands in for the net. Run it with no arguments:

    python examples/classic_data_workers.py
"""

from __future__ import annotations

import numpy as np

from asyncfeed import data_workers  # was: from caffe2.python import data_workers

BATCH_SIZE = 32
STEPS = 300
FEATURES = 8
TRUE_WEIGHTS = np.linspace(-1.0, 1.0, FEATURES)


def fetch(worker_id: int, batch_size: int) -> list[np.ndarray]:
    """A Caffe2-style fetcher: any number of rows, one array per blob, in blob order."""
    rng = np.random.default_rng()
    rows = int(rng.integers(5, 50))  # not a multiple of the batch size: rows are carried over
    data = rng.normal(size=(rows, FEATURES)).astype(np.float32)
    label = (data @ TRUE_WEIGHTS > 0).astype(np.float32)
    return [data, label]


def main() -> int:
    coordinator = data_workers.init_data_input_workers(
        None,
        ["data", "label"],
        fetch,
        BATCH_SIZE,
        num_worker_threads=4,
        input_source_name="train",
        max_buffered_batches=64,
    )
    coordinator.start()
    queues = coordinator.get_queues("train")  # blob name -> BlobsQueue
    weights = np.zeros(FEATURES)
    try:
        for step in range(STEPS):
            data_record = queues["data"].dequeue(timeout=30)
            label_record = queues["label"].dequeue(timeout=30)
            if data_record is None or label_record is None:
                break  # the feed stopped; coordinator.stop() says why
            (data,), (label,) = data_record, label_record
            assert data.shape == (BATCH_SIZE, FEATURES)
            predicted = 1.0 / (1.0 + np.exp(-(data @ weights)))
            weights -= 0.5 * data.T @ (predicted - label) / BATCH_SIZE
            if step % 100 == 0:
                accuracy = float(np.mean((predicted > 0.5) == (label > 0.5)))
                print(f"step {step:3d}  batch accuracy {accuracy:.2f}")
    finally:
        coordinator.stop()
    cosine = weights @ TRUE_WEIGHTS / (np.linalg.norm(weights) * np.linalg.norm(TRUE_WEIGHTS))
    print(f"done: {STEPS} steps of {BATCH_SIZE}; weights vs. truth cosine {cosine:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
