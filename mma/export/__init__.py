"""Writing the network in formats other runtimes load (ONNX)."""

from mma.export.onnx import check_onnx, check_onnx_images, export_onnx

__all__ = ["check_onnx", "check_onnx_images", "export_onnx"]
