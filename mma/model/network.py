"""The MMA super-resolution network: shallow conv, a body of MetaFormer blocks, pixel-shuffle upsampler."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from mma.model.blocks import (
    ChannelAttentionBranch,
    ChannelLayerNorm,
    GatedDConvFFN,
    ResidualConvBlock,
    may_overwrite,
)
from mma.model.config import MMAConfig
from mma.model.vim import VimBranch

# The upsampler and last conv run in bands of about this many input pixels when no gradient is wanted: their
# activations (scale^2 x 4 x num_feat floats per input pixel, the forward's largest) then never exist for the
# whole image, and a large image's peak memory is the body's: at x4 about 3.8 KB per input pixel instead of
# 8.9 KB (docs/benchmarks.md, "CPU pace").
UPSAMPLE_BAND_PIXELS = 16384
# Input rows each band reads beyond its own on either side: the upsampler's 3x3 convs reach 1 pixel at the
# input's resolution, 1/2 at x2 and 1/4 at x4 (and 1/3 at x3), under 2 input pixels in all.
UPSAMPLE_HALO = 2


class TokenMixer(nn.Module):
    """Sum of a spatial branch (Vim, or a residual CNN block in the ablation) and, unless ablated, the
    channel-attention branch, on the same normalised input."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        c = config.num_feat
        spatial, _, attention = config.mixer.partition("+")
        if spatial == "vim":
            self.mamba = VimBranch(c, config.d_state, config.d_conv, config.expand)
        else:
            self.cnn = ResidualConvBlock(c)
        if attention:
            self.channel_attention = ChannelAttentionBranch(c, config.ca_compress, config.ca_squeeze)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.mamba(x) if hasattr(self, "mamba") else self.cnn(x)
        if hasattr(self, "channel_attention"):
            attention = self.channel_attention(x)
            out = out.add_(attention) if may_overwrite() else out + attention
        return out


class MMABlock(nn.Module):
    """x + mixer(norm1(x)), then x + ffn(norm2(x))."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        self.norm1 = ChannelLayerNorm(config.num_feat)
        self.attn = TokenMixer(config)
        self.norm2 = ChannelLayerNorm(config.num_feat)
        self.ffn = GatedDConvFFN(config.num_feat, config.ffn_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if may_overwrite():  # the branches' outputs are fresh tensors: add the residual into them
            x = self.attn(self.norm1(x)).add_(x)
            return self.ffn(self.norm2(x)).add_(x)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


# Whether a half-precision forward may hand back its float32 output (the engine asks for it: rounding the
# output to bf16 costs more PSNR than the whole half-precision body). Off by default, so that a module user
# (spandrel, torch.hub) gets the dtype it put in, as every PyTorch module does.
_FLOAT32_OUTPUT: contextvars.ContextVar[bool] = contextvars.ContextVar("mma_float32_output", default=False)


@contextlib.contextmanager
def float32_output() -> Iterator[None]:
    """Within this block a half-precision MMA forward returns its float32 output instead of rounding it."""
    token = _FLOAT32_OUTPUT.set(True)
    try:
        yield
    finally:
        _FLOAT32_OUTPUT.reset(token)


def _upsampler(scale: int, channels: int) -> nn.Sequential:
    """x2/x4: [conv C->4C, PixelShuffle(2)] per factor 2; x3: conv C->9C, PixelShuffle(3)."""
    if scale == 3:
        return nn.Sequential(nn.Conv2d(channels, 9 * channels, 3, padding=1), nn.PixelShuffle(3))
    layers: list[nn.Module] = []
    for _ in range(scale.bit_length() - 1):
        layers += [nn.Conv2d(channels, 4 * channels, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class MMA(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, scale*H, scale*W); any H, W >= 1."""

    def __init__(self, config: MMAConfig) -> None:
        super().__init__()
        self.config = config
        c = config.num_feat
        self.conv_first = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*(MMABlock(config) for _ in range(config.num_block)))
        self.conv_after_body = nn.Conv2d(c, c, 3, padding=1)
        self.upsample = _upsampler(config.scale, c)
        self.conv_last = nn.Conv2d(c, 3, 3, padding=1)

    @property
    def scale(self) -> int:
        return self.config.scale

    def set_scan_backend(self, backend: str | None) -> MMA:
        """Force a selective-scan backend ("numba", "torch", "mamba-ssm", "triton", "export") for every layer; None = automatic."""
        for module in self.modules():
            if hasattr(module, "scan_backend"):
                module.scan_backend = backend
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img_range = self.config.img_range
        # Channels-last activations throughout: oneDNN's convs run faster in that layout (docs/benchmarks.md,
        # "Whole network"), LayerNorm over channels needs no copy, and the Vim branch's (B, L, C) tokens are a plain
        # view of the feature map.
        x = x.contiguous(memory_format=torch.channels_last)
        # Built per call in the input's dtype: a float32 buffer would round the mean for float64 runs.
        mean = torch.tensor(self.config.rgb_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        shallow = self.conv_first((x - mean) * img_range)
        deep = self.conv_after_body(self.body(shallow)) + shallow
        if not may_overwrite():
            return self.conv_last(self.upsample(deep)) / img_range + mean
        if deep.shape[2] * deep.shape[3] > UPSAMPLE_BAND_PIXELS:
            out = self._tail_in_bands(deep)
        else:
            out = self._tail(deep)
        return out if _FLOAT32_OUTPUT.get() else out.to(x.dtype)

    def _tail(self, deep: torch.Tensor) -> torch.Tensor:
        return self._to_image(self._upsample_and_last_conv(deep))

    def _upsample_and_last_conv(self, deep: torch.Tensor) -> torch.Tensor:
        """Half-precision activations leave the upsampler for a float32 last conv: rounding the output itself
        to bf16 (steps of 1/256 near white, as coarse as 8-bit pixels) cost more PSNR than all the network's
        half-precision arithmetic before it (docs/benchmarks.md, "Half precision on CPUs"), and this conv is
        the network's smallest."""
        features = self.upsample(deep)
        dtype = torch.promote_types(features.dtype, torch.float32)
        last = self.conv_last
        if features.dtype == dtype:
            return last(features)
        bias = last.bias.to(dtype) if last.bias is not None else None
        return F.conv2d(features.to(dtype), last.weight.to(dtype), bias, padding=last.padding)

    def _to_image(self, out: torch.Tensor) -> torch.Tensor:
        """The last conv's output back to [0, 1] pixels, in place."""
        mean = torch.tensor(self.config.rgb_mean, dtype=out.dtype, device=out.device).view(1, 3, 1, 1)
        return out.div_(self.config.img_range).add_(mean)

    def _tail_in_bands(self, deep: torch.Tensor) -> torch.Tensor:
        """`_tail` over bands of rows, each with UPSAMPLE_HALO rows of context either side (the convs are
        local, so the bands equal the whole image's result up to float32 rounding)."""
        b, _, h, w = deep.shape
        s = self.scale
        rows = max(1, UPSAMPLE_BAND_PIXELS // w)
        out = None
        for top in range(0, h, rows):
            bottom = min(h, top + rows)
            first, last = max(0, top - UPSAMPLE_HALO), min(h, bottom + UPSAMPLE_HALO)
            band = self._upsample_and_last_conv(deep[:, :, first:last])
            if out is None:
                out = band.new_empty(b, 3, h * s, w * s).contiguous(memory_format=torch.channels_last)
            out[:, :, top * s : bottom * s] = band[:, :, (top - first) * s : (bottom - first) * s]
        return self._to_image(out)
