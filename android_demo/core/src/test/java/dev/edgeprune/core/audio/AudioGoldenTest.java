package dev.edgeprune.core.audio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.List;
import java.util.Properties;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.Assume;
import org.junit.Test;

/** Features of the same PCM samples under the same recipe equal Python's to float tolerance. */
public class AudioGoldenTest {
  @Test
  public void featuresMatchPython() throws Exception {
    String root = System.getProperty("edgeprune.golden");
    Assume.assumeTrue("golden vectors: run with -Dedgeprune.golden=DIR", root != null);
    Path audio = Paths.get(root, "audio");
    List<Path> cases;
    try (Stream<Path> s = Files.list(audio)) {
      cases = s.sorted().collect(Collectors.toList());
    }
    assertFalse(cases.isEmpty());
    for (Path dir : cases) {
      AudioRecipe recipe = AudioRecipe.fromJson(
          new String(Files.readAllBytes(dir.resolve("recipe.json")), "UTF-8"));
      ByteBuffer pcmBytes = ByteBuffer.wrap(Files.readAllBytes(dir.resolve("pcm.bin")))
          .order(ByteOrder.LITTLE_ENDIAN);
      short[] pcm = new short[pcmBytes.remaining() / 2];
      pcmBytes.asShortBuffer().get(pcm);
      ByteBuffer expected = ByteBuffer.wrap(Files.readAllBytes(dir.resolve("features.bin")))
          .order(ByteOrder.LITTLE_ENDIAN);
      Properties info = new Properties();
      info.load(Files.newInputStream(dir.resolve("info.properties")));
      AudioFeatures features = new AudioFeatures(recipe);
      float[] got = features.compute(pcm);
      assertEquals(dir + ": frames", Integer.parseInt(info.getProperty("frames")),
          recipe.frames());
      assertEquals(dir + ": bins", Integer.parseInt(info.getProperty("bins")), features.bins());
      assertEquals(dir + ": size", expected.remaining() / 4, got.length);
      for (int i = 0; i < got.length; i++) {
        float e = expected.getFloat(4 * i);
        assertEquals(dir + " feature " + i, e, got[i], 1e-4 * Math.max(1.0, Math.abs(e)));
      }
    }
  }
}
