"""asyncfeed: an asyncio streaming input pipeline for training data.

Fetchers stream chunks of numpy arrays through bounded queues into a rebatcher that emits
batches of exactly ``batch_size`` rows, consumed with ``async for``, from synchronous code, or
handed to a sink (``asyncfeed.sinks``) on a dedicated thread. ``asyncfeed.data_workers`` keeps
Caffe2's classic API.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from .adaptive.options import Adaptive as Adaptive
    from .batch import Batch as Batch
    from .errors import AsyncFeedError as AsyncFeedError
    from .errors import ChunkError as ChunkError
    from .errors import ConfigError as ConfigError
    from .errors import DecodeError as DecodeError
    from .errors import FeedExhausted as FeedExhausted
    from .errors import FeedStateError as FeedStateError
    from .errors import FeedTimeoutError as FeedTimeoutError
    from .errors import FetchError as FetchError
    from .errors import HttpError as HttpError
    from .errors import RecordError as RecordError
    from .errors import RemoteTraceback as RemoteTraceback
    from .errors import SinkError as SinkError
    from .feed import Feed as Feed
    from .fetchers.decode import ImageOptions as ImageOptions
    from .fetchers.files import FileFetcher as FileFetcher
    from .fetchers.files import iter_files as iter_files
    from .fetchers.http import HttpFetcher as HttpFetcher
    from .fetchers.retry import Retry as Retry
    from .fetchers.service import ImageService as ImageService
    from .procs.options import Processes as Processes
    from .ray.options import RayActors as RayActors
    from .rebatch import Rebatcher as Rebatcher
    from .sinks import BlobsQueue as BlobsQueue
    from .sinks import Sink as Sink
    from .sinks import TorchSink as TorchSink
    from .state import FeedState as FeedState
    from .stats import DropCause as DropCause
    from .stats import ExternalLogger as ExternalLogger
    from .stats import FeedStats as FeedStats

__version__ = "0.1.0"

# Public name → the module that defines it. Imported on first use (PEP 562), so
# ``import asyncfeed`` loads neither aiohttp.web nor PIL, simplejpeg, aiofiles or torch.
_EXPORTS: dict[str, str] = {
    "Adaptive": ".adaptive.options",
    "AsyncFeedError": ".errors",
    "Batch": ".batch",
    "BlobsQueue": ".sinks",
    "ChunkError": ".errors",
    "ConfigError": ".errors",
    "DecodeError": ".errors",
    "DropCause": ".stats",
    "ExternalLogger": ".stats",
    "Feed": ".feed",
    "FeedExhausted": ".errors",
    "FeedState": ".state",
    "FeedStateError": ".errors",
    "FeedStats": ".stats",
    "FeedTimeoutError": ".errors",
    "FetchError": ".errors",
    "FileFetcher": ".fetchers.files",
    "HttpError": ".errors",
    "HttpFetcher": ".fetchers.http",
    "ImageOptions": ".fetchers.decode",
    "ImageService": ".fetchers.service",
    "Processes": ".procs.options",
    "RayActors": ".ray.options",
    "Rebatcher": ".rebatch",
    "RecordError": ".errors",
    "RemoteTraceback": ".errors",
    "Retry": ".fetchers.retry",
    "Sink": ".sinks",
    "SinkError": ".errors",
    "TorchSink": ".sinks",
    "iter_files": ".fetchers.files",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> _typing.Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncfeed' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
