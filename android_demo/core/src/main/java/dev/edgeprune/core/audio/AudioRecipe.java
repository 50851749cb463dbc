package dev.edgeprune.core.audio;

import dev.edgeprune.core.EdgepruneException;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * Everything that determines the features of a waveform: the fields of Python's
 * {@code edgeprune.preprocess.audio.AudioRecipe}, read from its {@code to_dict()} JSON so that the
 * device computes exactly the features the source model was trained on.
 */
public final class AudioRecipe {
  public final int sampleRate;
  public final int length;
  final boolean centre;
  final boolean peakNormalize;
  final int frameLength;
  final int hopLength;
  final int nFft;
  final int power;
  final int melBins;
  final double fmin;
  final double fmax;
  final boolean log;
  final double logFloor;
  final String normalize;
  final double stdFloor;

  private static final Set<String> FIELDS = new HashSet<>(Arrays.asList("kind", "sample_rate",
      "length", "align", "peak_normalize", "frame_length", "hop_length", "window", "n_fft", "power", "mel_bins",
      "fmin", "fmax", "log", "log_floor", "normalize", "std_floor"));

  private AudioRecipe(Map<String, Object> d) {
    for (String key : d.keySet()) {
      if (!FIELDS.contains(key)) {
        throw new EdgepruneException("unknown audio recipe field " + key + ": the recipe was "
            + "written by a newer edgeprune, or is not an audio recipe");
      }
    }
    Object kind = d.getOrDefault("kind", "audio");
    if (!"audio".equals(kind)) {
      throw new EdgepruneException("recipe is of kind " + kind + ", not 'audio'");
    }
    sampleRate = integer(d, "sample_rate", 8000);
    length = integer(d, "length", 8000);
    String align = text(d, "align", "centre");
    centre = align.equals("centre");
    peakNormalize = flag(d, "peak_normalize", false);
    frameLength = integer(d, "frame_length", 256);
    hopLength = integer(d, "hop_length", 128);
    String window = text(d, "window", "hann");
    nFft = integer(d, "n_fft", 256);
    power = integer(d, "power", 2);
    melBins = integer(d, "mel_bins", 40);
    fmin = number(d, "fmin", 20.0);
    fmax = number(d, "fmax", 4000.0);
    log = flag(d, "log", true);
    logFloor = number(d, "log_floor", 1e-6);
    normalize = text(d, "normalize", "none");
    stdFloor = number(d, "std_floor", 1e-3);
    boolean ok = sampleRate > 0 && length > 0 && frameLength > 0 && hopLength > 0
        && frameLength <= length && nFft >= frameLength && (power == 1 || power == 2)
        && melBins >= 0 && 0 <= fmin && fmin < fmax && fmax <= sampleRate / 2.0
        && logFloor > 0 && stdFloor > 0 && window.equals("hann")
        && (centre || align.equals("start"))
        && (normalize.equals("none") || normalize.equals("utterance") || normalize.equals("bin"));
    if (!ok) {
      throw new EdgepruneException("invalid audio recipe " + d
          + ": check it with edgeprune.preprocess.AudioRecipe.from_dict on the host");
    }
  }

  /** A recipe from the JSON of Python's {@code AudioRecipe.to_dict()}. */
  public static AudioRecipe fromJson(String json) {
    return new AudioRecipe(FlatJson.parse(json));
  }

  /** Frames per utterance: 1 + (length - frame_length) // hop_length. */
  public int frames() {
    return 1 + (length - frameLength) / hopLength;
  }

  private static int integer(Map<String, Object> d, String key, int fallback) {
    double v = number(d, key, fallback);
    if (v != Math.rint(v) || Math.abs(v) > Integer.MAX_VALUE) {
      throw new EdgepruneException("audio recipe: " + key + " must be an integer, got " + v);
    }
    return (int) v;
  }

  private static double number(Map<String, Object> d, String key, double fallback) {
    Object v = d.getOrDefault(key, fallback);
    if (!(v instanceof Number)) {
      throw new EdgepruneException("audio recipe: " + key + " must be a number, got " + v);
    }
    return ((Number) v).doubleValue();
  }

  private static boolean flag(Map<String, Object> d, String key, boolean fallback) {
    Object v = d.getOrDefault(key, fallback);
    if (!(v instanceof Boolean)) {
      throw new EdgepruneException("audio recipe: " + key + " must be true or false, got " + v);
    }
    return (Boolean) v;
  }

  private static String text(Map<String, Object> d, String key, String fallback) {
    Object v = d.getOrDefault(key, fallback);
    if (!(v instanceof String)) {
      throw new EdgepruneException("audio recipe: " + key + " must be a string, got " + v);
    }
    return (String) v;
  }
}
