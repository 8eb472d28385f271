"""Weights, one downward line: hub (files on the Hugging Face Hub) <- registry (named models) <- loaded (one
`load` for every kind of name) <- cache (placed models shared between callers). checkpoint and loading read and
write the files themselves; every module imports only those before it."""

from mma.weights.checkpoint import FORMAT_VERSION, load_checkpoint, save_safetensors
from mma.weights.hub import save_pretrained
from mma.weights.loaded import from_pretrained, resolve_weights
from mma.weights.loading import load_weights_into, model_from_file
from mma.weights.registry import REGISTRY, HubFile, WeightsEntry

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
