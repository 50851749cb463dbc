"""NumPy forward passes of a model's layers, read from its (masked) weight bytes."""

from __future__ import annotations

import numpy as np

from edgeprune.layers import Layer, scan
from edgeprune.model import Model
from tests import reference as ref


def layer_forward(model: Model, layer: Layer, x: np.ndarray) -> np.ndarray:
    """The layer's output for real-valued input x, from its dequantized stored weights."""
    w = model.dequantized(layer.weight)
    b = model.dequantized(layer.bias) if layer.bias is not None else None
    geometry = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation)
    if layer.kind == "conv":
        return ref.conv2d(x, w, b, activation=layer.activation, **geometry)
    if layer.kind == "depthwise":
        return ref.depthwise_conv2d(
            x,
            w,
            b,
            depth_multiplier=layer.depth_multiplier,
            activation=layer.activation,
            **geometry,
        )
    return ref.fully_connected(x, w, b, activation=layer.activation)


def network_forward(model: Model, x: np.ndarray) -> np.ndarray:
    """The whole (float) network in NumPy: prunable layers, RESHAPE, and DEQUANTIZE of weights."""
    layers = {layer.op: layer for layer in scan(model).layers}
    values = {model.main.inputs[0]: x.astype(np.float64)}
    for op in model.operators:
        if op.index in layers:
            layer = layers[op.index]
            out = layer_forward(model, layer, values[layer.input])
            values[layer.output] = out.reshape(model.tensor(layer.output).shape)
        elif op.opcode == "RESHAPE":
            values[op.outputs[0]] = values[op.inputs[0]].reshape(model.tensor(op.outputs[0]).shape)
        elif op.opcode != "DEQUANTIZE":
            raise NotImplementedError(op.opcode)
    return values[model.main.outputs[0]]
