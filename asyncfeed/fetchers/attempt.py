"""One HTTP GET attempt: its body, or a :class:`Failed` saying what went wrong and whether to
retry; and the final :class:`~asyncfeed.errors.HttpError` of a fetch that gave up.

``HttpFetcher`` (``http.py``) runs the attempts, their retries and their accounting.
"""

from __future__ import annotations

from typing import Any, Final

import aiohttp
from yarl import URL

from ..errors import HttpError
from .retry import Retry, parse_retry_after, retryable_status

__all__ = ["ERROR_BODY_READ", "Failed", "attempt", "final_error"]

ERROR_BODY_READ: Final = 64 << 10


class Failed(Exception):
    """One failed attempt: its kind, status, whether to retry, and a Retry-After wait."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        status: int | None = None,
        retry: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.status = status
        self.retry = retry
        self.retry_after = retry_after

    @property
    def reason(self) -> str:
        """The kind, with the status for status failures: ``"http_503"``, ``"timeout"``…"""
        return f"http_{self.status}" if self.kind == "status" else self.kind

    @property
    def paced(self) -> bool:
        """An adaptive gate, not the backoff, should pace the retry: a 429, or any answer
        with ``Retry-After`` (the gate pauses the host for it)."""
        return self.retry and (self.status == 429 or self.retry_after is not None)


async def attempt(
    session: aiohttp.ClientSession,
    target: URL,
    *,
    timeout: aiohttp.ClientTimeout,
    types: tuple[str, ...] | None,
    max_bytes: int,
) -> bytes:
    """GET ``target`` once and return its body.

    Raises:
        Failed: for every failure, chained to the aiohttp error where there is one.
    """
    try:
        return await _get_once(session, target, timeout, types, max_bytes)
    except TimeoutError as exc:
        raise Failed("timeout", f"timed out ({_describe(timeout)})", retry=True) from exc
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        raise Failed("connection", detail, retry=True) from exc
    except aiohttp.ClientError as exc:
        raise Failed("client", f"{type(exc).__name__}: {exc}") from exc


async def _get_once(
    session: aiohttp.ClientSession,
    target: URL,
    timeout: aiohttp.ClientTimeout,
    types: tuple[str, ...] | None,
    limit: int,
) -> bytes:
    async with session.get(target, timeout=timeout) as resp:
        status = resp.status
        if not 200 <= status < 300:
            retry = retryable_status(status)
            retry_after = None
            if retry:
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            length = resp.content_length
            if length is not None and length <= ERROR_BODY_READ:
                await resp.read()  # a short error body: read it so the connection is reused
            raise Failed(
                "status",
                f"HTTP {status} {resp.reason or ''}".rstrip(),
                status=status,
                retry=retry,
                retry_after=retry_after,
            )
        if types is not None and not resp.content_type.startswith(types):
            raise Failed(
                "content_type",
                f"content type {resp.content_type!r} is not one of {list(types)}",
                status=status,
            )
        length = resp.content_length
        if length is not None and length > limit:
            raise Failed(
                "too_large",
                f"body of {length:,} bytes is larger than max_bytes={limit:,}",
                status=status,
            )
        if length is not None and resp.headers.get("Content-Encoding", "identity") in (
            "identity",
            "",
        ):
            return await resp.read()  # the parser stops at Content-Length
        return await _read_limited(resp, limit, status)


async def _read_limited(resp: aiohttp.ClientResponse, limit: int, status: int) -> bytes:
    """Read a body of unknown length, failing as soon as it passes ``limit`` bytes."""
    buf = bytearray()
    async for piece in resp.content.iter_any():
        buf += piece
        if len(buf) > limit:
            raise Failed(
                "too_large",
                f"body is larger than max_bytes={limit:,} (stopped reading at {len(buf):,})",
                status=status,
            )
    return bytes(buf)


def final_error(
    url: str, key: Any, attempts: int, failure: Failed, policy: Retry, elapsed: float
) -> HttpError:
    """The error of a fetch that gives up after ``attempts``, ``elapsed`` seconds in."""
    plural = "s" if attempts != 1 else ""
    if failure.status is not None and failure.kind == "status":
        what = str(failure)
    elif failure.status is not None:
        what = f"HTTP {failure.status}, {failure}"
    else:
        what = f"no response (status none), {failure}"
    why = ""
    if failure.retry and attempts < policy.attempts:  # the deadline ended the retries
        left = policy.deadline - elapsed
        if failure.retry_after is not None and 0 < left < failure.retry_after:
            why = (
                f" (Retry-After {failure.retry_after:g} s ends past the retry deadline, "
                f"{left:.1f} s away)"
            )
        else:
            why = f" in {elapsed:.1f} s (retry deadline {policy.deadline:g} s)"
    return HttpError(
        f"GET {url} failed after {attempts} attempt{plural}{why}: {what}",
        url=url,
        status=failure.status,
        attempts=attempts,
        kind=failure.kind,
        key=key,
    )


def _describe(timeout: aiohttp.ClientTimeout) -> str:
    parts = [
        f"{name}={value} s"
        for name in ("total", "connect", "sock_connect", "sock_read")
        if (value := getattr(timeout, name)) is not None
    ]
    return ", ".join(parts) or "no limits"
