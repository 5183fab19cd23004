"""TorchSink's normalize / layout / dtype on one blob, after the copy (CPU here: the same torch
ops run on the GPU's copy stream)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import asyncfeed as af
from tests.httpserver import FaultServer

torch = pytest.importorskip("torch")
Tensor = Any  # torch.Tensor, imported at run time only

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def images(n: int = 4, h: int = 6, w: int = 5, c: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, c), dtype=np.uint8)


def through(sink: af.TorchSink, batch: dict[str, np.ndarray]) -> dict[str, Tensor]:
    assert sink.put(batch)
    out = sink.get(timeout=1)
    assert out is not None
    return out


def reference(x: np.ndarray, normalize: tuple = IMAGENET) -> Tensor:  # type: ignore[type-arg]
    """torchvision's ToTensor + Normalize, by hand."""
    mean, std = (torch.tensor(v, dtype=torch.float64) for v in normalize)
    return ((torch.from_numpy(x).double() / 255.0 - mean) / std).permute(0, 3, 1, 2)


def test_normalized_nchw_float32_matches_to_tensor_and_normalize() -> None:
    sink = af.TorchSink("cpu", normalize=IMAGENET, layout="NCHW")
    x = images()
    out = through(sink, {"data": x, "label": np.arange(4)})
    data = out["data"]
    assert data.dtype == torch.float32 and tuple(data.shape) == (4, 3, 6, 5)
    assert data.is_contiguous()
    assert (data.double() - reference(x)).abs().max() < 1e-5
    assert out["label"].tolist() == [0, 1, 2, 3] and out["label"].dtype == torch.int64


@pytest.mark.parametrize(("dtype", "tol"), [("float16", 2e-3), (torch.bfloat16, 2e-2)])
def test_half_precision_dtypes_by_name_or_dtype(dtype: object, tol: float) -> None:
    sink = af.TorchSink("cpu", normalize=IMAGENET, layout="NCHW", dtype=dtype)  # type: ignore[arg-type]
    x = images()
    data = through(sink, {"data": x})["data"]
    expected_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    assert data.dtype == expected_dtype
    ref = reference(x)
    assert ((data.double() - ref).abs() <= tol * ref.abs().clamp(min=1)).all()


def test_a_float_dtype_alone_scales_uint8_to_0_1_and_keeps_nhwc() -> None:
    x = images()
    data = through(af.TorchSink("cpu", dtype=torch.float32), {"data": x})["data"]
    assert tuple(data.shape) == x.shape
    assert torch.allclose(data, torch.from_numpy(x).float() / 255.0)


def test_layout_alone_keeps_uint8() -> None:
    x = images()
    data = through(af.TorchSink("cpu", layout="NCHW"), {"data": x})["data"]
    assert data.dtype == torch.uint8 and data.is_contiguous()
    assert np.array_equal(data.numpy(), x.transpose(0, 3, 1, 2))


def test_float_batches_are_normalised_not_rescaled() -> None:
    x = images().astype(np.float32) / 255.0  # already [0, 1], e.g. from ImageOptions(dtype=...)
    data = through(af.TorchSink("cpu", normalize=IMAGENET, layout="NCHW"), {"data": x})["data"]
    assert (data.double() - reference(images())).abs().max() < 1e-5


def test_only_the_named_blob_is_converted() -> None:
    x = images()
    sink = af.TorchSink("cpu", normalize=(0.5, 0.5), blob="image")
    out = through(sink, {"image": x, "data": x})
    assert out["image"].dtype == torch.float32 and out["data"].dtype == torch.uint8
    assert np.shares_memory(out["data"].numpy(), x)
    expected = (torch.from_numpy(x).float() / 255.0 - 0.5) / 0.5
    assert torch.allclose(out["image"], expected, atol=1e-6)


def test_the_batch_is_not_changed_in_place() -> None:
    x = images().astype(np.float32)
    keep = x.copy()
    through(af.TorchSink("cpu", normalize=(10.0, 2.0)), {"data": x})
    assert np.array_equal(x, keep)


def test_the_same_numbers_as_image_options_on_the_host() -> None:
    """Normalising on the device and in the decode pool agree."""
    from asyncfeed.fetchers.pixels import to_output

    x = images(1, 8, 8)
    host = to_output(x[0], af.ImageOptions(layout="CHW", normalize=IMAGENET))
    device = through(af.TorchSink("cpu", normalize=IMAGENET, layout="NCHW"), {"data": x})
    assert np.abs(device["data"][0].numpy() - host).max() < 1e-5


