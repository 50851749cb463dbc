package dev.edgeprune.core;

import static org.junit.Assert.assertFalse;

import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.Assume;

/** Reads the golden vectors that tests/java_golden.py writes (layout in its docstring). */
final class Golden {
  private Golden() {}

  /** The golden directory from -Dedgeprune.golden; tests without it are skipped, not passed. */
  static Path root() {
    String dir = System.getProperty("edgeprune.golden");
    Assume.assumeTrue("golden vectors: run with -Dedgeprune.golden=DIR (tests/test_java_golden.py)",
        dir != null && !dir.isEmpty());
    return Paths.get(dir);
  }

  /** Sub-directories of root()/{@code kind}, sorted; there must be some. */
  static List<Path> dirs(String kind) throws IOException {
    List<Path> out;
    try (Stream<Path> s = Files.list(root().resolve(kind))) {
      out = s.filter(Files::isDirectory).sorted().collect(Collectors.toList());
    }
    assertFalse("no golden vectors under " + root().resolve(kind), out.isEmpty());
    return out;
  }

  static TfliteModel model(Path file) throws IOException {
    return TfliteModel.parse(Files.readAllBytes(file));
  }

  static Properties properties(Path file) throws IOException {
    Properties p = new Properties();
    try (InputStream in = Files.newInputStream(file)) {
      p.load(in);
    }
    return p;
  }

  static ByteBuffer littleEndian(Path file) throws IOException {
    return ByteBuffer.wrap(Files.readAllBytes(file)).order(ByteOrder.LITTLE_ENDIAN);
  }

  static int[] ints(Path file) throws IOException {
    String text = new String(Files.readAllBytes(file), "UTF-8").trim();
    return Stream.of(text.split("\\s+")).mapToInt(Integer::parseInt).toArray();
  }

  static List<int[]> lines(Path file) throws IOException {
    List<int[]> out = new ArrayList<>();
    for (String line : Files.readAllLines(file)) {
      String[] f = line.trim().split(" ");
      // op kind input output weight bias: the kind is compared by name, the rest as numbers
      out.add(new int[] {Integer.parseInt(f[0]), kindCode(f[1]), Integer.parseInt(f[2]),
          Integer.parseInt(f[3]), Integer.parseInt(f[4]), Integer.parseInt(f[5])});
    }
    return out;
  }

  static int kindCode(String pythonKind) {
    return Layer.Kind.valueOf(pythonKind.equals("dense") ? "DENSE" : pythonKind.toUpperCase())
        .ordinal();
  }

  /** Python's S_in and S_out per layer, read from map.bin in the layers' shapes. */
  static Statistics map(Path file, List<Layer> layers) throws IOException {
    ByteBuffer b = littleEndian(file);
    double[][] sIn = new double[layers.size()][];
    double[][] sOut = new double[layers.size()][];
    for (int i = 0; i < layers.size(); i++) {
      sIn[i] = doubles(b, layers.get(i).sInSize());
      sOut[i] = doubles(b, layers.get(i).outChannels());
    }
    if (b.hasRemaining()) {
      throw new AssertionError(file + " holds more values than the layers need");
    }
    return new Statistics() {
      @Override
      public double[] sIn(int layer) {
        return sIn[layer].clone();
      }

      @Override
      public double[] sOut(int layer) {
        return sOut[layer].clone();
      }
    };
  }

  private static double[] doubles(ByteBuffer b, int n) {
    double[] out = new double[n];
    for (int i = 0; i < n; i++) {
      out[i] = b.getDouble();
    }
    return out;
  }

  /** Index of the first differing byte, or -1 when equal (also -1 never for different sizes). */
  static long firstDifference(byte[] a, byte[] b) {
    for (int i = 0; i < Math.min(a.length, b.length); i++) {
      if (a[i] != b[i]) {
        return i;
      }
    }
    return a.length == b.length ? -1 : Math.min(a.length, b.length);
  }
}
