package dev.edgeprune.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.Arrays;

/**
 * The sum of |values| of one tensor over recent samples, in its stored units, as Python's
 * {@code _AbsSum}: float tensors add into a float32 running sum, so both sides add the same floats
 * in the same order; quantized tensors add |q - zero_point| exactly as integers (a long per element:
 * no overflow for any sample count) and are scaled when taken, so both sides hold the same exact
 * integers whatever their accumulator widths and spill schedules.
 */
final class AbsSum {
  /** Elements of one watched tensor beyond which a phone runs out of memory: refuse early. */
  private static final int MAX_ELEMENTS = 1 << 26;

  private final TensorType type;
  private final double scale;
  private final long zeroPoint;
  private final boolean quantized;
  private final float[] partial;
  private final long[] integral;
  private final int[] shape;

  AbsSum(Tensor t) {
    if (t.type != TensorType.FLOAT32 && t.type != TensorType.INT8 && t.type != TensorType.UINT8
        && t.type != TensorType.INT16) {
      throw new EdgepruneException("activations of type " + t.type + " (tensor '" + t.name
          + "') are not supported: use a float32, int8, uint8 or int16 model");
    }
    if (t.shape.length > 1 && t.shape[0] != 1) {
      throw new EdgepruneException("tensor '" + t.name + "' has batch size " + t.shape[0]
          + ": export the model with batch size 1");
    }
    if (t.size() > MAX_ELEMENTS) {
      throw new EdgepruneException("tensor '" + t.name + "' has " + t.size()
          + " elements, too many to watch on this device");
    }
    this.type = t.type;
    this.quantized = t.quantization != null && t.type != TensorType.FLOAT32;
    this.scale = quantized ? t.quantization.scale() : 1.0;
    this.zeroPoint = quantized ? t.quantization.zeroPoint() : 0;
    this.partial = quantized ? null : new float[t.size()];
    this.integral = quantized ? new long[t.size()] : null;
    this.shape = t.shape.length > 1
        ? Arrays.copyOfRange(t.shape, 1, t.shape.length)
        : t.shape.clone();
  }

  /** Shape of the tensor without its batch axis. */
  int[] shape() {
    return shape;
  }

  /** Bytes one sample of this tensor takes. */
  int byteSize() {
    return size() * type.itemSize;
  }

  private int size() {
    return quantized ? integral.length : partial.length;
  }

  void add(ByteBuffer stored) {
    if (stored.remaining() != byteSize()) {
      throw new EdgepruneException("expected " + byteSize() + " bytes of activations, got "
          + stored.remaining());
    }
    ByteBuffer b = stored.slice().order(ByteOrder.LITTLE_ENDIAN);
    if (quantized) {
      for (int i = 0; i < integral.length; i++) {
        integral[i] += Math.abs((long) StoredValues.read(b, type, i) - zeroPoint);
      }
      return;
    }
    for (int i = 0; i < partial.length; i++) {
      partial[i] += Math.abs((float) StoredValues.read(b, type, i));
    }
  }

  /** The real-valued partial sum as doubles; the partial sum starts again from zero. */
  double[] take() {
    double[] real = new double[size()];
    for (int i = 0; i < real.length; i++) {
      if (quantized) {
        real[i] = (double) integral[i] * scale;
        integral[i] = 0;
      } else {
        real[i] = (double) partial[i] * scale;
        partial[i] = 0f;
      }
    }
    return real;
  }
}
