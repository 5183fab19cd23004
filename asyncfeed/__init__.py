"""asyncfeed: an asyncio streaming input pipeline for training data.

Fetchers stream chunks of numpy arrays through bounded queues into a rebatcher that emits
batches of exactly ``batch_size`` rows, consumed with ``async for``, from synchronous code, or
handed to a sink (``asyncfeed.sinks``) on a dedicated thread. ``asyncfeed.data_workers`` keeps
Caffe2's classic API.
"""

from .decode import ImageOptions as ImageOptions
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
from .feed import FeedState as FeedState
from .files import FileFetcher as FileFetcher
from .files import iter_files as iter_files
from .http import HttpFetcher as HttpFetcher
from .rebatch import Batch as Batch
from .rebatch import Rebatcher as Rebatcher
from .retry import Retry as Retry
from .service import ImageService as ImageService
from .sinks import BlobsQueue as BlobsQueue
from .sinks import Sink as Sink
from .sinks import TorchSink as TorchSink
from .stats import DropCause as DropCause
from .stats import ExternalLogger as ExternalLogger
from .stats import FeedStats as FeedStats

__version__ = "0.1.0"

__all__ = [
    "AsyncFeedError",
    "Batch",
    "BlobsQueue",
    "ChunkError",
    "ConfigError",
    "DecodeError",
    "DropCause",
    "ExternalLogger",
    "Feed",
    "FeedExhausted",
    "FeedState",
    "FeedStateError",
    "FeedStats",
    "FeedTimeoutError",
    "FetchError",
    "FileFetcher",
    "HttpError",
    "HttpFetcher",
    "ImageOptions",
    "ImageService",
    "Rebatcher",
    "RecordError",
    "RemoteTraceback",
    "Retry",
    "Sink",
    "SinkError",
    "TorchSink",
    "iter_files",
]
