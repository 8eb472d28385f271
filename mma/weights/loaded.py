"""A loaded model and where it came from: the one loader behind `mma.load_model`, hubconf and integrations.

Why a descriptor rather than a bare `nn.Module` (as spandrel's model descriptors): everything that runs the
network needs the same few facts — its scale, its config, which precisions it supports, how much memory an
input pixel costs — and a user needs to know which weights are loaded (registry name and tag, file, Hub
repository and revision, sha256). One loader makes it from every kind of source, so no caller guesses.

This is the top of the weights line: hub (files on the Hub) <- registry (named models) <- this module, which
reads every kind of name. Names may say what they are with a scheme, as timm's `hf-hub:owner/name@revision`
does: `hf-hub:` (or `hub:`) for a Hub repository, `file:` (or `folder:`) for a local path, `registry:` for a
registry name, so that `str(WeightsSource)` loads the same weights again. A name without a scheme is read
the way it always was: a file, a Hub-layout folder, a registry name, a Hub repository id, in that order.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from mma.errors import CheckpointError, ConfigError, WeightsNotFoundError
from mma.model import MMA, MMAConfig
from mma.runtime import dtype_name
from mma.weights import hub
from mma.weights.loading import model_from_file
from mma.weights.registry import fetch_entry, is_registry_name, lookup_name, scale_mismatch

SourceKind = Literal["registry", "file", "folder", "hub", "module"]

# Peak inference memory per input pixel, per feature channel, in float32: a part at input resolution and a
# part that grows with the output (scale^2). Fitted to the peak-memory rows of docs/benchmarks.md ("Whole
# network": MMA-T x2/x4 and MMA-B x2, CPU) with a 25% margin, so an automatic tile fits what it expects.
_BYTES_AT_INPUT = 4 * 12.1
_BYTES_PER_OUTPUT_PIXEL = 4 * 2.14
_MARGIN = 1.25

PRECISIONS = ("fp32", "fp16", "bf16")


def memory_per_pixel(config: MMAConfig | None) -> int:
    """Estimated peak bytes an input pixel costs in a float32 forward of the network `config` describes."""
    features = config.num_feat if config is not None else 64
    scale = config.scale if config is not None else 4
    return int(features * (_BYTES_AT_INPUT + _BYTES_PER_OUTPUT_PIXEL * scale * scale) * _MARGIN)


def declared_precisions(network: nn.Module) -> tuple[str, ...]:
    """The precisions a network runs in, as it declares them in a `precisions` attribute (as spandrel's
    descriptors declare supports_half), else all three: the MMA network runs in each on every scan backend,
    which keeps its parameters and states in fp32. The engine enforces it; the spandrel integration reports it."""
    return tuple(getattr(network, "precisions", None) or PRECISIONS)


def checked_precisions(precisions: tuple[str, ...]) -> tuple[str, ...]:
    """`precisions`, or a ConfigError when it names an unknown one or leaves out fp32 (the fallback)."""
    if set(precisions) - set(PRECISIONS) or "fp32" not in precisions:
        raise ConfigError(f"precisions must include fp32 and come from {', '.join(PRECISIONS)}: {precisions}")
    return tuple(precisions)


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights came from, enough to load the same weights again and to prove which."""

    kind: SourceKind
    location: str  # the registry name with its tag, the file or folder, or the Hub repository id
    tag: str | None = None
    revision: str | None = None
    sha256: str | None = None  # of the weights file that was read

    def __str__(self) -> str:
        where = self.location + (f"@{self.revision}" if self.revision else "")
        return f"{self.kind}:{where}"


class LoadedModel:
    """An MMA network plus the facts every runner needs. Calling it runs the network.

    `to(device, dtype)` returns a placed copy and leaves this one as it is, so a cached model is never
    moved under another caller's feet.
    """

    def __init__(
        self,
        network: nn.Module,
        source: WeightsSource,
        scale: int | None = None,
        precisions: tuple[str, ...] | None = None,
    ) -> None:
        own = getattr(network, "scale", None)
        if own is None and scale is None:
            raise ConfigError("this model does not say its scale: pass scale=")
        self.network = network
        self.source = source
        self.scale = int(own if own is not None else scale)
        self.precisions = checked_precisions(precisions or declared_precisions(network))

    def supports(self, dtype: torch.dtype) -> bool:
        """Whether the network may run in `dtype` (see `precisions`)."""
        return dtype_name(dtype) in self.precisions

    @property
    def config(self) -> MMAConfig | None:
        config = getattr(self.network, "config", None)
        return config if isinstance(config, MMAConfig) else None

    @property
    def sha256(self) -> str | None:
        return self.source.sha256

    @property
    def bytes_per_pixel(self) -> int:
        return memory_per_pixel(self.config)

    @property
    def device(self) -> torch.device:
        parameter = next(self.network.parameters(), None)
        return parameter.device if parameter is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        parameter = next(self.network.parameters(), None)
        return parameter.dtype if parameter is not None else torch.float32

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> LoadedModel:
        """This model on `device`/`dtype` in eval mode: itself when it already is, else a copy (a caller's
        module in training mode is left training)."""
        device = torch.device(device)
        dtype = dtype or self.dtype
        here = self.device
        if (here.type, here.index, self.dtype) == (
            device.type,
            device.index,
            dtype,
        ) and not self.network.training:
            return self
        moved = copy.deepcopy(self.network).to(device=device, dtype=dtype).eval()
        return LoadedModel(moved, self.source, self.scale, self.precisions)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.network(image)

    def __repr__(self) -> str:
        config = self.config
        what = (
            f"{config.variant} x{config.scale}" if config else f"{type(self.network).__name__} x{self.scale}"
        )
        return f"LoadedModel({what}, {self.source}, {self.device}, {self.dtype})"


