"""The placed-model cache behind `mma.load_model` (mma.weights.cache): one instance per model and placement,
whatever spelling of a local name reaches it, and a changed file read again."""

from __future__ import annotations

import os

import pytest
import torch

from mma.model import build_model
from mma.weights import registry, save_pretrained, save_safetensors
from mma.weights.cache import clear, load_cached


@pytest.fixture()
def tiny_file(tmp_path):
    torch.manual_seed(0)
    return save_safetensors(build_model("mma-t", 2, num_feat=8, num_block=1), tmp_path / "tiny.safetensors")


def test_every_spelling_of_a_local_file_shares_one_instance(tiny_file, monkeypatch):
    clear()
    cpu = torch.device("cpu")
    first = load_cached(tiny_file, 2, cpu, torch.float32)
    monkeypatch.chdir(tiny_file.parent)
    assert load_cached("tiny.safetensors", 2, cpu, torch.float32) is first
    assert load_cached(f"file:{tiny_file}", 2, cpu, torch.float32) is first
    assert load_cached(tiny_file, None, cpu, torch.float32) is not first  # another question, another entry
    assert load_cached(tiny_file, 2, cpu, torch.float64).dtype == torch.float64
    stat = tiny_file.stat()
    os.utime(tiny_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert load_cached(tiny_file, 2, cpu, torch.float32) is not first


def test_a_stray_folder_named_like_a_model_does_not_hide_it(tmp_path, monkeypatch):
    """The cache reads names as the loader does: an empty `mma-t-x2/` folder is not the model `mma-t-x2`."""
    clear()
    bundled = tmp_path / "bundled"
    torch.manual_seed(0)
    save_pretrained(build_model("mma-t", 2, num_feat=8, num_block=1), bundled / "mma-t-x2")
    monkeypatch.setattr(registry, "BUNDLED_DIR", bundled)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mma-t-x2").mkdir()
    loaded = load_cached("mma-t-x2", None, torch.device("cpu"), torch.float32)
    assert loaded.source.kind == "registry" and loaded.scale == 2
