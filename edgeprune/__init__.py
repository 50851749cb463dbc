"""edgeprune: personalize TFLite models on the device by Fine-Pruning, and measure what it costs.

The public names below are imported on first use, so `edgeprune` commands that need none of
them (device links, packaging) start without loading NumPy and the core.
"""

from importlib import import_module

_EXPORTS = {
    "ActivationMap": "activations",
    "record": "activations",
    "EdgepruneError": "errors",
    "ModelError": "errors",
    "UnsupportedError": "errors",
    "Layer": "layers",
    "scan": "layers",
    "Model": "model",
    "apply": "prune",
    "masks": "prune",
    "measured_sparsity": "prune",
    "Runner": "runtime",
}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'edgeprune' has no attribute {name!r}")
