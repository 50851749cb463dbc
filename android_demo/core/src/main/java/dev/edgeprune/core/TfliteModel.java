package dev.edgeprune.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;

/**
 * A .tflite file as data, over a private mutable copy of its bytes: tensors, buffers (inline or
 * after the flatbuffer via Buffer.offset/size), quantization and the main subgraph's operators.
 * Mirrors {@code Model} in edgeprune/model.py, as far as pruning needs.
 */
public final class TfliteModel {
  private static final int MAX_RANK = 16;
  private static final int CUSTOM = 32;

  private final byte[] data;
  private final long[][] buffers; // {start, size} per buffer
  private final int[] opcodes; // builtin code per operator code, -1 for custom ops
  private final List<Subgraph> subgraphs = new ArrayList<>();
  private final int outputsField;

  /** The main subgraph's tensors, operators, inputs and outputs. */
  static final class Subgraph {
    final List<Tensor> tensors = new ArrayList<>();
    final List<Operator> operators = new ArrayList<>();
    int[] inputs;
    int[] outputs;
  }

  private TfliteModel(byte[] data) {
    this.data = data;
    if (data.length < 8 || data[4] != 'T' || data[5] != 'F' || data[6] != 'L' || data[7] != '3') {
      throw new EdgepruneException("not a .tflite file (no TFL3 identifier)");
    }
    ByteBuffer buf = ByteBuffer.wrap(data).order(ByteOrder.LITTLE_ENDIAN);
    FlatTable root = new FlatTable(buf, buf.getInt(0), "model");
    List<FlatTable> bufferTables = root.tables(4, "buffer");
    buffers = new long[bufferTables.size()][];
    for (int i = 0; i < buffers.length; i++) {
      buffers[i] = bufferSpan(bufferTables.get(i));
    }
    List<FlatTable> codes = root.tables(1, "operator code");
    opcodes = new int[codes.size()];
    for (int i = 0; i < opcodes.length; i++) {
      FlatTable c = codes.get(i);
      int code = Math.max(c.i8Field(0), c.i32Field(3, 0));
      opcodes[i] = code == CUSTOM ? -1 : code;
    }
    List<FlatTable> tables = root.tables(2, "subgraph");
    if (tables.isEmpty()) {
      throw new EdgepruneException("the model has no subgraph; re-export the model");
    }
    for (FlatTable t : tables) {
      subgraphs.add(subgraph(t));
    }
    outputsField = tables.get(0).field(2);
    checkConstantSizes();
  }

  /** Parse {@code bytes} (copied: the model never aliases the caller's array). */
  public static TfliteModel parse(byte[] bytes) {
    return new TfliteModel(bytes.clone());
  }

  private long[] bufferSpan(FlatTable table) {
    int[] span = table.span(0, 1);
    long offset = table.u64Field(1);
    long size = table.u64Field(2);
    if (offset > 1 || offset < 0) {
      if (offset < 0 || size < 0 || offset > data.length || size > data.length - offset) {
        throw table.fail(
            "external buffer at " + offset + "+" + size + " runs past the end of the file");
      }
      return new long[] {offset, size};
    }
    return new long[] {span[0], span[1]};
  }

  private Subgraph subgraph(FlatTable table) {
    Subgraph sg = new Subgraph();
    List<FlatTable> tensors = table.tables(0, "tensor");
    for (int i = 0; i < tensors.size(); i++) {
      sg.tensors.add(tensor(tensors.get(i), i));
    }
    int n = sg.tensors.size();
    List<FlatTable> ops = table.tables(3, "operator");
    for (int i = 0; i < ops.size(); i++) {
      FlatTable op = ops.get(i);
      long code = op.u32Field(0);
      if (code >= opcodes.length) {
        throw op.fail("opcode index " + code + " but the model has " + opcodes.length + " opcodes");
      }
      int builtin = opcodes[(int) code];
      sg.operators.add(
          new Operator(
              i,
              builtin,
              builtin < 0,
              indices(op, 1, n, "operator input", true),
              indices(op, 2, n, "operator output", false),
              op.table(4, "operator options"),
              op.u8Field(3, 0)));
    }
    sg.inputs = indices(table, 1, n, "subgraph input", false);
    sg.outputs = indices(table, 2, n, "subgraph output", false);
    return sg;
  }

  private Tensor tensor(FlatTable table, int index) {
    int[] shape = table.ints(0);
    boolean negative = Arrays.stream(shape).anyMatch(d -> d < 0);
    if (shape.length > MAX_RANK || negative) {
      throw table.fail("implausible shape " + Arrays.toString(shape));
    }
    int type = table.u8Field(1, 0);
    long buffer = table.u32Field(2);
    if (buffer >= Math.max(buffers.length, 1)) {
      throw table.fail("buffer index " + buffer + " but the model has " + buffers.length + " buffers");
    }
    return new Tensor(
        index,
        table.string(3),
        shape,
        TensorType.of(type),
        (int) buffer,
        Quantization.read(table.table(4, "quantization of tensor " + index), shape),
        table.field(6) != 0);
  }

