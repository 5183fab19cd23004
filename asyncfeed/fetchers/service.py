"""``ImageService``: an embedded aiohttp image server on 127.0.0.1 for demos, tests, benchmarks.

It serves ``count`` synthetic images generated at start-up (or the images of a local folder),
with an injectable latency and error rate, at two kinds of address:

- ``/img/{i}``: image number ``i`` (any extension after the number), 0 to ``count - 1``;
  any other number is a 404;
- ``/files/{name}``: an image by name: a folder's file by its path under the folder
  (``/files/cats/001.jpg``), a synthetic image as ``{i}.jpg`` or ``{i}.png``.

``GET /`` returns ``{"count", "url_template", "files_url", "names"}`` as JSON::

    async with ImageService(count=300, size=256, latency_ms=20, error_rate=0.01) as svc:
        urls = svc.urls(1000)            # cycles over the 300; or svc.url_template.format(i=7)

Synthetic image ``i`` belongs to class ``i % classes`` (its colour scheme depends on the class),
so a model can learn something from it; :meth:`ImageService.records` gives ``(url, label)``
keys. The server records requests, injected errors, refusals and the peak number of requests
in flight.

Two throttling modes make it behave like a service under load (image requests only):

- ``max_concurrent=K``: at most ``K`` requests are served at once; one more is refused at
  once with 429 and ``Retry-After`` (``retry_after`` seconds), and the latency of the
  served ones rises with load, to 1.5 times ``latency_ms`` at ``K`` in flight;
- ``max_rate=R``: at most ``R`` requests per second are served (a token bucket holding
  one second of them, and at least one); the others are refused at once with 429
  *without* ``Retry-After``, as a rate-limiting proxy answers.
"""

from __future__ import annotations

import asyncio
import io
import logging
import mimetypes
import os
import random
import socket
import urllib.parse
from pathlib import Path
from typing import Any, Final, Literal, Self, final

import numpy as np
from aiohttp import web
from PIL import Image

from ..bridge import to_thread
from ..errors import ConfigError
from ..options import check_positive_int

__all__ = ["ImageService", "synthetic_image"]

log = logging.getLogger("asyncfeed.service")

MAX_FOLDER_BYTES: Final = 1 << 30


def synthetic_image(index: int, size: int, classes: int = 10) -> np.ndarray:
    """Image ``index`` as ``uint8[size, size, 3]``: a class-coloured pattern plus noise.

    Deterministic: the same ``index`` and ``size`` always give the same pixels.
    """
    rng = np.random.default_rng(index)
    label = index % classes
    hue = 2 * np.pi * label / classes
    base = (np.array([np.cos(hue), np.cos(hue - 2.1), np.cos(hue + 2.1)]) + 1.2) * 90
    axis = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]
    waves = np.sin((label + 2) * 3.0 * ramp + rng.uniform(0, 2 * np.pi))
    image = base[None, None, :] * (0.6 + 0.4 * waves[:, :, None])
    image += rng.normal(0.0, 8.0, size=(size, size, 1)).astype(np.float32)
    pixels: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return pixels


def _encode(array: np.ndarray, fmt: str, quality: int) -> bytes:
    buf = io.BytesIO()
    if fmt == "jpeg":
        Image.fromarray(array).save(buf, "JPEG", quality=quality)
    else:
        Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def _generate(count: int, size: int, fmt: str, quality: int, classes: int) -> list[bytes]:
    return [_encode(synthetic_image(i, size, classes), fmt, quality) for i in range(count)]


def _read_folder(directory: str) -> tuple[list[bytes], list[str], list[str]]:
    """The bodies, content types and names (paths under ``directory``, with ``/``) of its
    images, in :func:`~asyncfeed.fetchers.files.iter_files` order."""
    from .files import IMAGE_SUFFIXES, iter_files

    bodies: list[bytes] = []
    types: list[str] = []
    names: list[str] = []
    total = 0
    for path in iter_files(directory, IMAGE_SUFFIXES):
        data = Path(path).read_bytes()
        total += len(data)
        if total > MAX_FOLDER_BYTES:
            raise ConfigError(f"{directory} holds more than {MAX_FOLDER_BYTES:,} bytes of images")
        bodies.append(data)
        types.append(mimetypes.guess_type(path)[0] or "application/octet-stream")
        names.append(Path(os.path.relpath(path, directory)).as_posix())
    if not bodies:
        raise ConfigError(f"no images found under {directory}")
    return bodies, types, names


