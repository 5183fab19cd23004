"""The options of a feed: one list, one definition, validated once with exact messages.

``Feed(...)`` and ``Feed.from_keys(...)`` take the same options (:class:`FeedKwargs`, for
type checkers and editors) and turn them into one frozen :class:`FeedOptions` with
:meth:`FeedOptions.check`; each constructor adds only what is its own (the keys). A new
option is a field here, its entry in ``FeedKwargs`` and its check in ``check`` (a test keeps
the two lists equal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from .adaptive.options import MAX_CONCURRENCY, Adaptive
from .errors import ConfigError
from .procs.options import Processes
from .ray.options import RayActors

if TYPE_CHECKING:
    from .feed import Feed
    from .keys import KeySpec
    from .procs.options import WorkerSpec
    from .sinks import Sink
    from .sizing import Sizing
    from .stats import ExternalLogger

__all__ = [
    "FeedKwargs",
    "FeedOptions",
    "RunSpec",
    "Workers",
    "check_blobs",
    "check_positive_int",
]

MAX_BATCH_SIZE = 2**31 - 1

#: Where fetch calls run: None (this process: the loop and its threads) or an option group.
Workers = Processes | RayActors | None


def check_positive_int(
    name: str, value: object, *, minimum: int = 1, maximum: int | None = None
) -> int:
    """Return ``value`` if it is an int in range, else raise :class:`ConfigError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_blobs(blobs: object) -> tuple[str, ...]:
    """Blob names: a non-empty sequence of distinct, non-empty strings."""
    if isinstance(blobs, str) or not isinstance(blobs, Sequence):
        raise ConfigError(f"blobs must be a list of names, got {blobs!r}")
    if not blobs:
        raise ConfigError("blobs must name at least one blob, got []")
    seen: set[str] = set()
    for name in blobs:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"blob names must be non-empty strings, got {name!r}")
        if name in seen:
            raise ConfigError(f"blob names must be unique, got {name!r} twice")
        seen.add(name)
    return tuple(blobs)


class FeedKwargs(TypedDict, total=False):
    """The options both constructors take besides ``blobs`` and ``batch_size``.

    See :class:`FeedOptions` for what each means and its default. ``processes``,
    ``start_method`` and ``worker_init`` are shorthand for ``workers=Processes(...)``.
    """

    concurrency: int | Adaptive
    source: str
    max_buffered_chunks: int
    prefetch_batches: int
    executor: Executor | None
    init_fun: Callable[[Feed], Any] | None
    rebatch: bool
    drop_last: bool
    max_errors: int | None
    log_interval: float | None
    external_loggers: Sequence[ExternalLogger]
    sink: Sink | None
    workers: Workers
    processes: int | None
    start_method: str | None
    worker_init: Callable[[int], Any] | None


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """A feed's validated options.

    Attributes:
        blobs: blob names, in the order chunks hold their arrays.
        batch_size: rows per batch (also passed to seed-style fetchers as a hint).
        concurrency: fetch calls in flight at most (see ``sizing.py`` for what that means
            in tasks, threads and worker processes). Default 4. ``Adaptive(min, max)``:
            the feed chooses, about every second, between the bounds (``adapt.py``).
        source: chunk-queue name; seed-style feeds of one source on one loop share its
            queue. Default ``"train"``, ``"keys"`` for keyed feeds (whose queue is their own).
        max_buffered_chunks: bound of the chunk queue. Default 800.
        prefetch_batches: full batches kept ready for the consumer. Default 2.
        executor: where a sync fetcher runs, one submit per call (not shut down by the
            feed); None: ``concurrency`` daemon threads of the feed's own, each calling its
            fetcher over and over, as Caffe2's fetcher threads did.
        init_fun: called once with the feed before the fetchers start; may be async.
        rebatch: False passes every chunk through as one batch (Caffe2's ``dont_rebatch``).
        drop_last: for finite sources, drop the final partial batch (counted as dropped).
        max_errors: None stops the feed on the first failed fetch or bad chunk; N skips
            failures (counted) and stops once more than N occurred.
        log_interval: seconds between stats log lines and external-logger calls; None: never.
            Default 60.
        external_loggers: objects with ``log(dict)``, called every ``log_interval``.
        sink: hand every batch to ``sink.put`` on a dedicated thread instead of delivering
            it to ``async for`` / ``get()`` (see ``asyncfeed.sinks``).
        workers: where fetch calls run: None (this process), ``Processes(n, ...)`` (worker
            processes) or ``RayActors(n, ...)`` (Ray actors, anywhere in a Ray cluster).
    """

    blobs: tuple[str, ...]
    batch_size: int
    concurrency: int | Adaptive = 4
    source: str = "train"
    max_buffered_chunks: int = 800
    prefetch_batches: int = 2
    executor: Executor | None = None
    init_fun: Callable[..., Any] | None = None
    rebatch: bool = True
    drop_last: bool = False
    max_errors: int | None = None
    log_interval: float | None = 60.0
    external_loggers: tuple[ExternalLogger, ...] = field(default=())
    sink: Sink | None = None
    workers: Workers = None

    @property
    def adaptive(self) -> Adaptive | None:
        """The adaptive policy, or None for a fixed ``concurrency``."""
        return self.concurrency if isinstance(self.concurrency, Adaptive) else None

    @property
    def max_concurrency(self) -> int:
        """The most fetch calls in flight: ``concurrency``, or an adaptive policy's ``max``."""
        return _most(self.concurrency)

    @classmethod
    def check(
        cls,
        *,
        blobs: object,
        batch_size: object,
        keyed: bool = False,
        **options: Any,
    ) -> FeedOptions:
        """Validate raw constructor arguments; defaults fill what is not given.

        Raises:
            ConfigError: an argument is out of range or of the wrong kind; the message names
                the argument and the value given.
            TypeError: an unknown option.
        """
        unknown = sorted(set(options) - _NAMES)
        if unknown:
            raise TypeError(f"unexpected option(s): {', '.join(unknown)}")
        get = options.get
        source = get("source", "keys" if keyed else "train")
        if not isinstance(source, str) or not source:
            raise ConfigError(f"source must be a non-empty string, got {source!r}")
        executor = get("executor")
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        init_fun = get("init_fun")
        if init_fun is not None and not callable(init_fun):
            raise ConfigError(f"init_fun must be callable, got {init_fun!r}")
        rebatch, drop_last = get("rebatch", True), get("drop_last", False)
        for flag, value in (("rebatch", rebatch), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be a bool, got {value!r}")
        max_errors = get("max_errors")
        if max_errors is not None:
            max_errors = check_positive_int("max_errors", max_errors, minimum=0)
        loggers = get("external_loggers", ())
        if not isinstance(loggers, Sequence):
            raise ConfigError(f"external_loggers must be a list, got {loggers!r}")
        for logger in loggers:
            if not callable(getattr(logger, "log", None)):
                raise ConfigError(f"external logger {logger!r} has no log(dict) method")
        concurrency = get("concurrency", 4)
        if not isinstance(concurrency, Adaptive):
            concurrency = check_positive_int("concurrency", concurrency, maximum=MAX_CONCURRENCY)
        return cls(
            blobs=check_blobs(blobs),
            batch_size=check_positive_int("batch_size", batch_size, maximum=MAX_BATCH_SIZE),
            concurrency=concurrency,
            source=source,
            max_buffered_chunks=check_positive_int(
                "max_buffered_chunks", get("max_buffered_chunks", 800)
            ),
            prefetch_batches=check_positive_int("prefetch_batches", get("prefetch_batches", 2)),
            executor=executor,
            init_fun=init_fun,
            rebatch=rebatch,
            drop_last=drop_last,
            max_errors=max_errors,
            log_interval=_check_interval(get("log_interval", 60.0)),
            external_loggers=tuple(loggers),
            sink=_check_sink(get("sink")),
            workers=_check_workers(options, _most(concurrency), executor),
        )


_NAMES = frozenset(FeedKwargs.__annotations__)


def _most(concurrency: int | Adaptive) -> int:
    return concurrency.max if isinstance(concurrency, Adaptive) else concurrency


def _check_interval(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"log_interval must be a number > 0 or None, got {value!r}")
    return float(value)


def _check_sink(sink: object) -> Sink | None:
    if sink is None:
        return None
    from .sinks import Sink

    if not isinstance(sink, Sink):
        raise ConfigError(f"sink must have put(batch) -> bool, close() and closed; got {sink!r}")
    return sink


def _check_workers(options: dict[str, Any], concurrency: int, executor: object) -> Workers:
    """``workers=``, or the ``processes`` / ``start_method`` / ``worker_init`` shorthand."""
    workers = options.get("workers")
    processes = options.get("processes")
    start_method = options.get("start_method")
    worker_init = options.get("worker_init")
    if workers is not None:
        if processes is not None or start_method is not None or worker_init is not None:
            raise ConfigError(
                "give workers= or its shorthand (processes=, start_method=, worker_init=), not both"
            )
        if not isinstance(workers, Processes | RayActors):
            raise ConfigError(
                f"workers must be None, Processes(...) or RayActors(...), got {workers!r}"
            )
    elif processes is not None:
        workers = Processes(processes, start_method=start_method, worker_init=worker_init)
    else:
        for name, value in (("start_method", start_method), ("worker_init", worker_init)):
            if value is not None:
                raise ConfigError(f"{name} needs processes=N, got processes=None")
        return None
    if isinstance(workers, RayActors):
        if executor is not None:
            raise ConfigError(
                "executor cannot be used with RayActors: sync fetchers run in a thread "
                "pool inside each actor"
            )
        if concurrency < workers.n:
            raise ConfigError(
                f"concurrency must be >= the number of Ray actors, got concurrency="
                f"{concurrency} and RayActors({workers.n})"
            )
        return workers
    if executor is not None:
        raise ConfigError(
            "executor cannot be used with processes=N: sync fetchers run in a thread "
            "pool inside each worker process"
        )
    if concurrency < workers.n:
        raise ConfigError(
            f"concurrency must be >= processes, got concurrency={concurrency} and "
            f"processes={workers.n}"
        )
    return workers


@dataclass(frozen=True, slots=True)
class RunSpec:
    """What a feed runs: fixed when the feed is made."""

    fn: Callable[..., Any]
    options: FeedOptions
    keys: KeySpec | None
    worker_ids: tuple[int, ...]
    sizing: Sizing
    process_spec: WorkerSpec | None

    @classmethod
    def make(cls, fn: Callable[..., Any], options: FeedOptions, keys: KeySpec | None) -> RunSpec:
        """How a feed of ``fn`` runs: its sizing, worker ids, what worker processes run.

        Raises:
            ConfigError: worker processes cannot pickle the fetcher or ``worker_init``.
        """
        from .fetch import next_worker_id
        from .protocols import is_async_callable
        from .sizing import plan

        workers = options.workers
        adaptive = options.adaptive
        sizing = plan(
            options.max_concurrency,
            options.max_buffered_chunks,
            own_threads=options.executor is None and not is_async_callable(fn),
            processes=None if workers is None else workers.n,
            gated=adaptive is not None,
        )
        use_adaptive = getattr(fn, "use_adaptive", None)
        if workers is not None and adaptive is not None and callable(use_adaptive):
            use_adaptive(adaptive)  # its copies in the workers limit each host as one would
        return cls(
            fn=fn,
            options=options,
            keys=keys,
            worker_ids=(
                tuple(next_worker_id() for _ in range(options.max_concurrency))
                if keys is None
                else ()
            ),
            sizing=sizing,
            process_spec=(
                None
                if workers is None
                else workers.spec(fn, threads=sizing.per_process, source=options.source)
            ),
        )
