"""Weights from the Hub, through the real huggingface_hub download path, served from 127.0.0.1 (no internet).

The server and the fresh-process runner are in hub_server.py (shared with the upload tests).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from hub_server import FakeHub, run_python

from mma.errors import CheckpointError, ChecksumError
from mma.model import build_model
from mma.weights import from_pretrained, save_pretrained
from mma.weights.hub import parse_repo_id, sha256_of, verify_sha256

# Runs operations in a fresh process and prints one JSON result per operation: {"ok": ...} or the MMAError.
DRIVER = r"""
import json, sys
from mma.errors import MMAError
from mma.weights import from_pretrained, registry, resolve_weights
from mma.weights.hub import sha256_of

registry.BUNDLED_DIR = registry.BUNDLED_DIR / "absent"  # a build without bundled weights: the Hub path
results = []
for op in json.loads(sys.argv[1]):
    try:
        if op["kind"] in ("entry", "status"):  # a registry entry with a Hub source, as a real release adds
            entry = registry.WeightsEntry("mma-t", 2, registry.HubFile(**op["hub"]))
            registry.REGISTRY["mma-t", 2] = entry
            if op["kind"] == "status":  # what `mma models` shows, without downloading
                out = [registry.source_of(entry), registry.is_available_offline(entry)]
            else:
                out = sha256_of(resolve_weights("mma-t", 2))
        elif op["kind"] == "resolve":
            out = sha256_of(resolve_weights(op["name"], 2))
        else:
            out = from_pretrained(op["name"]).config.to_dict()
        results.append({"ok": out})
    except MMAError as exc:
        results.append({"error": type(exc).__name__, "message": str(exc)})