  private static int[] indices(FlatTable table, int slot, int limit, String what, boolean optional) {
    int[] values = table.ints(slot);
    int low = optional ? -1 : 0;
    for (int v : values) {
      if (v < low || v >= limit) {
        throw table.fail(what + " refers to a tensor outside 0.." + (limit - 1));
      }
    }
    return values;
  }

  private void checkConstantSizes() {
    for (Subgraph sg : subgraphs) {
      for (Tensor t : sg.tensors) {
        long size = t.buffer < buffers.length ? buffers[t.buffer][1] : 0;
        if (size != 0 && t.type.itemSize > 0 && !t.sparse
            && size != (long) t.size() * t.type.itemSize) {
          throw new EdgepruneException(
              "corrupt .tflite: tensor '" + t.name + "' " + Arrays.toString(t.shape) + " "
                  + t.type + " needs " + (long) t.size() * t.type.itemSize
                  + " bytes but its buffer holds " + size + "; re-export the model");
        }
      }
    }
  }

  // ----- access ----------------------------------------------------------------------------

  Subgraph main() {
    return subgraphs.get(0);
  }

  public Tensor tensor(int index) {
    return main().tensors.get(index);
  }

  public int tensorCount() {
    return main().tensors.size();
  }

  public int[] inputs() {
    return main().inputs.clone();
  }

  public int[] outputs() {
    return main().outputs.clone();
  }

  List<Operator> operators() {
    return Collections.unmodifiableList(main().operators);
  }

  /** Size of the file in bytes. */
  public int byteSize() {
    return data.length;
  }

  /** A copy of the file's bytes. */
  public byte[] bytes() {
    return data.clone();
  }

  public boolean isConstant(int index) {
    Tensor t = tensor(index);
    return t.buffer > 0 && buffers[t.buffer][1] > 0;
  }

  /** How many tensors (over all subgraphs) point at each buffer. */
  int[] bufferUsers() {
    int[] users = new int[buffers.length];
    for (Subgraph sg : subgraphs) {
      for (Tensor t : sg.tensors) {
        if (t.buffer > 0) {
          users[t.buffer]++;
        }
      }
    }
    return users;
  }

  /** A little-endian view of a constant tensor's stored bytes; writes go into this model. */
  ByteBuffer tensorData(int index) {
    Tensor t = tensor(index);
    if (!isConstant(index)) {
      throw new EdgepruneException("tensor '" + t.name + "' is not a constant: it has no data");
    }
    if (t.type.itemSize == 0 || t.sparse) {
      String kind = t.sparse ? "sparse" : t.type.toString();
      throw new EdgepruneException("tensor '" + t.name + "' is stored as " + kind
          + ", which is not supported");
    }
    int start = (int) buffers[t.buffer][0];
    return ByteBuffer.wrap(data, start, t.byteSize()).slice().order(ByteOrder.LITTLE_ENDIAN);
  }

  /** A constant tensor's real values (dequantized where it is quantized), flat in C order. */
  public double[] dequantized(int index) {
    Tensor t = tensor(index);
    ByteBuffer stored = tensorData(index);
    if (!t.type.isReal()) {
      throw new EdgepruneException("tensor '" + t.name + "' of type " + t.type + " is not numeric");
    }
    Quantization q = t.quantization;
    double[] out = new double[t.size()];
    for (int i = 0; i < out.length; i++) {
      double v = StoredValues.read(stored, t.type, i);
      if (q != null) {
        int c = q.channel(t.shape, i);
        v = (double) q.scale[c] * (v - (double) q.zeroPoint[c]);
      }
      out[i] = v;
    }
    return out;
  }

  // ----- writing -----------------------------------------------------------------------------

  /** An independent model with the same structure and its own copy of the bytes. */
  public TfliteModel copy() {
    return new TfliteModel(data.clone());
  }

  /**
   * A copy whose main subgraph also outputs {@code tensors} (after its own outputs): the new
   * outputs vector is appended to the file and the subgraph's outputs field re-pointed at it, so
   * everything else keeps its bytes and offsets. Same bytes as Python's {@code with_outputs}.
   */
  public TfliteModel withOutputs(int[] tensors) {
    if (outputsField == 0) {
      throw new EdgepruneException("the main subgraph has no outputs field to extend");
    }
    int[] own = main().outputs;
    List<Integer> outputs = new ArrayList<>();
    for (int t : own) {
      outputs.add(t);
    }
    for (int t : tensors) {
      if (Arrays.stream(own).noneMatch(o -> o == t)) {
        outputs.add(t);
      }
    }
    int start = (data.length + 3) / 4 * 4;
    ByteBuffer out = ByteBuffer.allocate(start + 4 + 4 * outputs.size())
        .order(ByteOrder.LITTLE_ENDIAN);
    out.put(data);
    out.position(start);
    out.putInt(outputs.size());
    for (int t : outputs) {
      out.putInt(t);
    }
    out.putInt(outputsField, start - outputsField);
    return new TfliteModel(out.array());
  }
}
