"""Checkpoint I/O: the authors' BasicSR .pth, safetensors with metadata, the one-line misfit error, and safety."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mma.errors import CheckpointError, ConfigError, OutputError
from mma.fileio import atomic_write
from mma.model import MMAConfig, build_model, infer_config
from mma.weights import load_checkpoint, load_weights_into, model_from_file, save_safetensors
from mma.weights.checkpoint import encode_metadata

TINY = {"num_feat": 8, "num_block": 1}


def tiny_model(scale: int = 2, seed: int = 0, **overrides: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mma-t", scale, **{**TINY, **overrides}).eval()


def save_authors_pth(
    path: Path, state: dict[str, torch.Tensor], *, key: str | None = "params_ema", prefix: str = "module."
) -> Path:
    """A checkpoint as BasicSR writes it: {"params": ..., "params_ema": ...}, keys maybe DDP-prefixed."""
    prefixed = {prefix + name: tensor for name, tensor in state.items()}
    if key is None:
        torch.save(prefixed, path)
    else:
        decoy = {name: torch.full_like(tensor, 7.0) for name, tensor in prefixed.items()}
        torch.save({"params": decoy, key: prefixed} if key == "params_ema" else {key: prefixed}, path)
    return path


def spec_keys(spec_dir: Path, name: str) -> dict[str, tuple[int, ...]]:
    lines = (spec_dir / f"state_dict_{name}.txt").read_text().splitlines()
    rows = (line.split("\t") for line in lines if line and not line.startswith("#"))
    return {key: tuple(int(n) for n in shape.strip("()").split(",") if n.strip()) for key, shape in rows}


@pytest.mark.parametrize(("key", "prefix"), [("params_ema", "module."), ("params", ""), (None, "module.")])
def test_authors_pth_picks_the_right_weights_and_strips_the_ddp_prefix(tmp_path, key, prefix):
    state = tiny_model().state_dict()
    loaded, metadata = load_checkpoint(
        save_authors_pth(tmp_path / "net_g.pth", state, key=key, prefix=prefix)
    )
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[name], state[name]) for name in state)  # params_ema, not the decoy params
    assert metadata == {"file_format": "pth", "state_key": key}


def test_pth_to_safetensors_and_back_gives_identical_outputs(tmp_path):
    model = tiny_model(scale=3, seed=1)
    pth = save_authors_pth(tmp_path / "authors.pth", model.state_dict())
    from_pth = model_from_file(pth)  # no metadata: variant and scale come from the shapes
    assert from_pth.config == infer_config(model.state_dict())
    safetensors = save_safetensors(from_pth, tmp_path / "converted.safetensors", source="test")
    from_safetensors = model_from_file(safetensors)
    image = torch.rand(1, 3, 7, 5, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(image)
        assert expected.shape == (1, 3, 21, 15)
        assert torch.equal(from_pth(image), expected)
        assert torch.equal(from_safetensors(image), expected)


def test_full_size_authors_checkpoint_keys_match_the_spec(tmp_path, spec_dir):
    state = build_model("mma-t", 2).state_dict()
    loaded, _ = load_checkpoint(save_authors_pth(tmp_path / "mma-t_x2.pth", state))
    expected = spec_keys(spec_dir, "mma-t_x2")
    assert {name: tuple(t.shape) for name, t in loaded.items()} == expected
    config = infer_config(loaded)
    assert (config.variant, config.scale, config.num_feat, config.num_block) == ("mma-t", 2, 48, 12)
    converted, metadata = load_checkpoint(save_safetensors(loaded, tmp_path / "mma-t_x2.safetensors"))
    assert {name: tuple(t.shape) for name, t in converted.items()} == expected
    assert (metadata["variant"], metadata["scale"]) == ("mma-t", 2)


class _RunsCode:
    """Pickles to "call os.system(command)": what a malicious checkpoint does on an unrestricted torch.load."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the raw pickle's protocol
@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle", "inside-params"])
def test_malicious_pickle_is_refused_without_running(tmp_path, container):
    marker = tmp_path / "payload-ran"
    payload = _RunsCode(f"touch {marker}")
    path = tmp_path / "evil.pth"
    if container == "raw-pickle":
        path.write_bytes(pickle.dumps(payload))
    elif container == "inside-params":
        torch.save({"params": {"conv_first.weight": torch.zeros(1), "evil": payload}}, path)
    else:
        torch.save(payload, path)
    with pytest.raises(CheckpointError, match="evil.pth: refused by the safe loader") as error:
        load_checkpoint(path)
    assert not marker.exists()  # (the same file under torch.load(weights_only=False) does create it)
    if container != "raw-pickle":  # the loader's own reason is passed on
        assert "system" in str(error.value)


def test_safetensors_metadata_round_trip(tmp_path):
    model = tiny_model(scale=4)
    path = save_safetensors(
        model, tmp_path / "w.safetensors", data="T91+BSDS200", iterations=1200, validation={"Set5": 30.1}
    )
    state, metadata = load_checkpoint(path)
    assert metadata["format"] == "pt"  # the safetensors convention other tools check
    assert metadata["format_version"] == 1
    assert (metadata["variant"], metadata["scale"]) == ("mma-t", 4)
    assert MMAConfig.from_dict(metadata["config"]) == model.config
    assert (metadata["data"], metadata["iterations"], metadata["validation"]) == (
        "T91+BSDS200",
        1200,
        {"Set5": 30.1},
    )
    assert all(torch.equal(state[name], value) for name, value in model.state_dict().items())


