"""Every exported metric, and how a feed's :class:`~asyncfeed.FeedStats` snapshot fills it.

Pure and exporter-neutral: :data:`METRICS` lists each metric (Prometheus name, type, help,
labels, unit); :func:`feed_families` turns one snapshot into :class:`Family` values (label
values → number or :class:`HistogramValue`); :func:`merge` combines the families of the
feeds of one source. ``prometheus.py`` and ``otel.py`` only translate the result.

Names follow Prometheus: the ``asyncfeed_`` prefix, base units (seconds, bytes) in the
name, counters exported with ``_total``; labels are bounded (``source``, ``host``,
``cause``, ``stage``, ``state``, ``queue``, ``code_class``, ``reason``), never a key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ..fetchers.hoststats import CODE_CLASSES, LATENCY_BUCKETS
from ..stats import BACKPRESSURE_STAGES, WAIT_CAUSES, DropCause, FeedStats

__all__ = [
    "METRICS",
    "Family",
    "HistogramValue",
    "MetricDef",
    "feed_families",
    "merge",
]

Kind = Literal["counter", "gauge", "histogram"]
#: How the families of several feeds of one source combine: ``sum``; ``max`` / ``min``;
#: ``ledger``: rows of one shared ledger, taken once (see :func:`merge`).
Combine = Literal["sum", "max", "min", "ledger"]


@dataclass(frozen=True, slots=True)
class MetricDef:
    """One metric: Prometheus ``name`` (counters without ``_total``), ``kind``, ``help``,
    ``labels``, the base ``unit`` its name ends with (``""``: none) and how feeds of one
    source ``combine``."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]
    unit: str = ""
    combine: Combine = "sum"


@dataclass(slots=True)
class HistogramValue:
    """Cumulative ``buckets`` (one per bound of ``bounds``, then all), ``sum`` and ``count``."""

    bounds: tuple[float, ...]
    buckets: list[float]
    sum: float
    count: float

    def add(self, other: HistogramValue) -> HistogramValue:
        if other.bounds != self.bounds:
            return self
        buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        return HistogramValue(self.bounds, buckets, self.sum + other.sum, self.count + other.count)


Value = float | HistogramValue


@dataclass(slots=True)
class Family:
    """A metric's samples: label values (in ``metric.labels`` order) → value."""

    metric: MetricDef
    samples: dict[tuple[str, ...], Value] = field(default_factory=dict)


def _m(
    name: str, kind: Kind, doc: str, *labels: str, unit: str = "", combine: Combine = "sum"
) -> MetricDef:
    return MetricDef(name, kind, doc, ("source", *labels), unit, combine)


