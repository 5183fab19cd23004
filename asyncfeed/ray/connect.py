"""Joining the running Ray, or starting a local one that the feeds using it share.

``ray.init`` is the caller's: a feed whose process is already connected to Ray uses that
connection and never shuts it down. A feed that finds none starts a local instance for
this process (or joins ``RAY_ADDRESS`` when that is set, as ``ray.init()`` would); feeds
that start meanwhile share it, and the last one to stop shuts it down (or disconnects).

The local instance lives on a thread of its own, which calls ``ray.init``, waits, then
calls ``ray.shutdown``: Ray asks Linux to kill the processes it starts when the *thread*
that started them ends, so that thread must outlive the instance. It binds to loopback
only: when Ray is not imported yet, ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set (unless
already set) before importing it, which is what makes Ray keep to 127.0.0.1; a process
that imported Ray before gets Ray's default binding, and a warning.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Final, final

from ..bridge import start_thread, to_thread

__all__ = ["LOOPBACK_ENV", "LocalRay", "join_ray", "leave_ray"]

log = logging.getLogger("asyncfeed.ray")

LOOPBACK_ENV: Final = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> Any:
    """``import ray``, keeping a local instance on loopback if Ray was not imported yet."""
    if "ray" not in sys.modules and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault(LOOPBACK_ENV, "0")
    import ray

    return ray


@final
class LocalRay:
    """The local Ray instance asyncfeed started for this process, and its users."""

    _lock: Final = threading.Lock()
    _current: LocalRay | None = None

    def __init__(self, ray: Any) -> None:
        self.users = 0
        self.error: BaseException | None = None
        self._ray = ray
        self._ready: Final = threading.Event()
        self._release: Final = threading.Event()
        self.thread = start_thread(self._run, "asyncfeed-ray-local")

    def _run(self) -> None:
        ray = self._ray
        try:
            ray.init(
                address=os.environ.get("RAY_ADDRESS") or "local",
                include_dashboard=False,
                logging_level=logging.WARNING,
            )
        except BaseException as exc:  # handed to every feed waiting for it
            self.error = exc
            self._ready.set()
            return
        self._ready.set()
        self._release.wait()
        try:
            ray.shutdown()
        except Exception:
            log.exception("shutting down the local Ray instance failed")

    @classmethod
    def acquire(cls, ray: Any) -> LocalRay | None:
        """The local instance with one more user (started if none is), or None when the
        process is connected to a Ray of its own."""
        with cls._lock:
            local = cls._current
            if local is None or local.error is not None:
                if ray.is_initialized():
                    return None
                local = cls._current = LocalRay(ray)
            local.users += 1
            return local

    def release(self) -> threading.Thread | None:
        """One user fewer; the last one shuts it down (returns the thread to wait for)."""
        with LocalRay._lock:
            self.users -= 1
            if self.users > 0:
                return None
            if LocalRay._current is self:
                LocalRay._current = None
        self._release.set()
        return self.thread

    def wait_ready(self) -> None:
        """Block until ``ray.init`` returned; raise what it raised."""
        self._ready.wait()
        if self.error is not None:
            raise self.error


async def join_ray(source: str) -> tuple[Any, LocalRay | None]:
    """Ray, connected: the caller's connection (None), or the shared local instance.

    Imports Ray (and starts the local instance) off the loop.
    """
    ray = await to_thread(import_ray, name=f"asyncfeed-{source}-ray-import")
    local = LocalRay.acquire(ray)
    if local is None:
        return ray, None
    if os.environ.get(LOOPBACK_ENV) != "0" and not os.environ.get("RAY_ADDRESS"):
        log.warning(
            "Ray was imported before the feed %r started a local Ray instance: it binds to "
            "the host's address. Set %s=0 before importing ray to keep it on loopback",
            source,
            LOOPBACK_ENV,
        )
    try:
        await to_thread(local.wait_ready, name=f"asyncfeed-{source}-ray-init")
    except BaseException:
        await leave_ray(local, time.monotonic())
        raise
    return ray, local


async def leave_ray(local: LocalRay | None, deadline: float) -> None:
    """Let go of the local instance; the last user waits for its shutdown until ``deadline``."""
    if local is None:
        return
    thread = local.release()
    if thread is None:
        return
    remaining = max(0.0, deadline - time.monotonic())
    if remaining > 0:  # cancelled meanwhile: the shutdown goes on, on its own thread
        await to_thread(thread.join, remaining, name="asyncfeed-ray-join")
