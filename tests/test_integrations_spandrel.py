"""MMA inside spandrel: the real spandrel package detects and loads our files, and claims nothing else."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from conftest import optional_package

spandrel = optional_package("spandrel", "spandrel")

import mma
from mma.integrations import spandrel as mma_spandrel
from mma.model import SCALES, VARIANTS, build_model
from mma.weights.checkpoint import expected_shapes, load_checkpoint
from mma.weights.registry import BUNDLED_DIR


def bundled(scale: int) -> Path:
    return BUNDLED_DIR / f"mma-t-x{scale}" / "model.safetensors"


@pytest.fixture(scope="module")
def registry() -> spandrel.ArchRegistry:
    """spandrel's own registry with MMA added, as a copy so the tests leave the global one alone."""
    copy = spandrel.MAIN_REGISTRY.copy()
    mma_spandrel.install(copy)  # a no-op where MMA is in MAIN_REGISTRY already
    return copy


@pytest.fixture(scope="module")
def loader(registry: spandrel.ArchRegistry) -> spandrel.ModelLoader:
    return spandrel.ModelLoader(registry=registry)


def test_install_registers_mma_first_once() -> None:
    fresh = spandrel.ArchRegistry()  # spandrel's own architectures, whatever another test installed globally
    fresh.add(*(support for support in spandrel.MAIN_REGISTRY if support.architecture.id != "MMA"))
    added = mma_spandrel.install(fresh)
    assert [support.architecture.id for support in added] == ["MMA"]
    assert fresh.architectures("detection")[0].architecture.id == "MMA"
    assert mma_spandrel.install(fresh) == []  # a second call is harmless, as spandrel_extra_arches.install()
    with pytest.raises(spandrel.DuplicateArchitectureError):
        mma_spandrel.install(fresh, ignore_duplicates=False)


def test_install_defaults_to_spandrels_main_registry() -> None:
    mma_spandrel.install()
    assert "MMA" in spandrel.MAIN_REGISTRY


@pytest.mark.parametrize("scale", SCALES)
def test_model_loader_reads_bundled_safetensors(loader: spandrel.ModelLoader, scale: int) -> None:
    descriptor = loader.load_from_file(bundled(scale))
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    assert descriptor.architecture.id == "MMA"
    assert descriptor.purpose == "SR"
    assert descriptor.scale == scale
    assert (descriptor.input_channels, descriptor.output_channels) == (3, 3)
    assert descriptor.tags[:3] == ["mma-t", "48nf", "12nb"]
    assert descriptor.supports_half and descriptor.supports_bfloat16
    assert descriptor.size_requirements.none
    assert isinstance(descriptor.model, mma.model.MMA) and not descriptor.model.training
    file_tensors, _ = load_checkpoint(bundled(scale))
    loaded = descriptor.model.state_dict()
    assert loaded.keys() == file_tensors.keys()
    assert all(torch.equal(loaded[key], file_tensors[key]) for key in file_tensors)


def test_output_equals_mma_upscale(loader: spandrel.ModelLoader) -> None:
    descriptor = loader.load_from_file(bundled(2))
    image = torch.rand(1, 3, 9, 7, generator=torch.Generator().manual_seed(0))
    ours = mma.upscale(image, scale=2, model=bundled(2), tile=None, device="cpu", dtype="fp32")
    theirs = descriptor(image)
    assert theirs.shape == ours.shape == (1, 3, 18, 14)
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_half_precision_it_claims_runs_on_the_cpu(
    loader: spandrel.ModelLoader, dtype: torch.dtype, tolerance: float
) -> None:
    descriptor = loader.load_from_file(bundled(2))
    image = torch.rand(1, 3, 8, 6, generator=torch.Generator().manual_seed(2))
    full = descriptor(image)
    half = descriptor.to(dtype)(image.to(dtype))
    assert half.dtype == dtype and torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), full, rtol=0, atol=tolerance)


