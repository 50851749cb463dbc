package dev.edgeprune.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.junit.Test;

/** The Java core against the Python core's golden vectors: same layers, maps, masks and bytes. */
public class GoldenTest {
  @Test
  public void scanFindsPythonsLayersAndWatchOrder() throws Exception {
    for (Path dir : Golden.dirs("models")) {
      TfliteModel model = Golden.model(dir.resolve("model.tflite"));
      List<Layer> layers = LayerScan.scan(model);
      List<int[]> expected = Golden.lines(dir.resolve("layers.txt"));
      assertEquals(dir + ": layer count", expected.size(), layers.size());
      for (int i = 0; i < layers.size(); i++) {
        Layer x = layers.get(i);
        int[] got = {x.op, x.kind.ordinal(), x.input, x.output, x.weight, x.bias};
        assertArrayEquals(dir + ": layer " + i, expected.get(i), got);
      }
      assertArrayEquals(dir + ": watched tensors", Golden.ints(dir.resolve("watched.txt")),
          new ActivationMap(model, layers).watched());
    }
  }

  @Test
  public void instrumentedModelIsByteIdentical() throws Exception {
    for (Path dir : Golden.dirs("models")) {
      TfliteModel model = Golden.model(dir.resolve("model.tflite"));
      int[] watched = new ActivationMap(model, LayerScan.scan(model)).watched();
      byte[] got = model.withOutputs(watched).bytes();
      byte[] expected = Files.readAllBytes(dir.resolve("instrumented.tflite"));
      assertEquals(dir + ": first differing byte", -1, Golden.firstDifference(expected, got));
      List<Integer> outputs = new java.util.ArrayList<>();
      for (int t : TfliteModel.parse(got).outputs()) {
        outputs.add(t);
      }
      for (int t : watched) {
        assertTrue(dir + ": tensor " + t + " is an output", outputs.contains(t));
      }
    }
  }

  @Test
  public void activationMapMatchesPythonToFloatTolerance() throws Exception {
    for (Path dir : Golden.dirs("models")) {
      TfliteModel model = Golden.model(dir.resolve("model.tflite"));
      List<Layer> layers = LayerScan.scan(model);
      ActivationMap map = new ActivationMap(model, layers);
      int samples = Integer.parseInt(
          Golden.properties(dir.resolve("info.properties")).getProperty("samples"));
      ByteBuffer raw = Golden.littleEndian(dir.resolve("activations.bin"));
      for (int s = 0; s < samples; s++) {
        Map<Integer, ByteBuffer> stored = new HashMap<>();
        for (int t : map.watched()) {
          ByteBuffer one = raw.slice();
          one.limit(map.byteSize(t));
          raw.position(raw.position() + map.byteSize(t));
          stored.put(t, one);
        }
        map.update(stored);
      }
      assertEquals(dir + ": every activation byte is consumed", 0, raw.remaining());
      assertEquals(samples, map.count());
      Statistics expected = Golden.map(dir.resolve("map.bin"), layers);
      for (int i = 0; i < layers.size(); i++) {
        assertClose(dir + " layer " + i + " S_in", expected.sIn(i), map.sIn(i));
        assertClose(dir + " layer " + i + " S_out", expected.sOut(i), map.sOut(i));
      }
    }
  }

  /** Relative 1e-9: both sides add the same float32 partial sums, only fold orders differ. */
  private static void assertClose(String what, double[] expected, double[] got) {
    assertEquals(what + ": length", expected.length, got.length);
    double largest = 0;
    for (double v : expected) {
      largest = Math.max(largest, Math.abs(v));
    }
    assertTrue(what + ": all zero", largest > 0);
    for (int k = 0; k < got.length; k++) {
      double tolerance = 1e-9 * Math.abs(expected[k]) + 1e-12 * largest;
      assertEquals(what + "[" + k + "]", expected[k], got[k], tolerance);
    }
  }

  @Test
  public void masksAndPrunedModelsAreByteIdentical() throws Exception {
    int cases = 0;
    for (Path dir : Golden.dirs("models")) {
      TfliteModel model = Golden.model(dir.resolve("model.tflite"));
      List<Layer> layers = LayerScan.scan(model);
      Statistics python = Golden.map(dir.resolve("map.bin"), layers);
      for (Path caseDir : Golden.dirs("models/" + dir.getFileName() + "/cases")) {
        Properties p = Golden.properties(caseDir.resolve("case.properties"));
        Scores scores = Scores.compute(model, layers, python,
            Scores.Granularity.valueOf(p.getProperty("granularity").toUpperCase()),
            Boolean.parseBoolean(p.getProperty("keep_classifier")));
        List<Mask> masks = scores.masks(Double.parseDouble(p.getProperty("sparsity")),
            Scores.Scope.valueOf(p.getProperty("scope").toUpperCase()));
        assertArrayEquals(caseDir + ": keep flags",
            Files.readAllBytes(caseDir.resolve("keep.bin")), flags(masks));
        byte[] pruned = Pruner.apply(model, masks).bytes();
        byte[] expected = Files.readAllBytes(caseDir.resolve("pruned.tflite"));
        assertEquals(caseDir + ": first differing byte of the pruned model", -1,
            Golden.firstDifference(expected, pruned));
        cases++;
      }
    }
    assertTrue("too few golden cases: " + cases, cases >= 12);
  }

  private static byte[] flags(List<Mask> masks) {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    for (Mask m : masks) {
      for (boolean k : m.keepWeights) {
        out.write(k ? 1 : 0);
      }
      if (m.keepChannels != null) {
        for (boolean k : m.keepChannels) {
          out.write(k ? 1 : 0);
        }
      }
    }
    return out.toByteArray();
  }
}
