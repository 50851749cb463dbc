package dev.edgeprune.core;

import static org.junit.Assert.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Random;
import org.junit.Test;

/** Truncated and corrupted models fail with EdgepruneException, never with a crash. */
public class ModelFuzzTest {
  @Test
  public void brokenModelsRaiseOnlyEdgepruneException() throws Exception {
    Random random = new Random(7);
    int refused = 0;
    int cases = 0;
    for (Path dir : Golden.dirs("models")) {
      byte[] good = Files.readAllBytes(dir.resolve("model.tflite"));
      for (int i = 0; i < 150; i++) {
        byte[] bad = i < 50
            ? Arrays.copyOf(good, random.nextInt(good.length))
            : corrupt(good, random, i < 100 ? 1 : 8);
        try {
          TfliteModel model = TfliteModel.parse(bad);
          new ActivationMap(model, LayerScan.scan(model));
        } catch (EdgepruneException expected) {
          refused++;
        } catch (RuntimeException e) {
          throw new AssertionError(dir + " case " + i + ": " + e, e);
        }
        cases++;
      }
    }
    // Every truncation fails; many single-byte changes hit data and still parse.
    assertTrue("refused only " + refused + " of " + cases, refused >= cases / 4);
  }

  private static byte[] corrupt(byte[] good, Random random, int bytes) {
    byte[] bad = good.clone();
    // The flatbuffer tables sit in the first and last few kilobytes; weights fill the middle.
    int span = Math.min(bad.length, 4096);
    for (int k = 0; k < bytes; k++) {
      int at = random.nextBoolean() ? random.nextInt(span) : bad.length - 1 - random.nextInt(span);
      bad[at] = (byte) random.nextInt(256);
    }
    return bad;
  }
}
