"""Variants of an asyncfeed run, made in the measuring process only: ablations and metrics.

The library has no switch for provenance or attribution, and gets none for a benchmark: an
ablation patches the library's classes for the length of one run (a fresh process in
``make bench``; the patches are undone afterwards, so in-process tests are not affected).

- ``ablate="provenance"``: ``asyncfeed.run.Rebatcher`` is wrapped to be built with
  ``track=False`` (the rebatch stage then passes no tags and batches carry no provenance),
  ``asyncfeed.handoff.Receipts`` makes no receipts (a sink's reads settle nothing), and
  ``Tracker.received`` does nothing. Key dispatch is unchanged: keyed workers still build
  their chunk's tag tuple, and call ``tracker.nothing`` for keys with no rows.
- ``ablate="attribution"``: the clocks of ``asyncfeed.attribution`` do nothing —
  ``Waits.asked`` / ``Waits.add``, ``Blocked.enter`` / ``Blocked.leave`` — and
  ``Probe.cause`` names no stage (it reads none). The calls remain, as no-ops, and so do the
  two ``perf_counter`` reads around each consumer wait, so the ablation slightly understates
  attribution's cost. The fetchers' ``enqueue_time`` (a Caffe2 metric) is kept.
- ``metrics="scraped"``: nothing is patched; the run's feeds are exported with
  ``asyncfeed.metrics.serve(port=0)`` (on 127.0.0.1) and a thread of the measuring process
  scrapes the endpoint over HTTP once per :data:`SCRAPE_INTERVAL_S`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from .runner import Runner, Timeline
from .spec import RunSpec, Unavailable

__all__ = [
    "SCRAPE_INTERVAL_S",
    "VARIANTS",
    "Scraper",
    "Variant",
    "applied",
    "feed_runner",
    "is_variant",
    "variant_label",
    "variant_of",
]

SCRAPE_INTERVAL_S = 1.0
SCRAPE_TIMEOUT_S = 10.0

#: variant name → (spec params, label suffix)
VARIANTS: Mapping[str, tuple[Mapping[str, str], str]] = {
    "provenance": ({"ablate": "provenance"}, "(ablation: provenance off)"),
    "attribution": ({"ablate": "attribution"}, "(ablation: attribution off)"),
    "metrics": ({"metrics": "scraped"}, "(metrics on: Prometheus scraped every 1 s)"),
}

FeedFactory = Callable[[], Any]


def is_variant(params: Mapping[str, Any]) -> bool:
    """True for the params of an ablation or metrics row (not a pipeline's default run)."""
    return bool(params.get("ablate") or params.get("metrics"))


def variant_label(label: str, name: str) -> str:
    """The label of the variant ``name`` of the row labelled ``label``."""
    return f"{label} {VARIANTS[name][1]}"


def variant_of(spec: RunSpec, name: str) -> RunSpec:
    """``spec`` as the variant ``name``: its params added, its label (and series) suffixed."""
    params = {**spec.params, **VARIANTS[name][0]}
    label = variant_label(spec.label, name)
    series = spec.params.get("series")
    if series:  # "SERIES @ C" becomes "SERIES (variant) @ C"
        params["series"] = variant_label(series, name)
        label = spec.label.replace(series, params["series"], 1)
    return dataclasses.replace(spec, label=label, params=params, primary=False)


# -- patching --------------------------------------------------------------------------------


Patch = tuple[object, str, object]


@contextlib.contextmanager
def _patched(patches: Sequence[Patch]) -> Iterator[None]:
    """Set each ``(owner, name, value)``; put the old values back on the way out."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    try:
        for owner, name, value in patches:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


def _no_cause(self: object, *, sink_side: bool = False) -> str:
    return "source"


def _provenance_patches() -> list[Patch]:
    from asyncfeed import checkpoint, handoff, run
    from asyncfeed.rebatch import Rebatcher as tracked

    def untracked(*args: Any, **kwargs: Any) -> Any:
        kwargs["track"] = False
        return tracked(*args, **kwargs)

    return [
        (run, "Rebatcher", untracked),
        (handoff, "Receipts", _nothing),
        (checkpoint.Tracker, "received", _nothing),
    ]


def _attribution_patches() -> list[Patch]:
    from asyncfeed import attribution

    return [
        (attribution.Waits, "asked", _nothing),
        (attribution.Waits, "add", _nothing),
        (attribution.Blocked, "enter", _nothing),
        (attribution.Blocked, "leave", _nothing),
        (attribution.Probe, "cause", _no_cause),
    ]


_ABLATIONS: Mapping[str, Callable[[], list[Patch]]] = {
    "provenance": _provenance_patches,
    "attribution": _attribution_patches,
}


def applied(ablation: str) -> contextlib.AbstractContextManager[None]:
    """The ablation ``provenance`` or ``attribution`` in force, until the block ends.

    Feeds must be built inside the block (the rebatcher is chosen when a feed opens).
    """
    return _patched(_ABLATIONS[ablation]())


# -- metrics scraping -------------------------------------------------------------------------


class Scraper:
    """Scrapes ``url`` every ``interval`` seconds on a thread of its own, until :meth:`stop`."""

    def __init__(self, url: str, interval: float = SCRAPE_INTERVAL_S) -> None:
        self.url = url
        self.interval = interval
        self.scrapes = 0
        self.errors = 0
        self.last = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-scraper", daemon=True)
        self._started = False

    def start(self) -> None:
        """Start scraping (the first scrape at once); idempotent."""
        if not self._started:
            self._started = True
            self._thread.start()

    def scrape(self) -> str:
        """One scrape (Prometheus text format); also remembered as :attr:`last`."""
        with urllib.request.urlopen(self.url, timeout=SCRAPE_TIMEOUT_S) as resp:
            text: str = resp.read().decode()
        self.scrapes += 1
        self.last = text
        return text

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.scrape()
            except OSError:
                self.errors += 1
            self._stop.wait(self.interval)  # the period, not a synchronisation

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(SCRAPE_TIMEOUT_S + 1)


# -- a varied run -----------------------------------------------------------------------------


class Variant:
    """How one run is varied: the ablation in force around it, or its feeds exported and
    scraped. Build with :meth:`of`; wrap the feed factory with :meth:`factory` and the runner
    with :meth:`runner`."""

    def __init__(self, ablation: str | None, metrics: bool) -> None:
        if ablation is not None and ablation not in _ABLATIONS:
            raise Unavailable(f"no ablation {ablation!r}; choose from {', '.join(_ABLATIONS)}")
        self.ablation = ablation
        self.metrics = metrics
        self._feeds: Any = None  # an asyncfeed.metrics.FeedSet while scraping
        self._server: Any = None
        self._scraper: Scraper | None = None
        self._sources: set[str] = set()

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Variant | None:
        """The variant ``params`` ask for, or None."""
        if not is_variant(params):
            return None
        return cls(params.get("ablate"), bool(params.get("metrics")))

    @property
    def note(self) -> str:
        if self.ablation is not None:
            return f"ablation: {self.ablation} off (patched in the measuring process)"
        return f"metrics served on 127.0.0.1, scraped every {SCRAPE_INTERVAL_S:g} s"

    def factory(self, make: FeedFactory) -> FeedFactory:
        """``make``, with every feed it makes exported while scraping."""

        def make_feed() -> Any:
            feed = make()
            if self._feeds is not None:
                self._feeds.add(feed)
                self._sources.add(str(feed.source))
                if self._scraper is not None:
                    self._scraper.start()  # the first scrape sees the feed
            return feed

        return make_feed

    def runner(self, inner: Runner) -> Runner:
        return _Varied(inner, self)

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        """In force for the whole run (the feed is built and stopped inside)."""
        with contextlib.ExitStack() as stack:
            if self.ablation is not None:
                stack.enter_context(applied(self.ablation))
            if self.metrics:
                self._serve(stack)
            yield

    def _serve(self, stack: contextlib.ExitStack) -> None:
        try:
            import asyncfeed.metrics as metrics

            serve = metrics.serve
        except ImportError as exc:
            raise Unavailable(f"asyncfeed.metrics cannot serve: {exc}") from exc
        self._feeds = metrics.FeedSet()
        self._server = serve(port=0, host="127.0.0.1", feeds=self._feeds)
        stack.callback(self._server.close)
        self._scraper = Scraper(self._server.url)
        stack.callback(self._scraper.stop)

    def extras(self) -> dict[str, Any]:
        """What shows the variant was in force (returned with the run's result)."""
        out: dict[str, Any] = {"ablation": self.ablation, "metrics": self.metrics}
        scraper = self._scraper
        if scraper is not None:
            out["metrics_scrapes"] = scraper.scrapes
            out["metrics_errors"] = scraper.errors
            out["metrics_bytes"] = len(scraper.last)
            out["metrics_exported"] = bool(self._sources) and all(
                f'source="{s}"' in scraper.last for s in self._sources
            )
        return out


class _Varied(Runner):
    """``inner`` run with its variant in force."""

    def __init__(self, inner: Runner, variant: Variant) -> None:
        super().__init__(inner.streams)
        self.inner = inner
        self.variant = variant
        self.note = f"{inner.note}; {variant.note}" if inner.note else variant.note

    def start(self) -> None:  # pragma: no cover - run() drives the inner runner
        self.inner.start()

    def next_batch(self, timeout: float | None) -> Sequence[Any] | None:  # pragma: no cover
        return self.inner.next_batch(timeout)

    def stop(self) -> None:  # pragma: no cover
        self.inner.stop()

    def run(self, timeline: Timeline) -> None:
        with self.variant.around():
            self.inner.run(timeline)

    def extras(self) -> dict[str, Any]:
        return {**self.inner.extras(), **self.variant.extras()}


def feed_runner(spec: RunSpec, make: FeedFactory, build: Callable[[FeedFactory], Runner]) -> Runner:
    """``build(make)``, varied as ``spec`` asks (``ablate``, ``metrics``), or as it is."""
    variant = Variant.of(spec.params)
    if variant is None:
        return build(make)
    return variant.runner(build(variant.factory(make)))
