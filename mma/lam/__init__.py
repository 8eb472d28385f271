"""Local attribution maps (LAM) and the diffusion index: which input pixels an SR network uses for one patch.

`lam(model, image, x, y)` works on any differentiable super-resolution network (MMA with any scan backend that
has autograd, or any other nn.Module); `diffusion_index` scores how widely a map spreads; the render helpers
draw it with Pillow.
"""

from mma.lam.attribution import LAMResult, crop_origin, gradient_detector, lam
from mma.lam.diffusion import diffusion_index, gini
from mma.lam.inputs import AnalysisInput, analysis_input
from mma.lam.render import colorize, heatmap_image, overlay_image, to_pil

__all__ = [
    "AnalysisInput",
    "LAMResult",
    "analysis_input",
    "colorize",
    "crop_origin",
    "diffusion_index",
    "gini",
    "gradient_detector",
    "heatmap_image",
    "lam",
    "overlay_image",
    "to_pil",
]
