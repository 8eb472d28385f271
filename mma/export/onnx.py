"""ONNX export of the network: one graph file that ONNX Runtime (or any ONNX runtime) runs without PyTorch.

The selective scan is traced in the `export` backend's formulation (`mma.ops.scan_export`), whose ops are
the same for every sequence length, so a graph traced on one tile size is right for every size. Two
exporters give graphs that run at any size: torch's TorchScript tracer (`torch.onnx.export(dynamo=False)`,
the default: it records the size arithmetic as graph ops) and torch.export
(`dynamo=True`, which needs onnxscript and takes about ten times longer on its symbolic shape reasoning;
it is the one newer torch versions keep).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mma.errors import ConfigError
from mma.fileio import atomic_write
from mma.weights.loaded import LoadedModel

INPUT_NAME = "image"
OUTPUT_NAME = "upscaled"
EXPORTERS = ("torchscript", "dynamo")
DEFAULT_OPSET = 17
MIN_OPSET = {"torchscript": 17, "dynamo": 18}  # LayerNormalization; the dynamo exporter's own minimum
MIN_TORCH = "2.6"  # the first torch whose torch.onnx.export(dynamo=True) goes through torch.export
INSTALL_HINT = 'pip install "mma-sr[onnx]"'
# A dynamic graph is the same whatever size it is traced at (the scan's steps do not depend on the length),
# while tracing costs grow with the size: MMA-T traced at 64x64 took 4.8 GB and twice the time of 16x16
# (docs/integrations.md, "Cost"). So it is traced at this size at most.
DYNAMIC_TRACE_SIZE = 16


def export_onnx(
    model: nn.Module | LoadedModel,
    path: str | os.PathLike[str],
    tile: int,
    *,
    dynamic: bool = True,
    opset: int = DEFAULT_OPSET,
    exporter: str = "torchscript",
    overwrite: bool = True,
) -> Path:
    """Write `model` as an ONNX graph from (batch, 3, tile, tile) images in [0, 1] to their upscaled twins.

    `dynamic=True` leaves batch, height and width free (any size from 2 up runs; traced at
    min(tile, DYNAMIC_TRACE_SIZE), which gives the same graph for less); `dynamic=False` fixes the input to
    (1, 3, tile, tile). `exporter` is "torchscript" or "dynamo" (see the module docstring).
    The file is written atomically; the caller's model is not changed.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"exporter {exporter!r}: use {' or '.join(EXPORTERS)}")
    require("onnx", *(["onnxscript"] if exporter == "dynamo" else []))
    if exporter == "dynamo" and torch.__version__ < MIN_TORCH:  # a TorchVersion compares with strings
        raise ConfigError(
            f"the dynamo exporter needs torch {MIN_TORCH} or newer, this is {torch.__version__}"
        )
    if not isinstance(tile, int) or tile < (2 if dynamic else 1):
        raise ConfigError(f"tile {tile!r}: use a size in pixels of at least {2 if dynamic else 1}")
    if not isinstance(opset, int) or opset < MIN_OPSET[exporter]:
        raise ConfigError(
            f"opset {opset!r}: the {exporter} exporter writes opset {MIN_OPSET[exporter]} or newer"
        )
    net = _exportable(model)
    # batch 2: torch.export treats a size-1 dimension of the example as fixed, whatever it is told
    size = min(tile, DYNAMIC_TRACE_SIZE) if dynamic else tile
    example = torch.rand(2 if dynamic else 1, 3, size, size, generator=torch.Generator().manual_seed(0))
    names = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": opset}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings about code the user cannot change
        if exporter == "torchscript":
            axes = (
                {
                    INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                    OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                }
                if dynamic
                else None
            )
            return atomic_write(
                path,
                lambda tmp: torch.onnx.export(net, (example,), tmp, dynamo=False, dynamic_axes=axes, **names),
                overwrite=overwrite,
            )
        shapes = None
        if dynamic:
            dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"), 3: torch.export.Dim("width")}
            shapes = {_forward_argument(net): dims}
        program = torch.onnx.export(
            net, (example,), None, dynamo=True, dynamic_shapes=shapes, optimize=False, verbose=False, **names
        )
    return atomic_write(path, lambda tmp: program.save(tmp, external_data=False), overwrite=overwrite)


def check_onnx(
    model: nn.Module | LoadedModel,
    path: str | os.PathLike[str],
    image: torch.Tensor,
    threads: int | None = None,
) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) running `path` and `model` on `image`."""
    return check_onnx_images(model, path, [image], threads)[0]


def check_onnx_images(
    model: nn.Module | LoadedModel,
    path: str | os.PathLike[str],
    images: list[torch.Tensor],
    threads: int | None = None,
) -> list[float]:
    """`check_onnx` for several images with one ONNX Runtime session (making one costs seconds: the graph has
    thousands of nodes, so it is made with basic optimisations only). PyTorch runs the network as `mma upscale`
    does (its automatic scan backend), which is what the graph must agree with."""
    session = onnx_session(path, threads, optimize=False)
    reference = _float_cpu_copy(model)
    differences = []
    for image in images:
        got = session.run(None, {INPUT_NAME: image.float().numpy()})[0]
        with torch.no_grad():
            expected = reference(image.float()).numpy()
        if got.shape != expected.shape:
            raise ConfigError(f"{path}: the graph gives shape {got.shape}, the network {expected.shape}")
        differences.append(float(np.abs(got - expected).max()))
    return differences


def onnx_session(path: str | os.PathLike[str], threads: int | None = None, *, optimize: bool = True):
    """An ONNX Runtime CPU session for `path`, with `threads` intra-op threads (default: its own choice).
    `optimize=False` applies ONNX Runtime's basic graph optimisations only, which halves the seconds a session
    of MMA-T takes to make and did not slow its runs (docs/integrations.md, "Cost")."""
    require("onnxruntime")
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if not optimize:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return onnxruntime.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (onnxruntime's own error types derive from Exception directly)
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{path}: ONNX Runtime cannot load it ({first_line})") from None


def require(*packages: str) -> None:
    """ConfigError naming the install command when an optional ONNX package is missing."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ONNX export/runtime needs {', '.join(missing)}: {INSTALL_HINT}")


def _float_cpu_copy(model: nn.Module | LoadedModel) -> nn.Module:
    """A float32 CPU eval copy of `model` (a network, or a LoadedModel's): the caller's is never changed."""
    return copy.deepcopy(getattr(model, "network", model)).to("cpu", torch.float32).eval()


def _exportable(model: nn.Module | LoadedModel) -> nn.Module:
    """`_float_cpu_copy` whose Mamba layers use the `export` scan backend."""
    net = _float_cpu_copy(model)
    if hasattr(net, "set_scan_backend"):
        net.set_scan_backend("export")
    return net


def _forward_argument(net: nn.Module) -> str:
    """The name of forward's image argument, which torch.export's dynamic_shapes are keyed by."""
    import inspect

    return next(iter(inspect.signature(net.forward).parameters))
