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
    assert {shape[2:] for shape in sizes} == {(64, 64)} and {shape[0] for shape in sizes} == {1}
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
