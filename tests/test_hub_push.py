"""`mma push`: a Hub-layout folder published through huggingface_hub's upload API to the local test Hub
(tests/hub_server.py), then loaded back with `mma.load_model` from a fresh cache; and each way it fails, in
one line, before or without touching anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from hub_server import WRITE_TOKEN, run_python
from huggingface_hub import constants as hub_constants
from typer.testing import CliRunner

from mma.cli import app
from mma.errors import CheckpointError, ConfigError, OutputError
from mma.model import build_model
from mma.weights import save_pretrained
from mma.weights.hub import card_with_sha256, push_folder

CARD = "---\nlicense: mit\nlibrary_name: mma-sr\n---\n\n# A tiny test model\n\nFor tests only.\n"

# Loads each repository id with mma.load_model in a fresh process: [sha256 of the weights read, config].
LOADER = (
    "import json, sys, mma\n"
    "print(json.dumps([[m.source.sha256, m.config.to_dict()] for m in map(mma.load_model, sys.argv[1:])]))"
)


def folder_with(path: Path, seed: int, card: str | None = CARD) -> Path:
    torch.manual_seed(seed)
    save_pretrained(build_model("mma-t", 2, num_feat=8, num_block=1), path)
    if card is not None:
        (path / "README.md").write_text(card, encoding="utf-8")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_hub(hub, monkeypatch):
    """The `hub` fixture, with this process's huggingface_hub pointed at it (it read HF_ENDPOINT on import)."""
    monkeypatch.setattr(hub_constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    return hub


def test_push_then_load_from_a_fresh_cache(local_hub, tmp_path):
    hub = local_hub
    first = folder_with(tmp_path / "first", seed=0)
    card_before = (first / "README.md").read_bytes()
    pushed = run_python(
        ["-m", "mma", "push", str(first), "me/tiny", "--private", "--message", "first weights"],
        hub,
        tmp_path / "home-push",
        token=WRITE_TOKEN,
    )
    assert pushed.returncode == 0, pushed.stderr
    files = hub.head("me/tiny")
    assert sorted(files) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == (first / "model.safetensors").read_bytes()
    assert files["config.json"] == (first / "config.json").read_bytes()
    card = files["README.md"].decode()
    assert (
        card.startswith(CARD.rstrip())
        and f"`model.safetensors` sha256: `{sha(first / 'model.safetensors')}`" in card
    )
    assert (first / "README.md").read_bytes() == card_before  # the folder is an input: never changed
    assert hub.visibility["me/tiny"] == "private"
    commit = hub.branches["me/tiny", "main"]
    assert hub.messages["me/tiny", commit] == "first weights"
    assert f"commit {commit}" in pushed.stdout and f"--model me/tiny@{commit}" in pushed.stdout
    assert any(r.startswith("POST /api/models/me/tiny/preupload/main") for r in hub.requests)

    second = folder_with(tmp_path / "second", seed=1, card=None)  # no card: a minimal one is published
    published = push_folder(second, "me/tiny", revision="v1", token=WRITE_TOKEN)
    assert (published.repo_id, published.revision, published.card_updated) == ("me/tiny", "v1", True)
    assert hub.branches["me/tiny", "v1"] == published.commit and hub.branches["me/tiny", "main"] == commit
    assert "# MMA-T x2" in hub.head("me/tiny", "v1")["README.md"].decode()
    assert not (second / "README.md").exists()
    again = push_folder(first, "me/tiny@v1", token=WRITE_TOKEN)  # the branch exists now; `@` names it too
    assert hub.head("me/tiny", "v1")["model.safetensors"] == (first / "model.safetensors").read_bytes()

    loader = run_python(
        ["-c", LOADER, "me/tiny", f"me/tiny@{published.commit}", f"me/tiny@{again.commit}"],
        hub,
        tmp_path / "home-fresh",
    )
    assert loader.returncode == 0, loader.stderr
    loaded = json.loads(loader.stdout.strip().splitlines()[-1])
    config = json.loads((first / "config.json").read_text())
    assert loaded == [
        [sha(first / "model.safetensors"), config],
        [sha(second / "model.safetensors"), config],
        [sha(first / "model.safetensors"), config],
    ]


def test_card_states_the_sha256_once():
    digest, stale = "a" * 64, "b" * 64
    added = card_with_sha256(CARD, digest, "MMA-T x2")
    assert added == CARD.rstrip() + f"\n\n## Checksum\n\n`model.safetensors` sha256: `{digest}`\n"
    assert card_with_sha256(added, digest, "MMA-T x2") == added  # already right: unchanged
    refreshed = card_with_sha256(added.replace(digest, stale), digest, "MMA-T x2")
    assert refreshed == added and stale not in refreshed
    minimal = card_with_sha256(None, digest, "MMA-B x4")
    assert minimal.startswith("---\nlibrary_name: mma-sr\n") and "# MMA-B x4" in minimal and digest in minimal


def test_a_folder_is_checked_before_any_request(local_hub, tmp_path):
    good = folder_with(tmp_path / "good", seed=0)
    with pytest.raises(CheckpointError, match="no such folder"):
        push_folder(tmp_path / "absent", "me/x", token=WRITE_TOKEN)
    no_config = folder_with(tmp_path / "no-config", seed=0)
    (no_config / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        push_folder(no_config, "me/x", token=WRITE_TOKEN)
    mismatch = folder_with(tmp_path / "mismatch", seed=0)
    (mismatch / "config.json").write_text(
        json.dumps({**json.loads((good / "config.json").read_text()), "num_feat": 16})
    )
    with pytest.raises(CheckpointError):  # the weights do not fit the network config.json describes
        push_folder(mismatch, "me/x", token=WRITE_TOKEN)
    with pytest.raises(ConfigError, match="not a Hub repository id"):
        push_folder(good, "just-a-name", token=WRITE_TOKEN)
    with pytest.raises(ConfigError, match="names revision a but --revision says b"):
        push_folder(good, "me/x@a", revision="b", token=WRITE_TOKEN)
    assert local_hub.requests == []


def test_token_and_network_failures_are_one_line(local_hub, tmp_path, monkeypatch):
    folder = folder_with(tmp_path / "w", seed=0)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(
        ConfigError, match="no Hugging Face token: log in with `hf auth login` or set HF_TOKEN"
    ):
        push_folder(folder, "me/x")
    with pytest.raises(ConfigError, match=r"me/x: the Hub refused the token \(401 Unauthorized\)"):
        push_folder(folder, "me/x", token="hf_wrong")
    assert not local_hub.exists("me/x")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ConfigError, match="HF_HUB_OFFLINE is set"):
        push_folder(folder, "me/x", token=WRITE_TOKEN)

    local_hub.shutdown()
    local_hub.server_close()  # nothing listens on that port any more
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(OutputError, match=f"me/x: the Hub at {local_hub.url} cannot be reached"):
        push_folder(folder, "me/x", token=WRITE_TOKEN)


def test_cli_errors_are_one_line(local_hub, tmp_path, monkeypatch):
    folder = folder_with(tmp_path / "w", seed=0)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    for args, start in (
        ([folder, "me/x"], "error: no Hugging Face token"),
        ([tmp_path / "absent", "me/x"], f"error: {tmp_path / 'absent'}: no such folder"),
    ):
        result = CliRunner().invoke(app, ["push", *map(str, args)])
        assert result.exit_code == 1
        assert result.stderr.startswith(start) and result.stderr.count("\n") == 1, result.stderr
    assert local_hub.requests == []
