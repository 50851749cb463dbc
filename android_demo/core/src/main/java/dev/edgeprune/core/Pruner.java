package dev.edgeprune.core;

import java.nio.ByteBuffer;
import java.util.List;

/**
 * Writes masks into a copy of a model's bytes: every pruned weight (and, for channels, bias)
 * becomes the stored value that dequantizes to exactly 0.0 — 0 for float and symmetric int8, the
 * (per-channel) zero point for asymmetric uint8/int8, a float16 zero behind a DEQUANTIZE. Tensor
 * sizes never change, so the result has the same graph and runs wherever the source ran.
 */
public final class Pruner {
  private Pruner() {}

  public static TfliteModel apply(TfliteModel model, List<Mask> masks) {
    TfliteModel pruned = model.copy();
    for (Mask m : masks) {
      writeZeros(pruned, m.layer.weight, m.keepWeights);
      if (m.keepChannels != null && m.layer.bias >= 0) {
        writeZeros(pruned, m.layer.bias, m.keepChannels);
      }
    }
    return pruned;
  }

  private static void writeZeros(TfliteModel model, int tensor, boolean[] keep) {
    Tensor t = model.tensor(tensor);
    if (keep.length != t.size()) {
      throw new EdgepruneException("mask of " + keep.length + " entries for tensor '" + t.name
          + "' of " + t.size());
    }
    ByteBuffer data = model.tensorData(tensor);
    Quantization q = t.quantization;
    for (int i = 0; i < keep.length; i++) {
      if (!keep[i]) {
        StoredValues.write(data, t.type, i, q == null ? 0 : q.zeroPoint[q.channel(t.shape, i)]);
      }
    }
  }

  /** (zero weights, all weights) over {@code layers}, read back from the model's bytes. */
  public static long[] measuredSparsity(TfliteModel model, List<Layer> layers) {
    long zeros = 0;
    long total = 0;
    for (Layer layer : layers) {
      for (double w : model.dequantized(layer.weight)) {
        zeros += w == 0.0 ? 1 : 0;
        total++;
      }
    }
    return new long[] {zeros, total};
  }
}
