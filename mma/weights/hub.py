"""Weights on the Hugging Face Hub: downloads and uploads through huggingface_hub, checksums, and the
ModelHubMixin layout.

huggingface_hub owns the cache, the token, `HF_ENDPOINT`, `HF_HUB_OFFLINE` and revision pins; this module only
turns its errors into ours (an unreachable Hub in seconds, not after its retries), refuses a file whose sha256
is not the published one, and checks a folder before it is published. A repository in the layout of
`ModelHubMixin` holds `config.json` (the MMAConfig) beside `model.safetensors`, and its model card
`README.md` states the sha256 of the weights.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re
import socket
import threading
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import _CACHED_NO_EXIST, hf_hub_download, try_to_load_from_cache
from huggingface_hub import constants as hub_constants
from huggingface_hub.errors import (
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from mma.errors import (
    CheckpointError,
    ChecksumError,
    ConfigError,
    OutputError,
    RepositoryFileMissingError,
    WeightsNotFoundError,
)
from mma.fileio import atomic_write
from mma.model import MMA, MMAConfig
from mma.weights.checkpoint import save_safetensors
from mma.weights.loading import model_from_file

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"

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
    unreachable = None if hub_constants.HF_HUB_OFFLINE else _unreachable(hub_constants.ENDPOINT)
    try:
        if unreachable is not None:  # no retries to wait through: the cache, or one line at once
            cached = None if force else try_to_load_from_cache(repo_id, filename, revision=revision)
            if not isinstance(cached, str):
                raise WeightsNotFoundError(
                    f"{where}: the Hub at {hub_constants.ENDPOINT} cannot be reached ({unreachable}) and the "
                    f"file is not in the Hugging Face cache ({hub_constants.HF_HUB_CACHE}); connect and run "
                    "`mma download` once, pass a local weights file, or set HF_HUB_OFFLINE=1 to use the cache alone"
                )
            local = Path(cached)
        else:
            local = Path(hf_hub_download(repo_id, filename, revision=revision, force_download=force))
    except LocalEntryNotFoundError:
        reason = "HF_HUB_OFFLINE is set" if hub_constants.HF_HUB_OFFLINE else "the Hub cannot be reached"
        raise WeightsNotFoundError(
            f"{where} is not in the local Hugging Face cache and {reason}; "
            "run `mma download` once while online, or pass a local weights file"
        ) from None
    except RepositoryNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such repository on the Hub (or it is private)") from None
    except RevisionNotFoundError:
        raise WeightsNotFoundError(f"{where}: no such revision in the repository") from None
    except RemoteEntryNotFoundError:
        raise RepositoryFileMissingError(f"{where}: no such file in the repository") from None
    except HFValidationError as exc:
        raise ConfigError(f"{where}: not a valid Hub repository id ({exc})") from None
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise WeightsNotFoundError(f"{where}: download failed ({_first_line(exc)})") from None
    if sha256 is not None:
        verify_sha256(local, sha256, where)
    return local


# How long the Hub gets to accept a connection: a reachable one does in well under a second, while
# huggingface_hub's own retries wait about 25 s before giving up on a refused connection.
REACH_TIMEOUT_S = 3.0


@functools.cache
def _unreachable(endpoint: str) -> str | None:
    """Why `endpoint` cannot be reached right now (refused, no route, unknown host, no answer in time), or None
    when it accepts a TCP connection or a proxy stands between (only a real request can judge that one).
    Asked once per process, before the first download, so that an offline machine fails in seconds."""
    parts = urllib.parse.urlsplit(endpoint)
    host = parts.hostname
    if not host or urllib.request.getproxies().get(parts.scheme) and not urllib.request.proxy_bypass(host):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    answer: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=REACH_TIMEOUT_S).close()
            answer.append(None)
        except socket.gaierror as exc:
            answer.append(f"unknown host {host}: {exc.strerror or exc}")
        except OSError as exc:
            answer.append(exc.strerror or type(exc).__name__)

    probe = threading.Thread(target=connect, daemon=True)  # name lookups have no timeout of their own
    probe.start()
    probe.join(REACH_TIMEOUT_S)
    return answer[0] if answer else f"no answer from {host} within {REACH_TIMEOUT_S:g} s"


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


def download_optional(
    repo_id: str, filename: str, *, revision: str | None = None, force: bool = False
) -> Path | None:
    """`download`, or None when the repository has no such file (also offline, once the Hub has said so:
    huggingface_hub caches that answer)."""
    if not force and try_to_load_from_cache(repo_id, filename, revision=revision) is _CACHED_NO_EXIST:
        return None
    try:
        return download(repo_id, filename, revision=revision, force=force)
    except RepositoryFileMissingError:
        return None


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


def read_config(path: Path) -> MMAConfig:
    """The MMAConfig stored in a `config.json`."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: model config must be a JSON object")
    return MMAConfig.from_dict(data)


