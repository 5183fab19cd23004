"""Ready-made fetchers and what they share.

- ``http.py``: :class:`HttpFetcher` (aiohttp), ``files.py``: :class:`FileFetcher` (aiofiles).
- ``loader.py``: key records, the decode pool, refcounted open/close, the seed-style adapter,
  ``load()`` (its counts in ``decodeload.py``).
- ``decode.py``: bytes to pixels in order: ``headers.py`` (format, size, EXIF orientation),
  simplejpeg / Pillow, ``pixels.py`` (modes, 16-bit, alpha, orientation, output dtype),
  ``resize.py`` (crop / stretch, filters); :class:`ImageOptions` in ``image_options.py``.
  What comes out of each format: ``docs/images.md``.
- ``transform.py``: the ``transform=fn(item, key)`` hook, run in the decode pool.
- ``retry.py``: the :class:`Retry` policy; ``attempt.py``: one GET and its failure;
  ``hoststats.py``: per-host statistics and their merge across worker processes;
  ``throttle.py``: the per-host gate of adaptive limits (``asyncfeed.adaptive``).
- ``service.py``: :class:`ImageService`, the embedded image server of the demo and tests.
"""
