"""``workers=RayActors(n, ...)``: the option group. Imports without Ray."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ..errors import ConfigError
from ..procs.options import WorkerSpec

__all__ = ["KEYS_PER_CALL", "TESTED_RAY", "RayActors"]

#: The Ray release asyncfeed is tested with (``pip install 'asyncfeed[ray]'`` pins it).
TESTED_RAY: Final = "2.60.0"
#: Most calls one actor call carries, unless ``keys_per_call`` says otherwise. Chosen by
#: measurement (``benchmarks/ray_bench.py``, ``docs/scaling.md``): one key per call costs
#: the feed's process ~1.5 ms of CPU a row; 32 a call bring that to ~0.1 ms and the most
#: rows/s; 64 gain no rows/s while making each call wait for its slowest key.
KEYS_PER_CALL: Final = 32
MAX_ACTORS: Final = 4096
STRATEGIES: Final = ("SPREAD", "DEFAULT")
#: Resource names Ray takes as arguments of their own rather than in ``resources``.
_BUILTIN: Final = {"CPU": "num_cpus", "GPU": "num_gpus", "memory": "memory"}


@dataclass(frozen=True, slots=True)
class RayActors:
    """Run a feed's fetch calls on ``n`` Ray actors, each with its own event loop.

    The feed's process keeps key order, sharding, the error budget, the checks, the ledger,
    the rebatcher and the consumer; only the fetch calls go to the actors, batched (several
    keys or seed-style calls per actor call). The feed joins the running Ray (``ray.init``
    is the caller's); with none, it starts a local one and stops it when it stops.

    Args:
        n: actors.
        concurrency_per_actor: fetches each actor runs at once (threads for a sync
            fetcher); None: its share of the feed's ``concurrency``, ``ceil(concurrency / n)``.
        keys_per_call: most keys (or seed-style calls) one actor call carries; None:
            :data:`KEYS_PER_CALL`. Calls are made of the keys the feed's workers ask for
            together, so they are smaller when fewer are waiting.
        resources: what each actor needs, e.g. ``{"fetch": 1}`` to place actors only on
            nodes started with that resource; ``CPU``, ``GPU`` and ``memory`` go to Ray's
            own arguments. None: Ray's default (1 CPU to place, none held).
        scheduling_strategy: ``"SPREAD"`` (default), ``"DEFAULT"``, or a Ray strategy
            object (``NodeAffinitySchedulingStrategy``, ``PlacementGroupSchedulingStrategy``).
        runtime_env: the actors' Ray runtime environment (``pip``, ``env_vars``, ...).
        max_restarts: times each actor is replaced after it (or its node) is lost; its
            calls are then sent again, each exactly once. 0: a lost actor fails its calls
            with :class:`~asyncfeed.FetchError` (skipped within ``max_errors``).
        worker_init: ``worker_init(actor_index)``, called once in each actor before it
            fetches (sessions, seeds); may be async.

    Raises:
        ConfigError: an invalid value, or Ray is not installed (the message says what to
            install).
    """

    n: int
    concurrency_per_actor: int | None = None
    keys_per_call: int | None = None
    resources: Mapping[str, float] | None = None
    scheduling_strategy: Any = "SPREAD"
    runtime_env: Mapping[str, Any] | None = None
    max_restarts: int = 0
    worker_init: Callable[[int], Any] | None = None

    def __post_init__(self) -> None:
        _check_int("RayActors n", self.n, 1, MAX_ACTORS)
        if self.concurrency_per_actor is not None:
            _check_int("concurrency_per_actor", self.concurrency_per_actor, 1, 65536)
        if self.keys_per_call is not None:
            _check_int("keys_per_call", self.keys_per_call, 1, 65536)
        _check_int("max_restarts", self.max_restarts, 0, 1_000_000)
        if self.resources is not None:
            object.__setattr__(self, "resources", _check_resources(self.resources))
        if self.runtime_env is not None:
            if not isinstance(self.runtime_env, Mapping):
                raise ConfigError(f"runtime_env must be a mapping, got {self.runtime_env!r}")
            object.__setattr__(self, "runtime_env", MappingProxyType(dict(self.runtime_env)))
        strategy = self.scheduling_strategy
        if isinstance(strategy, str):
            if strategy not in STRATEGIES:
                raise ConfigError(
                    f"scheduling_strategy must be 'SPREAD', 'DEFAULT' or a Ray scheduling "
                    f"strategy object, got {strategy!r}"
                )
        elif not type(strategy).__module__.startswith("ray."):
            raise ConfigError(
                f"scheduling_strategy must be 'SPREAD', 'DEFAULT' or a Ray scheduling "
                f"strategy object, got {strategy!r}"
            )
        if self.worker_init is not None and not callable(self.worker_init):
            raise ConfigError(f"worker_init must be callable, got {self.worker_init!r}")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(
                "RayActors needs Ray, which is not installed: "
                f"pip install 'asyncfeed[ray]' (ray=={TESTED_RAY})"
            )

    def per_actor(self, concurrency: int) -> int:
        """Fetches each actor runs at once for a feed of ``concurrency``."""
        return self.concurrency_per_actor or math.ceil(concurrency / self.n)

    @property
    def calls_per_batch(self) -> int:
        """Most keys (or seed-style calls) one actor call carries."""
        return self.keys_per_call or KEYS_PER_CALL

    def actor_options(self) -> dict[str, Any]:
        """Ray's ``.options(...)`` for each actor (placement and environment)."""
        out: dict[str, Any] = {"scheduling_strategy": self.scheduling_strategy}
        custom: dict[str, float] = {}
        for name, amount in (self.resources or {}).items():
            if name in _BUILTIN:
                out[_BUILTIN[name]] = amount
            else:
                custom[name] = amount
        if custom:
            out["resources"] = custom
        if self.runtime_env is not None:
            out["runtime_env"] = dict(self.runtime_env)
        return out

    def spec(self, fn: Callable[..., Any], *, threads: int, source: str) -> WorkerSpec:
        """What every actor runs; ``threads``: the feed's per-actor share of concurrency."""
        return WorkerSpec(
            fn=fn,
            worker_init=self.worker_init,
            threads=self.concurrency_per_actor or threads,
            source=source,
            inline_max=0,
        )


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an int, got {value!r}")
    if not low <= value <= high:
        bound = f">= {low}" if value < low else f"<= {high}"
        raise ConfigError(f"{name} must be {bound}, got {value}")


def _check_resources(resources: object) -> Mapping[str, float]:
    if not isinstance(resources, Mapping):
        raise ConfigError(f"resources must be a mapping of name to amount, got {resources!r}")
    out: dict[str, float] = {}
    for name, amount in resources.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"resource names must be non-empty strings, got {name!r}")
        ok = isinstance(amount, int | float) and not isinstance(amount, bool)
        if not ok or not math.isfinite(amount) or amount < 0:
            raise ConfigError(f"resource {name!r} must be a number >= 0, got {amount!r}")
        out[name] = amount
    return MappingProxyType(out)
