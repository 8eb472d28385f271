"""Weights: reading and writing checkpoint files, the registry of named models, and the Hugging Face Hub."""

from mma.weights.checkpoint import FORMAT_VERSION, load_checkpoint, save_safetensors
from mma.weights.hub import from_pretrained, save_pretrained
from mma.weights.loading import load_weights_into, model_from_file
from mma.weights.registry import REGISTRY, HubFile, WeightsEntry, resolve_weights

__all__ = [
    "FORMAT_VERSION",
    "REGISTRY",
    "HubFile",
    "WeightsEntry",
    "from_pretrained",
    "load_checkpoint",
    "load_weights_into",
    "model_from_file",
    "resolve_weights",
    "save_pretrained",
    "save_safetensors",
]
