"""PSNR / SSIM conventions, against hand-computed values and an independent per-window SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mma.errors import ConfigError
from mma.imaging.color import rgb_to_y
from mma.metrics import psnr, ssim


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def reference_ssim_plane(a: np.ndarray, b: np.ndarray) -> float:
    """Per-window float64 SSIM: weighted means and (two-pass) variances for every valid 11x11 window."""
    offsets = np.arange(11) - 5.0
    g = np.exp(-(offsets**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    values = []
    for y in range(a.shape[0] - 10):
        for x in range(a.shape[1] - 10):
            pa, pb = a[y : y + 11, x : x + 11], b[y : y + 11, x : x + 11]
            ma, mb = (window * pa).sum(), (window * pb).sum()
            va, vb = (window * (pa - ma) ** 2).sum(), (window * (pb - mb) ** 2).sum()
            cov = (window * (pa - ma) * (pb - mb)).sum()
            values.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_rgb_to_y_matches_matlab_formula() -> None:
    pixels = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]]], np.uint8)
    expected = [16.0, 235.0, 16 + 65.481, 16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255]
    np.testing.assert_allclose(rgb_to_y(pixels)[0], expected, rtol=0, atol=1e-12)


def test_rgb_to_y_reads_gray_as_three_equal_channels() -> None:
    gray = np.array([[0, 100, 255]], np.uint8)
    np.testing.assert_allclose(rgb_to_y(gray), rgb_to_y(np.repeat(gray[..., None], 3, axis=2)), atol=1e-12)
    np.testing.assert_allclose(rgb_to_y(gray)[0], [16.0, 16 + 219 * 100 / 255, 235.0], atol=1e-12)


def test_psnr_hand_computed_y_and_rgb() -> None:
    hr = np.full((2, 2, 3), 100, np.uint8)
    sr = hr.copy()
    sr[0, 0] = (110, 100, 100)  # R off by 10: Y off by 10 * 65.481 / 255
    mse_y = (10 * 65.481 / 255) ** 2 / 4
    assert psnr(sr, hr) == pytest.approx(10 * math.log10(255**2 / mse_y), abs=1e-12)
    assert psnr(sr, hr, y_channel=False) == pytest.approx(10 * math.log10(255**2 / (100 / 12)), abs=1e-12)


def test_psnr_gray_scores_as_three_equal_channels() -> None:
    hr = np.zeros((3, 3), np.uint8)
    sr = np.full((3, 3), 10, np.uint8)
    expected_y = 10 * math.log10(255**2 / (10 * 219 / 255) ** 2)
    assert psnr(sr, hr) == pytest.approx(expected_y, abs=1e-12)
    assert psnr(sr, hr, y_channel=False) == pytest.approx(10 * math.log10(255**2 / 100), abs=1e-12)
    rgb = np.repeat(sr[..., None], 3, axis=2), np.repeat(hr[..., None], 3, axis=2)
    assert psnr(*rgb, y_channel=False) == pytest.approx(psnr(sr, hr, y_channel=False), abs=1e-12)


def test_crop_border_ignores_the_border(rng: np.random.Generator) -> None:
    hr = rng.integers(0, 256, size=(30, 31, 3), dtype=np.uint8)
    sr = hr.copy()
    sr[:2] = 0
    sr[:, -2:] = 255
    assert psnr(sr, hr, crop_border=2) == math.inf
    assert ssim(sr, hr, crop_border=2) == 1.0
    assert psnr(sr, hr, crop_border=1) < 40
    assert ssim(sr, hr, crop_border=1) < 1.0


def test_identical_images(rng: np.random.Generator) -> None:
    image = rng.integers(0, 256, size=(20, 24, 3), dtype=np.uint8)
    assert psnr(image, image) == math.inf
    assert ssim(image, image) == pytest.approx(1.0, abs=1e-12)
    assert ssim(image, image, y_channel=False) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("y_channel", [True, False])
def test_ssim_matches_per_window_reference(y_channel: bool, rng: np.random.Generator) -> None:
    hr = rng.integers(0, 256, size=(17, 21, 3), dtype=np.uint8)
    hr[:4] = 255  # saturated and flat areas
    hr[-3:, :5] = 0
    sr = np.clip(hr.astype(int) + rng.integers(-40, 41, size=hr.shape), 0, 255).astype(np.uint8)
    if y_channel:
        expected = reference_ssim_plane(rgb_to_y(sr), rgb_to_y(hr))
    else:
        expected = np.mean([reference_ssim_plane(sr[..., c] * 1.0, hr[..., c] * 1.0) for c in range(3)])
    got = ssim(sr, hr, y_channel=y_channel)
    assert math.isfinite(got) and 0 < got < 1
    assert got == pytest.approx(expected, abs=1e-10)


def test_ssim_extremes_are_finite() -> None:
    black, white = np.zeros((16, 16), np.uint8), np.full((16, 16), 255, np.uint8)
    c1 = (0.01 * 255) ** 2  # flat images: only the luminance term is left
    assert ssim(black, white) == pytest.approx((2 * 16 * 235 + c1) / (16**2 + 235**2 + c1), abs=1e-12)
    assert ssim(black, white, y_channel=False) == pytest.approx(c1 / (255**2 + c1), abs=1e-12)
    assert math.isfinite(psnr(black, white))
    assert psnr(black, white, y_channel=False) == pytest.approx(0.0, abs=1e-12)


def test_psnr_is_symmetric(rng: np.random.Generator) -> None:
    a, b = (rng.integers(0, 256, size=(16, 16, 3), dtype=np.uint8) for _ in range(2))
    assert psnr(a, b, 2) == psnr(b, a, 2)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)


@pytest.mark.parametrize(
    ("sr", "hr", "kwargs"),
    [
        (np.zeros((16, 16), np.float32), np.zeros((16, 16), np.float32), {}),
        (np.zeros((16, 16), np.uint8), np.zeros((16, 17), np.uint8), {}),
        (np.zeros((16, 16, 4), np.uint8), np.zeros((16, 16, 4), np.uint8), {}),
        (np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8), {"crop_border": 8}),
        (np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8), {"crop_border": -1}),
    ],
)
def test_rejects_invalid_inputs(sr: np.ndarray, hr: np.ndarray, kwargs: dict) -> None:
    for metric in (psnr, ssim):
        with pytest.raises(ConfigError):
            metric(sr, hr, **kwargs)


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    with pytest.raises(ConfigError):
        ssim(np.zeros((12, 12), np.uint8), np.zeros((12, 12), np.uint8), crop_border=1)
