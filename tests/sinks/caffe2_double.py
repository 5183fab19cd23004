"""A test double of the ``caffe2.python`` calls that Caffe2Sink makes, built on BlobsQueue.

It follows Caffe2 where the sink depends on it: ``CreateBlobsQueue`` puts a queue in a blob;
``SafeEnqueueBlobs`` (inputs ``[queue, blobs...]``, outputs ``[blobs..., status]``) moves the
blobs into the queue, leaving them empty, blocks while the queue is full, and sets the bool
status output to true when nothing was enqueued because the queue is closed;
``DequeueBlobs`` fails like a failed ``CAFFE_ENFORCE`` (RuntimeError) on timeout or on a
closed, drained queue; ``CloseBlobsQueue`` closes it. ``CreateOperator`` and net ops prefix
``str`` names with the current name scope, never ``BlobReference`` s. Every operator run
and every ``FeedBlob`` is logged with its device option, for the tests to check.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from asyncfeed.errors import FeedTimeoutError
from asyncfeed.sinks import BlobsQueue
from asyncfeed.sinks.caffe2 import Caffe2Modules


class BlobReference:
    def __init__(self, name: str) -> None:
        self._name = name

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"BlobReference({self._name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BlobReference) and str(other) == self._name

    def __hash__(self) -> int:
        return hash(self._name)


@dataclass(frozen=True)
class DeviceOption:
    device_type: int
    device_id: int = 0


@dataclass
class OperatorDef:
    type: str
    input: list[str]
    output: list[str]
    arg: dict[str, Any] = field(default_factory=dict)
    device_option: Any = None


class Scope:
    def __init__(self) -> None:
        self.namescope = ""
        self.device_scope: DeviceOption | None = None

    def CurrentNameScope(self) -> str:
        return self.namescope

    def CurrentDeviceScope(self) -> DeviceOption | None:
        return self.device_scope


class Core:
    BlobReference = BlobReference

    def __init__(self, scope: Scope) -> None:
        self.scope = scope

    def rectify(self, names: Any) -> list[Any]:
        if isinstance(names, str | BlobReference):
            names = [names]
        return [n if isinstance(n, BlobReference) else self.scope.namescope + n for n in names]

    def DeviceOption(self, device_type: int, device_id: int = 0) -> DeviceOption:
        return DeviceOption(device_type, device_id)

    def CreateOperator(
        self, op_type: str, inputs: Any, outputs: Any, device_option: Any = None, **args: Any
    ) -> OperatorDef:
        return OperatorDef(
            op_type,
            [str(n) for n in self.rectify(inputs)],
            [str(n) for n in self.rectify(outputs)],
            args,
            device_option,
        )


class Net:
    def __init__(self, core: Core) -> None:
        self.core = core
        self.ops: list[OperatorDef] = []

    def __getattr__(self, op_type: str) -> Any:
        def add(inputs: Any, outputs: Any, **args: Any) -> BlobReference:
            op = self.core.CreateOperator(op_type, inputs, outputs, **args)
            self.ops.append(op)
            return BlobReference(op.output[0])

        return add


class Workspace:
    def __init__(self) -> None:
        self.blobs: dict[str, Any] = {}
        self.log: list[tuple[str, Any]] = []  # (op type or "FeedBlob:<name>", device option)
        self.ops_run: list[OperatorDef] = []
        self._lock = threading.Lock()

    @staticmethod
    def core_op(op_type: str, inputs: list[str]) -> OperatorDef:
        """An operator as a consumer would create it outside any name scope."""
        return OperatorDef(op_type, inputs, [])

    def FeedBlob(self, name: Any, arr: Any, device_option: Any = None) -> bool:
        with self._lock:
            self.blobs[str(name)] = np.asarray(arr)
            self.log.append((f"FeedBlob:{name}", device_option))
        return True

    def FetchBlob(self, name: Any) -> Any:
        with self._lock:
            if str(name) not in self.blobs:
                raise RuntimeError(f"Can't find blob: {name}")
            return self.blobs[str(name)]

    def RunNetOnce(self, net: Net) -> bool:
        for op in net.ops:
            self.RunOperatorOnce(op)
        return True

    def RunOperatorOnce(self, op: OperatorDef) -> bool:
        with self._lock:
            self.log.append((op.type, op.device_option))
            self.ops_run.append(op)
        run = getattr(self, f"_op_{op.type}", None)
        if run is None:
            raise RuntimeError(f"operator {op.type} is not in the double")
        run(op)
        return True

    def _queue(self, name: str) -> BlobsQueue:
        q = self.FetchBlob(name)
        if not isinstance(q, BlobsQueue):
            raise RuntimeError(f"blob {name} is not a queue")
        return q

    def _op_CreateBlobsQueue(self, op: OperatorDef) -> None:
        with self._lock:
            self.blobs[op.output[0]] = BlobsQueue(op.arg["capacity"], op.arg["num_blobs"])

    def _op_SafeEnqueueBlobs(self, op: OperatorDef) -> None:
        q = self._queue(op.input[0])
        if len(op.input) != q.num_blobs + 1 or len(op.output) != q.num_blobs + 1:
            raise RuntimeError("SafeEnqueueBlobs: wrong number of inputs or outputs")
        ok = q.safe_enqueue([self.FetchBlob(n) for n in op.input[1:]])
        with self._lock:
            for name in op.output[:-1]:
                self.blobs[name] = np.empty(0, np.float32)  # moved into the queue
            self.blobs[op.output[-1]] = np.array(not ok)

    def _op_DequeueBlobs(self, op: OperatorDef) -> None:
        q = self._queue(op.input[0])
        try:
            record = q.dequeue(timeout=op.arg.get("timeout_secs", 0.0) or None)
        except FeedTimeoutError:
            raise RuntimeError("DequeueBlobs: timed out") from None
        if record is None:
            raise RuntimeError("DequeueBlobs: queue closed")
        with self._lock:
            for name, arr in zip(op.output, record, strict=True):
                self.blobs[name] = arr

    def _op_CloseBlobsQueue(self, op: OperatorDef) -> None:
        self._queue(op.input[0]).close()


def caffe2_double() -> tuple[Caffe2Modules, Workspace, Core, Scope]:
    scope = Scope()
    core = Core(scope)
    workspace = Workspace()
    return Caffe2Modules(workspace, core, scope, 0), workspace, core, scope
