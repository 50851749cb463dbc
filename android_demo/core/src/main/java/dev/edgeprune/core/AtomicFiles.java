package dev.edgeprune.core;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;

/** Atomic file writes: a crash or a killed app never leaves a half-written model behind. */
public final class AtomicFiles {
  private AtomicFiles() {}

  /** Write {@code data} to a temp file beside {@code target}, fsync it, then rename it over. */
  public static void write(File target, byte[] data) throws IOException {
    File temp = File.createTempFile("." + target.getName() + ".", ".tmp",
        target.getAbsoluteFile().getParentFile());
    boolean done = false;
    try {
      try (FileOutputStream out = new FileOutputStream(temp)) {
        out.write(data);
        out.getFD().sync();
      }
      if (!temp.renameTo(target)) {
        throw new IOException("cannot rename " + temp + " to " + target);
      }
      done = true;
    } finally {
      if (!done && !temp.delete()) {
        temp.deleteOnExit();
      }
    }
  }
}