_DEFS: Final = (
    _m(
        "asyncfeed_rows",
        "counter",
        "Rows fetched, delivered to the consumer, or dropped "
        "(state); fetched = delivered + dropped + in flight.",
        "state",
        combine="ledger",
    ),
    _m("asyncfeed_rows_dropped", "counter", "Rows dropped, by cause.", "cause", combine="ledger"),
    _m(
        "asyncfeed_rows_in_flight",
        "gauge",
        "Rows fetched and not yet delivered or dropped, by stage.",
        "stage",
        combine="ledger",
    ),
    _m("asyncfeed_batches", "counter", "Batches delivered to the consumer or the sink."),
    _m("asyncfeed_fetch_calls", "counter", "Fetch calls made."),
    _m("asyncfeed_fetch_errors", "counter", "Fetch calls that failed (skipped or fatal)."),
    _m("asyncfeed_fetch_none", "counter", "Fetch calls that returned None (nothing this time)."),
    _m("asyncfeed_fetch_empty", "counter", "Fetch calls that returned a chunk of no rows."),
    _m(
        "asyncfeed_consumer_wait_seconds",
        "counter",
        "Time the consumer waited for a batch, by the first empty stage (cause).",
        "cause",
        unit="seconds",
    ),
    _m("asyncfeed_consumer_waits", "counter", "Waits of the consumer for a batch that blocked."),
    _m(
        "asyncfeed_backpressure_seconds",
        "counter",
        "Time the feed was blocked on a slower consumer, by stage.",
        "stage",
        unit="seconds",
    ),
    _m(
        "asyncfeed_starvation_ratio",
        "gauge",
        "Share of the consumer's time spent waiting for batches (0 to 1).",
        unit="ratio",
        combine="max",
    ),
    _m(
        "asyncfeed_time_to_first_batch_seconds",
        "gauge",
        "Seconds from the start to the first batch delivered.",
        unit="seconds",
        combine="min",
    ),
    _m(
        "asyncfeed_queue_items", "gauge", "Items in a queue of the feed.", "queue", combine="ledger"
    ),
    _m(
        "asyncfeed_queue_capacity",
        "gauge",
        "Capacity of a queue of the feed.",
        "queue",
        combine="ledger",
    ),
    _m("asyncfeed_fetch_calls_inflight", "gauge", "Fetch calls in flight."),
    _m(
        "asyncfeed_concurrency_limit",
        "gauge",
        "Fetch calls allowed in flight, and why (fixed, or what the adaptive policy saw).",
        "reason",
    ),
    _m("asyncfeed_feeds", "gauge", "Registered feeds of the source, by state.", "state"),
    _m(
        "asyncfeed_fetch_duration_seconds",
        "histogram",
        "Duration of HTTP requests, by host.",
        "host",
        unit="seconds",
    ),
    _m("asyncfeed_fetch_inflight", "gauge", "HTTP requests in flight, by host.", "host"),
    _m(
        "asyncfeed_fetch_concurrency_limit",
        "gauge",
        "HTTP requests a host may have in flight (adaptive), and why.",
        "host",
        "reason",
    ),
    _m(
        "asyncfeed_fetch_rate_limit",
        "gauge",
        "HTTP requests per second a host may receive (adaptive; +Inf: none), and why.",
        "host",
        "reason",
    ),
    _m(
        "asyncfeed_http_requests",
        "counter",
        "HTTP requests by host and status class (error: no answer).",
        "host",
        "code_class",
    ),
    _m(
        "asyncfeed_http_retries",
        "counter",
        "HTTP requests sent again, by host and the reason the previous attempt failed.",
        "host",
        "reason",
    ),
    _m(
        "asyncfeed_http_failures",
        "counter",
        "Failed HTTP attempts and undecodable bodies, by host and kind.",
        "host",
        "reason",
    ),
    _m(
        "asyncfeed_http_response_bytes",
        "counter",
        "Body bytes received, by host.",
        "host",
        unit="bytes",
    ),
    _m(
        "asyncfeed_http_requests_per_second",
        "gauge",
        "HTTP requests sent per second over about the last second, by host.",
        "host",
    ),
    _m(
        "asyncfeed_http_held_requests",
        "gauge",
        "HTTP requests held back now (backoff, Retry-After, adaptive limit or rate), by host.",
        "host",
    ),
    _m(
        "asyncfeed_http_held_seconds",
        "counter",
        "Time HTTP requests were held back, by host.",
        "host",
        unit="seconds",
    ),
)
#: Every metric, by name.
METRICS: Final[Mapping[str, MetricDef]] = {m.name: m for m in _DEFS}
_STAGES: Final = ("queued", "rebatching", "batched", "handing")


def _keyed(values: Mapping[Any, Any] | None, known: Iterable[str]) -> Iterator[tuple[str, float]]:
    """``known`` keys first (0 when absent), then any other key of ``values``."""
    values = values or {}
    names = list(known)
    for name in names:
        yield name, float(values.get(name, 0.0))
    for name, value in values.items():
        if str(name) not in names and isinstance(value, int | float):
            yield str(name), float(value)


def feed_families(
    stats: FeedStats, capacities: Mapping[str, int] | None = None, concurrency: int = 0
) -> dict[str, Family]:
    """The families of one feed's snapshot.

    ``capacities`` gives the queues' capacities (``chunks``, ``batches``) where the snapshot
    has no ``queues`` of its own; ``concurrency`` the limit where it has no
    ``concurrency_limit``.
    """
    fams = {name: Family(metric) for name, metric in METRICS.items()}
    src = stats.source

    def put(name: str, value: float, *labels: str) -> None:
        fams[name].samples[(src, *labels)] = float(value)

    put("asyncfeed_rows", stats.rows_fetched, "fetched")
    put("asyncfeed_rows", stats.rows_delivered, "delivered")
    put("asyncfeed_rows", stats.rows_dropped, "dropped")
    for cause, n in _keyed(stats.dropped_by_cause, [c.value for c in DropCause]):
        put("asyncfeed_rows_dropped", n, cause)
    stages = (stats.rows_queued, stats.rows_rebatching, stats.rows_batched, stats.rows_handing)
    for stage, n in zip(_STAGES, stages, strict=True):
        put("asyncfeed_rows_in_flight", n, stage)
    put("asyncfeed_batches", stats.batches_delivered)
    put("asyncfeed_fetch_calls", stats.fetch_calls)
    put("asyncfeed_fetch_errors", stats.fetch_errors)
    put("asyncfeed_fetch_none", stats.fetch_none)
    put("asyncfeed_fetch_empty", stats.fetch_empty)
    for cause, s in _keyed(stats.consumer_wait_by_cause, WAIT_CAUSES):
        put("asyncfeed_consumer_wait_seconds", s, cause)
    put("asyncfeed_consumer_waits", stats.consumer_waits)
    for stage, s in _keyed(stats.backpressure_s_by_stage, BACKPRESSURE_STAGES):
        put("asyncfeed_backpressure_seconds", s, stage)
    put("asyncfeed_starvation_ratio", stats.starvation)
    if stats.time_to_first_batch_s is not None:
        put("asyncfeed_time_to_first_batch_seconds", stats.time_to_first_batch_s)
    queues = dict(stats.queues)
    if not queues and capacities:
        depths = {"chunks": stats.chunk_queue_depth, "batches": stats.batch_queue_depth}
        queues = {q: (depths.get(q, 0), cap) for q, cap in capacities.items()}
    for queue, (items, capacity) in queues.items():
        put("asyncfeed_queue_items", items, queue)
        put("asyncfeed_queue_capacity", capacity, queue)
    put("asyncfeed_fetch_calls_inflight", stats.inflight)
    limit = stats.concurrency_limit or concurrency
    put("asyncfeed_concurrency_limit", limit, stats.concurrency_reason)
    put("asyncfeed_feeds", 1, stats.state)
    for host, values in stats.hosts.items():
        _host_families(fams, src, str(host), values)
    return fams


