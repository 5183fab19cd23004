"""What a :class:`~asyncfeed.sinks.TorchSink` does to one blob after the copy: dtype, layout,
normalisation, with device-agnostic torch ops (so uint8 crosses PCIe, 4x fewer bytes than
float32, and the arithmetic runs on the GPU).

The same rules as ``ImageOptions`` on the fetcher side: a uint8 batch converted to a
floating dtype is scaled to [0, 1]; ``normalize=(mean, std)`` then gives
``(x - mean) / std`` per channel (the last dimension of an NHWC batch); ``layout="NCHW"``
gives a contiguous ``[N, C, H, W]`` tensor. A batch that is not uint8 is cast, not scaled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final, final

import numpy as np

from ..errors import ConfigError, RecordError
from ..fetchers.image_options import Normalize, check_normalize

if TYPE_CHECKING:
    import torch

__all__ = ["Conversion"]


@final
class Conversion:
    """Validated conversion options for one blob, and the torch ops that apply them.

    Raises:
        ConfigError: an invalid ``normalize``, ``layout``, ``dtype`` or ``blob``.
    """

    __slots__ = ("_constants", "_torch", "blob", "dtype", "layout", "normalize")

    def __init__(
        self, torch_mod: Any, *, normalize: object, layout: object, dtype: object, blob: object
    ) -> None:
        self._torch: Final = torch_mod
        if layout not in ("NHWC", "NCHW"):
            raise ConfigError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        if not isinstance(blob, str) or not blob:
            raise ConfigError(f"blob must be a non-empty str, got {blob!r}")
        self.layout: Final = str(layout)
        self.blob: Final = blob
        self.dtype: Final[torch.dtype | None] = self._dtype(dtype, normalize is not None)
        self.normalize: Final[Normalize | None] = (
            None if normalize is None else check_normalize(normalize)
        )
        self._constants: dict[tuple[object, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def _dtype(self, dtype: object, normalizing: bool) -> torch.dtype | None:
        tm = self._torch
        if dtype is None:
            return tm.float32 if normalizing else None
        resolved = getattr(tm, dtype, None) if isinstance(dtype, str) else dtype
        if not isinstance(resolved, tm.dtype):
            raise ConfigError(f"dtype must be a torch dtype, its name or None, got {dtype!r}")
        if normalizing and not resolved.is_floating_point:
            raise ConfigError(f"normalize needs a floating dtype, got dtype={dtype!r}")
        found: torch.dtype = resolved
        return found

    @property
    def active(self) -> bool:
        """True when the blob is changed at all."""
        return self.dtype is not None or self.layout == "NCHW"

    def check(self, batch: Any) -> None:
        """Before anything is copied: the blob is there, with the shape the options need.

        Raises:
            RecordError: the blob is missing, not 4-d for ``layout="NCHW"``, or its channel
                count differs from ``normalize``'s.
        """
        if not self.active:
            return
        arr = batch.get(self.blob)
        if arr is None:
            raise RecordError(
                f"blob {self.blob!r} (the TorchSink's blob to convert) is not in the batch; "
                f"blobs: {list(batch)}"
            )
        shape = np.shape(arr)
        if self.layout == "NCHW" and len(shape) != 4:
            raise RecordError(
                f"blob {self.blob!r}: layout='NCHW' needs an [N, H, W, C] batch, got shape {shape}"
            )
        if self.normalize is not None:
            channels = shape[-1] if shape else 0
            width = len(self.normalize[0])
            if width not in (1, channels):
                raise RecordError(
                    f"blob {self.blob!r}: normalize has {width} values per channel, but the "
                    f"batch has {channels} channels (shape {shape})"
                )

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        """The converted tensor, on ``tensor``'s device (and the current stream).

        One kernel (``addcmul`` into the output, computed in float32, float64 for a float64
        target) casts, scales, normalises and transposes; ``tensor`` itself is not changed.
        """
        tm = self._torch
        target = self.dtype if self.dtype is not None else tensor.dtype
        nchw = self.layout == "NCHW"
        if target == tensor.dtype and not nchw and self.normalize is None:
            return tensor
        src = tensor.permute(0, 3, 1, 2) if nchw else tensor
        out: torch.Tensor = tm.empty(tuple(src.shape), dtype=target, device=tensor.device)
        if not target.is_floating_point or (tensor.dtype != tm.uint8 and self.normalize is None):
            out.copy_(src)
            return out
        scale, offset = self._scale_offset(tensor, target, nchw)
        tm.addcmul(offset, src, scale, out=out)
        return out

    def _scale_offset(
        self, tensor: torch.Tensor, target: torch.dtype, nchw: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``scale`` and ``offset`` on the tensor's device, made once per device:
        ``x * scale + offset == (x [/ 255] - mean) / std``."""
        tm = self._torch
        channels = int(tensor.shape[-1])
        scaled = tensor.dtype == tm.uint8
        work = tm.float64 if target == tm.float64 else tm.float32
        key = (str(tensor.device), channels, scaled, nchw, str(work))
        cached = self._constants.get(key)
        if cached is None:
            unit = 1.0 / 255.0 if scaled else 1.0
            mean, std = np.zeros(channels), np.ones(channels)
            if self.normalize is not None:
                mean, std = (np.resize(np.asarray(v, np.float64), channels) for v in self.normalize)
            shape = (channels, 1, 1) if nchw else (channels,)
            cached = (
                tm.tensor(unit / std, dtype=work, device=tensor.device).reshape(shape),
                tm.tensor(-mean / std, dtype=work, device=tensor.device).reshape(shape),
            )
            self._constants[key] = cached
        return cached
