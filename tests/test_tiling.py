"""Tiling: the plan, the blending weights, exactness against a whole-image run, and the OOM retry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mma.errors import ConfigError
from mma.tiling import (
    MIN_AUTO_TILE,
    auto_tile,
    available_memory,
    is_out_of_memory,
    plan_axis,
    run_tiles,
    upscale_tiled,
)


class LocalNet(nn.Module):
    """Three 3x3 convs at low resolution, pixel shuffle, one 3x3 conv at high resolution.

    Its receptive field reaches 3 input pixels plus one output pixel, so overlap 16 (>= 4 * 4) must be
    exact and overlap 2 must not be.
    """

    def __init__(self, scale: int, channels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(scale)
        self.scale = scale
        self.body = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(8, channels * scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def whole(net: nn.Module, image: torch.Tensor) -> np.ndarray:
    return net(image[None])[0].permute(1, 2, 0).numpy()


def tiled(net: nn.Module, image: torch.Tensor, scale: int, dtype=np.float32, **kwargs) -> np.ndarray:
    _, h, w = image.shape
    out = np.zeros((h * scale, w * scale, image.shape[0]), dtype)
    return run_tiles(net, image, scale, out, **kwargs)


@pytest.mark.parametrize("scale,size", [(2, (37, 53)), (3, (41, 29)), (4, (50, 45))])
def test_tiled_equals_whole_image_once_overlap_covers_receptive_field(scale, size):
    net = LocalNet(scale)
    image = torch.rand(3, *size)
    result = tiled(net, image, scale, tile=34, overlap=16)
    np.testing.assert_allclose(result, whole(net, image), atol=1e-5, rtol=0)


def test_too_small_overlap_is_visibly_different():
    """The equality above is not vacuous: with a short overlap the tile borders show."""
    net = LocalNet(2)
    image = torch.rand(3, 40, 40)
    difference = np.abs(tiled(net, image, 2, tile=16, overlap=2) - whole(net, image)).max()
    assert difference > 1e-3


@pytest.mark.parametrize("tile", [None, 0, 64, 1000])
def test_tile_larger_than_image_or_disabled_runs_whole_image(tile):
    net = LocalNet(2)
    image = torch.rand(3, 13, 7)
    np.testing.assert_allclose(tiled(net, image, 2, tile=tile, overlap=8), whole(net, image), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (2, 3)])
def test_tiny_images(shape):
    net = LocalNet(3)
    image = torch.rand(3, *shape)
    np.testing.assert_allclose(tiled(net, image, 3, tile=16, overlap=8), whole(net, image), atol=1e-6)
    smallest = tiled(net, image, 3, tile=2, overlap=1)  # the smallest legal tile splits every axis > 2
    assert smallest.shape == (shape[0] * 3, shape[1] * 3, 3) and np.isfinite(smallest).all()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_outputs_are_rounded_whole_image(dtype):
    net = LocalNet(2)
    image = torch.rand(3, 50, 51)
    result = tiled(net, image, 2, dtype=dtype, tile=34, overlap=16)
    expected = np.rint(np.clip(whole(net, image), 0, 1) * np.iinfo(dtype).max)
    assert result.dtype == dtype
    # float32 rounding may flip a value sitting on .5 by one level
    assert np.abs(result.astype(np.int64) - expected).max() <= 1
    assert (result == expected).mean() > 0.999


@pytest.mark.parametrize(
    "length,tile,overlap",
    [(100, 32, 8), (101, 33, 10), (257, 64, 32), (65, 64, 4), (1000, 96, 40), (19, 6, 5)],
)
def test_plan_has_even_equal_tiles_and_no_thin_remainder(length, tile, overlap):
    plan = plan_axis(length, tile, overlap, scale=1)
    assert plan.size % 2 == 0 and plan.size <= tile
    assert plan.starts[0] == 0 and plan.starts[-1] + plan.size == length
    effective = min(overlap, plan.size // 2)
    for a, b in zip(plan.starts, plan.starts[1:]):
        assert 0 < b - a <= plan.size - effective  # every neighbour pair overlaps enough


@pytest.mark.parametrize("seed", range(40))
def test_blending_weights_sum_to_one_everywhere(seed):
    rng = np.random.default_rng(seed)
    length = int(rng.integers(1, 300))
    tile = int(rng.integers(2, 80))
    overlap = int(rng.integers(0, 50))
    scale = int(rng.integers(1, 5))
    plan = plan_axis(length, tile, overlap, scale)
    total = torch.zeros(length * scale, dtype=torch.float64)
    for start, window in zip(plan.starts, plan.windows):
        assert window.shape == (plan.size * scale,)
        assert torch.isfinite(window).all() and (window >= 0).all()
        total[start * scale : (start + plan.size) * scale] += window.double()
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-6, rtol=0)


def test_window_is_zero_on_the_outer_quarter_of_an_inner_overlap():
    plan = plan_axis(100, 40, 16, scale=2)
    margin = 16 * 2 // 4
    first, middle = plan.windows[0], plan.windows[1]
    assert (first[-margin:] == 0).all() and (middle[:margin] == 0).all() and (middle[-margin:] == 0).all()
    assert first[0] == 1  # image borders are not faded


def test_2d_weights_sum_to_one_through_stitching():
    """A tile function that returns a constant must give back exactly that constant."""
    image = torch.zeros(2, 45, 67)

    def constant(tile: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 2, tile.shape[2] * 3, tile.shape[3] * 3), 0.625)

    out = np.zeros((135, 201, 2), np.float32)
    run_tiles(constant, image, 3, out, tile=16, overlap=10)
    np.testing.assert_allclose(out, 0.625, atol=1e-6)


def test_wrong_output_shape_is_a_config_error():
    with pytest.raises(ConfigError, match="scale"):
        run_tiles(lambda t: t, torch.rand(3, 8, 8), 2, np.zeros((16, 16, 3), np.uint8), tile=None, overlap=0)


def test_invalid_tile_values():
    out = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ConfigError):
        upscale_tiled(lambda t: t, torch.rand(3, 4, 4), 1, out, tile=-3)
    with pytest.raises(ConfigError):
        plan_axis(10, 1, 0, 1)
    with pytest.raises(ConfigError):
        plan_axis(10, 4, -1, 1)


class OomAbove:
    """A tile function that fails like an allocator when a tile is bigger than `limit` pixels a side."""

    def __init__(self, limit: int, error: Exception) -> None:
        self.limit, self.error, self.sizes = limit, error, []

    def __call__(self, tile: torch.Tensor) -> torch.Tensor:
        self.sizes.append(max(tile.shape[2:]))
        if max(tile.shape[2:]) > self.limit:
            raise self.error
        return torch.nn.functional.interpolate(tile, scale_factor=2, mode="nearest")


@pytest.mark.parametrize(
    "error",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
        RuntimeError("DefaultCPUAllocator: can't allocate memory"),
        MemoryError(),
    ],
)
def test_auto_tile_halves_and_retries_after_out_of_memory(error):
    fn = OomAbove(40, error)
    image = torch.rand(3, 150, 130)
    out = np.zeros((300, 260, 3), np.float32)
    calls = []
    upscale_tiled(
        fn,
        image,
        2,
        out,
        tile="auto",
        overlap=8,
        bytes_per_pixel=1,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert fn.sizes[0] == 150 and max(fn.sizes[-5:]) <= 40
    expected = torch.nn.functional.interpolate(image[None], scale_factor=2, mode="nearest")[0]
    np.testing.assert_allclose(out, expected.permute(1, 2, 0).numpy(), atol=1e-6)
    assert calls[-1][0] == calls[-1][1]


def test_other_errors_and_explicit_tiles_are_not_retried():
    image = torch.rand(3, 64, 64)
    out = np.zeros((128, 128, 3), np.float32)
    with pytest.raises(ValueError):
        upscale_tiled(OomAbove(0, ValueError("bug")), image, 2, out, tile="auto", bytes_per_pixel=1)
    fn = OomAbove(16, torch.OutOfMemoryError("out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        upscale_tiled(fn, image, 2, out, tile=32, overlap=4)
    assert len(fn.sizes) == 1


def test_out_of_memory_at_the_smallest_tile_is_raised():
    fn = OomAbove(1, torch.OutOfMemoryError("out of memory"))
    with pytest.raises(torch.OutOfMemoryError):
        upscale_tiled(fn, torch.rand(3, 64, 64), 2, np.zeros((128, 128, 3), np.float32), bytes_per_pixel=1)
    assert min(fn.sizes) == MIN_AUTO_TILE


def test_auto_tile_follows_memory():
    assert auto_tile(0, 1000) == MIN_AUTO_TILE
    assert auto_tile(1 << 40, 1) == 1024
    assert auto_tile(256 * 256 * 1000, 1000) == 256  # the whole budget of one forward
    assert auto_tile(250 * 250 * 1000, 1000) == 240  # rounded down to a multiple of 16
    assert available_memory("cpu") > 0
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
