package dev.edgeprune.core;

/** One tensor of a subgraph: its shape, element type, buffer and quantization. */
public final class Tensor {
  public final int index;
  public final String name;
  public final int[] shape;
  public final TensorType type;
  final int buffer;
  /** Null when the tensor is not quantized. */
  public final Quantization quantization;
  final boolean sparse;

  Tensor(int index, String name, int[] shape, TensorType type, int buffer, Quantization q,
      boolean sparse) {
    this.index = index;
    this.name = name;
    this.shape = shape;
    this.type = type;
    this.buffer = buffer;
    this.quantization = q;
    this.sparse = sparse;
  }

  /** Number of elements. */
  public int size() {
    long n = 1;
    for (int d : shape) {
      n *= d;
    }
    if (n > Integer.MAX_VALUE) {
      throw new EdgepruneException("tensor " + name + " is too large for this device");
    }
    return (int) n;
  }

  /** Bytes of the stored values (0 when the type cannot be viewed). */
  public int byteSize() {
    return size() * type.itemSize;
  }
}
