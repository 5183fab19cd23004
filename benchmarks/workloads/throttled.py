"""throttled: ``HttpFetcher`` against an image service that serves 32 requests at once —
``concurrency=Adaptive()`` against fixed concurrency 8, 32 and 256.

The service is the http workload's (its own process, 20 ms latency, 256×256 JPEGs) started
with ``max_concurrent=32``: one request over 32 in flight is refused at once with 429 and
``Retry-After: 1``, and latency rises with load to 1.5× at 32. Every configuration runs the
same product path, ``Feed.from_keys(keys, HttpFetcher(), concurrency=...)``; only the
concurrency differs. Too low starves the consumer, too high is refused; ``Adaptive()`` is to
find the service's limit on its own. 429s are counted by the fetcher over the whole run,
warm-up and convergence included, so the adaptive row pays for its probing here.

The phases are longer than the other workloads' (at least :data:`WARMUP_S`,
:data:`WINDOW_S` and :data:`DRAIN_S`): convergence takes seconds, a ``Retry-After`` pause
costs a second, and at concurrency 256 the requests still in backoff when the keys end take
seconds to be served.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

from ..checks import BatchChecker
from ..data import Streams
from ..pipelines.asyncfeed_pipe import FeedAsyncRunner
from ..runner import Phases, Runner
from ..spec import RunSpec, Unavailable
from .base import Target, Workload
from .http import image_services, keys
from .http_pipes import BATCH, BLOBS
from .targets import median

__all__ = ["K", "WORKLOAD", "Throttled"]

K = 32  # the service's max_concurrent
FIXED = (8, 32, 256)
WARMUP_S = 3.0
WINDOW_S = 10.0
#: Requests refused again and again back off for seconds: the drain waits for them (a row
#: still in backoff when the drain gives up would count as lost, though the feed has it).
DRAIN_S = 30.0
ADAPTIVE = "HttpFetcher concurrency=Adaptive()"


class _Runner(FeedAsyncRunner):
    """The feed's runner, reporting the fetcher's requests, refusals and host limit."""

    def __init__(self, streams: Streams, spec: RunSpec) -> None:
        from asyncfeed.fetchers.http import HttpFetcher

        self._fetcher = HttpFetcher()
        adaptive = bool(spec.params.get("adaptive"))
        c = int(spec.params["concurrency"])
        template = str(spec.params["url_template"])

        def make_feed() -> Any:
            import asyncfeed as af

            return af.Feed.from_keys(
                keys(streams, template),
                self._fetcher,
                blobs=list(BLOBS),
                batch_size=BATCH,
                concurrency=af.Adaptive() if adaptive else c,
                log_interval=None,
            )

        how = "Adaptive()" if adaptive else f"concurrency={c}"
        super().__init__(streams, make_feed, note=f"from_keys(HttpFetcher(), {how})")

    def extras(self) -> dict[str, Any]:
        out = super().extras()
        hosts = self._fetcher.host_stats()
        out["requests"] = sum(h.get("requests", 0) for h in hosts.values())
        out["refused"] = sum(h.get("status", {}).get("4xx", 0) for h in hosts.values())
        limits = [h["limit"] for h in hosts.values() if "limit" in h]
        if limits:
            out["host_limit"] = min(limits)
        return out


class Throttled(Workload):
    name = "throttled"
    title = f"throttled: HttpFetcher against a service serving {K} at once (429 beyond), batch 32"
    description = (
        f"The http workload's image service (20 ms latency, 256×256 JPEG, its own process) "
        f"with max_concurrent={K}: a request over {K} in flight gets 429 with Retry-After: 1, "
        f"latency rises with load. Every row runs Feed.from_keys(keys, HttpFetcher(), "
        f"concurrency=...) — fixed 8, 32, 256, or Adaptive() (the default bounds 1–512). "
        f"*429s*: refusals the fetcher saw over the whole run (warm-up and convergence "
        f"included) and their share of its requests; *host limit*: the fetcher's "
        f"adaptive limit for the service at the end. Warm-up {WARMUP_S:g} s, window {WINDOW_S:g} s "
        f"at least."
    )

    def available(self) -> str | None:
        try:
            from asyncfeed.fetchers.http import HttpFetcher  # noqa: F401
        except ImportError as exc:
            return f"not available: {exc}"
        return None

    def specs(self, phases: Phases, *, quick: bool) -> list[RunSpec]:
        if not quick:
            phases = dataclasses.replace(
                phases,
                warmup=max(phases.warmup, WARMUP_S),
                window=max(phases.window, WINDOW_S),
                drain_timeout=max(phases.drain_timeout, DRAIN_S),
            )
        out = [
            RunSpec(self.name, "asyncfeed", ADAPTIVE, {"concurrency": 0, "adaptive": True},
                    phases, primary=True)
        ]  # fmt: skip
        for c in FIXED:
            label = f"HttpFetcher concurrency={c}"
            out.append(RunSpec(self.name, "asyncfeed", label, {"concurrency": c}, phases))
        return out

    def checker(self, spec: RunSpec) -> BatchChecker:
        from .http import WORKLOAD as http

        return http.checker(spec)

    @contextlib.contextmanager
    def session(self) -> Iterator[dict[str, Any]]:
        with image_services(max_concurrent=K) as params:
            yield params

    def runner(self, spec: RunSpec, streams: Streams) -> Runner:
        if spec.pipeline != "asyncfeed":
            raise Unavailable(f"no pipeline {spec.pipeline!r} in workload throttled")
        return _Runner(streams, spec)

    def decorate(self, summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """429s and limits in the notes."""
        out = {}
        for label, row in summary.items():
            refused, share = _refusals(row)
            if refused is not None:
                extras = row.get("extras", {})
                note = f"{row.get('note') or ''}; 429s {refused:.0f} ({share:.2%} of requests)"
                host = (extras.get("host_limit") or {}).get("median")
                if host is not None:
                    note += f"; host limit at the end {host:.0f}"
                row = {**row, "note": note}
            out[label] = row
        return out

    def targets(self, summary: dict[str, dict[str, Any]]) -> list[Target]:
        ours = summary.get(ADAPTIVE)
        fixed = [r for r in summary.values() if r is not ours and median(r) is not None]
        best = max(fixed, key=lambda r: median(r) or 0.0, default=None)
        rate, best_rate = median(ours), median(best)
        out = []
        if rate is None or best is None or best_rate is None:
            out.append(Target("Adaptive() ≥ 90 % of the best fixed concurrency's rows/s", None))
        else:
            out.append(
                Target(
                    "Adaptive() ≥ 90 % of the best fixed concurrency's rows/s",
                    rate >= 0.9 * best_rate,
                    f"{rate:.0f} vs {best_rate:.0f} rows/s ({best['label']}): "
                    f"{rate / best_rate:.0%}",
                )
            )
        refused, share = _refusals(ours) if ours else (None, None)
        out.append(
            Target(
                "Adaptive(): 429s under 2 % of requests (whole run)",
                None if share is None else share < 0.02,
                "" if share is None else f"{refused:.0f} 429s, {share:.2%}",
            )
        )
        for row in fixed:
            n, s = _refusals(row)
            if s is not None:
                out.append(Target(f"{row['label']}: 429s", None, f"{n:.0f}, {s:.2%}", info=True))
        return out


def _refusals(row: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """The median 429 count of a row and its share of the requests (None when unknown)."""
    extras = (row or {}).get("extras", {})
    refused = (extras.get("refused") or {}).get("median")
    requests = (extras.get("requests") or {}).get("median")
    if refused is None or not requests:
        return None, None
    return refused, refused / requests


WORKLOAD = Throttled()
