"""``python -m benchmarks.workloads.http_service``: the http workload's image servers.

Runs two embedded image services (``asyncfeed.fetchers.service.ImageService``) in a process
of their own, outside the measured process tree: one with the workload's latency (and, with
``--max-concurrent K``, answering 429 with ``Retry-After`` above K requests at once), one with
none (for the CPU bound). Prints one JSON line with their URL templates once both listen,
then serves until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Sequence


async def serve(count: int, size: int, latency_ms: float, max_concurrent: int | None) -> None:
    from asyncfeed.fetchers.service import ImageService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    slow = ImageService(
        count=count, size=size, latency_ms=latency_ms, max_concurrent=max_concurrent
    )
    fast = ImageService(count=count, size=size, latency_ms=0.0)
    async with slow, fast:
        ready = {"url_template": slow.url_template, "fast_url_template": fast.url_template}
        print(json.dumps(ready), flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.workloads.http_service")
    parser.add_argument("--count", type=int, default=256)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--max-concurrent", type=int, default=None, help="throttle the latency service (429)"
    )
    args = parser.parse_args(argv)
    asyncio.run(serve(args.count, args.size, args.latency_ms, args.max_concurrent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
