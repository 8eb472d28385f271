"""Writing the network in formats other runtimes load (ONNX)."""

from mma.export.onnx import check_onnx, export_onnx

__all__ = ["check_onnx", "export_onnx"]
