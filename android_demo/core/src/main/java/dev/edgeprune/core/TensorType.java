package dev.edgeprune.core;

/** TFLite tensor element types (schema TensorType) and the byte size of those stored plainly. */
public enum TensorType {
  FLOAT32(0, 4),
  FLOAT16(1, 2),
  INT32(2, 4),
  UINT8(3, 1),
  INT64(4, 8),
  STRING(5, 0),
  BOOL(6, 1),
  INT16(7, 2),
  COMPLEX64(8, 8),
  INT8(9, 1),
  FLOAT64(10, 8),
  COMPLEX128(11, 16),
  UINT64(12, 8),
  RESOURCE(13, 0),
  VARIANT(14, 0),
  UINT32(15, 4),
  UINT16(16, 2),
  INT4(17, 0),
  BFLOAT16(18, 0),
  UNKNOWN(-1, 0);

  public final int code;
  /** Bytes per stored element; 0 for types edgeprune cannot view (strings, packed int4, ...). */
  public final int itemSize;

  TensorType(int code, int itemSize) {
    this.code = code;
    this.itemSize = itemSize;
  }

  static TensorType of(int code) {
    for (TensorType t : values()) {
      if (t.code == code) {
        return t;
      }
    }
    return UNKNOWN;
  }

  /** Whether values of this type can be read as real numbers (booleans and complex cannot). */
  boolean isReal() {
    return itemSize > 0 && this != BOOL && this != COMPLEX64 && this != COMPLEX128;
  }
}
