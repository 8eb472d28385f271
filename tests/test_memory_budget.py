"""The memory budget of one forward: a share of free memory, capped on CPUs unless the caller says otherwise,
and the automatic tile and batch that follow from it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mma import tiling
from mma.cli import app
from mma.engine import Engine
from mma.errors import ConfigError
from mma.tiling import DEFAULT_CPU_MAX_MEMORY, memory_budget, parse_memory, upscale_tiled

GIB = 1 << 30


@pytest.fixture
def free(monkeypatch):
    """Pretend the device has this much free memory (any device type: nothing is asked of CUDA)."""

    def set_free(amount: int) -> None:
        monkeypatch.setattr(tiling, "available_memory", lambda device=None: amount)

    return set_free


def test_cpu_budget_is_capped_by_default(free):
    free(100 * GIB)
    assert memory_budget("cpu") == DEFAULT_CPU_MAX_MEMORY
    assert memory_budget("cpu", "6G") == 6 * GIB  # raised by the caller
    assert memory_budget("cpu", 256 << 20) == 256 << 20  # or lowered
    assert memory_budget("cuda") == 50 * GIB  # GPUs: half of their free memory, as before


def test_budget_never_exceeds_half_of_free_memory(free):
    free(GIB)
    assert memory_budget("cpu") == GIB // 2
    assert memory_budget("cpu", "6G") == GIB // 2
    free(0)
    assert memory_budget("cpu") == 0


@pytest.mark.parametrize(
    "text,expected",
    [
        ("512M", 512 << 20),
        ("1.5g", 3 * GIB // 2),
        ("2GiB", 2 * GIB),
        ("800mb", 800 << 20),
        ("64k", 64 << 10),
        ("1073741824", GIB),
        (4096, 4096),
        (" 3G ", 3 * GIB),
    ],
)
def test_sizes_are_read_with_binary_units(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "G", "lots", "1X", "inf", "nan", "0", "-2G", 0, -5])
def test_bad_sizes_are_one_clear_error(text):
    with pytest.raises(ConfigError, match="max memory"):
        parse_memory(text)


def test_automatic_tile_and_batch_fit_the_budget(free):
    free(100 * GIB)
    sizes: list[tuple[int, ...]] = []

    def fn(tiles: torch.Tensor) -> torch.Tensor:
        sizes.append(tuple(tiles.shape))
        return tiles

    image = torch.rand(3, 200, 150)
    out = np.zeros((200, 150, 3), np.float32)
    upscale_tiled(fn, image, 1, out, overlap=8, bytes_per_pixel=1000, max_memory=64 * 64 * 1000)
    assert all(rows * cols <= 64 * 64 for rows, cols in {shape[2:] for shape in sizes})
    assert {shape[0] for shape in sizes} == {1}
    np.testing.assert_allclose(out, image.permute(1, 2, 0).numpy(), atol=1e-6)
    sizes.clear()
    upscale_tiled(
        fn,
        image,
        1,
        out,
        tile=32,
        overlap=8,
        batch="auto",
        bytes_per_pixel=1000,
        max_memory=3 * 32 * 32 * 1000,
    )
    assert max(shape[0] for shape in sizes) == 3  # three 32-pixel tiles per forward fit


def test_engine_and_cli_refuse_a_bad_max_memory(tiny_weights, tmp_path):
    with pytest.raises(ConfigError, match="max memory"):
        Engine(str(tiny_weights), max_memory="lots")
    result = CliRunner().invoke(app, ["upscale", str(tmp_path / "a.png"), "--max-memory", "lots"])
    assert result.exit_code != 0
    assert "--max-memory lots" in result.output and "Traceback" not in result.output


def test_engine_passes_its_budget_to_the_tiling(tiny_weights, monkeypatch):
    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return args[3]

    monkeypatch.setattr("mma.engine.upscale_tiled", spy)
    engine = Engine(str(tiny_weights), device="cpu", dtype="fp32", max_memory="300M")
    engine.upscale_array(np.zeros((4, 4, 3), np.uint8))
    assert seen["max_memory"] == 300 << 20


def test_a_photo_that_does_not_fit_whole_runs_as_few_wide_tiles():
    # 640x480 at 4.8 KB a pixel in 1 GiB: two 480x336 tiles (1.05x the pixels), not six 304-pixel squares
    assert tiling.auto_tile_shape(GIB, 4800, 480, 640, 32) == (480, 336)
    assert tiling.auto_tile_shape(GIB, 1000, 480, 640, 32) == (480, 640)  # fits whole
    assert tiling.auto_tile_shape(0, 1000, 480, 640, 32) == (tiling.MIN_AUTO_TILE,) * 2


@pytest.mark.parametrize("seed", range(20))
def test_automatic_tile_shape_fits_and_wastes_least(seed):
    gen = np.random.default_rng(seed)
    height, width = (int(v) for v in gen.integers(20, 700, 2))
    overlap = int(gen.integers(0, 40))
    budget = int(gen.integers(16 * 16, 800 * 800))
    rows, cols = tiling.auto_tile_shape(budget, 1, height, width, overlap)
    assert rows * cols <= budget and rows <= tiling.MAX_AUTO_TILE and cols <= tiling.MAX_AUTO_TILE

    def cost(r: int, c: int) -> int:
        plans = tiling.plan_axis(height, r, overlap, 1), tiling.plan_axis(width, c, overlap, 1)
        return len(plans[0].starts) * len(plans[1].starts) * plans[0].size * plans[1].size

    best_square = min(
        cost(side, side) for side in range(16, 1025, 2) if min(side, height) * min(side, width) <= budget
    )
    assert cost(rows, cols) <= best_square


@pytest.mark.parametrize(
    "length,count,overlap", [(480, 2, 32), (641, 3, 32), (100, 7, 40), (50, 2, 60), (33, 4, 0)]
)
def test_tile_side_is_the_smallest_that_plan_axis_fits_in_count(length, count, overlap):
    side = tiling._tile_side(length, count, overlap)
    assert len(tiling.plan_axis(length, side, overlap, 1).starts) <= count
    if side - 2 >= 2 * overlap:  # (a larger overlap is cut to half a tile, and fewer tiles may then fit)
        assert len(tiling.plan_axis(length, side - 2, overlap, 1).starts) > count
