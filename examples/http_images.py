"""A list of image URLs → batches of decoded, labelled images.

Runs against the embedded image service, so it needs no network::

    python examples/http_images.py
"""

from __future__ import annotations

import asyncio

import asyncfeed as af


async def main() -> None:
    async with af.ImageService(count=200, size=256, latency_ms=10) as service:
        records = service.records(200)  # [(url, label), ...]: your own list goes here
        fetcher = af.HttpFetcher(
            image=af.ImageOptions(size=(224, 224)),  # crop every image to one shape
            retry=af.Retry(attempts=4),
        )
        feed = af.Feed.from_keys(
            records,
            fetcher,
            blobs=["data", "label"],
            batch_size=32,
            concurrency=32,
            ordered=True,  # rows arrive in the order of the list
            log_interval=None,
        )
        async with feed:
            async for batch in feed:
                data, labels = batch["data"], batch["label"]
                print(
                    f"batch {batch.index}: data {data.dtype}{list(data.shape)}, "
                    f"labels {labels[:8].tolist()}..."
                )
        stats = feed.stats()
        for host, h in stats.hosts.items():
            print(
                f"{host}: {h['requests']} requests, {h['bytes'] / 1e6:.1f} MB, "
                f"latency p50 {h['latency_p50'] * 1e3:.1f} ms, p99 {h['latency_p99'] * 1e3:.1f} ms"
            )
        print(f"{stats.rows_delivered} images in {stats.batches_delivered} batches")


if __name__ == "__main__":
    asyncio.run(main())
