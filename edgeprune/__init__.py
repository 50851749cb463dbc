"""edgeprune: personalize TFLite models on the device by Fine-Pruning, and measure what it costs."""

from .activations import ActivationMap, record
from .errors import EdgepruneError, ModelError, UnsupportedError
from .layers import Layer, scan
from .model import Model
from .prune import apply, masks, measured_sparsity
from .runtime import Runner

__all__ = [
    "ActivationMap",
    "EdgepruneError",
    "Layer",
    "Model",
    "ModelError",
    "Runner",
    "UnsupportedError",
    "apply",
    "masks",
    "measured_sparsity",
    "record",
    "scan",
]
__version__ = "0.1.0"
