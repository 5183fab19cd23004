"""The feed lifecycle states."""

from __future__ import annotations

import enum

__all__ = ["FeedState"]


class FeedState(enum.Enum):
    """Lifecycle: NEW → RUNNING → STOPPING → STOPPED (or NEW → STOPPED)."""

    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
