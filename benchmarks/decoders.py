"""JPEG decoders compared: images/s for 256x256 JPEGs, and whether each releases the GIL.

For every decoder that loads here (Pillow, simplejpeg, PyTurboJPEG), decodes the image
service's synthetic JPEGs into ``uint8[256, 256, 3]`` on one thread and on as many threads as
cores, and measures the fraction of decode calls during which the main thread could run
Python code (near 1: the decoder releases the GIL; near 0: it holds it)::

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

from asyncfeed.fetchers.service import _encode, synthetic_image

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


def _gil_released(decode: Decoder, images: list[bytes], calls: int = 300) -> float:
    """Fraction of decode calls during which the main thread ran Python code.

    The switch interval is raised so that only a released GIL lets the main thread in while
    a call runs: a decoder that keeps the GIL scores near 0, one that releases it near 1,
    whatever else loads the machine.
    """
    counter = [0]
    done = threading.Event()
    advanced = [0]

    def work() -> None:
        for k in range(calls):
            before = counter[0]
            decode(images[k % len(images)])
            advanced[0] += counter[0] > before
        done.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1.0)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        while not done.is_set():
            counter[0] += 1
            if counter[0] % 256 == 0:
                time.sleep(0)  # let the decoding thread take the GIL now and then
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return advanced[0] / calls


def measure_decoders(count: int = 1000, size: int = 256) -> dict[str, Any]:
    """Images/s per decoder on 1 and on ``cores`` threads, and a GIL-release ratio."""
    images = [_encode(synthetic_image(i, size), "jpeg", 90) for i in range(64)]
    cores = len(os.sched_getaffinity(0))
    found, missing = decoders()
    results: dict[str, Any] = {"image": f"{size}x{size} JPEG q90", "cores": cores}
    for name, decode in found.items():
        assert decode(images[0]).shape == (size, size, 3)
        one = max(_rate(decode, images, count, 1) for _ in range(3))
        many = max(_rate(decode, images, count // cores, cores) for _ in range(3))
        results[name] = {
            "images_per_s_1_thread": round(one),
            f"images_per_s_{cores}_threads": round(many),
            "gil_released_during_calls": round(_gil_released(decode, images), 2),
        }
    for name, why in missing.items():
        results[name] = {"unavailable": why}
    return results


if __name__ == "__main__":
    json.dump(measure_decoders(), sys.stdout, indent=2)
    print()
