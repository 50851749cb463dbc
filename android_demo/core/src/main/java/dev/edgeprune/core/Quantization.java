package dev.edgeprune.core;

/** Affine quantization: real = scale * (q - zeroPoint), per channel along {@code axis}. */
public final class Quantization {
  final float[] scale;
  final long[] zeroPoint;
  final int axis;

  Quantization(float[] scale, long[] zeroPoint, int axis) {
    this.scale = scale;
    this.zeroPoint = zeroPoint;
    this.axis = axis;
  }

  /** Per-tensor scale (the one activations use). */
  public float scale() {
    return scale[0];
  }

  /** Per-tensor zero point (the one activations use). */
  public long zeroPoint() {
    return zeroPoint[0];
  }

  /** Which scale/zero point element {@code flat} of a tensor of {@code shape} uses. */
  int channel(int[] shape, int flat) {
    if (scale.length == 1 || shape.length == 0) {
      return 0;
    }
    int inner = 1;
    for (int d = axis + 1; d < shape.length; d++) {
      inner *= shape[d];
    }
    return (flat / inner) % shape[axis];
  }

  static Quantization read(FlatTable table, int[] shape) {
    if (table == null) {
      return null;
    }
    float[] scale = table.floats(2);
    if (scale.length == 0) {
      return null;
    }
    long[] zeroPoint = table.longs(3);
    if (zeroPoint.length == 0) {
      zeroPoint = new long[scale.length];
    }
    int axis = table.i32Field(6, 0);
    if (zeroPoint.length != scale.length) {
      throw table.fail(scale.length + " scales but " + zeroPoint.length + " zero points");
    }
    if (scale.length > 1
        && !(axis >= 0 && axis < shape.length && shape[axis] == scale.length)) {
      throw table.fail(scale.length + " per-channel scales do not fit the shape on axis " + axis);
    }
    for (float s : scale) {
      if (Float.isNaN(s) || Float.isInfinite(s)) {
        throw table.fail("non-finite quantization scale");
      }
    }
    return new Quantization(scale, zeroPoint, axis);
  }
}
