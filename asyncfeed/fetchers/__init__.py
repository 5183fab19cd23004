"""Ready-made fetchers and what they share.

- ``http.py``: :class:`HttpFetcher` (aiohttp), ``files.py``: :class:`FileFetcher` (aiofiles).
- ``loader.py``: key records, the decode pool, refcounted open/close, the seed-style adapter.
- ``decode.py``: :class:`ImageOptions`, header checks, simplejpeg / Pillow decoding.
- ``retry.py``: the :class:`Retry` policy; ``hoststats.py``: per-host statistics and their
  merge across worker processes.
- ``service.py``: :class:`ImageService`, the embedded image server of the demo and tests.
"""
