"""What the consumer received, as positions in the key order: ``Feed.state_dict()``.

The :class:`Tracker` learns of every key settled — its rows received by the consumer (a
batch returned by ``async for`` / ``get()``, or taken from a sink), dropped by ``drop_last``,
or none at all (None, no rows, a failure skipped under ``max_errors``) — and keeps, per
epoch, a watermark below which this rank's keys are all consumed, the consumed ones above
it (bounded by what is in flight and buffered, never by the data set), and the rows of keys
only partly received. Keys themselves are never stored. Resuming re-fetches whatever is not
consumed and slices off the rows already received, so the rows before a checkpoint and
after it are those of one uninterrupted run.
"""

from __future__ import annotations

import json
import operator
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Final, final

from .batch import Provenance
from .epochs import Plan, Progress
from .errors import ConfigError
from .keys import KeySpec

__all__ = ["STATE_VERSION", "Provenance", "Tracker", "merge_states"]

STATE_VERSION: Final = 1

_index: Final = operator.itemgetter(1)


def _config(spec: KeySpec) -> dict[str, Any]:
    return {
        "keys": spec.size,
        "shuffle": spec.shuffle,
        "seed": spec.seed,
        "shuffle_buffer": spec.shuffle_buffer,
        "epochs": spec.epochs,
    }