@final
class ImageService:
    """An aiohttp server on 127.0.0.1 (an OS-chosen port unless ``port`` is given).

    Args:
        count: synthetic images generated at start-up.
        size: their side, in pixels.
        latency_ms: delay before every response.
        error_rate: fraction of requests answered with HTTP 503 (seeded, reproducible).
        fmt: ``"jpeg"`` or ``"png"`` (lossless: decoded pixels equal :func:`synthetic_image`).
        quality: JPEG quality.
        classes: number of labels the synthetic images are drawn from.
        directory: serve the images of this folder instead (read into memory at start-up).
        seed: seeds the error injection.
        port: the port to listen on (0: any free port).
        max_concurrent: serve at most this many image requests at once (None: no limit).
        max_rate: serve at most this many image requests per second (None: no limit).
        retry_after: the ``Retry-After`` seconds of a ``max_concurrent`` refusal.

    Raises:
        ConfigError: for any invalid argument, or a folder without images.
    """

    def __init__(
        self,
        *,
        count: int = 256,
        size: int = 256,
        latency_ms: float = 0.0,
        error_rate: float = 0.0,
        fmt: Literal["jpeg", "png"] = "jpeg",
        quality: int = 90,
        classes: int = 10,
        directory: str | os.PathLike[str] | None = None,
        seed: int = 0,
        port: int = 0,
        max_concurrent: int | None = None,
        max_rate: float | None = None,
        retry_after: int = 1,
    ) -> None:
        self.count = check_positive_int("count", count)
        self.size: Final = check_positive_int("size", size)
        self.classes: Final = check_positive_int("classes", classes)
        self.quality: Final = check_positive_int("quality", quality, maximum=100)
        self.port = check_positive_int("port", port, minimum=0, maximum=65535)
        if fmt not in ("jpeg", "png"):
            raise ConfigError(f"fmt must be 'jpeg' or 'png', got {fmt!r}")
        if not isinstance(latency_ms, int | float) or not latency_ms >= 0:
            raise ConfigError(f"latency_ms must be a number >= 0, got {latency_ms!r}")
        if not isinstance(error_rate, int | float) or not 0 <= error_rate <= 1:
            raise ConfigError(f"error_rate must be a number in [0, 1], got {error_rate!r}")
        if max_concurrent is not None:
            check_positive_int("max_concurrent", max_concurrent)
        if max_rate is not None and (
            isinstance(max_rate, bool)
            or not isinstance(max_rate, int | float)
            or not 0 < max_rate < float("inf")
        ):
            raise ConfigError(f"max_rate must be a finite number > 0 or None, got {max_rate!r}")
        self.max_concurrent: Final = max_concurrent
        self.max_rate: Final = None if max_rate is None else float(max_rate)
        self.retry_after: Final = check_positive_int("retry_after", retry_after, minimum=0)
        self._burst = max(1.0, self.max_rate or 0.0)  # tokens the bucket holds at most
        self._tokens = self._burst
        self._refilled = 0.0
        self.fmt: Final = fmt
        self.latency = float(latency_ms) / 1000.0
        self.error_rate = float(error_rate)
        self.directory: Final = None if directory is None else os.fspath(directory)
        self._rng = random.Random(seed)
        self._bodies: list[bytes] = []
        self._types: list[str] = []
        self._names: list[str] = []
        self._by_name: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self.requests = 0
        self.errors_injected = 0
        self.bytes_sent = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.throttled = 0

    # -- addresses ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` once started."""
        if self._runner is None:
            raise RuntimeError("the image service is not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def url_template(self) -> str:
        """A URL with an ``{i}`` field: ``url_template.format(i=7)``."""
        ext = {"jpeg": ".jpg", "png": ".png"}[self.fmt] if self.directory is None else ""
        return f"{self.url}/img/{{i}}{ext}"

    @property
    def names(self) -> list[str]:
        """The images' names, in index order, once started: ``/files/{name}`` serves one."""
        return list(self._names)

    def file_url(self, name: str) -> str:
        """The URL of the image called ``name`` (see :attr:`names`), percent-encoded."""
        return f"{self.url}/files/{urllib.parse.quote(name)}"

    def urls(self, n: int | None = None) -> list[str]:
        """URLs of ``n`` images (default: every image once), cycling over the ``count``."""
        template = self.url_template
        return [template.format(i=i % self.count) for i in range(self.count if n is None else n)]

    def label(self, i: int) -> int:
        """The class of image ``i`` (0 for a folder's images)."""
        return 0 if self.directory is not None else (i % self.count) % self.classes

    def records(self, n: int | None = None) -> list[tuple[str, int]]:
        """``(url, label)`` keys of ``n`` images, cycling over the ``count``."""
        return [(u, self.label(i)) for i, u in enumerate(self.urls(n))]

    def body(self, i: int) -> bytes:
        """The encoded bytes served for image ``i``."""
        return self._bodies[i % self.count]

    def reset_counters(self) -> None:
        """Zero the request counters (refusals too) and the recorded peak."""
        self.requests = self.errors_injected = self.bytes_sent = self.throttled = 0
        self.peak_in_flight = self.in_flight

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Generate (or read) the images off the loop, then listen."""
        if self._runner is not None:
            raise RuntimeError("the image service is already started")
        if self.directory is not None:
            self._bodies, self._types, self._names = await to_thread(
                _read_folder, self.directory, name="asyncfeed-service-read"
            )
            self.count = len(self._bodies)
        else:
            self._bodies = await to_thread(
                _generate,
                self.count,
                self.size,
                self.fmt,
                self.quality,
                self.classes,
                name="asyncfeed-service-generate",
            )
            self._types = [f"image/{self.fmt}"] * self.count
            ext = {"jpeg": "jpg", "png": "png"}[self.fmt]
            self._names = [f"{i}.{ext}" for i in range(self.count)]
        self._by_name = {name: i for i, name in enumerate(self._names)}
        app = web.Application()
        app.router.add_get("/img/{name}", self._serve)
        app.router.add_get("/files/{name:.+}", self._serve_file)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", self.port))
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock, backlog=1024).start()
        except BaseException:
            sock.close()
            await runner.cleanup()
            raise
        self._runner = runner
        log.info("serving %d images at %s", self.count, self.url_template)

    async def aclose(self) -> None:
        """Stop listening and close every connection. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- handlers -------------------------------------------------------------------------

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        number = request.match_info["name"].partition(".")[0]
        index = int(number) if number.isdigit() else None
        if index is not None and index >= self.count:
            index = None
        return await self._respond(index, f"no image number {number!r} (0 to {self.count - 1})")

    async def _serve_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        return await self._respond(self._by_name.get(name), f"no image named {name!r}")

    def _refuse(self) -> web.Response | None:
        """A 429 when the request is over ``max_concurrent`` or ``max_rate``, else None."""
        limit = self.max_concurrent
        if limit is not None and self.in_flight >= limit:
            self.throttled += 1
            headers = {"Retry-After": str(self.retry_after)}
            return web.Response(status=429, text="too many requests at once", headers=headers)
        rate = self.max_rate
        if rate is not None:
            now = asyncio.get_running_loop().time()
            if self._refilled:
                self._tokens = min(self._burst, self._tokens + (now - self._refilled) * rate)
            self._refilled = now
            if self._tokens < 1.0:
                self.throttled += 1
                return web.Response(status=429, text="too many requests per second")
            self._tokens -= 1.0
        return None

    async def _respond(self, index: int | None, missing: str) -> web.StreamResponse:
        """Image ``index`` after the injected latency and errors; a 404 when it is None."""
        self.requests += 1
        refusal = self._refuse()
        if refusal is not None:
            return refusal
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            latency = self.latency
            if latency and self.max_concurrent is not None:  # slower under load
                latency *= 1.0 + 0.5 * (self.in_flight - 1) / self.max_concurrent
            if latency:
                await asyncio.sleep(latency)  # the injected latency under test
            if self.error_rate and self._rng.random() < self.error_rate:
                self.errors_injected += 1
                return web.Response(status=503, text="injected error")
            if index is None:
                return web.Response(status=404, text=missing)
            body = self._bodies[index]
            self.bytes_sent += len(body)
            return web.Response(body=body, content_type=self._types[index])
        finally:
            self.in_flight -= 1

    async def _index(self, request: web.Request) -> web.Response:
        info: dict[str, Any] = {
            "count": self.count,
            "url_template": self.url_template,
            "files_url": f"{self.url}/files/{{name}}",
            "names": self._names,
        }
        return web.json_response(info)
