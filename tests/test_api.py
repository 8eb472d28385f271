"""`mma.upscale` / `mma.load_model`: every input kind comes back as itself, modes, alpha, dtype fallback."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms
from torch import nn

import mma
from mma.api import LUMA, load_model, resolve_device, resolve_dtype, upscale
from mma.errors import CheckpointError, ConfigError, ImageReadError, WeightsNotFoundError
from mma.weights import save_safetensors

RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def tiny():
    """A tiny real MMA network (random weights): fast, yet the true architecture end to end."""
    torch.manual_seed(0)
    return mma.build_model("mma-t", 2, num_feat=8, num_block=1).eval()


@pytest.fixture()
def tiny_file(tmp_path, tiny):
    return save_safetensors(tiny, tmp_path / "tiny_x2.safetensors")


def direct(net: nn.Module, array: np.ndarray) -> np.ndarray:
    """The network on a whole float HxWx3 image, no tiling: the reference result."""
    with torch.inference_mode():
        out = net(torch.from_numpy(array.transpose(2, 0, 1)).float()[None])[0]
    return out.clamp(0, 1).permute(1, 2, 0).numpy()


def test_the_public_api_lists_exactly_the_lazy_names_and_each_resolves():
    assert set(mma.__all__) == {"__version__", *mma._LAZY}
    assert all(getattr(mma, name) is not None for name in mma.__all__)


def test_numpy_uint8_whole_image_equals_the_network(tiny):
    array = RNG.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    result = upscale(array, 2, tiny, tile=None)
    assert result.dtype == np.uint8 and result.shape == (22, 26, 3)
    expected = np.rint(direct(tiny, array / 255.0) * 255)
    assert np.abs(result.astype(int) - expected).max() <= 1


def test_tiled_is_close_to_whole_image(tiny):
    array = RNG.random((40, 36, 3)).astype(np.float32)
    whole = upscale(array, 2, tiny, tile=0)
    tiled = upscale(array, 2, tiny, tile=24, overlap=12)
    assert tiled.dtype == np.float32 and tiled.shape == whole.shape
    psnr = 10 * np.log10(1 / np.mean((whole - tiled) ** 2))
    assert psnr > 30  # MMA's scan sees the whole tile, so only a close match is possible


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((9, 7), np.uint8),
        ((9, 7), np.uint16),
        ((9, 7, 1), np.float64),
        ((9, 7, 2), np.uint8),
        ((9, 7, 4), np.uint16),
        ((9, 7, 3), np.float32),
    ],
)
def test_numpy_keeps_layout_and_dtype(tiny, shape, dtype):
    scale = 65535 if dtype == np.uint16 else 255 if dtype == np.uint8 else 1
    array = (RNG.random(shape) * scale).astype(dtype)
    result = upscale(array, 2, tiny, tile=None)
    assert result.dtype == dtype and result.shape == (18, 14, *shape[2:])


def test_grey_goes_through_rgb_and_back(tiny):
    grey = RNG.random((8, 9)).astype(np.float32)
    result = upscale(grey, 2, tiny, tile=None)
    rgb = direct(tiny, np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_allclose(result, np.clip((rgb * LUMA).sum(2), 0, 1), atol=1e-5)


def test_alpha_resize_and_model(tiny):
    rgba = RNG.random((10, 12, 4)).astype(np.float32)
    resized = upscale(rgba, 2, tiny, tile=None, alpha="resize")
    expected = (
        nn.functional.interpolate(
            torch.from_numpy(rgba[..., 3])[None, None], scale_factor=2, mode="bicubic", align_corners=False
        )[0, 0]
        .clamp(0, 1)
        .numpy()
    )
    np.testing.assert_allclose(resized[..., 3], expected, atol=1e-6)
    np.testing.assert_allclose(resized[..., :3], direct(tiny, rgba[..., :3]), atol=1e-5)
    through = upscale(rgba, 2, tiny, tile=None, alpha="model")
    grey = direct(tiny, np.repeat(rgba[..., 3:], 3, axis=2))
    np.testing.assert_allclose(through[..., 3], np.clip((grey * LUMA).sum(2), 0, 1), atol=1e-5)
    with pytest.raises(ConfigError):
        upscale(rgba, 2, tiny, alpha="magic")


@pytest.mark.parametrize("shape", [(3, 6, 5), (2, 3, 6, 5), (1, 6, 5), (4, 6, 5), (2, 2, 6, 5)])
def test_torch_keeps_layout(tiny, shape):
    tensor = torch.rand(shape, dtype=torch.float64)
    result = upscale(tensor, 2, tiny, tile=None)
    assert result.shape == (*shape[:-2], 12, 10) and result.dtype == torch.float64
    if shape[-3] == 3:
        first = tensor.reshape(-1, *shape[-3:])[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(
            result.reshape(-1, 3, 12, 10)[0].permute(1, 2, 0).numpy(), direct(tiny, first), atol=1e-5
        )


@pytest.mark.parametrize(
    "mode,expected",
    [
        ("RGB", "RGB"),
        ("RGBA", "RGBA"),
        ("L", "L"),
        ("LA", "LA"),
        ("P", "RGB"),
        ("CMYK", "RGB"),
        ("I;16", "I;16"),
    ],
)
def test_pil_modes(tiny, mode, expected):
    base = Image.fromarray(RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8))
    image = (
        Image.fromarray(RNG.integers(0, 65536, (6, 7), dtype=np.uint16))
        if mode == "I;16"
        else base.convert(mode)
    )
    result = upscale(image, 2, tiny, tile=None)
    assert result.mode == expected and result.size == (14, 12)
    if mode == "I;16":
        assert np.asarray(result).dtype == np.uint16 and np.asarray(result).max() > 255


def test_path_gives_pil_with_exif_and_icc(tiny, tmp_path):
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x010F] = "TestMaker"
    exif[0x0112] = 8  # rotated: read upright as 6 wide x 4 high
    path = tmp_path / "in.png"
    Image.fromarray(RNG.integers(0, 256, (6, 4, 3), dtype=np.uint8)).save(
        path, icc_profile=icc, exif=exif.tobytes()
    )
    result = upscale(path, 2, tiny, tile=None)
    assert isinstance(result, Image.Image) and result.size == (12, 8)
    assert result.info["icc_profile"] == icc
    carried = Image.Exif()
    carried.load(result.info["exif"])
    assert carried[0x010F] == "TestMaker" and carried[0x0112] == 1
    assert isinstance(upscale(str(path), 2, tiny, tile=None), Image.Image)


def test_scale_must_match_the_model(tiny):
    array = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ConfigError, match="x2, not x4"):
        upscale(array, 4, tiny)
    assert upscale(array, None, tiny, tile=None).shape == (8, 8, 3)


def test_load_model_from_file_is_cached_and_reloaded_when_changed(tiny, tiny_file):
    first = load_model(tiny_file, 2, device="cpu")
    assert not first.network.training and first.scale == 2
    assert load_model(str(tiny_file), 2, device="cpu") is first
    assert load_model(tiny_file, None, device="cpu") is not None
    with pytest.raises(ConfigError, match="x2, not x3"):
        load_model(tiny_file, 3, device="cpu")
    stat = tiny_file.stat()
    os.utime(tiny_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_model(tiny_file, 2, device="cpu") is not first
    for name, value in tiny.state_dict().items():
        torch.testing.assert_close(first.network.state_dict()[name], value)


def test_upscale_by_file_name(tiny, tiny_file):
    array = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    np.testing.assert_array_equal(upscale(array, 2, tiny_file, tile=None), upscale(array, 2, tiny, tile=None))


def test_registry_name_without_weights_says_what_to_do():
    with pytest.raises(WeightsNotFoundError, match="convert"):
        load_model("mma-b", 3, device="cpu")
    with pytest.raises(ConfigError):
        load_model("mma-t", 5, device="cpu")


def test_devices_without_a_gpu(host, monkeypatch):
    host.cuda(0)
    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("toaster")
    cpu = torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32 and resolve_dtype(None, cpu) == torch.float32
    with pytest.raises(ConfigError, match="fp8"):
        resolve_dtype("fp8", cpu)


def test_devices_with_gpus(host, monkeypatch):
    host.cuda(2, bf16=False)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert resolve_device("auto") == torch.device("cuda", 1)  # torchrun's rank 3 on a two-GPU machine
    assert resolve_device("cuda", local_rank=0) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        resolve_device("cuda:2")
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16
    host.cuda(1, bf16=True)
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16


@pytest.mark.parametrize("fp16", [True, False])
@pytest.mark.parametrize("bf16", [True, False])
def test_half_precision_on_a_cpu_follows_its_native_support(host, fp16, bf16):
    host.native(fp16=fp16, bf16=bf16)
    cpu = torch.device("cpu")
    for name, native, dtype in (("fp16", fp16, torch.float16), ("bf16", bf16, torch.bfloat16)):
        if native:
            assert resolve_dtype(name, cpu) == dtype
        else:
            with pytest.warns(RuntimeWarning, match=f"no native {name}"):
                assert resolve_dtype(name, cpu) == torch.float32


class HalfBreaks(nn.Module):
    """Nearest x2 that overflows in reduced precision, like a network whose activations exceed fp16."""

    scale = 2

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = nn.functional.interpolate(x, scale_factor=2, mode="nearest") * self.gain
        return y * float("nan") if x.dtype != torch.float32 else y


def test_half_precision_nan_is_recomputed_in_float32_with_one_warning(host):
    host.native(fp16=False, bf16=True)  # bf16 is emulated where not native: slow, but the same numbers
    array = RNG.random((20, 20, 3)).astype(np.float32)
    net = HalfBreaks()
    with pytest.warns(RuntimeWarning, match="float32") as caught:
        result = upscale(array, 2, net, dtype="bf16", tile=8, overlap=2)
    assert len([w for w in caught if "float32" in str(w.message)]) == 1
    np.testing.assert_allclose(result, array.repeat(2, 0).repeat(2, 1), atol=1e-6)
    assert net.gain.dtype == torch.float32  # the caller's module was copied, not converted


def test_nan_in_float32_is_an_error():
    net = HalfBreaks()
    with torch.no_grad():
        net.gain.fill_(float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        upscale(np.zeros((4, 4, 3), np.float32), 2, net, tile=None)


def test_progress_callback_and_bar(tiny, capsys):
    calls = []
    upscale(
        RNG.random((30, 30, 3)).astype(np.float32),
        2,
        tiny,
        tile=16,
        overlap=4,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls[0] == (0, calls[-1][1])  # the total is known before the first tile ends
    assert calls[-1][0] == calls[-1][1] == len(calls) - 1 > 1
    upscale(np.zeros((4, 4, 3), np.uint8), 2, tiny, tile=None)
    assert capsys.readouterr() == ("", "")  # nothing printed unless asked
    upscale(np.zeros((4, 4, 3), np.uint8), 2, tiny, tile=None, progress=True)
    assert capsys.readouterr().out == ""  # the bar goes to stderr


def test_bad_inputs():
    net = HalfBreaks()
    with pytest.raises(ImageReadError, match="cannot upscale a list"):
        upscale([[0, 1]], 2, net)
    with pytest.raises(ImageReadError, match="float"):
        upscale(torch.zeros(3, 4, 4, dtype=torch.uint8), 2, net)
    with pytest.raises(ImageReadError, match="NaN"):
        upscale(torch.full((3, 4, 4), float("nan")), 2, net)
    with pytest.raises(ImageReadError, match="no such file"):
        upscale("/nonexistent/picture.png", 2, net)


def test_float_input_in_0_to_255_is_refused_in_one_line_naming_the_fix():
    from mma.errors import ValueRangeError

    net = HalfBreaks()
    array = RNG.random((6, 5, 3)).astype(np.float32) * 255
    with pytest.raises(
        ValueRangeError, match=r"values from .* to \d+.*must be in \[0, 1\]: divide by 255"
    ) as info:
        upscale(array, 2, net, tile=None)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueRangeError, match="divide by 255"):
        upscale(torch.from_numpy(array).permute(2, 0, 1), 2, net, tile=None)
    with pytest.raises(ValueRangeError, match="scale it to"):
        upscale(array * 1000, 2, net, tile=None)
    with pytest.raises(ValueRangeError, match=r"from -0\.\d+ .*\(x \+ 1\) / 2"):
        upscale(array / 255 * 2 - 1, 2, net, tile=None)  # [-1, 1], as some networks take
    np.testing.assert_allclose(
        upscale(array / 255, 2, net, tile=None), (array / 255).repeat(2, 0).repeat(2, 1)
    )


def test_a_small_float_overshoot_is_clipped_with_a_warning_and_rounding_silently(recwarn):
    net = HalfBreaks()
    array = np.linspace(0, 1, 6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    upscale(array * (1 + 1e-4), 2, net, tile=None)
    assert not [w for w in recwarn if "clipped" in str(w.message)]
    with pytest.warns(RuntimeWarning, match=r"values from 0 to 1.1; clipped to \[0, 1\]"):
        result = upscale(array * 1.1, 2, net, tile=None)
    assert result.max() == 1.0


def test_training_module_is_left_in_training_mode():
    net = HalfBreaks().train()
    upscale(np.zeros((4, 4, 3), np.uint8), 2, net, tile=None)
    assert net.training
