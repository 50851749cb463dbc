package dev.edgeprune.demo;

import dev.edgeprune.core.Quantization;
import dev.edgeprune.core.Tensor;
import dev.edgeprune.core.TfliteModel;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.HashMap;
import java.util.Map;
import org.tensorflow.lite.Interpreter;

/**
 * A LiteRT interpreter over one model, fed features and read as raw stored bytes per output
 * tensor: for an instrumented model (watched tensors added as outputs) those are exactly what
 * the core's ActivationMap.update takes. Quantized inputs are quantized as Python's Runner does.
 */
final class LiteRtModel implements AutoCloseable {
  private final TfliteModel model;
  private final Interpreter interpreter;
  private final int[] outputs;
  private final ByteBuffer input;
  private final Map<Integer, Object> buffers = new HashMap<>();

  LiteRtModel(TfliteModel model) {
    this.model = model;
    ByteBuffer bytes = ByteBuffer.allocateDirect(model.byteSize()).order(ByteOrder.nativeOrder());
    bytes.put(model.bytes());
    bytes.rewind();
    interpreter = new Interpreter(bytes, new Interpreter.Options().setNumThreads(2));
    input = direct(model.tensor(model.inputs()[0]).byteSize());
    outputs = model.outputs();
    for (int j = 0; j < outputs.length; j++) {
      buffers.put(j, direct(model.tensor(outputs[j]).byteSize()));
    }
  }

  private static ByteBuffer direct(int size) {
    return ByteBuffer.allocateDirect(size).order(ByteOrder.nativeOrder());
  }

  /** Invoke on one sample; every output's stored bytes by tensor index, valid until next run. */
  Map<Integer, ByteBuffer> run(float[] features) {
    Tensor in = model.tensor(model.inputs()[0]);
    if (features.length != in.size()) {
      throw new IllegalArgumentException(
          features.length + " features for a model input of " + in.size() + " values");
    }
    input.rewind();
    Quantization q = in.quantization;
    for (float x : features) {
      switch (in.type) {
        case FLOAT32:
          input.putFloat(x);
          break;
        case INT8:
          input.put((byte) quantize(x, q, -128, 127));
          break;
        case UINT8:
          input.put((byte) quantize(x, q, 0, 255));
          break;
        default:
          throw new IllegalArgumentException("model input of type " + in.type);
      }
    }
    input.rewind();
    for (Object b : buffers.values()) {
      ((ByteBuffer) b).rewind();
    }
    interpreter.runForMultipleInputsOutputs(new Object[] {input}, buffers);
    Map<Integer, ByteBuffer> values = new HashMap<>();
    for (int j = 0; j < outputs.length; j++) {
      ByteBuffer b = (ByteBuffer) buffers.get(j);
      b.rewind();
      values.put(outputs[j], b.duplicate().order(ByteOrder.nativeOrder()));
    }
    return values;
  }

  private static long quantize(float x, Quantization q, int low, int high) {
    long v = (long) Math.rint(x / q.scale()) + q.zeroPoint();
    return Math.max(low, Math.min(high, v));
  }

  /** The predicted class: argmax of the first output (an affine dequantization keeps it). */
  int predict(float[] features) {
    int out = outputs[0];
    ByteBuffer logits = run(features).get(out);
    Tensor t = model.tensor(out);
    int best = 0;
    double bestValue = Double.NEGATIVE_INFINITY;
    for (int c = 0; c < t.size(); c++) {
      double v;
      switch (t.type) {
        case FLOAT32:
          v = logits.getFloat(4 * c);
          break;
        case INT8:
          v = logits.get(c);
          break;
        case UINT8:
          v = logits.get(c) & 0xff;
          break;
        default:
          throw new IllegalArgumentException("model output of type " + t.type);
      }
      if (v > bestValue) {
        best = c;
        bestValue = v;
      }
    }
    return best;
  }

  @Override
  public void close() {
    interpreter.close();
  }
}