def test_authors_basicsr_pth_loads_its_ema_weights(loader: spandrel.ModelLoader, tmp_path: Path) -> None:
    torch.manual_seed(0)
    ema = build_model("mma-t", 3, num_block=2).state_dict()  # MMA-T's widths, fewer blocks: a fast test
    raw = {key: value + 1 for key, value in ema.items()}
    path = tmp_path / "MMA_T_x3.pth"
    torch.save({"params": raw, "params_ema": ema}, path)  # BasicSR's layout: tensors only, safe to load
    descriptor = loader.load_from_file(path)
    assert descriptor.architecture.id == "MMA" and descriptor.scale == 3
    assert all(torch.equal(descriptor.model.state_dict()[key], ema[key]) for key in ema)
    image = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(1))
    ours = mma.upscale(image, scale=3, model=path, tile=None, device="cpu", dtype="fp32")
    torch.testing.assert_close(descriptor(image), ours, rtol=0, atol=1e-5)


def test_distributed_prefix_is_stripped(loader: spandrel.ModelLoader, tmp_path: Path) -> None:
    state = build_model("mma-t", 4, num_block=1).state_dict()
    path = tmp_path / "ddp.pth"
    torch.save({"params": {f"module.{key}": value for key, value in state.items()}}, path)
    descriptor = loader.load_from_file(path)
    assert descriptor.scale == 4 and descriptor.tags[:3] == ["custom", "48nf", "1nb"]


@pytest.mark.parametrize(
    ("variant", "scale", "mixer"),
    [
        *((variant, scale, "vim+ca") for variant in VARIANTS for scale in SCALES),
        ("mma-t", 2, "vim"),  # the paper's ablations, which this library also trains
        ("mma-t", 3, "cnn+ca"),
    ],
)
def test_every_variant_scale_and_mixer_is_detected(variant: str, scale: int, mixer: str) -> None:
    config = mma.MMAConfig.named(variant, scale, mixer=mixer)
    assert mma_spandrel.is_mma_state_dict(expected_shapes(config))  # shapes only, on the meta device


# Architectures spandrel builds with its defaults (on the meta device: names and shapes, no memory).
_FOREIGN = ["Compact", "ESRGAN", "OmniSR", "DITN", "PLKSR", "DCTLSA", "SeemoRe"]


@pytest.mark.parametrize("arch_id", _FOREIGN)
def test_other_architectures_are_not_claimed(registry: spandrel.ArchRegistry, arch_id: str) -> None:
    architecture = registry[arch_id].architecture
    network_class = getattr(sys.modules[type(architecture).__module__], arch_id)
    with torch.device("meta"):
        state = network_class().state_dict()
    assert not mma_spandrel.is_mma_state_dict(state)
    assert next(s for s in registry.architectures("detection") if s.detect(state)).architecture.id == arch_id


def test_swinir_with_mma_like_top_level_names_stays_swinir(registry: spandrel.ArchRegistry) -> None:
    # SwinIR shares conv_first / conv_after_body / upsample.0 / conv_last with MMA: the block names decide.
    from spandrel.architectures.SwinIR import SwinIR

    network = SwinIR(
        img_size=16,
        embed_dim=12,
        depths=[1],
        num_heads=[2],
        window_size=4,
        upscale=2,
        upsampler="pixelshuffle",
    )
    state = network.state_dict()
    assert not mma_spandrel.is_mma_state_dict(state)
    assert registry.load(state).architecture.id == "SwinIR"


def test_lookalikes_and_random_dicts_are_not_claimed() -> None:
    state = expected_shapes(mma.MMAConfig.named("mma-t", 2))
    no_mixer = {key: value for key, value in state.items() if ".attn." not in key}
    assert not mma_spandrel.is_mma_state_dict(no_mixer)
    assert not mma_spandrel.is_mma_state_dict({"weight": torch.zeros(3), "bias": torch.zeros(3)})
    assert not mma_spandrel.is_mma_state_dict({key: 0 for key in state})  # right names, no tensors
    odd_upsampler = dict(state, **{"upsample.0.weight": torch.zeros(5, 48, 3, 3, device="meta")})
    assert not mma_spandrel.is_mma_state_dict(odd_upsampler)
