"""The inference engine and the loader behind it: one code path for every caller, batched tiles, the
device/dtype/thread policy, and models that say where their weights came from."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import mma
from mma import runtime
from mma.cli import app
from mma.engine import Engine, paper_engine
from mma.errors import ConfigError
from mma.evaluate import read_rgb
from mma.imaging.resize import imresize, modcrop
from mma.metrics import psnr, ssim
from mma.tiling import auto_batch, upscale_tiled
from mma.train.validate import ValidationSet, validate
from mma.weights.loaded import LoadedModel, memory_per_pixel
from mma.weights.registry import BUNDLED_DIR, BUNDLED_TAG

RNG = np.random.default_rng(5)


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    torch.manual_seed(0)
    return mma.build_model("mma-t", 2, num_feat=8, num_block=1).eval()


# ----- one code path: eval, upscale and training validation give one number -----------------------------


def test_eval_scores_are_the_metrics_of_upscale_outputs(
    tiny_dataset: Path, tiny_weights: Path, tmp_path: Path
) -> None:
    report = tmp_path / "scores.json"
    args = [
        "eval",
        str(tiny_dataset),
        "-s",
        "2",
        "-m",
        str(tiny_weights),
        "--device",
        "cpu",
        "--json",
        str(report),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    scores = json.loads(report.read_text())["datasets"]["Tiny"]
    psnrs, ssims = [], []
    for path in sorted(p for p in tiny_dataset.iterdir() if p.suffix != ".txt"):
        hr = modcrop(read_rgb(path), 2)
        sr = mma.upscale(imresize(hr, 1 / 2), model=str(tiny_weights), tile=None, dtype="fp32")
        psnrs.append(psnr(sr, hr, 2))
        ssims.append(ssim(sr, hr, 2))
    assert scores["psnr"] == pytest.approx(np.mean(psnrs), abs=1e-9)
    assert scores["ssim"] == pytest.approx(np.mean(ssims), abs=1e-9)
    images = sorted(p for p in tiny_dataset.iterdir() if p.suffix != ".txt")
    during_training = validate(
        mma.load_model(tiny_weights).network.train(),
        ValidationSet("Tiny", tuple(images)),
        2,
        torch.device("cpu"),
    )
    assert (during_training.psnr, during_training.ssim) == (scores["psnr"], scores["ssim"])


def test_validation_leaves_a_training_module_training(tiny: torch.nn.Module, tiny_dataset: Path) -> None:
    model = mma.build_model("mma-t", 2, num_feat=8, num_block=1).train()
    images = tuple(sorted(p for p in tiny_dataset.iterdir() if p.suffix == ".png"))
    validate(model, ValidationSet("Tiny", images), 2, torch.device("cpu"))
    assert model.training


# ----- batched tiles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [2, 3, 16, "auto"])
def test_batched_tiles_equal_one_tile_at_a_time(tiny: torch.nn.Module, batch: int | str) -> None:
    image = RNG.random((45, 38, 3)).astype(np.float32)
    one = Engine(tiny, device="cpu", tile=16, overlap=4, batch=1).upscale_array(image)
    many = Engine(tiny, device="cpu", tile=16, overlap=4, batch=batch).upscale_array(image)
    np.testing.assert_allclose(many, one, atol=2e-6)


def test_out_of_memory_halves_the_batch_before_the_tile() -> None:
    calls: list[tuple[int, int]] = []

    def fn(tiles: torch.Tensor) -> torch.Tensor:
        calls.append((tiles.shape[0], tiles.shape[-1]))
        if tiles.shape[0] > 2:
            raise torch.OutOfMemoryError("out of memory")
        return tiles.repeat_interleave(2, -1).repeat_interleave(2, -2)

    out = np.zeros((96, 96, 3), np.float32)
    image = torch.rand(3, 48, 48)
    upscale_tiled(fn, image, 2, out, tile=16, overlap=4, batch=8)
    assert {size for _, size in calls} == {16} and calls[-1][0] <= 2
    np.testing.assert_allclose(
        out, image.repeat_interleave(2, -1).repeat_interleave(2, -2).permute(1, 2, 0), atol=1e-6
    )


def test_auto_batch_follows_the_memory_budget() -> None:
    assert auto_batch(10**12, 1000, 256) == 16  # capped
    assert auto_batch(4 * 1000 * 256 * 256, 1000, 256) == 4
    assert auto_batch(0, 1000, 256) == 1
    with pytest.raises(ConfigError, match="batch"):
        upscale_tiled(lambda t: t, torch.rand(3, 8, 8), 1, np.zeros((8, 8, 3), np.float32), batch=0)


# ----- device, precision and threads ---------------------------------------------------------------------


def test_half_precision_on_a_cpu_without_it_is_float32_with_a_warning(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: False)
    with pytest.warns(RuntimeWarning, match="no native fp16"):
        assert runtime.resolve_dtype("fp16", torch.device("cpu")) == torch.float32
    monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: True)
    assert runtime.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_the_engine_keeps_to_the_precisions_the_model_declares(tiny, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: True)  # the hardware is not what is tested
    source = mma.weights.loaded.WeightsSource("module", "fp32-only")
    only_fp32 = LoadedModel(tiny, source, precisions=("fp32",))
    assert only_fp32.to("cpu", torch.float32).precisions == ("fp32",)
    with pytest.warns(
        RuntimeWarning, match=r"fp32-only does not run in bf16 \(it declares fp32\): using fp32"
    ):
        engine = Engine(only_fp32, device="cpu", dtype=torch.bfloat16)
    assert engine.dtype == torch.float32 and engine.model.dtype == torch.float32
    tiny.precisions = ("fp32", "bf16")  # declared by the network itself
    try:
        assert LoadedModel(tiny, source).precisions == ("fp32", "bf16")
        assert Engine(tiny, device="cpu", dtype=torch.bfloat16).dtype == torch.bfloat16
    finally:
        del tiny.precisions
    assert LoadedModel(tiny, source).precisions == ("fp32", "fp16", "bf16")
    with pytest.raises(ConfigError, match="precisions must include fp32"):
        LoadedModel(tiny, source, precisions=("fp16",))


def test_devices_are_checked_once_for_everyone(host) -> None:
    host.cuda(0)
    assert runtime.resolve_device("CPU").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        runtime.resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="unknown device"):
        runtime.resolve_device("gpu9")


def test_thread_policy_counts_idle_cpus(host, monkeypatch) -> None:
    host.cpus(4, idle=1.1)
    assert runtime.default_threads() == 1  # three CPUs busy elsewhere: one thread
    host.cpus(4, idle=3.8)
    assert runtime.default_threads() == 4
    host.cpus(4, idle=0.0)
    assert runtime.default_threads() == 1  # never zero
    host.cpus(4, idle=None)
    assert runtime.default_threads() == 4  # load unknown: every CPU
    host.cpus(1, idle=None)
    assert runtime.default_threads() == 1
    monkeypatch.setenv(runtime.THREADS_ENV, "3")
    assert runtime.default_threads() == 3
    monkeypatch.setenv(runtime.THREADS_ENV, "auto")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.default_threads() == torch.get_num_threads()
    idle = runtime.idle_cpus(0.02)
    assert idle is None or 0 <= idle <= (runtime.os.cpu_count() or 1) + 1e-6


def test_engine_threads_apply_while_it_runs_and_are_restored(tiny: torch.nn.Module) -> None:
    before = torch.get_num_threads()
    seen = []

    class Spy(torch.nn.Module):
        scale = 2

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(torch.get_num_threads())
            return x.repeat_interleave(2, -1).repeat_interleave(2, -2)

    Engine(Spy(), device="cpu", threads=1, tile=None).upscale_array(np.zeros((4, 4, 3), np.uint8))
    assert seen == [1] and torch.get_num_threads() == before
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(ConfigError, match="threads"):
            runtime.parse_threads(bad)


# ----- the loaded model and its one loader ---------------------------------------------------------------


def test_a_copied_bundled_folder_loads_at_its_own_scale_with_its_sha256(tmp_path: Path) -> None:
    folder = shutil.copytree(BUNDLED_DIR / "mma-t-x3", tmp_path / "my-model")
    loaded = mma.load_model(folder)
    assert isinstance(loaded, LoadedModel) and loaded.scale == 3 and loaded.config.scale == 3
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert loaded.sha256 == digest and loaded.source.kind == "folder"
    assert "folder" in repr(loaded) and "mma-t x3" in repr(loaded)
    with pytest.raises(ConfigError, match="x3, not x2"):
        mma.load_model(folder, 2)


def test_a_folders_config_json_is_honoured(tmp_path: Path, tiny: torch.nn.Module) -> None:
    folder = tmp_path / "hub-layout"
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, folder / "model.safetensors")
    config = {**tiny.config.to_dict(), "rgb_mean": [0.1, 0.2, 0.3]}  # not readable off the tensor shapes
    (folder / "config.json").write_text(json.dumps(config))
    assert mma.load_model(folder).config.rgb_mean == (0.1, 0.2, 0.3)


def test_registry_names_and_tags() -> None:
    default = mma.load_model("mma-t", 2)
    tagged = mma.load_model(f"mma-t-x2.{BUNDLED_TAG}")
    assert default.scale == tagged.scale == 2 and tagged.source.tag == BUNDLED_TAG
    assert (
        default.sha256
        == tagged.sha256
        == hashlib.sha256((BUNDLED_DIR / "mma-t-x2" / "model.safetensors").read_bytes()).hexdigest()
    )
    assert mma.load_model("mma-t").scale == 4  # a bare name means x4
    assert mma.load_model("mma-t-x3").source.location == f"mma-t-x3.{BUNDLED_TAG}"
    with pytest.raises(ConfigError, match="no tag 'nope': available tags are " + BUNDLED_TAG):
        mma.load_model("mma-t-x2.nope")
    with pytest.raises(ConfigError, match="x2, not x3"):
        mma.load_model("mma-t-x2", 3)


def test_memory_estimate_follows_the_measurements() -> None:
    """docs/benchmarks.md measured ~4 KB per input pixel for MMA-T x2, ~9 KB at x4 and ~12 KB for MMA-B x2."""
    estimate = {
        name: memory_per_pixel(mma.MMAConfig.named(v, s))
        for name, (v, s) in {"t2": ("mma-t", 2), "t4": ("mma-t", 4), "b2": ("mma-b", 2)}.items()
    }
    assert 4_000 < estimate["t2"] < 7_000 and 9_000 < estimate["t4"] < 14_000
    assert 12_000 < estimate["b2"] < 25_000


def test_the_paper_engine_is_float32_whole_image(tiny: torch.nn.Module) -> None:
    engine = paper_engine(tiny, device="cpu")
    assert engine.dtype == torch.float32 and engine.tile is None and engine.batch == 1


# ----- NaN never passes ------------------------------------------------------------------------------------


class _NaNBelowFloat32(torch.nn.Module):
    """x2 nearest upscaling that overflows to NaN in half precision (as a network can where float32 does
    not), or in every precision with `always`."""

    scale = 2

    def __init__(self, always: bool = False) -> None:
        super().__init__()
        self.always = always
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives `.to(dtype)` something to convert

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest") + self.anchor
        if self.always or x.dtype != torch.float32:
            out = out.clone()
            out[..., 0, 0] = float("nan")
        return out


def test_half_precision_nan_is_recomputed_in_float32_once():
    engine = Engine(_NaNBelowFloat32(), scale=2, device="cpu", tile=0)
    engine.model, engine.dtype = engine.model.to(torch.device("cpu"), torch.bfloat16), torch.bfloat16
    image = RNG.random((6, 5, 3)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match="gave NaN/Inf; recomputing in float32"):
        out = engine.upscale_array(image)
    assert engine.dtype == torch.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, image.repeat(2, 0).repeat(2, 1))
    out_again = engine.upscale_array(image)  # the engine stays in float32: no second warning
    np.testing.assert_array_equal(out_again, out)


def test_nan_in_float32_is_an_error_not_an_image():
    engine = Engine(_NaNBelowFloat32(always=True), scale=2, device="cpu", tile=0)
    with pytest.raises(mma.errors.CheckpointError, match="NaN/Inf in float32"):
        engine.upscale_array(RNG.random((6, 5, 3)).astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_all_finite_sees_every_nan_and_infinity(dtype):
    from mma.engine import all_finite

    values = torch.rand(2, 3, 17, 19).to(dtype)
    assert all_finite(values)
    assert all_finite(torch.empty(0, dtype=dtype))
    for bad in (float("nan"), float("inf"), -float("inf")):
        broken = values.clone()
        broken[1, 2, 16, 18] = bad
        assert not all_finite(broken), bad
    both = values.clone()
    both[0, 0, 0, 0], both[1, 1, 1, 1] = float("inf"), -float("inf")  # they cancel to NaN, not to a number
    assert not all_finite(both)
    big = values.clone()
    big[0, 0, 0, 0] = torch.finfo(dtype).max  # finite, however large
    assert all_finite(big)