@pytest.mark.parametrize(
    ("batch", "kwargs", "message"),
    [
        (
            {"label": np.zeros(2)},
            {"normalize": IMAGENET},
            r"^blob 'data' \(the TorchSink's blob to convert\) is not in the batch; "
            r"blobs: \['label'\]$",
        ),
        (
            {"data": np.zeros((2, 3), np.uint8)},
            {"layout": "NCHW"},
            r"^blob 'data': layout='NCHW' needs an \[N, H, W, C\] batch, got shape \(2, 3\)$",
        ),
        (
            {"data": np.zeros((2, 4, 4, 1), np.uint8)},
            {"normalize": IMAGENET},
            r"^blob 'data': normalize has 3 values per channel, but the batch has 1 channels "
            r"\(shape \(2, 4, 4, 1\)\)$",
        ),
    ],
)
def test_batches_that_do_not_fit_are_refused_before_anything_is_put(
    batch: dict[str, np.ndarray], kwargs: dict[str, object], message: str
) -> None:
    sink = af.TorchSink("cpu", capacity=1, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(af.RecordError, match=message):
        sink.put(batch)
    assert len(sink) == 0 and sink.put({"data": images(), "label": np.zeros(4)})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layout": "CHW"}, r"^layout must be 'NHWC' or 'NCHW', got 'CHW'$"),
        (
            {"dtype": "float128x"},
            r"^dtype must be a torch dtype, its name or None, got 'float128x'$",
        ),
        ({"dtype": np.float32}, r"^dtype must be a torch dtype, its name or None, got "),
        (
            {"normalize": IMAGENET, "dtype": torch.int32},
            r"^normalize needs a floating dtype, got dtype=torch\.int32$",
        ),
        ({"normalize": (0.5, 0)}, r"^normalize: every std must be > 0, got 0$"),
        ({"blob": ""}, r"^blob must be a non-empty str, got ''$"),
    ],
)
def test_conversion_options_are_validated(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(af.ConfigError, match=message):
        af.TorchSink("cpu", **kwargs)  # type: ignore[arg-type]


@pytest.mark.timeout(30)
async def test_uint8_images_from_http_arrive_normalised(fault_server: FaultServer) -> None:
    sink = af.TorchSink("cpu", capacity=4, normalize=IMAGENET, layout="NCHW")
    keys = [(fault_server.url(f"/png/{i}"), i) for i in range(8)]
    fetcher = af.HttpFetcher(image=af.ImageOptions(size=(16, 16)))
    feed = af.Feed.from_keys(
        keys, fetcher, blobs=["data", "label"], batch_size=4, ordered=True, sink=sink
    )
    got = []
    async with feed:
        while (out := await sink.aget()) is not None:
            got.append(out)
    assert [tuple(o["data"].shape) for o in got] == [(4, 3, 16, 16)] * 2
    assert all(o["data"].dtype == torch.float32 for o in got)
    assert torch.cat([o["label"] for o in got]).tolist() == list(range(8))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("pin_memory", [True, False])
@pytest.mark.timeout(60)
def test_cuda_conversion_runs_on_the_copy_stream_before_its_event(pin_memory: bool) -> None:
    """Converted on the GPU, ready on the consumer's stream, values intact over many batches
    while the consumer's stream lags behind."""
    import threading

    sink = af.TorchSink(
        "cuda", capacity=2, pin_memory=pin_memory, normalize=IMAGENET, layout="NCHW"
    )
    batches = [images(64, 32, 32, seed=i) for i in range(20)]

    def produce() -> None:
        for i, x in enumerate(batches):
            sink.put({"data": x, "label": np.full(64, i)})
        sink.close()

    producer = threading.Thread(target=produce, name="producer")
    producer.start()
    stream = torch.cuda.Stream()
    got = []
    with torch.cuda.stream(stream):
        while (out := sink.get(timeout=30)) is not None:
            torch.cuda._sleep(1_000_000)  # the consumer's stream lags behind the copies
            got.append((int(out["label"][0]), out["data"].double().cpu()))
    producer.join(10)
    assert [i for i, _ in got] == list(range(20))
    for i, data in got:
        assert tuple(data.shape) == (64, 3, 32, 32)
        assert (data - reference(batches[i])).abs().max() < 1e-5