@final
class Tracker:
    """A keyed feed's consumed positions; thread-safe (sinks' readers report from theirs).
    ``state``: where to resume from (default: the keys' ``from_keys(state=...)``).

    Raises:
        ConfigError: ``state`` cannot be honoured by this configuration (names the field).
    """

    def __init__(
        self, spec: KeySpec, *, batch_size: int, state: Mapping[str, Any] | None = None
    ) -> None:
        self._lock: Final = threading.Lock()
        self._spec: Final = spec
        self._config: Final = _config(spec)
        self._plans: dict[int, Plan] = {}
        self._sizes: dict[int, int] = {}  # epoch -> this rank's share, once all were dealt
        self.epoch = 0
        self.batch_size = batch_size  # the size last asked for
        self._batch_sizes: list[list[int]] = [[0, batch_size]]  # [first batch index, size]
        self._batches = 0
        self._drops: deque[tuple[int, Provenance]] = deque()  # (after, dropped rows)
        self._rows = 0
        self.skipped = 0
        state = spec.state if state is None else state  # from_keys(state=...)
        if state is not None:
            self._load(state)

    def reloaded(self, state: Mapping[str, Any]) -> Tracker:
        """A tracker of the same keys, resuming from ``state``."""
        return Tracker(self._spec, batch_size=self.batch_size, state=state)

    # -- the dispatcher's side -----------------------------------------------------------------

    def plan(self, epoch: int) -> Plan:
        """The plan of ``epoch`` for this rank (fresh unless a resumed state left one)."""
        with self._lock:
            plan = self._plans.get(epoch)
            if plan is None:
                rank, world_size = self._spec.shard
                plan = self._plans[epoch] = Plan(world_size, rank)
            return plan

    def dealt(self, epoch: int, size: int) -> None:
        """Every key of ``epoch`` was seen: this rank's share has ``size`` indices."""
        with self._lock:
            self._sizes[epoch] = size
            self._advance()

    @property
    def finished(self) -> bool:
        """Every epoch is consumed (never for ``epochs=None``)."""
        epochs = self._spec.epochs
        return epochs is not None and self.epoch >= epochs

    # -- what the consumer received ------------------------------------------------------------

    def received(self, provenance: Provenance, rows: int) -> None:
        """The consumer took a batch of ``rows`` rows made of ``provenance``."""
        with self._lock:
            self._batches += 1
            self._rows += rows
            self._settle(provenance)
            drops = self._drops
            while drops and drops[0][0] <= self._batches:
                self._settle(drops.popleft()[1])

    def dropped(self, provenance: Provenance, after: int) -> None:
        """Rows ``drop_last`` dropped, after the batch of index ``after - 1``: settled once
        the consumer received that batch (the dropped rows' keys may have rows in it)."""
        with self._lock:
            if self._batches >= after:
                self._settle(provenance)
            else:  # forgotten if the feed stops first: the keys are fetched again
                self._drops.append((after, provenance))

    def nothing(self, epoch: int, index: int, position: int, *, skipped: bool) -> None:
        """A key gave no rows: None, an empty chunk, or a failure skipped (``skipped``)."""
        with self._lock:
            progress = self._progress(epoch)
            progress.partial.pop(position, None)
            progress.consume(index)
            self.skipped += skipped
            self._advance()

    def resized(self, batch_size: int, start: int | None = None) -> None:
        """Batches from index ``start`` on (default: the next one received) have
        ``batch_size`` rows; a change already recorded from ``start`` on is superseded."""
        with self._lock:
            start = self._batches if start is None else start
            self.batch_size = batch_size
            sizes = [c for c in self._batch_sizes if c[0] < start]
            self._batch_sizes = [*sizes, [start, batch_size]]

    def rebatching(self) -> tuple[int, int, list[tuple[int, int]]]:
        """Where a run's rebatcher starts: the index of its first batch, that batch's size,
        and the size changes already decided for later batches."""
        with self._lock:
            first = self._batches
            size = [n for i, n in self._batch_sizes if i <= first][-1]
            later = [(i, n) for i, n in self._batch_sizes if i > first]
            return first, size, later

    def _progress(self, epoch: int) -> Progress:
        plan = self._plans.get(epoch)
        if plan is None:
            rank, world_size = self._spec.shard
            plan = self._plans[epoch] = Plan(world_size, rank)
        return plan.progress

    def _settle(self, provenance: Provenance) -> None:
        """Settle a batch's keys. Batches never mix epochs, and only a batch's first and last
        entries can be parts of a key (the rebatcher cuts keys at batch ends only)."""
        if not provenance:
            return
        first, last = provenance[0], provenance[-1]
        progress = self._progress(first[0])
        partial = progress.partial
        lo, hi = 0, len(provenance)
        if last[4] < last[5]:  # its key goes on in the next batch
            partial[last[2]] = last[4]
            hi -= 1
        if hi and first[4] < first[5]:
            partial[first[2]] = first[4]
            lo = 1
        if lo < hi:
            if partial:  # keys received in parts (or resumed) complete now
                for entry in provenance[lo:hi]:
                    partial.pop(entry[2], None)
            progress.consume_all(list(map(_index, provenance[lo:hi])))
        self._advance()

    def _advance(self) -> None:
        """Move past every epoch whose share is all consumed."""
        while True:
            size = self._sizes.get(self.epoch)
            plan = self._plans.get(self.epoch)
            if size is None or (plan is not None and plan.progress.watermark < size):
                return
            self._plans.pop(self.epoch, None)
            self._sizes.pop(self.epoch)
            self.epoch += 1

    # -- the state -----------------------------------------------------------------------------

    def position(self) -> int:
        """Keys of this rank consumed in the current epoch."""
        with self._lock:
            plan = self._plans.get(self.epoch)
            if plan is None:
                return 0
            return plan.progress.watermark + len(plan.progress.consumed)

    def state_dict(self) -> dict[str, Any]:
        """The position right after the last batch the consumer received (JSON types only)."""
        rank, world_size = self._spec.shard
        with self._lock:
            epochs = {
                str(e): p.dump()
                for e, p in sorted(self._plans.items())
                if e >= self.epoch and not p.fresh
            }
            return {
                "version": STATE_VERSION,
                "config": dict(self._config),
                "batch_size": self.batch_size,
                "batch_sizes": [list(c) for c in self._batch_sizes],
                "world_size": world_size,
                "rank": rank,
                "epoch": self.epoch,
                "epochs": epochs,
                "delivered": {"batches": self._batches, "rows": self._rows},
                "skipped": self.skipped,
            }

    def _load(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ConfigError(f"state has version {state.get('version')!r}, not {STATE_VERSION}")
        theirs = state.get("config", {})
        for name in ("keys", "shuffle", "seed", "shuffle_buffer"):  # epochs may change
            mine = self._config[name]
            if theirs.get(name) != mine:
                raise ConfigError(
                    f"state was made with {name}={theirs.get(name)!r}, this feed has "
                    f"{name}={mine!r}"
                )
        changes = [[int(i), int(n)] for i, n in state.get("batch_sizes", ())]
        changes = changes or [[0, int(state["batch_size"])]]
        if self.batch_size not in (changes[0][1], changes[-1][1]):
            raise ConfigError(
                f"state was made with batch_size={changes[0][1]} (now {changes[-1][1]}), this "
                f"feed has batch_size={self.batch_size}"
            )
        self.batch_size = int(state["batch_size"])
        self._batch_sizes = changes
        rank, world_size = self._spec.shard
        merged = bool(state.get("merged"))
        if not merged and (state.get("rank"), state.get("world_size")) != (rank, world_size):
            raise ConfigError(
                f"state was made by rank {state.get('rank')} of {state.get('world_size')}, "
                f"this feed is rank {rank} of {world_size}; to resume with another world, "
                "merge the states of every rank with Feed.merge_states"
            )
        self.epoch = int(state["epoch"])
        for e, record in state.get("epochs", {}).items():
            if merged:
                self._plans[int(e)] = Plan(world_size, rank, base=record)
            else:
                progress = Progress.load(record)
                self._plans[int(e)] = Plan(world_size, rank, record.get("base"), progress)
        self._batches = int(state.get("delivered", {}).get("batches", 0))
        self._rows = int(state.get("delivered", {}).get("rows", 0))
        self.skipped = int(state.get("skipped", 0))


def merge_states(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One state from the states of every rank of a world, to resume with any world size.

    Raises:
        ConfigError: the states are not those of one world (names what differs).
    """
    if not states:
        raise ConfigError("merge_states needs the state of every rank, got none")
    world_size = len(states)
    by_rank = sorted(states, key=lambda s: int(s.get("rank", -1)))
    first = by_rank[0]
    for i, state in enumerate(by_rank):
        if state.get("merged"):
            raise ConfigError("merge_states takes the states of one world's ranks, not a merge")
        if (state.get("rank"), state.get("world_size")) != (i, world_size):
            raise ConfigError(
                f"merge_states needs ranks 0..{world_size - 1} of a world of {world_size}, got "
                f"rank {state.get('rank')} of {state.get('world_size')}"
            )
        for field in ("version", "config", "batch_size"):
            if state.get(field) != first.get(field):
                raise ConfigError(f"the ranks' states differ in {field}")
    epoch = min(int(s["epoch"]) for s in by_rank)
    seen = {int(e) for s in by_rank for e in s.get("epochs", {})}
    epochs: dict[str, Any] = {}
    for e in sorted(seen | set(range(epoch, max(int(s["epoch"]) for s in by_rank) + 1))):
        bases = {
            json.dumps(s["epochs"][str(e)].get("base")) for s in by_rank if str(e) in s["epochs"]
        }
        if len(bases) > 1:
            raise ConfigError(f"the ranks' states disagree on how epoch {e} was dealt")
        ranks = []
        for s in by_rank:
            if e < int(s["epoch"]):
                ranks.append({"done": True})
            else:
                record = s.get("epochs", {}).get(str(e), {})
                ranks.append(
                    {k: record[k] for k in ("watermark", "consumed", "partial") if k in record}
                )
        base = json.loads(bases.pop()) if bases else None
        epochs[str(e)] = {"base": base, "world_size": world_size, "ranks": ranks}
    return {
        "version": STATE_VERSION,
        "merged": True,
        "config": dict(first["config"]),
        "batch_size": first["batch_size"],
        "batch_sizes": first.get("batch_sizes", [[0, first["batch_size"]]]),
        "epoch": epoch,
        "epochs": epochs,
        "delivered": {
            "batches": sum(int(s["delivered"]["batches"]) for s in by_rank),
            "rows": sum(int(s["delivered"]["rows"]) for s in by_rank),
        },
        "skipped": sum(int(s.get("skipped", 0)) for s in by_rank),
    }
