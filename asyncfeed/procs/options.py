"""``workers=Processes(n, ...)`` (or ``processes=n``): the option group, and what workers run."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from . import ring

__all__ = ["Processes", "WorkerSpec"]

MAX_PROCESSES = 1024


@dataclass(frozen=True, slots=True)
class Processes:
    """Run a feed's fetch calls in ``n`` worker processes, each with its own event loop.

    The feed's process keeps key order, sharding, the error budget, the checks, the ledger,
    the rebatcher and the consumer; only the fetch calls move. Each process gets its share of
    ``concurrency`` (sync fetchers on a thread pool inside each).

    Args:
        n: worker processes (the shorthand is ``processes=n``).
        start_method: ``"spawn"`` (default), ``"forkserver"`` or ``"fork"`` (nothing needs
            to pickle). With the first two, the fetcher and ``worker_init`` must pickle, and
            scripts need the ``if __name__ == "__main__":`` guard.
        worker_init: ``worker_init(worker_index)``, called once in each worker process
            before it fetches (per-process sessions, RNG seeds); may be async.

    Raises:
        ConfigError: an invalid value; the message names it.
    """

    n: int
    start_method: str | None = None
    worker_init: Callable[[int], Any] | None = None

    def __post_init__(self) -> None:
        n: object = self.n
        if isinstance(n, bool) or not isinstance(n, int):
            raise ConfigError(f"processes must be an int, got {n!r}")
        if not 1 <= n <= MAX_PROCESSES:
            bound = ">= 1" if n < 1 else f"<= {MAX_PROCESSES}"
            raise ConfigError(f"processes must be {bound}, got {n}")
        methods = sorted(multiprocessing.get_all_start_methods())
        if self.start_method is not None and self.start_method not in methods:
            raise ConfigError(f"start_method must be one of {methods}, got {self.start_method!r}")
        if self.worker_init is not None and not callable(self.worker_init):
            raise ConfigError(f"worker_init must be callable, got {self.worker_init!r}")

    @property
    def method(self) -> str:
        """The start method used: ``start_method``, or ``"spawn"``."""
        return self.start_method or "spawn"

    def spec(self, fn: Callable[..., Any], *, threads: int, source: str) -> WorkerSpec:
        """What every worker runs, checked for pickling where the start method needs it.

        Raises:
            ConfigError: the fetcher or ``worker_init`` cannot be pickled; names which.
        """
        method = self.method
        if method != "fork":
            for what, obj in (("fetcher", fn), ("worker_init", self.worker_init)):
                try:
                    pickle.dumps(obj)
                except Exception as exc:
                    raise ConfigError(
                        f"processes={self.n} with start_method {method!r} needs a picklable "
                        f"{what}; {obj!r} cannot be pickled ({type(exc).__name__}: {exc}). "
                        "Define it at module level, or use start_method='fork'"
                    ) from None
        return WorkerSpec(
            fn=fn,
            worker_init=self.worker_init,
            threads=threads,
            source=source,
            inline_max=ring.INLINE_MAX_BYTES,
        )


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of a feed runs (pickled when the workers start)."""

    fn: Callable[..., Any]
    worker_init: Callable[[int], Any] | None
    threads: int
    source: str
    inline_max: int
