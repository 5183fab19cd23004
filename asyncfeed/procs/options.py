"""Settings of ``processes=N``, checked when the feed is made, and what each worker runs."""

from __future__ import annotations

import math
import multiprocessing
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import FeedOptions, check_positive_int
from . import ring

__all__ = ["ProcessOptions", "WorkerSpec"]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What every worker of a feed runs (pickled when the workers start)."""

    fn: Callable[..., Any]
    worker_init: Callable[[int], Any] | None
    threads: int
    source: str
    inline_max: int


@dataclass(frozen=True, slots=True)
class ProcessOptions:
    """Validated ``processes=`` settings of a feed."""

    processes: int
    start_method: str
    spec: WorkerSpec

    @classmethod
    def check(
        cls,
        fn: object,
        options: FeedOptions,
        *,
        processes: object,
        start_method: object,
        worker_init: object,
    ) -> ProcessOptions | None:
        """Validate; None when ``processes`` is None (everything stays in one process).

        Raises:
            ConfigError: an invalid value, or a fetcher or ``worker_init`` that cannot be
                pickled for the start method; the message names it.
        """
        if processes is None:
            for name, value in (("start_method", start_method), ("worker_init", worker_init)):
                if value is not None:
                    raise ConfigError(f"{name} needs processes=N, got processes=None")
            return None
        n = check_positive_int("processes", processes, maximum=1024)
        concurrency = options.concurrency
        methods = sorted(multiprocessing.get_all_start_methods())
        method = "spawn" if start_method is None else start_method
        if method not in methods:
            raise ConfigError(f"start_method must be one of {methods}, got {start_method!r}")
        if worker_init is not None and not callable(worker_init):
            raise ConfigError(f"worker_init must be callable, got {worker_init!r}")
        if options.executor is not None:
            raise ConfigError(
                "executor cannot be used with processes=N: sync fetchers run in a thread "
                "pool inside each worker process"
            )
        if concurrency < n:
            raise ConfigError(
                f"concurrency must be >= processes, got concurrency={concurrency} and processes={n}"
            )
        if method != "fork":
            for what, obj in (("fetcher", fn), ("worker_init", worker_init)):
                try:
                    pickle.dumps(obj)
                except Exception as exc:
                    raise ConfigError(
                        f"processes={n} with start_method {method!r} needs a picklable "
                        f"{what}; {obj!r} cannot be pickled ({type(exc).__name__}: {exc}). "
                        "Define it at module level, or use start_method='fork'"
                    ) from None
        spec = WorkerSpec(
            fn=fn,  # type: ignore[arg-type]
            worker_init=worker_init,
            threads=math.ceil(concurrency / n),
            source=options.source,
            inline_max=ring.INLINE_MAX_BYTES,
        )
        return cls(processes=n, start_method=method, spec=spec)