print(json.dumps(results))
"""


def drive(ops: list[dict], hub: FakeHub, home: Path, *, offline: bool = False) -> list[dict]:
    done = run_python(["-c", DRIVER, json.dumps(ops)], hub, home, offline=offline)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def tiny(scale: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mma-t", scale, num_feat=8, num_block=1)


def pretrained_files(model: torch.nn.Module, folder: Path) -> dict[str, bytes]:
    save_pretrained(model, folder)
    return {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_then_offline_from_the_cache_with_revision_pins(hub, tmp_path):
    model = tiny(2, seed=0)
    files = pretrained_files(model, tmp_path / "tiny")
    hub.publish("mma-test/tiny", files)
    old = pretrained_files(tiny(2, seed=1), tmp_path / "old")["model.safetensors"]
    new = pretrained_files(tiny(2, seed=2), tmp_path / "new")["model.safetensors"]
    pinned = hub.publish("mma-test/pinned", {"model.safetensors": old})
    hub.publish("mma-test/pinned", {"model.safetensors": new})  # main moves on; the pin must not
    entry = {"repo_id": "mma-test/pinned", "revision": pinned, "sha256": sha(old)}
    source = f"hub:mma-test/pinned@{pinned}"
    ops = [
        {"kind": "status", "hub": entry},
        {"kind": "pretrained", "name": "mma-test/tiny"},
        {"kind": "resolve", "name": "mma-test/tiny"},
        {"kind": "entry", "hub": entry},
        {"kind": "status", "hub": entry},
        {"kind": "resolve", "name": "mma-test/pinned"},
        {"kind": "resolve", "name": f"mma-test/pinned@{pinned}"},
    ]
    expected = [
        {"ok": model.config.to_dict()},
        {"ok": sha(files["model.safetensors"])},
        {"ok": sha(old)},
        {"ok": [source, True]},
        {"ok": sha(new)},
        {"ok": sha(old)},
    ]
    home = tmp_path / "hf-home"
    assert drive(ops, hub, home) == [
        {"ok": [source, False]},
        *expected,
    ]  # not offline-ready before the download
    assert any(request.startswith("GET /mma-test/pinned/resolve/") for request in hub.requests)

    hub.requests.clear()
    never = {"kind": "resolve", "name": "mma-test/never-fetched"}
    offline = drive([*ops, never], hub, home, offline=True)
    assert offline[:-1] == [{"ok": [source, True]}, *expected]
    assert offline[-1]["error"] == "WeightsNotFoundError"
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in offline[-1]["message"]
    assert hub.requests == []  # offline means not one request


def test_sha256_mismatch_is_refused_even_from_the_cache(hub, tmp_path):
    data = pretrained_files(tiny(2, seed=0), tmp_path / "w")["model.safetensors"]
    commit = hub.publish("mma-test/checked", {"model.safetensors": data})
    good = {"kind": "entry", "hub": {"repo_id": "mma-test/checked", "revision": commit, "sha256": sha(data)}}
    bad = {"kind": "entry", "hub": {**good["hub"], "sha256": "0" * 64}}
    home = tmp_path / "hf-home"
    first = drive([bad, good], hub, home)
    assert first[0]["error"] == "ChecksumError"
    assert f"sha256 mismatch (expected {'0' * 64}, got {sha(data)})" in first[0]["message"]
    assert first[1] == {"ok": sha(data)}

    (blob,) = (home / "hub" / "models--mma-test--checked" / "blobs").iterdir()
    blob.write_bytes(data[:-4] + b"XXXX")  # the cached copy is damaged afterwards
    damaged = drive([good], hub, home, offline=True)
    assert damaged[0]["error"] == "ChecksumError"


def test_missing_repository_revision_and_file(hub, tmp_path):
    hub.publish("mma-test/weights-only", {"model.safetensors": b"not needed"})
    ops = [
        {"kind": "resolve", "name": "mma-test/absent"},
        {"kind": "resolve", "name": "mma-test/weights-only@no-such-tag"},
        {
            "kind": "pretrained",
            "name": "mma-test/weights-only",
        },  # no config.json: the weights must say it all
    ]
    results = drive(ops, hub, tmp_path / "hf-home")
    assert [r.get("error") for r in results] == ["WeightsNotFoundError"] * 2 + ["CheckpointError"]
    assert "mma-test/absent/model.safetensors: no such repository" in results[0]["message"]
    assert "no such revision" in results[1]["message"]
    assert "not a valid safetensors file" in results[2]["message"]


def test_mma_download_command_against_the_hub(hub, tmp_path):
    data = pretrained_files(tiny(4, seed=3), tmp_path / "w")["model.safetensors"]
    hub.publish("mma-test/cli", {"model.safetensors": data})
    home = tmp_path / "hf-home"
    done = run_python(["-m", "mma", "download", "mma-test/cli"], hub, home)
    assert done.returncode == 0, done.stderr
    assert sha256_of(done.stdout.strip()) == sha(data)
    missing = run_python(["-m", "mma", "download", "mma-test/absent"], hub, home)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("error: mma-test/absent/")


def test_save_pretrained_layout_and_from_pretrained_directory(tmp_path):
    model = tiny(3, seed=0).eval()
    folder = save_pretrained(model, tmp_path / "out", data="test")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "config.json").read_text()) == model.config.to_dict()
    loaded = from_pretrained(folder)
    assert loaded.config == model.config
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable model config"):
        from_pretrained(folder)
    with pytest.raises(CheckpointError, match="a directory without model.safetensors"):
        from_pretrained(tmp_path)


def test_sha256_helpers(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))  # several read chunks
    digest = sha256_of(path)
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    verify_sha256(path, digest.upper(), "blob")
    with pytest.raises(ChecksumError, match="blob: sha256 mismatch"):
        verify_sha256(path, "f" * 64, "blob")


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("owner/name", ("owner/name", None)),
        ("owner/name@v1.0", ("owner/name", "v1.0")),
        ("org-x/mma_t.x2@" + "a" * 40, ("org-x/mma_t.x2", "a" * 40)),
        ("mma-t", None),
        ("/abs/path", None),
        ("./rel/path", None),
        ("a/b/c", None),
    ],
)
def test_parse_repo_id(text, parsed):
    assert parse_repo_id(text) == parsed


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released), so a connection there is refused."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_hub_is_one_line_at_once_and_the_cache_still_serves(hub, tmp_path):
    from types import SimpleNamespace

    from PIL import Image

    data = pretrained_files(tiny(2, seed=5), tmp_path / "w")["model.safetensors"]
    hub.publish("mma-test/away", {"model.safetensors": data})
    home = tmp_path / "hf-home"
    assert run_python(["-m", "mma", "download", "mma-test/away"], hub, home).returncode == 0
    closed = SimpleNamespace(url=f"http://127.0.0.1:{_closed_port()}")
    image = tmp_path / "in.png"
    Image.new("RGB", (6, 5)).save(image)
    missing = run_python(["-m", "mma", "upscale", str(image), "-m", "mma-test/elsewhere"], closed, home)
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1, missing.stderr  # no "Retrying in 8s" lines from huggingface_hub
    assert missing.stderr.startswith(
        "error: mma-test/elsewhere/model.safetensors: the Hub at http://127.0.0.1:"
    )
    assert "cannot be reached" in missing.stderr and "HF_HUB_OFFLINE=1" in missing.stderr
    assert str(home / "hub") in missing.stderr  # where the cache is
    cached = run_python(["-m", "mma", "upscale", str(image), "-m", "mma-test/away", "-q"], closed, home)
    assert cached.returncode == 0 and cached.stderr == "", cached.stderr
    assert (tmp_path / "in_x2.png").is_file()


def test_an_unreachable_hub_is_never_retried(monkeypatch, tmp_path):
    """No request goes out once the endpoint refuses a connection: the retries were what took 25 s."""
    from mma.errors import WeightsNotFoundError
    from mma.weights import hub as hub_module

    monkeypatch.setattr(hub_module.hub_constants, "ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setattr(hub_module.hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module.hub_constants, "HF_HUB_CACHE", str(tmp_path / "cache"))

    def no_requests(*args, **kwargs):
        raise AssertionError("huggingface_hub was asked to download from an unreachable Hub")

    monkeypatch.setattr(hub_module, "hf_hub_download", no_requests)
    monkeypatch.setattr(hub_module, "try_to_load_from_cache", lambda *args, **kwargs: None)
    hub_module._unreachable.cache_clear()
    try:
        with pytest.raises(WeightsNotFoundError, match=r"cannot be reached \(.+\) and the file is not in"):
            hub_module.download("owner/name", "model.safetensors")
    finally:
        hub_module._unreachable.cache_clear()


def test_reachability_is_left_to_the_request_behind_a_proxy(hub, monkeypatch):
    from mma.weights import hub as hub_module

    hub_module._unreachable.cache_clear()
    assert hub_module._unreachable(hub.url) is None  # listening
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")  # never contacted here
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert hub_module._unreachable(f"http://127.0.0.1:{_closed_port()}") is None
    hub_module._unreachable.cache_clear()