def load(
    source: str | os.PathLike[str] | nn.Module | LoadedModel,
    scale: int | None = None,
    *,
    force_download: bool = False,
) -> LoadedModel:
    """A LoadedModel on the CPU in float32 from any source.

    Sources: a LoadedModel or nn.Module (wrapped as they are); a weights file (.safetensors, the authors'
    BasicSR .pth); a Hub-layout folder (model.safetensors, its config.json honoured); a registry name with an
    optional scale and tag (`mma-t`, `mma-t-x4`, `mma-t-x4.t91-bsds200`; `scale` picks the registry scale,
    default 4); a Hub repository id `owner/name[@revision]`. A `scale` that disagrees with the weights is a
    ConfigError rather than a silently different result.
    """
    if isinstance(source, LoadedModel):
        loaded = source
    elif isinstance(source, nn.Module):
        loaded = LoadedModel(source, WeightsSource("module", type(source).__name__), scale)
    else:
        loaded = _load_named(os.fspath(source), scale, force_download)
    check_scale_matches(loaded, scale)
    return loaded


def check_scale_matches(loaded: LoadedModel, scale: int | None) -> None:
    """ConfigError when the caller asked for another scale than the model has."""
    if scale is not None and int(scale) != loaded.scale:
        raise scale_mismatch(loaded.source.location, loaded.scale, int(scale))


@dataclass(frozen=True)
class Located:
    """A name turned into local files: the weights, the config.json that defines the network (if any), and
    the source to report."""

    weights: Path
    config: Path | None
    source: WeightsSource


# Suffixes that mark a name as a file path even when it also looks like `owner/name`.
FILE_SUFFIXES = frozenset({".safetensors", ".pth", ".pt", ".bin", ".ckpt"})

# Explicit schemes -> the kind of name they announce. `hf-hub:` is timm's spelling; the others are what
# `str(WeightsSource)` writes, so a printed source loads again.
SCHEMES: dict[str, SourceKind] = {
    "hf-hub": "hub",
    "hub": "hub",
    "file": "file",
    "folder": "file",
    "registry": "registry",
}


def split_scheme(text: str) -> tuple[SourceKind | None, str]:
    """`hf-hub:owner/name` -> ("hub", "owner/name"); a name without a known scheme -> (None, name)."""
    scheme, colon, rest = text.partition(":")
    kind = SCHEMES.get(scheme.strip().lower()) if colon else None
    return (kind, rest) if kind is not None else (None, text)


def local_path(name: str | os.PathLike[str]) -> Path | None:
    """The local file or folder a name means, when it means one that exists (for caches that watch files)."""
    kind, text = split_scheme(os.fspath(name))
    if kind not in (None, "file"):
        return None
    path = Path(text).expanduser()
    return path if path.exists() and (kind == "file" or _reads_as_path(path, text)) else None


def _reads_as_path(path: Path, text: str) -> bool:
    """Whether a name without a scheme means the local path: a file, a Hub-layout folder, or any other folder
    unless the name is a registry model's (a stray folder named like a model does not hide it)."""
    if path.is_file():
        return True
    return path.is_dir() and ((path / hub.WEIGHTS_NAME).is_file() or not is_registry_name(text))


