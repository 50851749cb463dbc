package dev.edgeprune.demo;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;

/** Reading whole streams (assets, model files) on every API level the app supports. */
final class Streams {
  private Streams() {}

  static byte[] readAll(InputStream in) throws IOException {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    byte[] chunk = new byte[1 << 16];
    for (int n; (n = in.read(chunk)) > 0; ) {
      out.write(chunk, 0, n);
    }
    return out.toByteArray();
  }
}
