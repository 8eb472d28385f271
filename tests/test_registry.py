"""The registry: what a model name means, bundled weights, and errors that say what to do."""

from __future__ import annotations

import re

import pytest
import torch

from mma.errors import CheckpointError, ConfigError, WeightsNotFoundError
from mma.model import SCALES, VARIANTS, build_model
from mma.weights import (
    REGISTRY,
    model_from_file,
    registry,
    resolve_weights,
    save_pretrained,
    save_safetensors,
)


@pytest.fixture
def bundled_dir(tmp_path, monkeypatch):
    """A stand-in for the package's bundled/ folder, so the mechanism is tested before real weights ship."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    monkeypatch.setattr(registry, "BUNDLED_DIR", folder)
    return folder


def test_every_variant_and_scale_has_an_entry():
    assert set(REGISTRY) == {(variant, scale) for variant in VARIANTS for scale in SCALES}


def test_hub_sources_are_fully_pinned():
    """An entry names a real commit and checksum or no Hub source at all: nothing half-known or guessed."""
    for entry in REGISTRY.values():
        if entry.hub is not None:
            assert re.fullmatch(r"[0-9a-f]{40}", entry.hub.revision), entry
            assert re.fullmatch(r"[0-9a-f]{64}", entry.hub.sha256), entry


def test_bundled_weights_are_found_and_load(bundled_dir):
    torch.manual_seed(0)
    model = build_model("mma-t", 3, num_feat=8, num_block=1)
    (bundled_dir / "mma-t-x3").mkdir()
    save_safetensors(model, bundled_dir / "mma-t-x3" / "model.safetensors")
    path = resolve_weights("MMA-T", 3)  # names are case-insensitive
    assert path == bundled_dir / "mma-t-x3" / "model.safetensors"
    assert registry.source_of(REGISTRY["mma-t", 3]) == "bundled"
    assert registry.is_available_offline(REGISTRY["mma-t", 3])
    loaded = model_from_file(path)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_name_without_weights_says_what_to_do(bundled_dir):
    with pytest.raises(WeightsNotFoundError) as error:
        resolve_weights("mma-b", 4)
    message = str(error.value)
    assert "no weights for mma-b x4" in message
    assert "mma convert AUTHORS.pth mma-b-x4.safetensors" in message
    assert not registry.is_available_offline(REGISTRY["mma-b", 4])


def test_unknown_names_and_scales_are_config_errors():
    with pytest.raises(ConfigError, match="unknown model 'mma-x': choose one of mma-t, mma-b"):
        resolve_weights("mma-x", 4)
    with pytest.raises(ConfigError, match="unsupported scale 5: MMA is defined for scales 2, 3, 4"):
        resolve_weights("mma-t", 5)


def test_local_files_and_directories(tmp_path):
    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_feat=8, num_block=1)
    weights = save_safetensors(model, tmp_path / "mine.safetensors")
    assert resolve_weights(weights, 4) == weights  # a file holds whatever scale it holds
    assert resolve_weights(str(weights), 2) == weights
    pretrained = save_pretrained(model, tmp_path / "pretrained")
    assert resolve_weights(pretrained) == pretrained / "model.safetensors"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="a directory without model.safetensors"):
        resolve_weights(tmp_path / "empty")


def test_a_folder_named_like_a_model_does_not_hide_it(tmp_path, monkeypatch, bundled_dir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mma-t").mkdir()
    with pytest.raises(WeightsNotFoundError, match="no weights for mma-t x2"):
        resolve_weights("mma-t", 2)


@pytest.mark.parametrize("name", ["missing.pth", "weights/mma-t_x2.safetensors", "./nothing/here"])
def test_missing_files_are_not_mistaken_for_hub_repos(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry.hub, "download", _no_network)
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        resolve_weights(name, 2)


def test_repo_ids_go_to_the_hub_with_their_revision(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []
    fetched = tmp_path / "fetched"
    fetched.write_bytes(b"weights")
    monkeypatch.setattr(
        registry.hub, "download", lambda *args, **kwargs: calls.append((args, kwargs)) or fetched
    )
    assert resolve_weights("someone/mma-t-x2@v1.0", 2) == fetched
    resolve_weights("someone/mma-t-x2", 2, force=True)
    assert calls == [  # the config.json too, so the repository then loads offline
        (("someone/mma-t-x2", "model.safetensors"), {"revision": "v1.0", "force": False}),
        (("someone/mma-t-x2", "config.json"), {"revision": "v1.0", "force": False}),
        (("someone/mma-t-x2", "model.safetensors"), {"revision": None, "force": True}),
        (("someone/mma-t-x2", "config.json"), {"revision": None, "force": True}),
    ]


def _no_network(*args, **kwargs):
    raise AssertionError("a local path must never reach the Hub")


def test_explicit_schemes_say_what_a_name_is(tmp_path, monkeypatch, bundled_dir):
    """`file:`/`folder:`, `registry:` and timm's `hf-hub:` (or `hub:`) skip the guessing; the forms without a
    scheme keep working."""
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_feat=8, num_block=1)
    weights = save_safetensors(model, tmp_path / "mine.safetensors")
    pretrained = save_pretrained(model, tmp_path / "mma-t")  # a folder named like a registry model
    assert resolve_weights(f"file:{weights}") == weights
    assert resolve_weights("file:mma-t").resolve() == pretrained / "model.safetensors"  # the folder, as asked
    assert resolve_weights(f"folder:{pretrained}") == pretrained / "model.safetensors"
    with pytest.raises(WeightsNotFoundError, match="no such weights file"):
        resolve_weights("file:mma-t-x2")
    with pytest.raises(WeightsNotFoundError, match="no weights for mma-t x2"):
        resolve_weights("registry:mma-t-x2", None)
    (bundled_dir / "mma-t-x2").mkdir()
    save_safetensors(model, bundled_dir / "mma-t-x2" / "model.safetensors")
    assert resolve_weights("registry:mma-t", 2) == bundled_dir / "mma-t-x2" / "model.safetensors"
    calls = []
    monkeypatch.setattr(
        registry.hub, "download", lambda *args, **kwargs: calls.append((args, kwargs)) or weights
    )
    assert resolve_weights("hf-hub:someone/mma-t@v1") == weights  # a repo id that looks like a model name
    resolve_weights("hub:someone/other")
    assert [(args[0], kwargs["revision"]) for args, kwargs in calls[::2]] == [
        ("someone/mma-t", "v1"),
        ("someone/other", None),
    ]
    with pytest.raises(ConfigError, match="not a Hub repository id"):
        resolve_weights("hf-hub:no-owner")


def test_a_printed_source_loads_the_same_weights_again(tmp_path, bundled_dir):
    from mma.weights.loaded import load

    torch.manual_seed(0)
    model = build_model("mma-t", 2, num_feat=8, num_block=1)
    (bundled_dir / "mma-t-x2").mkdir()
    save_safetensors(model, bundled_dir / "mma-t-x2" / "model.safetensors")
    save_pretrained(model, tmp_path / "folder")
    for name in ("mma-t-x2", tmp_path / "folder", tmp_path / "folder" / "model.safetensors"):
        first = load(name)
        again = load(str(first.source))
        assert again.source == first.source and again.sha256 == first.sha256
    with pytest.raises(ConfigError, match="mma-t-x2.t91-bsds200 is pinned to revision none, not abc"):
        load("registry:mma-t-x2@abc")


def test_the_scale_mismatch_is_worded_once():
    assert str(registry.scale_mismatch("mma-t-x2", 2, 4)) == (
        "mma-t-x2 upscales x2, not x4: ask for scale 2 or another model"
    )
    with pytest.raises(ConfigError, match="^mma-t-x2 upscales x2, not x4: ask for scale 2"):
        resolve_weights("mma-t-x2", 4)
