"""Weights on the Hugging Face Hub: downloads through huggingface_hub, checksums, and the ModelHubMixin layout.

huggingface_hub owns the cache, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and revision pins; this module only turns its
errors into ours and refuses a file whose sha256 is not the published one. A repository in the layout of
`ModelHubMixin` holds `config.json` (the MMAConfig) beside `model.safetensors`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import constants as hub_constants
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from mma.errors import CheckpointError, ChecksumError, ConfigError, WeightsNotFoundError
from mma.fileio import atomic_write
from mma.model import MMA, MMAConfig
from mma.weights.checkpoint import save_safetensors
from mma.weights.loading import model_from_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"

# owner/name, optionally @revision (a branch, tag or commit); the Hub's own naming rules are stricter.
_REPO_ID = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<revision>[\w./-]+))?$")


def parse_repo_id(text: str) -> tuple[str, str | None] | None:
    """`owner/name[@revision]` -> (repo id, revision), or None when `text` is not shaped like one."""
    match = _REPO_ID.match(text)
    return (match["repo"], match["revision"]) if match else None


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks so large weights do not fill memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    repo_id: str,
    filename: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    force: bool = False,
) -> Path:
    """A file from the Hub cache (fetched when missing), verified against `sha256` before anyone loads it."""
    where = f"{repo_id}/{filename}" + (f"@{revision}" if revision else "")
    try:
        local = Path(hf_hub_download(repo_id, filename, revision=revision, force_download=force))
    except LocalEntryNotFoundError:
        reason = ("HF_HUB_OFFLINE is set" if hub_constants.HF_HUB_OFFLINE else "the Hub cannot be reached")
        raise WeightsNotFoundError(
            f"{where} is not in the local Hugging Face cache and {reason}; "
            "run `mma download` once while online, or pass a local weights file"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such repository on the Hub (or it is private)") from None
    except RevisionNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such revision in the repository") from None
    except RemoteEntryNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such file in the repository") from None
    except HFValidationError as exc:
        raise ConfigError(f"{where}: not a valid Hub repository id ({exc})") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"{where}: download failed ({_first_line(exc)})") from None
    if sha256 is not None:
        verify_sha256(local, sha256, where)
    return local


def verify_sha256(path: Path, expected: str, label: str) -> None:
    """Raise ChecksumError unless the file's sha256 is `expected` (so a tampered or damaged file is never loaded)."""
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{label}: sha256 mismatch (expected {expected.lower()}, got {actual}); the file was not loaded; "
            "fetch it again with `mma download ... --force`"
        )


def is_cached(repo_id: str, filename: str, revision: str | None = None) -> bool:
    """Whether the file is in the local cache already (no network)."""
    return isinstance(try_to_load_from_cache(repo_id, filename, revision=revision), str)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def save_pretrained(model: MMA, directory: str | os.PathLike[str], **provenance: Any) -> Path:
    """Write `config.json` + `model.safetensors` (ModelHubMixin layout), ready for `hf upload` or `from_pretrained`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_safetensors(model, directory / WEIGHTS_NAME, model.config, **provenance)
    text = json.dumps(model.config.to_dict(), indent=2) + "\n"
    atomic_write(directory / CONFIG_NAME, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return directory


def from_pretrained(
    repo_or_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> MMA:
    """A model from a local directory or Hub repo in the ModelHubMixin layout; config.json defines the network."""
    local = Path(repo_or_dir)
    if local.is_dir():
        weights, config_file = local / WEIGHTS_NAME, local / CONFIG_NAME
        if not weights.is_file():
            raise CheckpointError(f"{local}: no {WEIGHTS_NAME} in this directory")
    else:
        parsed = parse_repo_id(os.fspath(repo_or_dir))
        if parsed is None:
            raise WeightsNotFoundError(f"{repo_or_dir}: neither a directory nor a Hub repository id (owner/name)")
        repo_id, revision = parsed[0], revision or parsed[1]
        weights = download(repo_id, WEIGHTS_NAME, revision=revision)
        config_file = download(repo_id, CONFIG_NAME, revision=revision)
    config = read_config(config_file) if config_file.is_file() else None
    return model_from_file(weights, device=device, dtype=dtype, config=config)


def read_config(path: Path) -> MMAConfig:
    """The MMAConfig stored in a `config.json`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: model config must be a JSON object")
    return MMAConfig.from_dict(data)
