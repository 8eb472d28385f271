"""LAM: exact receptive-field support, integrated-gradients completeness, DI values, rendering, `mma lam`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from mma.errors import ConfigError
from mma.lam import analysis_input, crop_origin, diffusion_index, gini, heatmap_image, lam, overlay_image
from mma.lam.path import blur, gaussian_kernel

SCALE = 2


def conv_sr(depth: int, seed: int = 0, act: type[nn.Module] = nn.Tanh) -> nn.Module:
    """`depth` 3x3 convolutions (zero padding) then a pixel shuffle: input radius `depth` per LR pixel."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for _ in range(depth - 1):
        layers += [nn.Conv2d(channels, 8, 3, padding=1), act()]
        channels = 8
    layers += [nn.Conv2d(channels, 3 * SCALE * SCALE, 3, padding=1), nn.PixelShuffle(SCALE)]
    return nn.Sequential(*layers).double()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: threads only add contention on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def texture() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(3, 24, 24, generator=generator, dtype=torch.float64)


def field(x: int, y: int, window: int, depth: int, size: int) -> np.ndarray:
    """Mask of the LR pixels within `depth` of the pixels under the HR window."""
    mask = np.zeros((size, size), dtype=bool)
    lo_y, hi_y = y // SCALE - depth, (y + window - 1) // SCALE + depth
    lo_x, hi_x = x // SCALE - depth, (x + window - 1) // SCALE + depth
    mask[max(lo_y, 0) : hi_y + 1, max(lo_x, 0) : hi_x + 1] = True
    return mask


@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_attribution_is_zero_exactly_outside_the_receptive_field(texture, depth, act):
    result = lam(conv_sr(depth, act=act), texture, 18, 14, 8, steps=6)
    inside = field(18, 14, 8, depth, 24)
    assert np.all(result.attribution[~inside] == 0)
    assert np.all(result.signed[~inside] == 0)
    assert result.attribution[inside].any()
    # The field's outermost ring is reached (the support is not smaller than predicted).
    assert result.attribution[field(18, 14, 8, depth, 24) & ~field(18, 14, 8, depth - 1, 24)].any()


def test_diffusion_index_grows_with_depth(texture):
    dis = [lam(conv_sr(depth), texture, 20, 20, 8, steps=8).diffusion_index for depth in (1, 3, 6)]
    assert dis[0] < dis[1] < dis[2]


def test_completeness_holds_and_improves_with_steps(texture):
    model = conv_sr(3)
    coarse = lam(model, texture, 16, 16, 8, steps=4)
    fine = lam(model, texture, 16, 16, 8, steps=40, batch_size=20)
    assert fine.detector_gain == pytest.approx(coarse.detector_gain, rel=1e-12)
    assert abs(fine.detector_gain) > 0.1
    assert abs(fine.completeness_gap) < 0.05 * abs(fine.detector_gain)
    assert abs(fine.completeness_gap) < abs(coarse.completeness_gap) / 4
    assert fine.signed.sum() - fine.detector_gain == pytest.approx(fine.completeness_gap)