def locate(name: str | os.PathLike[str], scale: int | None = None, *, force: bool = False) -> Located:
    """The one reading of a model name (downloading when needed; `force` downloads again). With a scheme,
    exactly what it says; without one, in order: a weights file; a Hub-layout folder; a registry name with
    optional scale and tag (`scale`, default 4, picks the registry scale); a Hub repository id
    `owner/name[@revision]`."""
    kind, text = split_scheme(os.fspath(name))
    if kind == "file":
        return _locate_path(Path(text).expanduser(), text)
    if kind == "registry":
        return _locate_entry(text, scale, force)
    if kind == "hub":
        parsed = hub.parse_repo_id(text)
        if parsed is None:
            raise ConfigError(f"{text}: not a Hub repository id (owner/name[@revision])")
        return _locate_repo(*parsed, force)
    path = Path(text).expanduser()
    if _reads_as_path(path, text):
        return _locate_path(path, text)
    if is_registry_name(text):
        return _locate_entry(text, scale, force)
    parsed = hub.parse_repo_id(text)
    if parsed is not None and path.suffix.lower() not in FILE_SUFFIXES:
        return _locate_repo(*parsed, force)
    if "/" in text or os.sep in text or path.suffix.lower() in FILE_SUFFIXES:
        raise WeightsNotFoundError(f"{text}: no such weights file")
    lookup_name(text, scale)  # not a registry name: raises the registry's "unknown model" error
    raise WeightsNotFoundError(f"{text}: no such model")


def _locate_path(path: Path, text: str) -> Located:
    """A weights file, or a Hub-layout folder (its config.json defines the network)."""
    if path.is_file():
        return Located(path, None, WeightsSource("file", str(path), sha256=hub.sha256_of(path)))
    if path.is_dir():
        weights = path / hub.WEIGHTS_NAME
        if not weights.is_file():
            raise CheckpointError(f"{path}: a directory without {hub.WEIGHTS_NAME}")
        return Located(
            weights, path / hub.CONFIG_NAME, WeightsSource("folder", str(path), sha256=hub.sha256_of(weights))
        )
    raise WeightsNotFoundError(f"{text}: no such weights file")


def _locate_entry(text: str, scale: int | None, force: bool) -> Located:
    """A registry model: its bundled folder, else its pinned Hub file. A printed source may carry the pin
    (`registry:mma-t-x4.tag@<commit>`), which must be the entry's."""
    text, _, revision = text.partition("@")
    entry = lookup_name(text, scale)
    if revision and (entry.hub is None or entry.hub.revision != revision):
        pinned = entry.hub.revision if entry.hub else "none"
        raise ConfigError(f"{entry.full_name} is pinned to revision {pinned}, not {revision}")
    weights = fetch_entry(entry, force=force)
    bundled = entry.bundled_file() is not None
    revision = entry.hub.revision if entry.hub and not bundled else None
    source = WeightsSource("registry", entry.full_name, entry.tag, revision, hub.sha256_of(weights))
    return Located(weights, weights.parent / hub.CONFIG_NAME if bundled else None, source)


def _locate_repo(repo_id: str, revision: str | None, force: bool) -> Located:
    """A Hub repository in the ModelHubMixin layout (its config.json fetched too, so it then loads offline)."""
    weights = hub.download(repo_id, hub.WEIGHTS_NAME, revision=revision, force=force)
    source = WeightsSource("hub", repo_id, None, revision, hub.sha256_of(weights))
    config = hub.download_optional(repo_id, hub.CONFIG_NAME, revision=revision, force=force)
    return Located(weights, config, source)


def _load_named(text: str, scale: int | None, force: bool) -> LoadedModel:
    found = locate(text, scale, force=force)
    config = hub.read_config(found.config) if found.config is not None and found.config.is_file() else None
    return LoadedModel(model_from_file(found.weights, config=config), found.source)


def resolve_weights(name: str | os.PathLike[str], scale: int | None = 4, *, force: bool = False) -> Path:
    """The local path of the weights `name` means at `scale` (downloading them when needed; `force` downloads
    again). The scale only selects registry entries: a file or repository holds whatever scale it holds."""
    return locate(name, scale, force=force).weights


def from_pretrained(
    repo_or_dir: str | os.PathLike[str],
    *,
    revision: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> MMA:
    """A network from a local directory or Hub repo in the ModelHubMixin layout; config.json defines it.
    The same loader as `mma.load_model` (which returns the network with its source and sha256)."""
    kind, text = split_scheme(os.fspath(repo_or_dir))
    local = Path(text).expanduser()
    if kind == "registry" or (kind is None and not local.is_dir() and hub.parse_repo_id(text) is None):
        raise WeightsNotFoundError(f"{repo_or_dir}: neither a directory nor a Hub repository id (owner/name)")
    is_repo = kind == "hub" or (kind is None and not local.is_dir())
    name = os.fspath(repo_or_dir) + (f"@{revision}" if revision and is_repo else "")
    network = load(name).network
    assert isinstance(network, MMA)  # every named source is built by model_from_file
    return network.to(device=device, dtype=dtype).eval()
