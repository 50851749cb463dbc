package dev.edgeprune.core;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;

/**
 * One flatbuffer table whose vtable and fields are checked to lie inside the file, so that a
 * truncated or hostile model raises {@link EdgepruneException} instead of reading out of bounds.
 * Mirrors {@code _Table} in edgeprune/model.py.
 */
final class FlatTable {
  private final ByteBuffer buf;
  private final int pos;
  private final int vtable;
  private final int vtableLength;
  private final String what;

  FlatTable(ByteBuffer buf, int pos, String what) {
    this.buf = buf.duplicate().order(ByteOrder.LITTLE_ENDIAN);
    this.pos = pos;
    this.what = what;
    long vt = pos - (long) i32(pos);
    if (vt < 0 || vt > buf.limit()) {
      throw fail("bad vtable offset");
    }
    this.vtable = (int) vt;
    this.vtableLength = u16(vtable);
    if (vtableLength < 4 || vtableLength % 2 != 0 || vtable + (long) vtableLength > buf.limit()) {
      throw fail("bad vtable at byte " + vtable);
    }
  }

  EdgepruneException fail(String why) {
    return new EdgepruneException(
        "corrupt or truncated .tflite: " + what + ": " + why + "; re-export the model");
  }

  private void check(long at, int size) {
    if (at < 0 || at + size > buf.limit()) {
      throw fail("offset " + at + " outside the " + buf.limit() + "-byte file");
    }
  }

  int u8(int at) {
    check(at, 1);
    return buf.get(at) & 0xff;
  }

  int u16(int at) {
    check(at, 2);
    return buf.getShort(at) & 0xffff;
  }

  int i32(int at) {
    check(at, 4);
    return buf.getInt(at);
  }

  long u32(int at) {
    return i32(at) & 0xffffffffL;
  }

  long u64(int at) {
    check(at, 8);
    return buf.getLong(at);
  }

  /** Absolute position of field {@code slot}, or 0 when the field is absent. */
  int field(int slot) {
    int at = 4 + 2 * slot;
    if (at + 2 > vtableLength) {
      return 0;
    }
    int voff = u16(vtable + at);
    return voff == 0 ? 0 : pos + voff;
  }

  int u8Field(int slot, int fallback) {
    int at = field(slot);
    return at == 0 ? fallback : u8(at);
  }

  /** A signed byte field (OperatorCode.deprecated_builtin_code). */
  int i8Field(int slot) {
    int at = field(slot);
    return at == 0 ? 0 : (byte) u8(at);
  }

  int i32Field(int slot, int fallback) {
    int at = field(slot);
    return at == 0 ? fallback : i32(at);
  }

  long u32Field(int slot) {
    int at = field(slot);
    return at == 0 ? 0 : u32(at);
  }

  /** An unsigned 64-bit field; values beyond 2^63 come back negative and fail bounds checks. */
  long u64Field(int slot) {
    int at = field(slot);
    return at == 0 ? 0 : u64(at);
  }

  private int target(int slot) {
    int at = field(slot);
    if (at == 0) {
      return 0;
    }
    long t = at + u32(at);
    check(t, 0);
    return (int) t;
  }

  FlatTable table(int slot, String name) {
    int at = target(slot);
    return at == 0 ? null : new FlatTable(buf, at, name);
  }

  /** {start, count} of the vector in field {@code slot}; {0, 0} when absent. */
  int[] span(int slot, int itemSize) {
    int at = target(slot);
    if (at == 0) {
      return new int[] {0, 0};
    }
    long count = u32(at);
    if (at + 4 + count * itemSize > buf.limit()) {
      throw fail("vector of " + count + " items runs past the end of the file");
    }
    return new int[] {at + 4, (int) count};
  }

  int[] ints(int slot) {
    int[] s = span(slot, 4);
    int[] out = new int[s[1]];
    for (int i = 0; i < out.length; i++) {
      out[i] = buf.getInt(s[0] + 4 * i);
    }
    return out;
  }

  float[] floats(int slot) {
    int[] s = span(slot, 4);
    float[] out = new float[s[1]];
    for (int i = 0; i < out.length; i++) {
      out[i] = buf.getFloat(s[0] + 4 * i);
    }
    return out;
  }

  long[] longs(int slot) {
    int[] s = span(slot, 8);
    long[] out = new long[s[1]];
    for (int i = 0; i < out.length; i++) {
      out[i] = buf.getLong(s[0] + 8 * i);
    }
    return out;
  }

  List<FlatTable> tables(int slot, String name) {
    int[] s = span(slot, 4);
    List<FlatTable> out = new ArrayList<>(s[1]);
    for (int i = 0; i < s[1]; i++) {
      int p = s[0] + 4 * i;
      long t = p + u32(p);
      check(t, 0);
      out.add(new FlatTable(buf, (int) t, name + " " + i));
    }
    return out;
  }

  String string(int slot) {
    int[] s = span(slot, 1);
    byte[] bytes = new byte[s[1]];
    ByteBuffer view = buf.duplicate();
    view.position(s[0]);
    view.get(bytes);
    return new String(bytes, StandardCharsets.UTF_8);
  }
}
