"""The MMA-T weights that ship in the package: present, offline, and better than bicubic on real photos.

Runs against whatever package is installed (CI installs the wheel), so a wheel without the weights fails here.
"""

from __future__ import annotations

import numpy as np
import pytest

import mma
from mma.evaluate import bicubic_upscaler, evaluate_image, find_images, read_rgb
from mma.weights.registry import REGISTRY, is_available_offline

SCALES = (2, 3, 4)
CROP = 96  # HR crop side: divisible by 2, 3 and 4, and small enough for CI (LR 48, 32, 24 pixels)


def _center_crop(image: np.ndarray, size: int) -> np.ndarray:
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


@pytest.mark.parametrize("scale", SCALES)
def test_mma_t_ships_in_the_package_and_loads_offline(scale: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert is_available_offline(REGISTRY["mma-t", scale])
    net = mma.load_model("mma-t", scale)
    assert net.scale == scale


@pytest.mark.data
@pytest.mark.parametrize("scale", SCALES)
def test_shipped_mma_t_beats_bicubic_on_set5_crops(scale: int, data_dir, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = mma.load_model("mma-t", scale, device="cpu")
    crops = [_center_crop(read_rgb(path), CROP) for path in find_images(data_dir / "Set5")]

    def model(lr: np.ndarray) -> np.ndarray:
        return mma.upscale(lr, scale, net)

    gains = []
    for index, hr in enumerate(crops):
        _, ours = evaluate_image(f"crop{index}", hr, scale, model)
        _, bicubic = evaluate_image(f"crop{index}", hr, scale, bicubic_upscaler(scale))
        gains.append(ours.psnr - bicubic.psnr)
    assert np.isfinite(gains).all()
    assert np.mean(gains) >= 1.5, (
        f"x{scale}: mean gain over bicubic {np.mean(gains):.2f} dB, per crop {gains}"
    )