def _host_families(fams: dict[str, Family], src: str, host: str, values: Mapping[str, Any]) -> None:
    def put(name: str, value: Any, *labels: str) -> None:
        if isinstance(value, int | float) and not isinstance(value, bool):
            fams[name].samples[(src, host, *labels)] = float(value)

    buckets = values.get("latency_buckets")
    if isinstance(buckets, list | tuple) and len(buckets) == len(LATENCY_BUCKETS) + 1:
        hist = HistogramValue(
            LATENCY_BUCKETS,
            [float(b) for b in buckets],
            float(values.get("latency_sum", 0.0)),
            float(values.get("latency_count", buckets[-1])),
        )
        fams["asyncfeed_fetch_duration_seconds"].samples[(src, host)] = hist
    put("asyncfeed_fetch_inflight", values.get("inflight"))
    if "limit" in values:
        put("asyncfeed_fetch_concurrency_limit", values["limit"], str(values.get("limit_reason")))
    if "rate_limit" in values:
        reason = str(values.get("rate_limit_reason"))
        put("asyncfeed_fetch_rate_limit", values["rate_limit"], reason)
    status = values.get("status")
    if isinstance(status, Mapping):
        for code, n in _keyed(status, CODE_CLASSES):
            put("asyncfeed_http_requests", n, code)
    for reason, n in _keyed(values.get("retries_by_reason"), ()):
        put("asyncfeed_http_retries", n, reason)
    for reason, n in _keyed(values.get("errors"), ()):
        put("asyncfeed_http_failures", n, reason)
    put("asyncfeed_http_response_bytes", values.get("bytes"))
    put("asyncfeed_http_requests_per_second", values.get("rate"))
    put("asyncfeed_http_held_requests", values.get("held"))
    put("asyncfeed_http_held_seconds", values.get("held_s"))


def merge(
    parts: Iterable[dict[str, Family]], *, ledger_owner: int | None = None
) -> dict[str, Family]:
    """The families of one source from those of its feeds.

    Samples with the same labels are summed, or take the largest (``starvation``) or the
    smallest (``time to first batch``). With ``ledger_owner``, the feeds share one row
    ledger and chunk queue (seed-style feeds of a source): the rows and queue figures are
    the owner's alone (the index of the feed in ``parts``) instead of a sum.
    """
    out = {name: Family(metric) for name, metric in METRICS.items()}
    for index, fams in enumerate(parts):
        for name, fam in fams.items():
            how = fam.metric.combine
            if how == "ledger" and ledger_owner is not None:
                if index == ledger_owner:
                    out[name].samples.update(fam.samples)
                continue
            into = out[name].samples
            for labels, value in fam.samples.items():
                into[labels] = combine(how, into.get(labels), value)
    return out


def combine(how: Combine, old: Value | None, new: Value) -> Value:
    """Two values of one sample, as ``how`` says (``ledger`` sums)."""
    if old is None:
        return new
    if isinstance(old, HistogramValue) and isinstance(new, HistogramValue):
        return old.add(new)
    if isinstance(old, HistogramValue) or isinstance(new, HistogramValue):
        return new
    if how == "max":
        return max(old, new)
    if how == "min":
        return min(old, new)
    total = old + new
    return total if not math.isnan(total) else new
