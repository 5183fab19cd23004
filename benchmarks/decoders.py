"""JPEG decoders compared: images/s for 256x256 JPEGs, and whether each releases the GIL.

For every decoder that loads here (Pillow, simplejpeg, PyTurboJPEG), decodes the image
service's synthetic JPEGs into ``uint8[256, 256, 3]`` on one thread and on as many threads as
cores, and measures how much a pure-Python loop on the main thread keeps running while
another thread decodes (1.0: the decoder never holds the GIL; 0.5 or less: it holds it)::

    python -m benchmarks.decoders
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import simplejpeg
from PIL import Image

from asyncfeed.service import _encode, synthetic_image

Decoder = Callable[[bytes], np.ndarray]


def _pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _simplejpeg(data: bytes) -> np.ndarray:
    image: np.ndarray = simplejpeg.decode_jpeg(data, colorspace="RGB")
    return image


def decoders() -> tuple[dict[str, Decoder], dict[str, str]]:
    """The decoders that load here, and why the others do not."""
    found: dict[str, Decoder] = {"pillow": _pillow, "simplejpeg": _simplejpeg}
    missing: dict[str, str] = {}
    try:
        from turbojpeg import TurboJPEG

        jpeg = TurboJPEG()
        found["pyturbojpeg"] = jpeg.decode
    except Exception as exc:  # the package installs; the C library may not
        missing["pyturbojpeg"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return found, missing


def _rate(decode: Decoder, images: list[bytes], per_thread: int, threads: int) -> float:
    def work() -> None:
        for k in range(per_thread):
            decode(images[k % len(images)])

    pool = [threading.Thread(target=work) for _ in range(threads)]
    start = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return per_thread * threads / (time.perf_counter() - start)


def _python_progress(decode: Decoder | None, images: list[bytes], seconds: float) -> float:
    """Iterations/s of a pure-Python loop while another thread decodes (or idles)."""
    done = threading.Event()

    def work() -> None:
        end = time.perf_counter() + seconds
        k = 0
        while time.perf_counter() < end:
            if decode is not None:
                decode(images[k % len(images)])
            else:
                done.wait(0.001)
            k += 1
        done.set()

    thread = threading.Thread(target=work)
    start = time.perf_counter()
    thread.start()
    n = 0
    while not done.is_set():
        n += 1
    thread.join()
    return n / (time.perf_counter() - start)


def measure_decoders(count: int = 1000, size: int = 256) -> dict[str, Any]:
    """Images/s per decoder on 1 and on ``cores`` threads, and a GIL-release ratio."""
    images = [_encode(synthetic_image(i, size), "jpeg", 90) for i in range(64)]
    cores = len(os.sched_getaffinity(0))
    found, missing = decoders()
    baseline = _python_progress(None, images, 0.5)
    results: dict[str, Any] = {"image": f"{size}x{size} JPEG q90", "cores": cores}
    for name, decode in found.items():
        assert decode(images[0]).shape == (size, size, 3)
        one = max(_rate(decode, images, count, 1) for _ in range(3))
        many = max(_rate(decode, images, count // cores, cores) for _ in range(3))
        ratio = _python_progress(decode, images, 0.5) / baseline
        results[name] = {
            "images_per_s_1_thread": round(one),
            f"images_per_s_{cores}_threads": round(many),
            "python_progress_while_decoding": round(ratio, 2),
        }
    for name, why in missing.items():
        results[name] = {"unavailable": why}
    return results


if __name__ == "__main__":
    json.dump(measure_decoders(), sys.stdout, indent=2)
    print()
