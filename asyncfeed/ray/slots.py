"""One actor of a feed's ``RayActors``, across its incarnations (a lost actor is replaced).

A :class:`Slot` holds the current actor's handle, where it runs, the batches in flight to
it and its lifeline (a call that returns only when the actor is closed, so its failure tells
the feed that an idle actor died). Replacing an actor makes a new incarnation; outcomes of
an old one are ignored.
"""

from __future__ import annotations

import enum
import logging
from collections import deque
from typing import Any, Final, final

from .calls import Batch, Call

__all__ = ["Slot", "SlotState"]

log = logging.getLogger("asyncfeed.ray")


class SlotState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DEAD = "dead"


@final
class Slot:
    """The feed's side of actor ``index``."""

    __slots__ = (
        "actor_id",
        "batches",
        "handle",
        "hosts",
        "incarnation",
        "index",
        "ip",
        "lifeline",
        "load",
        "name",
        "node_id",
        "pid",
        "queue",
        "restarts",
        "start_ref",
        "state",
    )

    def __init__(self, index: int) -> None:
        self.index: Final = index
        self.state = SlotState.STARTING
        self.incarnation = 0
        self.restarts = 0
        self.handle: Any = None
        self.name = ""
        self.actor_id = ""
        self.node_id = ""
        self.ip = ""
        self.pid: int | None = None
        self.start_ref: Any = None
        self.lifeline: Any = None
        self.batches: dict[Batch, None] = {}  # in flight, in the order sent
        self.load = 0  # calls in flight to this actor
        self.queue: deque[Call] = deque()  # seed-style calls waiting for this actor
        self.hosts: dict[str, dict[str, Any]] = {}

    def describe(self) -> str:
        """``Ray actor 1 (id 3f2a…, node 9c1e… at 10.0.0.5, pid 4242)``, as far as known."""
        parts = [f"id {self.actor_id[:12]}" if self.actor_id else "not created"]
        if self.node_id:
            parts.append(f"node {self.node_id[:12]} at {self.ip}")
        else:
            parts.append("not placed on a node yet")
        if self.pid is not None:
            parts.append(f"pid {self.pid}")
        return f"Ray actor {self.index} ({', '.join(parts)})"

    def placed(self, where: dict[str, Any]) -> None:
        self.node_id = str(where.get("node_id", ""))
        self.ip = str(where.get("ip", ""))
        pid = where.get("pid")
        self.pid = pid if isinstance(pid, int) else None

    def new_incarnation(self, handle: Any, name: str) -> int:
        self.incarnation += 1
        self.state = SlotState.STARTING
        self.handle = handle
        self.name = name
        self.actor_id = handle._actor_id.hex()
        self.node_id = self.ip = ""
        self.pid = None
        self.start_ref = self.lifeline = None
        return self.incarnation

    def take_batches(self) -> list[Call]:
        """Settle every batch in flight; the calls still waiting on them, in order."""
        calls = [c for b in self.batches if not b.settled for c in b.calls if c.waiting]
        for batch in self.batches:
            batch.settled = True
            batch.ref = None
        self.batches.clear()
        self.load = 0
        return calls

    def kill(self, ray: Any) -> None:
        """Kill the current actor (no restart by Ray); never raises."""
        handle = self.handle
        if handle is None:
            return
        try:
            ray.kill(handle, no_restart=True)
        except Exception as exc:  # already gone, or Ray shut down
            log.debug("killing %s: %s: %s", self.describe(), type(exc).__name__, exc)
