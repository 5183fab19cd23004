"""JPEG decode modes compared: ``ImageOptions(jpeg="fast")`` against ``jpeg="exact"``.

For photo-like JPEGs of three sizes (ImageNet-like 500x375, 1600x1200, a 12 MP phone photo
4032x3024) decoded to a 224x224 centre crop, and the image service's synthetic 256x256 JPEGs
decoded to 128x128 (the demo's setting), reports images/s on one thread and the difference
from the reference: Pillow's full decode (``Image.open(...).convert("RGB")``) and the same
resize (``Image.resize(..., BILINEAR, box=centre crop)``), as mean and max absolute
difference in levels (0-255)::

    python -m benchmarks.image_modes            # prints a Markdown table
    python -m benchmarks.image_modes --json     # one JSON object

The images are generated: noise with the 1/f amplitude spectrum of natural photographs,
correlated across channels, encoded by Pillow at quality 90 (4:2:0), so the numbers do not
depend on a data set. Seeds are fixed; timings are the best of three passes.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

from asyncfeed.fetchers.decode import decode_image
from asyncfeed.fetchers.image_options import ImageOptions
from asyncfeed.fetchers.resize import crop_box
from asyncfeed.fetchers.service import synthetic_image

# (name, width, height, output side)
SOURCES = (
    ("photo", 500, 375, 224),
    ("photo", 1600, 1200, 224),
    ("photo", 4032, 3024, 224),
    ("service", 256, 256, 128),
)


def photo_like(width: int, height: int, seed: int) -> np.ndarray:
    """``uint8[height, width, 3]`` with a natural image's 1/f amplitude spectrum."""
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    amplitude = 1.0 / np.maximum(np.hypot(fx, fy), 1.0 / max(width, height))
    base = np.fft.irfft2(amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)))
    base = (base - base.mean()) / base.std()
    tint = rng.normal(0.0, 1.0, (3,))
    channels = [base * (1.0 + 0.3 * t) + 0.08 * rng.normal(size=base.shape) for t in tint]
    image = np.stack(channels, axis=-1) * 45.0 + 120.0
    pixels: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return pixels


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def reference(data: bytes, side: int) -> np.ndarray:
    """Pillow's full decode and the same bilinear, antialiased centre-crop resize."""
    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    box = crop_box(rgb.height, rgb.width, ImageOptions(size=(side, side)))
    out: np.ndarray = np.asarray(rgb.resize((side, side), Image.Resampling.BILINEAR, box=box))
    return out


def best_rate(fn: Callable[[bytes], Any], images: Sequence[bytes], passes: int = 3) -> float:
    """Images per second of ``fn`` over ``images``, best of ``passes``."""
    best = float("inf")
    for _ in range(passes):
        start = time.perf_counter()
        for data in images:
            fn(data)
        best = min(best, time.perf_counter() - start)
    return len(images) / best


def measure(count: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for kind, width, height, side in SOURCES:
        n = max(2, count * 500 // width)
        if kind == "photo":
            images = [jpeg(photo_like(width, height, seed)) for seed in range(n)]
        else:
            images = [jpeg(synthetic_image(seed, width)) for seed in range(n)]
        refs = [reference(d, side) for d in images]
        name = f"{kind} {width}x{height} → {side}"
        row: dict[str, Any] = {"source": name, "images": n}
        row["pillow_per_s"] = best_rate(lambda d, s=side: reference(d, s), images)
        for mode in ("fast", "exact"):
            options = ImageOptions(size=(side, side), jpeg=mode)  # type: ignore[arg-type]
            outs = [decode_image(d, options, "bench") for d in images]
            diffs = [np.abs(o.astype(np.int16) - r) for o, r in zip(outs, refs, strict=True)]
            row[f"{mode}_per_s"] = best_rate(lambda d, o=options: decode_image(d, o, "b"), images)
            row[f"{mode}_mean_diff"] = float(np.mean([d.mean() for d in diffs]))
            row[f"{mode}_worst_mean_diff"] = float(max(d.mean() for d in diffs))
            row[f"{mode}_max_diff"] = int(max(d.max() for d in diffs))
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| JPEG (q90, 4:2:0) → crop | mode | images/s | mean diff (worst image) | max diff |\n"
        "| --- | --- | ---: | ---: | ---: |"
    )
    lines = [head]
    for r in rows:
        for mode in ("fast", "exact"):
            lines.append(
                f'| {r["source"]} | `jpeg="{mode}"` | {r[f"{mode}_per_s"]:,.0f} | '
                f"{r[f'{mode}_mean_diff']:.2f} ({r[f'{mode}_worst_mean_diff']:.2f}) | "
                f"{r[f'{mode}_max_diff']} |"
            )
        lines.append(f"| {r['source']} | Pillow reference | {r['pillow_per_s']:,.0f} | 0 | 0 |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.image_modes")
    parser.add_argument("--count", type=int, default=12, help="images at 500 px wide")
    parser.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = parser.parse_args(argv)
    rows = measure(args.count)
    if args.json:
        print(json.dumps({"machine": platform.processor() or platform.machine(), "rows": rows}))
    else:
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
