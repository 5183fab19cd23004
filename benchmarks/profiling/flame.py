"""A flame graph SVG from collapsed stacks (``root;…;leaf count`` lines), no dependencies."""

from __future__ import annotations

import html
import zlib
from collections.abc import Mapping
from pathlib import Path

__all__ = ["write_svg"]

WIDTH = 1600
ROW = 16
FONT = 11
MIN_PX = 0.3  # frames narrower than this are left out


class _Node:
    __slots__ = ("children", "count")

    def __init__(self) -> None:
        self.count = 0
        self.children: dict[str, _Node] = {}


def _colour(name: str) -> str:
    h = zlib.crc32(name.encode()) & 0xFFFF
    if name.startswith("[k]"):
        return f"rgb({200 + h % 40},{90 + h % 60},{60})"  # kernel
    if "(" in name and name.endswith(")") and not name.startswith("["):
        return f"rgb({220 + h % 30},{110 + h % 100},{40 + h % 40})"  # Python
    return f"rgb({80 + h % 60},{150 + h % 60},{200 + h % 40})"  # native


def write_svg(stacks: Mapping[str, int], path: Path, title: str, unit: str = "samples") -> None:
    """Write a flame graph of ``stacks`` (collapsed stack → count) to ``path``."""
    root = _Node()
    for stack, count in stacks.items():
        node = root
        node.count += count
        for frame in stack.split(";"):
            node = node.children.setdefault(frame, _Node())
            node.count += count
    total = root.count or 1
    scale = (WIDTH - 20) / total
    rects: list[str] = []
    depth_max = 0

    def walk(node: _Node, name: str, x: float, depth: int) -> None:
        nonlocal depth_max
        w = node.count * scale
        if w < MIN_PX:
            return
        depth_max = max(depth_max, depth)
        rects.append(_rect(name, node.count, total, unit, x, depth, w))
        cx = x
        for child_name, child in sorted(node.children.items()):
            walk(child, child_name, cx, depth + 1)
            cx += child.count * scale

    cx = 10.0
    for name, child in sorted(root.children.items()):
        walk(child, name, cx, 0)
        cx += child.count * scale
    height = (depth_max + 1) * ROW + 50
    body = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="{FONT}">',
        '<rect width="100%" height="100%" fill="#fafafa"/>',
        f'<text x="10" y="20" font-size="14">{html.escape(title)}</text>',
        f'<g transform="translate(0,{height - 10}) scale(1,-1)">',
        *rects,
        "</g></svg>",
    ]
    path.write_text("\n".join(body))


def _rect(name: str, count: int, total: int, unit: str, x: float, depth: int, w: float) -> str:
    y = depth * ROW
    tip = html.escape(f"{name} — {count} {unit} ({100 * count / total:.1f} %)")
    label = ""
    chars = int(w / (FONT * 0.62))
    if chars >= 4:
        text = name if len(name) <= chars else name[: chars - 2] + ".."
        # text is drawn upright inside the flipped group
        label = (
            f'<text x="{x + 2:.1f}" y="{-(y + 4):.1f}" transform="scale(1,-1)">'
            f"{html.escape(text)}</text>"
        )
    return (
        f'<g><title>{tip}</title><rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" '
        f'height="{ROW - 1}" fill="{_colour(name)}"/>{label}</g>'
    )
