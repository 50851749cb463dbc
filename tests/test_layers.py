"""The op table: one class per prunable op kind, MAC rules as classes, DEQUANTIZE in one place."""

import re
from pathlib import Path

import numpy as np
import pytest

from edgeprune import layers
from edgeprune.layers import MACS, OPS, Conv, Dense, Depthwise, Layer, MatMul, TransposeConv, scan
from edgeprune.model import Model
from tests.models import build

CORE = Path(layers.__file__).parent


def test_every_prunable_kind_is_a_registered_class():
    assert {
        "CONV_2D": Conv,
        "DEPTHWISE_CONV_2D": Depthwise,
        "TRANSPOSE_CONV": TransposeConv,
        "FULLY_CONNECTED": Dense,
        "BATCH_MATMUL": MatMul,
    } == OPS
    for opcode, kind in OPS.items():
        assert issubclass(kind, Layer) and MACS[opcode] is kind.cost


@pytest.mark.parametrize("kind", ["float32", "int8", "float16"])
def test_layers_know_their_axes_and_shapes(kind):
    model = Model(build(kind))
    found = scan(model).layers
    assert [type(x) for x in found] == [Conv, Conv, Depthwise, Conv, Dense, Dense]
    for layer in found:
        w = layer.weight_shape
        assert layer.out_channels == w[layer.out_axis] == model.tensor(layer.output).shape[-1]
        x = model.tensor(layer.input).shape
        if layer.spatial:
            assert layer.s_in_shape() == (*layer.kernel, x[-1])
            assert w[layer.in_axis] == x[-1] * layer.depth_multiplier
        else:
            assert layer.s_in_shape() == (layer.in_features,) == (w[layer.in_axis],)
        assert layer.propagates_channels == isinstance(layer, Depthwise)
        assert layer.channel_axis == -1
        s_in = np.ones(layer.s_in_shape())
        assert np.broadcast_shapes(layer.input_for_weight(s_in).shape, w) == w


def test_matmul_axes_follow_adj_y():
    plain = MatMul(0, "BATCH_MATMUL", 0, 1, 2, None, (8, 5))
    transposed = MatMul(0, "BATCH_MATMUL", 0, 1, 2, None, (5, 8), transpose_weight=True)
    for layer in (plain, transposed):
        assert (layer.in_features, layer.out_channels) == (8, 5)
        out = np.zeros(layer.s_in_shape())
        layer.accumulate_s_in(np.ones((3, 8)), out)
        np.testing.assert_array_equal(out, np.full(8, 3.0))
        assert layer.input_for_weight(out).shape in ((8, 1), (1, 8))
        assert np.broadcast_shapes(layer.input_for_weight(out).shape, layer.weight_shape)


def test_float16_weights_are_found_behind_their_dequantize():
    model = Model(build("float16"))
    writers = layers.producers(model)
    for layer in scan(model).layers:
        assert model.is_constant(layer.weight) and model.tensor(layer.weight).type_name == "FLOAT16"
    for op in model.operators:
        stored = layers.stored_parameters(model, op, writers)
        if op.opcode == "DEQUANTIZE":
            assert stored == []  # counted at the op that reads its output
        elif op.index in {x.op for x in scan(model).layers}:
            assert all(model.tensor(t).type_name == "FLOAT16" for t in stored)


def test_no_string_switches_on_op_kinds():
    """The house rule: op semantics live in the table, not in `kind ==` / `rule ==` branches."""
    for path in CORE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\b(kind|rule)\s*[!=]=\s*[\"'](conv|depthwise|dense|matmul)", text)
        assert not re.search(r"rule\s*==\s*[\"'](reduction|window|output|input)", text), path
        if path.name != "layers.py":
            assert '"DEQUANTIZE"' not in text, f"{path}: the DEQUANTIZE case belongs to layers"
