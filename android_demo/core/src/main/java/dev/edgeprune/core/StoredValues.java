package dev.edgeprune.core;

import java.nio.ByteBuffer;

/** Reading and writing single stored (possibly quantized) tensor elements in little-endian bytes. */
final class StoredValues {
  private StoredValues() {}

  /** Element {@code i} of {@code data} as stored (before dequantization), as a double. */
  static double read(ByteBuffer data, TensorType type, int i) {
    switch (type) {
      case FLOAT32:
        return data.getFloat(4 * i);
      case FLOAT16:
        return halfToFloat(data.getShort(2 * i));
      case FLOAT64:
        return data.getDouble(8 * i);
      case INT8:
        return data.get(i);
      case UINT8:
        return data.get(i) & 0xff;
      case INT16:
        return data.getShort(2 * i);
      case UINT16:
        return data.getShort(2 * i) & 0xffff;
      case INT32:
        return data.getInt(4 * i);
      case UINT32:
        return data.getInt(4 * i) & 0xffffffffL;
      case INT64:
        return data.getLong(8 * i);
      case UINT64:
        long v = data.getLong(8 * i);
        return v >= 0 ? v : (v >>> 1) * 2.0 + (v & 1);
      default:
        throw new EdgepruneException("tensors of type " + type + " hold no real numbers");
    }
  }

  /**
   * Store {@code zero} (a zero point, or 0) as element {@code i}: integers wrap to their width as
   * NumPy's astype does; floats store the value converted.
   */
  static void write(ByteBuffer data, TensorType type, int i, long zero) {
    switch (type) {
      case FLOAT32:
        data.putFloat(4 * i, zero);
        break;
      case FLOAT64:
        data.putDouble(8 * i, zero);
        break;
      case FLOAT16:
        if (zero != 0) {
          throw new EdgepruneException("float16 weights with a non-zero zero point are not supported");
        }
        data.putShort(2 * i, (short) 0);
        break;
      case INT8:
      case UINT8:
        data.put(i, (byte) zero);
        break;
      case INT16:
      case UINT16:
        data.putShort(2 * i, (short) zero);
        break;
      case INT32:
      case UINT32:
        data.putInt(4 * i, (int) zero);
        break;
      case INT64:
      case UINT64:
        data.putLong(8 * i, zero);
        break;
      default:
        throw new EdgepruneException("cannot write zeros into tensors of type " + type);
    }
  }

  /** IEEE 754 half precision bits to float (exact: every half is a float). */
  static float halfToFloat(short bits) {
    int sign = (bits & 0x8000) << 16;
    int exponent = (bits >> 10) & 0x1f;
    int mantissa = bits & 0x3ff;
    if (exponent == 0x1f) {
      return Float.intBitsToFloat(sign | 0x7f800000 | (mantissa << 13));
    }
    if (exponent == 0) {
      float magnitude = mantissa * 0x1p-24f;
      return sign == 0 ? magnitude : -magnitude;
    }
    return Float.intBitsToFloat(sign | ((exponent + 112) << 23) | (mantissa << 13));
  }
}