def test_detector_endpoints_are_the_baseline_and_the_input(texture):
    model = conv_sr(2)
    result = lam(model, texture, 4, 6, 10, steps=3, sigma=1.5)
    with torch.no_grad():
        output = model(texture[None])
    np.testing.assert_allclose(result.output, output[0].permute(1, 2, 0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(result.image, texture.permute(1, 2, 0).numpy(), rtol=1e-6)
    assert result.box == (4, 6, 14, 16) and result.scale == SCALE
    assert result.baseline.std() < result.image.std()  # the blur removed detail


def test_batching_does_not_change_the_result(texture):
    model = conv_sr(3)
    one = lam(model, texture, 10, 10, 8, steps=7, batch_size=1)
    many = lam(model, texture, 10, 10, 8, steps=7, batch_size=3)
    np.testing.assert_allclose(one.signed, many.signed, rtol=1e-9, atol=1e-15)


def test_model_mode_is_restored_and_numpy_input_accepted(texture):
    model = conv_sr(2).float().train()
    frozen = next(model.parameters()).requires_grad_(False)
    pixels = (texture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    result = lam(model, pixels, 0, 0, 4, steps=2)
    assert model.training
    assert not frozen.requires_grad and all(p.requires_grad for p in list(model.parameters())[1:])
    assert result.attribution.shape == (24, 24)
    assert np.isfinite(result.diffusion_index)


@pytest.mark.parametrize(
    ("x", "y", "window", "kwargs"),
    [
        (45, 0, 4, {}),
        (0, 44, 8, {}),
        (0, 0, 1, {}),
        (0, 0, 4, {"steps": 0}),
        (0, 0, 4, {"sigma": 0.0}),
        (0, 0, 4, {"sigma": float("nan")}),
        (0, 0, 4, {"batch_size": 0}),
    ],
)
def test_bad_arguments_raise_config_errors(texture, x, y, window, kwargs):
    with pytest.raises(ConfigError):
        lam(conv_sr(1), texture, x, y, window, **kwargs)


def test_a_non_sr_model_is_refused(texture):
    with pytest.raises(ConfigError, match="integer scale"):
        lam(nn.Conv2d(3, 3, 3).double(), texture, 0, 0, 4, steps=1)


def test_blur_is_a_normalised_gaussian_and_identity_at_zero():
    kernel = gaussian_kernel(1.2, 4)
    assert kernel.sum().item() == pytest.approx(1.0) and kernel.argmax().item() == 4
    image = torch.rand(1, 3, 9, 9, dtype=torch.float64)
    assert torch.equal(blur(image, 0.0, 4), image)
    flat = torch.full((1, 3, 3, 3), 0.25, dtype=torch.float64)  # smaller than the kernel: replicated border
    torch.testing.assert_close(blur(flat, 1.2, 4), flat)
    assert blur(image, 1.2, 4).mean().item() == pytest.approx(image.mean().item(), abs=0.02)


def gini_reference(values: np.ndarray) -> float:
    """Mean absolute difference over all pairs / (2 * mean): the textbook definition, O(n^2), float64."""
    v = values.astype(np.float64).ravel()
    return float(np.abs(v[:, None] - v[None, :]).sum() / (2 * v.size**2 * v.mean()))


def test_diffusion_index_known_values():
    assert diffusion_index(np.full((8, 8), 3.0)) == pytest.approx(100.0)
    one_hot = np.zeros((10, 10))
    one_hot[3, 7] = -5.0  # the sign does not matter
    assert diffusion_index(one_hot) == pytest.approx(1.0)  # 100 / n
    half = np.zeros(10)
    half[:5] = 1.0
    assert diffusion_index(half) == pytest.approx(50.0)
    assert diffusion_index(np.zeros((4, 4))) == 0.0


@pytest.mark.parametrize("seed", range(4))
def test_gini_matches_the_pairwise_reference(seed):
    rng = np.random.default_rng(seed)
    values = np.abs(rng.standard_cauchy(300)) * 10.0 ** rng.uniform(-30, 30)
    values[rng.integers(0, 300, 20)] = 0.0
    assert gini(values) == pytest.approx(gini_reference(values), rel=1e-9)


@pytest.mark.parametrize("bad", [np.array([1.0, np.nan]), np.array([1.0, np.inf]), np.array([])])
def test_gini_refuses_non_finite_and_empty(bad):
    with pytest.raises(ValueError):
        diffusion_index(bad)


def test_crop_origin_keeps_the_window_inside():
    for left in range(97):  # up to the right edge of a 28-pixel-wide input at x4
        top, start = crop_origin(30, 28, (left, 3, left + 16, 19), 4, 5)
        assert 0 <= start <= left // 4 and -(-(left + 16) // 4) <= start + 5 <= 28
        assert top == 0
    with pytest.raises(ConfigError):
        crop_origin(30, 30, (1, 0, 17, 16), 4, 4)  # the window spans 5 input pixels


def test_analysis_input_downscales_and_crops_hr_and_lr_together():
    hr = np.random.default_rng(0).integers(0, 256, (41, 50, 3), dtype=np.uint8)
    whole = analysis_input(hr, 30, 20, 8, 2, downscale=True)
    assert whole.lr.shape == (20, 25, 3) and whole.hr.shape == (40, 50, 3) and whole.origin is None
    cut = analysis_input(hr, 30, 20, 8, 2, downscale=True, crop=6)
    top, left = cut.origin
    np.testing.assert_array_equal(cut.lr, whole.lr[top : top + 6, left : left + 6])
    np.testing.assert_array_equal(cut.hr, whole.hr[2 * top : 2 * top + 12, 2 * left : 2 * left + 12])
    assert (cut.x + 2 * left, cut.y + 2 * top) == (30, 20)
    plain = analysis_input(hr, 30, 20, 8, 2)
    assert plain.lr is hr and plain.hr is None


def test_renderings(texture):
    result = lam(conv_sr(2), texture, 18, 14, 8, steps=3)
    heat = heatmap_image(result.attribution, zoom=SCALE)
    assert heat.size == (48, 48) and heat.mode == "RGB"
    array = np.asarray(heat)
    assert (array[0, 0] == 255).all()  # untouched pixels are white
    peak = np.unravel_index(result.attribution.argmax(), result.attribution.shape)
    assert tuple(array[peak[0] * SCALE, peak[1] * SCALE]) == (128, 0, 0)
    over = np.asarray(overlay_image(result))
    assert over.shape == (48, 48, 3)
    assert tuple(over[14, 20]) == (0, 90, 255)  # window outline
    small = overlay_image(result, Image.new("RGB", (24, 24), "gray"))
    assert small.size == (24, 24)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    from mma.model import build_model
    from mma.weights import save_safetensors

    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_feat=8, num_block=1)
    path = tmp_path_factory.mktemp("weights") / "tiny_x2.safetensors"
    save_safetensors(model, path, model.config)
    return path


@pytest.fixture()
def picture(tmp_path) -> Path:
    rng = np.random.default_rng(3)
    path = tmp_path / "in.png"
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(path)
    return path


def run_cli(*args: str):
    import mma.cli.lam  # noqa: F401  (registers `lam`, in case mma.cli does not import it)
    from mma.cli import app

    return CliRunner().invoke(app, ["lam", *map(str, args)])


def test_cli_writes_heatmap_and_overlay_and_prints_the_di(tiny_weights, picture, tmp_path):
    out = tmp_path / "out" / "heat.png"
    result = run_cli(
        picture, "--x", 4, "--y", 6, "--window", 8, "--model", tiny_weights, "--steps", 3, "-o", out
    )
    assert result.exit_code == 0, result.output
    di = float(re.search(r"^DI: ([0-9.]+)$", result.stdout, re.MULTILINE).group(1))
    assert 0 < di <= 100
    heat, overlay = Image.open(out), Image.open(tmp_path / "out" / "heat_overlay.png")
    assert heat.size == overlay.size == (20, 24)  # the x2 output of the 10x12 input
    again = run_cli(picture, "--x", 4, "--y", 6, "--model", tiny_weights, "--steps", 1, "-o", out)
    assert again.exit_code == 1 and "exists" in again.stderr


def test_cli_downscale_and_crop(tiny_weights, picture, tmp_path):
    out = tmp_path / "crop.png"
    args = ("--x", 2, "--y", 8, "-w", 4, "--model", tiny_weights, "--steps", 2, "--downscale", "--crop", 3)
    result = run_cli(picture, *args, "-o", out)
    assert result.exit_code == 0, result.output
    assert "crop: 3x3" in result.stdout
    assert Image.open(out).size == (6, 6)
    assert Image.open(tmp_path / "crop_overlay.png").size == (6, 6)


def test_cli_reports_a_window_outside_the_output(tiny_weights, picture, tmp_path):
    result = run_cli(picture, "--x", 18, "--y", 0, "--model", tiny_weights, "-o", tmp_path / "h.png")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: window 16x16 at x=18")
    assert not (tmp_path / "h.png").exists()


def test_cli_progress_in_a_log_is_plain_lines(tiny_weights, picture, tmp_path, monkeypatch):
    from mma import progress

    monkeypatch.setattr(progress, "PLAIN_EVERY_S", 0.0)  # every report gets its line
    args = ("--x", 4, "--y", 6, "-w", 8, "--model", tiny_weights, "--steps", 4, "--batch", 2)
    result = run_cli(picture, *args, "-o", tmp_path / "map.png")
    assert result.exit_code == 0, result.output
    assert "\r" not in result.stderr and "LAM: 100%, 4/4 path steps" in result.stderr
