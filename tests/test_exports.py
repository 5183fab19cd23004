"""One public face: a sorted __all__ that matches what the package exports; no torch import."""

from __future__ import annotations

import subprocess
import sys

import pytest

import asyncfeed


def test_all_is_sorted_and_complete() -> None:
    assert asyncfeed.__all__ == sorted(asyncfeed.__all__)
    for name in asyncfeed.__all__:
        assert getattr(asyncfeed, name) is not None
    public = {n for n in dir(asyncfeed) if not n.startswith("_")}
    modules = {n for n in public if type(getattr(asyncfeed, n)).__name__ == "module"}
    assert public - modules == set(asyncfeed.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match=r"^module 'asyncfeed' has no attribute 'Nope'$"):
        asyncfeed.Nope  # noqa: B018


def test_import_loads_none_of_the_heavy_or_optional_modules() -> None:
    heavy: tuple[str, ...] = ("aiohttp", "PIL", "simplejpeg", "aiofiles", "torch", "ray")
    heavy += ("prometheus_client", "opentelemetry")  # the metrics extras
    code = (
        "import sys, asyncfeed; "
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], timeout=60, check=True, capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]"


def test_errors_share_one_root() -> None:
    for name in asyncfeed.__all__:
        obj = getattr(asyncfeed, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, asyncfeed.AsyncFeedError), name
    assert issubclass(asyncfeed.ChunkError, ValueError)
    assert issubclass(asyncfeed.ConfigError, ValueError)
    assert issubclass(asyncfeed.FeedTimeoutError, TimeoutError)


def test_import_does_not_import_torch() -> None:
    code = "import sys, asyncfeed; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60, check=False).returncode == 0
