"""MMA as a spandrel architecture, so chaiNNer, ComfyUI and anything else built on spandrel load our weights.

`install()` adds it to spandrel's registry (the same shape as `spandrel_extra_arches.install()`); afterwards
`spandrel.ModelLoader().load_from_file(...)` recognises our safetensors files and the authors' BasicSR `.pth`
checkpoints (spandrel unwraps `params_ema` / `params` itself) of every variant and scale. spandrel hands us a
bare state dict, so the network is rebuilt from the tensor shapes, exactly as for a `.pth` without metadata.
"""

from __future__ import annotations

from collections.abc import Mapping

try:
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        ModelTiling,
        SizeRequirements,
        StateDict,
    )
except ImportError as exc:  # pragma: no cover - exercised only where spandrel is absent
    raise ImportError(
        f'mma.integrations.spandrel needs the spandrel package ({exc}): pip install "mma-sr[spandrel]"'
    ) from exc

from mma.errors import ConfigError
from mma.model import MMA, infer_config
from mma.weights.loaded import declared_precisions
from mma.weights.loading import load_weights_into

ARCH_ID = "MMA"

# Names only MMA's state dicts hold: the top-level layers (shared with SwinIR-style networks) are not enough,
# so the block's norm/FFN names are required too, and its token mixer must be one of ours (the bidirectional
# Vim's backward A, the channel-attention branch, or the ablation's residual CNN).
_REQUIRED_KEYS = (
    "conv_first.weight",
    "conv_after_body.weight",
    "upsample.0.weight",
    "conv_last.weight",
    "body.0.norm1.body.weight",
    "body.0.norm2.body.weight",
    "body.0.ffn.project_in.weight",
    "body.0.ffn.dwconv.weight",
    "body.0.ffn.project_out.weight",
)
_MIXER_KEYS = (
    "body.0.attn.mamba.mamba.A_b_log",
    "body.0.attn.channel_attention.cab.0.weight",
    "body.0.attn.cnn.body.0.weight",
)


def is_mma_state_dict(state_dict: Mapping[str, object]) -> bool:
    """True when the names are MMA's and its shape inference can read the variant and scale off them."""
    if not all(key in state_dict for key in _REQUIRED_KEYS):
        return False
    if not any(key in state_dict for key in _MIXER_KEYS):
        return False
    try:
        infer_config(state_dict)  # type: ignore[arg-type]  # names alone could still hide foreign shapes
    except (ConfigError, AttributeError, IndexError, TypeError):
        return False
    return True


class MMAArch(Architecture[MMA]):
    """spandrel's description of MMA: how to spot its weights and what the loaded network needs."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="MMA", detect=is_mma_state_dict)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[MMA]:
        config = infer_config(state_dict)
        # Our loader first: a misfit is one line naming expected vs found (spandrel then loads the same dict).
        model = load_weights_into(MMA(config), state_dict).eval()
        precisions = declared_precisions(model)
        tags = [config.variant, f"{config.num_feat}nf", f"{config.num_block}nb"]
        if config.mixer != "vim+ca":
            tags.append(config.mixer)
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="SR",
            tags=tags,
            supports_half="fp16" in precisions,
            supports_bfloat16="bf16" in precisions,
            scale=config.scale,
            input_channels=3,
            output_channels=3,
            # 3x3 convs with padding and a scan over all H*W tokens: any size from 1x1 up, no padding needed.
            size_requirements=SizeRequirements(),
            tiling=ModelTiling.SUPPORTED,
        )


def install(registry: ArchRegistry | None = None, *, ignore_duplicates: bool = True) -> list[ArchSupport]:
    """Add MMA to `registry` (spandrel's MAIN_REGISTRY by default); returns what was added ([] if present).

    MMA is detected before every architecture already registered: its test is stricter than theirs (spandrel
    allows false positives, not false negatives), so asking it first costs nothing and no looser test can
    claim an MMA checkpoint.
    """
    target = MAIN_REGISTRY if registry is None else registry
    others = tuple(
        support.architecture.id for support in target.architectures() if support.architecture.id != ARCH_ID
    )
    return target.add(
        ArchSupport.from_architecture(MMAArch(), before=others), ignore_duplicates=ignore_duplicates
    )