# The card's statement of which weights it describes; `mma push` adds it, or rewrites it when stale.
_CARD_SHA256 = "`" + WEIGHTS_NAME + "` sha256: `{}`"
_CARD_SHA256_LINE = re.compile(r"^`" + re.escape(WEIGHTS_NAME) + r"` sha256: `[^`]*`[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Published:
    """What `push_folder` committed: where, the commit id that pins it, and the weights' sha256."""

    repo_id: str
    revision: str
    commit: str
    url: str
    sha256: str
    card_updated: bool  # the uploaded card got its sha256 line from mma (the folder itself is never changed)


def card_with_sha256(card: str | None, sha256: str, title: str) -> str:
    """The model card to publish: `card` with its sha256 line refreshed or appended, or a minimal card when
    the folder has none, so a repository always says which weights file it describes."""
    line = _CARD_SHA256.format(sha256)
    if card is None:
        card = (
            f"---\nlibrary_name: mma-sr\ntags: [super-resolution, mamba, image-upscaling]\n---\n\n# {title}\n\n"
            "MMA super-resolution weights (Vision Mamba with channel attention) for the mma-sr library.\n"
        )
    if _CARD_SHA256_LINE.search(card):
        return _CARD_SHA256_LINE.sub(line, card)
    return f"{card.rstrip()}\n\n## Checksum\n\n{line}\n"


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool = False,
    message: str | None = None,
    token: str | None = None,
) -> Published:
    """Publish a Hub-layout folder (`model.safetensors`, `config.json`, `README.md`) as one commit.

    Everything is checked before the first request: the weights load into the network `config.json`
    describes, and the card states their sha256 (added to the uploaded copy when missing or stale; the folder
    is left as it is). The repository is created when missing (private with `private`), and the branch
    `revision` from main when it does not exist yet. Returns the commit id, which pins exactly these files.
    """
    folder = Path(folder)
    repo_id, revision = _push_target(repo_id, revision)
    weights, sha256, card, title = _checked_folder(folder)
    uploaded_card = card_with_sha256(card, sha256, title)
    if hub_constants.HF_HUB_OFFLINE:
        raise ConfigError("HF_HUB_OFFLINE is set: unset it to publish to the Hub")
    from huggingface_hub import CommitOperationAdd, HfApi, get_token

    token = token or get_token()
    if not token:
        raise ConfigError(
            "no Hugging Face token: log in with `hf auth login` or set HF_TOKEN to a token that "
            "may write to " + repo_id
        )
    api = HfApi(token=token)
    operations = [
        CommitOperationAdd(WEIGHTS_NAME, weights),
        CommitOperationAdd(CONFIG_NAME, folder / CONFIG_NAME),
        CommitOperationAdd(CARD_NAME, uploaded_card.encode("utf-8")),
    ]
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        info = api.create_commit(
            repo_id,
            operations,
            revision=revision,
            commit_message=message or f"Upload {title} ({WEIGHTS_NAME} sha256 {sha256[:12]})",
        )
    except Exception as exc:  # huggingface_hub's and its HTTP client's errors, translated below
        translated = _push_error(exc, repo_id, folder)
        if translated is exc:
            raise
        raise translated from None
    return Published(repo_id, revision, info.oid, info.commit_url, sha256, uploaded_card != card)


def _push_target(repo_id: str, revision: str | None) -> tuple[str, str]:
    """(repository, branch) from `owner/name[@branch]` and --revision, which must not disagree."""
    parsed = parse_repo_id(repo_id)
    if parsed is None:
        raise ConfigError(f"{repo_id}: not a Hub repository id (owner/name)")
    if parsed[1] and revision and parsed[1] != revision:
        raise ConfigError(f"{repo_id}: names revision {parsed[1]} but --revision says {revision}")
    return parsed[0], revision or parsed[1] or "main"


def _checked_folder(folder: Path) -> tuple[Path, str, str | None, str]:
    """The weights, their sha256, the folder's card (None without one) and a title, once the weights load
    into the network config.json describes."""
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder")
    weights, config_file, card_file = folder / WEIGHTS_NAME, folder / CONFIG_NAME, folder / CARD_NAME
    for needed in (weights, config_file):
        if not needed.is_file():
            raise CheckpointError(
                f"{folder}: no {needed.name} (a Hub-layout folder holds {WEIGHTS_NAME} and "
                f"{CONFIG_NAME}; `mma.weights.save_pretrained` writes both)"
            )
    config = read_config(config_file)
    model_from_file(weights, config=config)  # refuses weights that do not fit config.json, before any upload
    try:
        card = card_file.read_text(encoding="utf-8") if card_file.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{card_file}: unreadable model card ({exc})") from None
    return weights, sha256_of(weights), card, f"{config.variant.upper()} x{config.scale}"


def _push_error(exc: Exception, repo_id: str, folder: Path) -> Exception:
    """One line for what went wrong on the way to the Hub; anything unexpected stays as it is (a bug)."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status == 401:
        return ConfigError(
            f"{repo_id}: the Hub refused the token (401 Unauthorized); log in again with "
            "`hf auth login` or set HF_TOKEN"
        )
    if status == 403:
        return OutputError(f"{repo_id}: this token may not write to this repository (403 Forbidden)")
    if isinstance(exc, RepositoryNotFoundError):
        return OutputError(f"{repo_id}: no such repository, and it could not be created ({_first_line(exc)})")
    if isinstance(exc, HfHubHTTPError):
        return OutputError(f"{repo_id}: the Hub refused the upload ({_first_line(exc)})")
    if isinstance(exc, _connection_errors()):
        return OutputError(
            f"{repo_id}: the Hub at {hub_constants.ENDPOINT} cannot be reached ({_first_line(exc)})"
        )
    if isinstance(exc, ValueError) and "README.md" in str(exc):
        return CheckpointError(f"{folder / CARD_NAME}: the Hub refused the card ({_first_line(exc)})")
    return exc


def _connection_errors() -> tuple[type[BaseException], ...]:
    """Connection failures of the HTTP client this huggingface_hub uses: requests' are OSErrors, while
    httpx's and httpx2's are not."""
    errors: list[type[BaseException]] = [OSError]
    for name in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(name).TransportError)
        except (ImportError, AttributeError):
            continue
    return tuple(errors)
