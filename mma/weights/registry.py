"""Which weights a model name means: (variant, scale) -> a file inside the package or a pinned file on the Hub.

A name resolves, in order, to: an existing local file or ModelHubMixin directory; a registry entry (the bundled
file, else its Hub file, downloaded and checked against its sha256); a Hub repository id `owner/name[@revision]`.
Entries carry no Hub source until one is actually published: no URL or checksum is ever guessed here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mma.errors import CheckpointError, ConfigError, WeightsNotFoundError
from mma.model import SCALES, VARIANTS
from mma.weights import hub

# Weights shipped inside the wheel: one Hub-style folder per model, `<variant>-x<scale>/` holding
# model.safetensors, config.json and the model card README.md (so a folder can be pushed to the Hub as it is).
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

# Suffixes that mark a name as a file path even when it also looks like `owner/name`.
_FILE_SUFFIXES = frozenset({".safetensors", ".pth", ".pt", ".bin", ".ckpt"})


@dataclass(frozen=True)
class HubFile:
    """A published weights file, pinned: the revision fixes the content and the sha256 proves it."""

    repo_id: str
    revision: str
    sha256: str
    filename: str = hub.WEIGHTS_NAME


@dataclass(frozen=True)
class WeightsEntry:
    """The sources of one (variant, scale) model."""

    variant: str
    scale: int
    hub: HubFile | None = None

    @property
    def name(self) -> str:
        return f"{self.variant}-x{self.scale}"

    def bundled_file(self) -> Path | None:
        """The file shipped in the package, when this build carries one."""
        path = BUNDLED_DIR / self.name / hub.WEIGHTS_NAME
        return path if path.is_file() else None


# No MMA weights are published on the Hub yet, and the authors' own release is not on the Hub: entries gain a
# HubFile only when a real repository, revision and checksum exist.
REGISTRY: dict[tuple[str, int], WeightsEntry] = {
    (variant, scale): WeightsEntry(variant, scale) for variant in VARIANTS for scale in SCALES
}


def lookup(variant: str, scale: int) -> WeightsEntry:
    """The registry entry of a named model, or a ConfigError listing what exists."""
    key = variant.lower()
    if key not in VARIANTS:
        raise ConfigError(f"unknown model {variant!r}: choose one of {', '.join(VARIANTS)}, a weights file "
                          "or a Hub repository id (owner/name)")
    entry = REGISTRY.get((key, int(scale)))
    if entry is None:
        scales = ", ".join(str(s) for v, s in sorted(REGISTRY) if v == key)
        raise ConfigError(f"{key} has no x{scale} model: available scales are {scales}")
    return entry


def resolve_weights(name: str | os.PathLike[str], scale: int = 4, *, force: bool = False) -> Path:
    """The local path of the weights `name` means at `scale` (downloading them when needed).

    `force` re-downloads a Hub file even when it is cached. The scale only selects registry entries: a file or
    repository holds whatever scale it holds, which its metadata or shapes tell.
    """
    text = os.fspath(name)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    if (path / hub.WEIGHTS_NAME).is_file():
        return path / hub.WEIGHTS_NAME
    if path.is_dir() and text.lower() not in VARIANTS:  # a stray folder named like a model does not hide it
        raise CheckpointError(f"{path}: a directory without {hub.WEIGHTS_NAME}")
    parsed = hub.parse_repo_id(text)
    names_a_file = path.suffix.lower() in _FILE_SUFFIXES
    if parsed is not None and not names_a_file:
        return hub.download(parsed[0], hub.WEIGHTS_NAME, revision=parsed[1], force=force)
    if names_a_file or "/" in text or os.sep in text:
        raise WeightsNotFoundError(f"{text}: no such weights file")
    return fetch_entry(lookup(text, scale), force=force)


def fetch_entry(entry: WeightsEntry, *, force: bool = False) -> Path:
    """The bundled file, else the Hub file verified against its sha256, else a WeightsNotFoundError that says
    what to do instead."""
    bundled = entry.bundled_file()
    if bundled is not None:
        return bundled
    if entry.hub is not None:
        source = entry.hub
        return hub.download(source.repo_id, source.filename, revision=source.revision, sha256=source.sha256,
                            force=force)
    raise WeightsNotFoundError(
        f"no weights for {entry.variant} x{entry.scale}: none ship with this package and none are published "
        f"on the Hub; convert the authors' checkpoint with `mma convert AUTHORS.pth {entry.name}.safetensors` "
        f"and pass that file as the model"
    )


def source_of(entry: WeightsEntry) -> str:
    """Where the entry's weights come from, in words for `mma models`."""
    if entry.bundled_file() is not None:
        return "bundled"
    if entry.hub is not None:
        return f"hub:{entry.hub.repo_id}@{entry.hub.revision}"
    return "none (convert the authors' .pth)"


def is_available_offline(entry: WeightsEntry) -> bool:
    """True when loading the entry needs no network: bundled, or its Hub file already cached."""
    if entry.bundled_file() is not None:
        return True
    source = entry.hub
    return source is not None and hub.is_cached(source.repo_id, source.filename, source.revision)
