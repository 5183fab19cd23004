"""Validated feed options: every argument checked once, at construction, with exact messages."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .stats import ExternalLogger

__all__ = ["FeedOptions", "check_positive_int"]

MAX_BATCH_SIZE = 2**31 - 1


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


@dataclass(frozen=True, slots=True)
class FeedOptions:
    """What every feed is configured with, seed-style or keyed."""

    blobs: tuple[str, ...]
    batch_size: int
    concurrency: int
    source: str
    max_buffered_chunks: int
    prefetch_batches: int
    executor: Executor | None
    init_fun: Callable[..., Any] | None
    rebatch: bool
    drop_last: bool
    max_errors: int | None
    log_interval: float | None
    external_loggers: tuple[ExternalLogger, ...]

    @classmethod
    def check(
        cls,
        *,
        blobs: object,
        batch_size: object,
        concurrency: object,
        source: object,
        max_buffered_chunks: object,
        prefetch_batches: object,
        executor: object,
        init_fun: object,
        rebatch: object,
        drop_last: object,
        max_errors: object,
        log_interval: object,
        external_loggers: object,
    ) -> FeedOptions:
        """Validate raw arguments.

        Raises:
            ConfigError: an argument is out of range or of the wrong kind; the message names
                the argument and the value given.
        """
        if not isinstance(source, str) or not source:
            raise ConfigError(f"source must be a non-empty string, got {source!r}")
        if executor is not None and not isinstance(executor, Executor):
            raise ConfigError(f"executor must be a concurrent.futures.Executor, got {executor!r}")
        if init_fun is not None and not callable(init_fun):
            raise ConfigError(f"init_fun must be callable, got {init_fun!r}")
        for flag, value in (("rebatch", rebatch), ("drop_last", drop_last)):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be a bool, got {value!r}")
        budget = (
            None if max_errors is None else check_positive_int("max_errors", max_errors, minimum=0)
        )
        interval: float | None = None
        if log_interval is not None:
            if (
                isinstance(log_interval, bool)
                or not isinstance(log_interval, int | float)
                or not log_interval > 0
            ):
                raise ConfigError(
                    f"log_interval must be a number > 0 or None, got {log_interval!r}"
                )
            interval = float(log_interval)
        if not isinstance(external_loggers, Sequence):
            raise ConfigError(f"external_loggers must be a list, got {external_loggers!r}")
        for logger in external_loggers:
            if not callable(getattr(logger, "log", None)):
                raise ConfigError(f"external logger {logger!r} has no log(dict) method")
        return cls(
            blobs=check_blobs(blobs),
            batch_size=check_positive_int("batch_size", batch_size, maximum=MAX_BATCH_SIZE),
            concurrency=check_positive_int("concurrency", concurrency, maximum=65536),
            source=source,
            max_buffered_chunks=check_positive_int("max_buffered_chunks", max_buffered_chunks),
            prefetch_batches=check_positive_int("prefetch_batches", prefetch_batches),
            executor=executor,
            init_fun=init_fun,
            rebatch=bool(rebatch),
            drop_last=bool(drop_last),
            max_errors=budget,
            log_interval=interval,
            external_loggers=tuple(external_loggers),
        )
