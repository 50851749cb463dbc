package dev.edgeprune.core;

/**
 * One prunable operator (CONV_2D, DEPTHWISE_CONV_2D or FULLY_CONNECTED): its tensors, geometry
 * and the arithmetic of its statistics. Mirrors {@code Layer} in edgeprune/layers.py.
 */
public final class Layer {
  /** How the op uses its weight: conv [o,kh,kw,i], depthwise [1,kh,kw,i*m], dense [o,i]. */
  public enum Kind { CONV, DEPTHWISE, DENSE }

  public final int op;
  public final Kind kind;
  /** Activation input and output tensors (the output after the fused activation). */
  public final int input;
  public final int output;
  /** Constant tensor holding the stored weights (a DEQUANTIZE's input if there is one). */
  public final int weight;
  /** Constant bias tensor, or -1. */
  public final int bias;
  final int[] weightShape;
  final int strideH;
  final int strideW;
  final int dilationH;
  final int dilationW;
  final boolean samePadding;
  final int depthMultiplier;
  final int outH;
  final int outW;

  Layer(int op, Kind kind, int input, int output, int weight, int bias, int[] weightShape,
      Operator geometry, int depthMultiplier, int outH, int outW) {
    this.op = op;
    this.kind = kind;
    this.input = input;
    this.output = output;
    this.weight = weight;
    this.bias = bias;
    this.weightShape = weightShape.clone();
    this.strideH = geometry.strideH;
    this.strideW = geometry.strideW;
    this.dilationH = geometry.dilationH;
    this.dilationW = geometry.dilationW;
    this.samePadding = geometry.padding != 1;
    this.depthMultiplier = depthMultiplier;
    this.outH = outH;
    this.outW = outW;
  }

  boolean spatial() {
    return kind != Kind.DENSE;
  }

  /** Axis of the weight that indexes output channels. */
  int outAxis() {
    return kind == Kind.DEPTHWISE ? 3 : 0;
  }

  public int outChannels() {
    return weightShape[outAxis()];
  }

  public int weightCount() {
    int n = 1;
    for (int d : weightShape) {
      n *= d;
    }
    return n;
  }

  /** Number of S_in entries: kh*kw*c_in for spatial layers, in_features for dense ones. */
  int sInSize() {
    if (spatial()) {
      return weightShape[1] * weightShape[2] * (weightShape[3] / depthMultiplier);
    }
    return weightShape[weightShape.length - 1];
  }

  /**
   * S_in from the sum over samples of |x| (the input without its batch axis, [h, w, c] for
   * spatial layers): each kernel offset (i, j) sums the strided window of the zero-padded input
   * it meets at every output position. Returns [kh, kw, c] (or [in]) flat in C order.
   */
  double[] sIn(double[] sumAbsX, int[] inputShape) {
    double[] s = new double[sInSize()];
    if (!spatial()) {
      for (int k = 0; k < sumAbsX.length; k++) {
        s[k % s.length] += sumAbsX[k];
      }
      return s;
    }
    int r = inputShape.length;
    int h = inputShape[r - 3];
    int w = inputShape[r - 2];
    int c = inputShape[r - 1];
    int kh = weightShape[1];
    int kw = weightShape[2];
    int padH = padBefore(h, outH, kh, strideH, dilationH);
    int padW = padBefore(w, outW, kw, strideW, dilationW);
    for (int i = 0; i < kh; i++) {
      for (int j = 0; j < kw; j++) {
        int base = (i * kw + j) * c;
        for (int oh = 0; oh < outH; oh++) {
          int y = oh * strideH + i * dilationH - padH;
          if (y < 0 || y >= h) {
            continue;
          }
          for (int ow = 0; ow < outW; ow++) {
            int x = ow * strideW + j * dilationW - padW;
            if (x < 0 || x >= w) {
              continue;
            }
            int from = (y * w + x) * c;
            for (int ch = 0; ch < c; ch++) {
              s[base + ch] += sumAbsX[from + ch];
            }
          }
        }
      }
    }
    return s;
  }

  /** Zero rows (or columns) the op adds before the input: TFLite's SAME rule, 0 for VALID. */
  private int padBefore(int size, int out, int k, int stride, int dilation) {
    if (!samePadding) {
      return 0;
    }
    return Math.max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0) / 2;
  }

  /** S_out[c] from the sum over samples of |y| (the output without its batch axis). */
  double[] sOut(double[] sumAbsY) {
    double[] s = new double[outChannels()];
    for (int k = 0; k < sumAbsY.length; k++) {
      s[k % s.length] += sumAbsY[k];
    }
    return s;
  }

  /** Index into S_in of the input that weight element {@code flat} multiplies (Eq. 1). */
  int sInIndex(int flat) {
    if (kind == Kind.DEPTHWISE) {
      int channels = weightShape[3];
      int offset = flat / channels; // kernel position (i, j)
      int o = flat % channels;
      return offset * (channels / depthMultiplier) + o / depthMultiplier;
    }
    return flat % sInSize(); // conv: [o | kh, kw, c]; dense: [o | in]
  }

  /** Output channel of weight element {@code flat}. */
  int channelOf(int flat) {
    if (kind == Kind.DEPTHWISE) {
      return flat % weightShape[3];
    }
    return flat / (weightCount() / weightShape[0]);
  }
}
