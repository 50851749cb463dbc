package dev.edgeprune.core;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * Finds the prunable layers of a model's main subgraph, in execution order, with the same rules
 * as {@code scan} in edgeprune/layers.py: weights (and biases) are constant tensors or the input
 * of a DEQUANTIZE; layers whose weight shares its buffer, is sparse or has no numeric type are
 * skipped, as is a non-zero bias shared with another tensor (an all-zero one is just ignored).
 */
public final class LayerScan {
  private LayerScan() {}

  public static List<Layer> scan(TfliteModel model) {
    Map<Integer, Operator> producers = new HashMap<>();
    for (Operator op : model.operators()) {
      for (int t : op.outputs) {
        producers.put(t, op);
      }
    }
    int[] users = model.bufferUsers();
    List<Layer> layers = new ArrayList<>();
    for (Operator op : model.operators()) {
      if (op.custom) {
        continue;
      }
      if (op.code == Operator.BATCH_MATMUL && op.inputs.length > 1
          && stored(model, op.inputs[1], producers) >= 0) {
        throw new EdgepruneException(
            "BATCH_MATMUL with constant weights is not supported on Android: prune this model "
                + "on the host with the edgeprune command");
      }
      Layer layer = layer(model, op, producers, users);
      if (layer != null) {
        layers.add(layer);
      }
    }
    return layers;
  }

  /** The constant tensor holding {@code tensor}'s values: itself, its DEQUANTIZE's input, or -1. */
  private static int stored(TfliteModel model, int tensor, Map<Integer, Operator> producers) {
    if (tensor < 0) {
      return -1;
    }
    if (model.isConstant(tensor)) {
      return tensor;
    }
    Operator op = producers.get(tensor);
    if (op != null && op.code == Operator.DEQUANTIZE && op.inputs.length > 0
        && op.inputs[0] >= 0 && model.isConstant(op.inputs[0])) {
      return op.inputs[0];
    }
    return -1;
  }

  private static Layer layer(TfliteModel model, Operator op, Map<Integer, Operator> producers,
      int[] users) {
    Layer.Kind kind;
    if (op.code == Operator.CONV_2D) {
      kind = Layer.Kind.CONV;
    } else if (op.code == Operator.DEPTHWISE_CONV_2D) {
      kind = Layer.Kind.DEPTHWISE;
    } else if (op.code == Operator.FULLY_CONNECTED) {
      kind = Layer.Kind.DENSE;
    } else {
      return null;
    }
    if (op.inputs.length <= 1 || op.outputs.length == 0) {
      return null;
    }
    int weight = stored(model, op.inputs[1], producers);
    if (weight < 0) {
      return null;
    }
    Tensor w = model.tensor(weight);
    if (w.type.itemSize == 0 || w.sparse || users[w.buffer] > 1) {
      return null;
    }
    int bias = -1;
    if (op.inputs.length > 2 && op.inputs[2] >= 0) {
      bias = stored(model, op.inputs[2], producers);
      if (bias < 0) {
        return null;
      }
      if (users[model.tensor(bias).buffer] > 1) {
        // The converter shares identical buffers; an all-zero bias has nothing to prune.
        for (double v : model.dequantized(bias)) {
          if (v != 0.0) {
            return null;
          }
        }
        bias = -1;
      }
    }
    int[] x = model.tensor(op.inputs[0]).shape;
    if (kind == Layer.Kind.DENSE) {
      return w.shape.length == 2
          ? new Layer(op.index, kind, op.inputs[0], op.outputs[0], weight, bias, w.shape, op, 1,
              1, 1)
          : null;
    }
    int[] y = model.tensor(op.outputs[0]).shape;
    if (w.shape.length != 4 || x.length != 4 || y.length != 4) {
      return null;
    }
    int multiplier = 1;
    if (kind == Layer.Kind.DEPTHWISE) {
      if (x[3] == 0 || w.shape[3] % x[3] != 0) {
        return null;
      }
      multiplier = w.shape[3] / x[3];
    }
    return new Layer(op.index, kind, op.inputs[0], op.outputs[0], weight, bias, w.shape, op,
        multiplier, y[1], y[2]);
  }
}
