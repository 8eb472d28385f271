"""Which weights a model name means: (variant, scale, tag) -> a file inside the package or a pinned Hub file.

Names follow timm's pretrained tags: `mma-t` (with a scale given apart), `mma-t-x4`, or `mma-t-x4.t91-bsds200`;
a name without a tag means the model's default tag. An entry's weights are the bundled file, else its Hub file,
downloaded and checked against its sha256. Entries carry no Hub source until one is actually published: no URL
or checksum is ever guessed here. Reading any other kind of name (files, folders, Hub ids) is
`mma.weights.loaded`'s job, one layer up.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from mma.errors import CheckpointError, ConfigError, WeightsNotFoundError
from mma.model import MMA, SCALES, VARIANTS, MMAConfig, check_scale, check_variant
from mma.weights import hub

# Weights shipped inside the wheel: one Hub-style folder per model, `<variant>-x<scale>/` holding
# model.safetensors, config.json and the model card README.md (so a folder can be pushed to the Hub as it is).
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"
# Beside them, the quality measured when they were bundled (weights/bundle.py writes it, `mma models` shows it):
# {"scale": S, "protocol": "...", "datasets": {"Set5": {"psnr": .., "ssim": .., "bicubic_psnr": .., ...}}},
# with the model card's "hardware" and "batch_and_patch" words, so the card renders from this file.
SCORES_NAME = "scores.json"


@dataclass(frozen=True)
class HubFile:
    """A published weights file, pinned: the revision fixes the content and the sha256 proves it."""

    repo_id: str
    revision: str
    sha256: str
    filename: str = hub.WEIGHTS_NAME


# The training data of the weights this project trains and bundles: T91 + BSDS200 ("291 images").
BUNDLED_TAG = "t91-bsds200"

# `mma-t`, `mma-t-x4`, `mma-t-x4.t91-bsds200` (the variant is checked against VARIANTS afterwards).
_NAME = re.compile(r"^(?P<variant>mma-[a-z]+)(?:-x(?P<scale>\d+))?(?:\.(?P<tag>[a-z0-9][a-z0-9_-]*))?$")


@dataclass(frozen=True)
class WeightsEntry:
    """The sources of one (variant, scale, tag) model; `tag` names what the weights were trained on."""

    variant: str
    scale: int
    hub: HubFile | None = None
    tag: str = BUNDLED_TAG

    @property
    def name(self) -> str:
        return f"{self.variant}-x{self.scale}"

    @property
    def full_name(self) -> str:
        return f"{self.name}.{self.tag}"

    def bundled_file(self) -> Path | None:
        """The file shipped in the package, when this build carries one."""
        path = BUNDLED_DIR / self.name / hub.WEIGHTS_NAME
        return path if path.is_file() else None

    def bundled_scores(self) -> dict[str, dict[str, float]]:
        """Measured quality of the bundled weights per data set ({} when none ship or none were measured)."""
        path = BUNDLED_DIR / self.name / SCORES_NAME
        if self.bundled_file() is None or not path.is_file():
            return {}
        try:
            return dict(json.loads(path.read_text(encoding="utf-8"))["datasets"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable scores file ({exc})") from None


# No MMA weights are published on the Hub yet, and the authors' own release is not on the Hub: entries gain a
# HubFile only when a real repository, revision and checksum exist.
# Every tagged entry by full name; REGISTRY holds each (variant, scale)'s default tag.
TAGGED: dict[str, WeightsEntry] = {
    entry.full_name: entry
    for entry in (WeightsEntry(variant, scale) for variant in VARIANTS for scale in SCALES)
}
REGISTRY: dict[tuple[str, int], WeightsEntry] = {
    (entry.variant, entry.scale): entry for entry in TAGGED.values()
}


def parse_name(text: str) -> tuple[str, int | None, str | None] | None:
    """`mma-t-x4.tag` -> ("mma-t", 4, "tag"); None when `text` is not shaped like a registry name."""
    match = _NAME.match(text.strip().lower())
    if match is None:
        return None
    return match["variant"], int(match["scale"]) if match["scale"] else None, match["tag"]


def lookup(variant: str, scale: int, tag: str | None = None) -> WeightsEntry:
    """The registry entry of a named model (its default tag unless `tag`), or a ConfigError listing what
    exists."""
    try:
        key = check_variant(variant)
    except ConfigError:
        raise ConfigError(
            f"unknown model {variant!r}: choose one of {', '.join(VARIANTS)}, a weights file "
            "or a Hub repository id (owner/name)"
        ) from None
    scale = check_scale(scale)
    if tag is None:
        return REGISTRY[(key, scale)]
    entry = TAGGED.get(f"{key}-x{scale}.{tag}")
    if entry is None:
        tags = ", ".join(e.tag for e in TAGGED.values() if (e.variant, e.scale) == (key, scale))
        raise ConfigError(f"{key}-x{scale} has no tag {tag!r}: available tags are {tags}")
    return entry


def scale_mismatch(what: str, has: int, asked: int) -> ConfigError:
    """The one wording of "these weights are another scale than the one asked for"."""
    return ConfigError(f"{what} upscales x{has}, not x{asked}: ask for scale {has} or another model")


def lookup_name(text: str, scale: int | None = None) -> WeightsEntry:
    """The entry a registry name means; a scale inside the name must agree with `scale` (default 4)."""
    parsed = parse_name(text)
    if parsed is None:
        raise ConfigError(
            f"unknown model {text!r}: choose one of {', '.join(VARIANTS)} (e.g. mma-t-x4 or "
            f"mma-t-x4.{BUNDLED_TAG}), a weights file or a Hub repository id (owner/name)"
        )
    variant, named_scale, tag = parsed
    if named_scale is not None and scale is not None and int(scale) != named_scale:
        raise scale_mismatch(text, named_scale, int(scale))
    return lookup(variant, named_scale or scale or 4, tag)


def is_registry_name(text: str) -> bool:
    """Whether `text` names a registry model (so a same-named folder or repo id does not shadow it)."""
    parsed = parse_name(text)
    return parsed is not None and parsed[0] in VARIANTS


def fetch_entry(entry: WeightsEntry, *, force: bool = False) -> Path:
    """The bundled file, else the Hub file verified against its sha256, else a WeightsNotFoundError that says
    what to do instead."""
    bundled = entry.bundled_file()
    if bundled is not None:
        return bundled
    if entry.hub is not None:
        source = entry.hub
        return hub.download(
            source.repo_id, source.filename, revision=source.revision, sha256=source.sha256, force=force
        )
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


@dataclass(frozen=True)
class ModelInfo:
    """One registry model as `mma models` and `mma.api.list_models()` describe it."""

    name: str  # with its tag, e.g. mma-t-x4.t91-bsds200
    variant: str
    scale: int
    tag: str
    parameters: int
    offline: bool
    source: str
    scores: dict[str, dict[str, float]]  # data set -> {"psnr", "ssim"} measured on the bundled weights


@functools.cache
def parameter_count(variant: str, scale: int) -> int:
    """Parameters of a named network, counted from networks of no block and of one (a few MB, built in
    milliseconds). Building the whole network took seconds, and so did building it on the meta device, whose
    first use loads torch's decompositions."""
    config = MMAConfig.named(variant, scale)
    bare, one = (
        sum(p.numel() for p in MMA(dataclasses.replace(config, num_block=blocks)).parameters())
        for blocks in (0, 1)
    )
    return bare + (one - bare) * config.num_block


def catalogue() -> list[ModelInfo]:
    """Every registry model, sorted by variant and scale."""
    rows = []
    for entry in sorted(TAGGED.values(), key=lambda e: (e.variant, e.scale, e.tag)):
        count = parameter_count(entry.variant, entry.scale)
        rows.append(
            ModelInfo(
                entry.full_name,
                entry.variant,
                entry.scale,
                entry.tag,
                count,
                is_available_offline(entry),
                source_of(entry),
                entry.bundled_scores(),
            )
        )
    return rows
