"""MATLAB-compatible bicubic resize: exact against MATLAB's files, and against a slow per-pixel reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mma.errors import ConfigError
from mma.imaging.resize import imresize, modcrop

SET5_NAMES = ("baby", "bird", "butterfly", "head", "woman")


# --- slow, independent float64 reference: one output sample at a time, straight from MATLAB's definition ---


def _keys(x: float) -> float:
    x = abs(x)
    if x <= 1:
        return 1.5 * x**3 - 2.5 * x**2 + 1
    if x <= 2:
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2
    return 0.0


def _mirror(j: int, n: int) -> int:
    """1-based index folded into 1..n by reflection with the edge sample repeated (MATLAB 'symmetric')."""
    while j < 1 or j > n:
        j = 1 - j if j < 1 else 2 * n + 1 - j
    return j


def _reference_line(values: list[float], scale: float, limits: tuple[int, int] | None) -> list[float]:
    n = len(values)
    m = math.ceil(n * scale - 1e-9)
    shrink = scale < 1
    support = 2 / scale if shrink else 2.0
    out = []
    for i in range(1, m + 1):
        center = i / scale + 0.5 * (1 - 1 / scale)
        taps = []
        for j in range(math.floor(center - support), math.ceil(center + support) + 1):
            w = scale * _keys(scale * (center - j)) if shrink else _keys(center - j)
            if w != 0:
                taps.append((w, values[_mirror(j, n) - 1]))
        total = sum(w for w, _ in taps)
        v = sum((w / total) * x for w, x in taps)
        if limits is not None:
            v = min(limits[1], max(limits[0], math.copysign(math.floor(abs(v) + 0.5), v)))
        out.append(v)
    return out


def reference_imresize(image: np.ndarray, scale: float) -> np.ndarray:
    """Height pass then width pass on each channel; integer images rounded and clipped after each pass."""
    limits = (np.iinfo(image.dtype).min, np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else None
    planes = image.astype(np.float64).reshape(image.shape[0], image.shape[1], -1)
    result = []
    for c in range(planes.shape[2]):
        cols = [_reference_line(list(planes[:, x, c]), scale, limits) for x in range(planes.shape[1])]
        tall = np.array(cols).T
        rows = [_reference_line(list(tall[y]), scale, limits) for y in range(tall.shape[0])]
        result.append(np.array(rows))
    out = np.stack(result, axis=-1).reshape(len(result[0]), len(result[0][0]), *image.shape[2:])
    return out.astype(image.dtype)


SCALES = [1 / 2, 1 / 3, 1 / 4, 0.7, 1.0, 1.5, 2, 3, 4]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.mark.data
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_reproduces_matlab_set5_lr_bicubic_exactly(scale: int, data_dir: Path) -> None:
    from PIL import Image

    set5 = data_dir / "Set5"
    for name in SET5_NAMES:
        hr = np.asarray(Image.open(set5 / "HR" / f"{name}.png").convert("RGB"))
        expected = np.asarray(
            Image.open(set5 / "LR_bicubic" / f"X{scale}" / f"{name}x{scale}.png").convert("RGB")
        )
        lr = imresize(modcrop(hr, scale), 1 / scale)
        assert lr.dtype == np.uint8 and lr.shape == expected.shape, name
        assert np.count_nonzero(lr != expected) == 0, f"{name} x{scale}"


@pytest.mark.parametrize("scale", SCALES)
def test_float_matches_reference(scale: float, rng: np.random.Generator) -> None:
    image = rng.normal(size=(13, 17, 2)) * 1e6
    image[0, :, 0] = 0.0
    image[5, 3, 1] = -1e9  # extreme values
    image[7, 9, 0] = 1e-300
    expected = reference_imresize(image, scale)
    got = imresize(image, scale)
    assert got.dtype == np.float64 and got.shape == expected.shape
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-6, equal_nan=False)


@pytest.mark.parametrize("scale", SCALES)
def test_uint8_matches_reference(scale: float, rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(14, 11, 3), dtype=np.uint8)
    image[::2, ::2] = 255  # sharp 0/255 patterns make the kernel overshoot: clipping must happen
    image[1::2, 1::2] = 0
    np.testing.assert_array_equal(imresize(image, scale), reference_imresize(image, scale))


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_other_integer_types_round_and_saturate_to_their_range(dtype: type, rng: np.random.Generator) -> None:
    info = np.iinfo(dtype)
    image = rng.integers(info.min, info.max, size=(9, 10), endpoint=True).astype(dtype)
    image[::3, ::2] = info.max
    image[1::3, 1::2] = info.min
    for scale in (1 / 3, 0.7, 2):
        got = imresize(image, scale)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, reference_imresize(image, scale))


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (3, 1)])
@pytest.mark.parametrize("scale", [1 / 4, 1 / 3, 3])
def test_tiny_images_fold_borders_repeatedly(
    shape: tuple[int, int], scale: float, rng: np.random.Generator
) -> None:
    image = rng.uniform(-1, 1, size=shape)
    np.testing.assert_allclose(
        imresize(image, scale), reference_imresize(image, scale), rtol=1e-12, atol=1e-12
    )


def test_output_size_is_ceil_of_scaled_size() -> None:
    assert imresize(np.zeros((510, 7), np.uint8), 1 / 3).shape == (170, 3)
    assert imresize(np.zeros((50, 25), np.uint8), 1.1).shape == (55, 28)  # 50 * 1.1 = 55.00000000000001
    assert imresize(np.zeros((5, 5, 3), np.uint8), 0.5).shape == (3, 3, 3)
    assert imresize(np.zeros((5, 5), np.float32), 2.5).dtype == np.float32


def test_constant_images_stay_constant() -> None:
    for value in (0, 255):
        image = np.full((9, 10, 3), value, np.uint8)
        for scale in SCALES:
            assert np.all(imresize(image, scale) == value)


def test_float_nan_propagates_instead_of_vanishing() -> None:
    image = np.zeros((12, 12))
    image[6, 6] = np.nan
    out = imresize(image, 0.5)
    assert np.isnan(out[3, 3]) and np.isfinite(out[0, 0])


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 0.7, 2, 3])
def test_torch_float64_equals_numpy(scale: float, rng: np.random.Generator) -> None:
    image = rng.normal(size=(2, 3, 19, 23))
    got = imresize(torch.from_numpy(image), scale)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    for b in range(2):
        expected = imresize(image[b].transpose(1, 2, 0), scale).transpose(2, 0, 1)
        np.testing.assert_allclose(got[b].numpy(), expected, rtol=1e-12, atol=1e-12)


def test_torch_float32_close_to_numpy(rng: np.random.Generator) -> None:
    image = rng.uniform(0, 1, size=(3, 32, 24)).astype(np.float32)
    got = imresize(torch.from_numpy(image), 1 / 4)
    assert got.dtype == torch.float32 and got.shape == (3, 8, 6)
    expected = imresize(image.astype(np.float64).transpose(1, 2, 0), 1 / 4).transpose(2, 0, 1)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)


def test_modcrop() -> None:
    image = np.arange(7 * 10 * 3).reshape(7, 10, 3)
    cropped = modcrop(image, 3)
    assert cropped.shape == (6, 9, 3)
    np.testing.assert_array_equal(cropped, image[:6, :9])
    assert modcrop(image[..., 0], 2).shape == (6, 10)


@pytest.mark.parametrize("scale", [0, -1, float("nan"), float("inf")])
def test_rejects_bad_scale(scale: float) -> None:
    with pytest.raises(ConfigError):
        imresize(np.zeros((4, 4), np.uint8), scale)


@pytest.mark.parametrize(
    "image",
    [np.zeros((4,), np.uint8), np.zeros((0, 4), np.uint8), np.zeros((4, 4), bool), [[1, 2], [3, 4]]],
)
def test_rejects_bad_images(image: object) -> None:
    with pytest.raises(ConfigError):
        imresize(image, 0.5)  # type: ignore[arg-type]


def test_rejects_integer_tensors_and_bad_modcrop_scale() -> None:
    with pytest.raises(ConfigError):
        imresize(torch.zeros(4, 4, dtype=torch.uint8), 0.5)
    with pytest.raises(ConfigError):
        modcrop(np.zeros((4, 4)), 1.5)  # type: ignore[arg-type]
