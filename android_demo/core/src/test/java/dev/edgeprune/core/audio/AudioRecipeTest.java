package dev.edgeprune.core.audio;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import dev.edgeprune.core.EdgepruneException;
import org.junit.Test;

/** Recipes read from JSON: defaults, validation and refusal of fields from a newer edgeprune. */
public class AudioRecipeTest {
  @Test
  public void readsFieldsAndFillsDefaults() {
    AudioRecipe r = AudioRecipe.fromJson(
        "{\"kind\": \"audio\", \"length\": 4000, \"hop_length\": 64, \"normalize\": \"bin\","
            + " \"log\": false, \"fmin\": 1.5e1}");
    assertEquals(4000, r.length);
    assertEquals(8000, r.sampleRate);
    assertEquals(1 + (4000 - 256) / 64, r.frames());
    assertEquals("bin", r.normalize);
    assertEquals(15.0, r.fmin, 0.0);
    assertTrue(!r.log);
  }

  @Test
  public void refusesUnknownFieldsAndBadValues() {
    for (String json : new String[] {
        "{\"kind\": \"audio\", \"dither\": 1}",
        "{\"kind\": \"image\"}",
        "{\"n_fft\": 128}",
        "{\"length\": 1.5}",
        "{\"normalize\": \"global\"}",
        "{\"length\": 8000",
        "[1, 2]"}) {
      try {
        AudioRecipe.fromJson(json);
        fail("accepted " + json);
      } catch (EdgepruneException expected) {
        assertTrue(expected.getMessage(), expected.getMessage().contains("recipe"));
      }
    }
  }
}