def test_provenance_may_not_overwrite_format_fields(tmp_path):
    with pytest.raises(ConfigError, match="scale"):
        save_safetensors(tiny_model(), tmp_path / "w.safetensors", scale=3)
    with pytest.raises(ConfigError, match="JSON"):
        save_safetensors(tiny_model(), tmp_path / "w.safetensors", when=object())
    assert not list(tmp_path.iterdir())


def test_saving_weights_with_a_config_they_do_not_fit_is_refused(tmp_path):
    wrong = MMAConfig.named("mma-t", 4, **TINY)
    with pytest.raises(CheckpointError, match="do not fit mma-t x4"):
        save_safetensors(tiny_model(scale=2).state_dict(), tmp_path / "w.safetensors", wrong)
    assert not list(tmp_path.iterdir())


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "w.safetensors"
    target.write_bytes(b"previous weights")

    def write_half_then_fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OutputError, match="No space left"):
        atomic_write(target, write_half_then_fail)
    assert target.read_bytes() == b"previous weights"
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]  # no temporary file left behind


def test_saved_files_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        path = save_safetensors(tiny_model(), tmp_path / "w.safetensors")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, e.g. when shipped or shared


def test_save_into_a_missing_directory_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="does not exist"):
        save_safetensors(tiny_model(), tmp_path / "absent" / "w.safetensors")


def _valid_bytes(tmp_path: Path) -> bytes:
    return save_safetensors(tiny_model(), tmp_path / "valid.safetensors").read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage", "huge-header", "bad-json"])
def test_corrupt_safetensors_is_a_checkpoint_error(tmp_path, damage):
    valid = _valid_bytes(tmp_path)
    data = {
        "truncated": valid[: len(valid) // 2],
        "empty": b"",
        "garbage": os.urandom(256),
        "huge-header": (2**40).to_bytes(8, "little") + b"{}",
        "bad-json": (5).to_bytes(8, "little") + b"{nope",
    }[damage]
    path = tmp_path / "broken.safetensors"
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match="broken.safetensors: not a valid safetensors file"):
        load_checkpoint(path)


def test_truncated_or_foreign_pth_is_a_checkpoint_error(tmp_path):
    whole = save_authors_pth(tmp_path / "whole.pth", tiny_model().state_dict()).read_bytes()
    (tmp_path / "cut.pth").write_bytes(whole[: len(whole) // 3])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "cut.pth")
    torch.save({"params": {"conv_first.weight": torch.zeros(1), "step": 3}}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match="1 entries are not tensors"):
        load_checkpoint(tmp_path / "mixed.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="expected a dict of weights, found list"):
        load_checkpoint(tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="no such weights file"):
        load_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="a directory, not a weights file"):
        load_checkpoint(tmp_path)
    (tmp_path / "garbage.pth").write_bytes(bytes(range(256)))
    with pytest.raises(CheckpointError, match="garbage.pth: "):
        load_checkpoint(tmp_path / "garbage.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="text.pth: "):
        load_checkpoint(tmp_path / "text.pth")


def test_misfit_names_expected_and_found_in_one_line():
    x2 = tiny_model(scale=2).state_dict()
    with pytest.raises(CheckpointError) as wrong_scale:
        load_weights_into(tiny_model(scale=4), x2)
    message = str(wrong_scale.value)
    assert "do not fit mma-t x4 (num_feat=8, num_block=1)" in message
    assert "the file holds custom x2 (num_feat=8, num_block=1)" in message
    assert "missing 2: upsample.2.weight, upsample.2.bias" in message
    assert "\n" not in message

    with pytest.raises(CheckpointError) as wrong_width:
        load_weights_into(tiny_model(num_feat=16), {**x2, "extra.weight": torch.zeros(1)})
    message = str(wrong_width.value)
    assert "unexpected 1: extra.weight" in message
    assert "conv_first.weight: expected (16, 3, 3, 3), found (8, 3, 3, 3)" in message
    assert "more" in message  # long lists are cut, with a count of the rest


def test_misfit_with_a_non_mma_state_dict():
    with pytest.raises(CheckpointError, match="not a recognisable MMA checkpoint"):
        load_weights_into(tiny_model(), {"fc.weight": torch.zeros(2, 2)})


def test_file_whose_metadata_contradicts_its_tensors(tmp_path):
    """A wrong variant/scale weights file: metadata claims x4, tensors are x2."""
    model = tiny_model(scale=2)
    path = tmp_path / "liar.safetensors"
    save_file(
        dict(model.state_dict()), str(path), metadata=encode_metadata(MMAConfig.named("mma-t", 4, **TINY), {})
    )
    with pytest.raises(
        CheckpointError, match=r"liar.safetensors: weights do not fit mma-t x4 .* holds custom x2"
    ):
        model_from_file(path)


def test_model_from_file_device_dtype_and_explicit_config(tmp_path):
    model = tiny_model(scale=2)
    path = save_safetensors(model, tmp_path / "w.safetensors")
    loaded = model_from_file(path, dtype=torch.float64)
    assert not loaded.training
    assert all(p.dtype == torch.float64 for p in loaded.parameters())
    with pytest.raises(CheckpointError, match="do not fit mma-t x3"):
        model_from_file(path, config=MMAConfig.named("mma-t", 3, **TINY))
