package dev.edgeprune.core;

/** One operator of the main subgraph, with the geometry options the prunable ops carry. */
final class Operator {
  static final int CONV_2D = 3;
  static final int DEPTHWISE_CONV_2D = 4;
  static final int DEQUANTIZE = 6;
  static final int FULLY_CONNECTED = 9;
  static final int BATCH_MATMUL = 126;

  final int index;
  final int code;
  final boolean custom;
  final int[] inputs;
  final int[] outputs;
  /** Padding enum (0 SAME, 1 VALID), strides and dilations; SAME, 1, 1 when absent. */
  final int padding;
  final int strideH;
  final int strideW;
  final int dilationH;
  final int dilationW;

  Operator(int index, int code, boolean custom, int[] inputs, int[] outputs, FlatTable options,
      int optionsType) {
    this.index = index;
    this.code = code;
    this.custom = custom;
    this.inputs = inputs;
    this.outputs = outputs;
    // Conv2DOptions (type 1) and DepthwiseConv2DOptions (type 2) share padding and strides;
    // depthwise has depth_multiplier in slot 3, which shifts its dilation fields by one.
    boolean conv = options != null && optionsType == 1;
    boolean depthwise = options != null && optionsType == 2;
    FlatTable o = conv || depthwise ? options : null;
    int dilationSlot = depthwise ? 5 : 4;
    this.padding = o == null ? 0 : o.u8Field(0, 0);
    this.strideW = orOne(o == null ? 0 : o.i32Field(1, 0));
    this.strideH = orOne(o == null ? 0 : o.i32Field(2, 0));
    this.dilationW = orOne(o == null ? 1 : o.i32Field(dilationSlot, 1));
    this.dilationH = orOne(o == null ? 1 : o.i32Field(dilationSlot + 1, 1));
  }

  private static int orOne(int v) {
    return v == 0 ? 1 : v;
  }

  String name() {
    switch (code) {
      case CONV_2D:
        return "CONV_2D";
      case DEPTHWISE_CONV_2D:
        return "DEPTHWISE_CONV_2D";
      case DEQUANTIZE:
        return "DEQUANTIZE";
      case FULLY_CONNECTED:
        return "FULLY_CONNECTED";
      case BATCH_MATMUL:
        return "BATCH_MATMUL";
      default:
        return "BUILTIN_" + code;
    }
  }
}
