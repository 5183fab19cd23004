"""Command line: ``python -m asyncfeed demo`` and ``python -m asyncfeed serve-images``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from tqdm.contrib.logging import logging_redirect_tqdm

from .demo import DEMO_MAX_CONCURRENT, DemoError, DemoReport, run_demo
from .errors import AsyncFeedError, ConfigError
from .fetchers.service import ImageService
from .sinks import TorchSink


def _demo(args: argparse.Namespace) -> int:
    if args.device is not None:
        try:
            TorchSink(args.device).close()
        except ConfigError as exc:
            print(f"python -m asyncfeed demo: --device {args.device}: {exc}", file=sys.stderr)
            return 2
    report = DemoReport()
    code = 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    failure = None
    try:
        with logging_redirect_tqdm():
            asyncio.run(run_demo(args, report, sys.stderr))
    except DemoError as exc:  # a bad --url: nothing ran
        print(f"python -m asyncfeed demo: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        report.interrupted = True
        code = 130
    except AsyncFeedError as exc:  # e.g. more failed keys than --max-errors
        failure = " ".join(f"{type(exc).__name__}: {exc}".split())
        code = 1
    print(report.table(), flush=True)
    if failure is not None:
        print(f"python -m asyncfeed demo: the feed stopped: {failure}", file=sys.stderr)
    return code


async def _serve(args: argparse.Namespace) -> None:
    service = ImageService(
        count=args.count,
        size=args.size,
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        fmt=args.format,
        directory=args.dir,
        port=args.port,
        max_concurrent=args.max_concurrent,
        max_rate=args.max_rate,
        retry_after=args.retry_after,
    )
    async with service:
        print(
            f"serving {service.count} images at {service.url_template} and by name at "
            f"{service.url}/files/{{name}} (names: GET {service.url}/; Ctrl-C stops)",
            flush=True,
        )
        await asyncio.Event().wait()  # until Ctrl-C cancels the run


def _add_service_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=300, help="images served (default 300)")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="delay per response")
    parser.add_argument(
        "--error-rate", type=float, default=0.02, help="fraction answered with HTTP 503"
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        help="serve at most K images at once; 429 with Retry-After above (latency rises with load)",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        help="serve at most R images per second; 429 without Retry-After above",
    )
    parser.add_argument(
        "--retry-after", type=int, default=1, help="Retry-After seconds of --max-concurrent"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncfeed")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="stream images over HTTP into a training step")
    demo.add_argument(
        "--url",
        help="a URL template with {i}, e.g. https://host/img/{i}.jpg (image 0 is fetched "
        "first: a bad URL ends the demo with one line and status 2)",
    )
    _add_service_options(demo)
    demo.add_argument("--batch-size", type=int, default=32)
    demo.add_argument("--concurrency", type=int, default=64)
    demo.add_argument("--seconds", type=float, default=7.0, help="streaming time (default 7)")
    demo.add_argument("--image-size", type=int, default=128, help="decoded side (crop)")
    demo.add_argument("--max-errors", type=int, default=1000, help="failed keys skipped at most")
    demo.add_argument(
        "--adaptive",
        action="store_true",
        help="limit each host's concurrency and request rate adaptively, up to "
        f"--concurrency (the embedded service then serves at most {DEMO_MAX_CONCURRENT} "
        "images at once unless --max-concurrent or --max-rate says otherwise)",
    )
    demo.add_argument(
        "--device",
        help="train on this torch device (cpu, cuda, cuda:N), fed through a TorchSink and "
        "read by a training thread (default: the CPU, batches read with async for)",
    )
    serve = sub.add_parser("serve-images", help="serve images over HTTP on 127.0.0.1")
    serve.add_argument("--dir", help="serve the images of this folder instead")
    _add_service_options(serve)
    serve.add_argument("--size", type=int, default=256, help="side of the synthetic images")
    serve.add_argument("--format", choices=["jpeg", "png"], default="jpeg")
    serve.add_argument("--port", type=int, default=0, help="default: any free port")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    try:
        asyncio.run(_serve(args))
    except KeyboardInterrupt:
        print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
