package dev.edgeprune.core.audio;

/**
 * The features of one waveform, step for step as {@code edgeprune.preprocess.audio.features}:
 * fixed length (centred or from the start), optional peak normalization, frames without end padding, periodic Hann window,
 * |DFT| (or its square) of each frame zero-padded to n_fft, HTK mel filterbank (or the linear bins
 * in [fmin, fmax]), ln(x + log_floor), per-utterance or per-bin normalization. Computed in double,
 * returned as float [frames * bins] (the model input [1, frames, bins, 1] in C order).
 */
public final class AudioFeatures {
  private final AudioRecipe recipe;
  private final double[] window;
  private final double[] cos;
  private final double[] sin;
  private final double[][] filters; // [fft bin][output bin]
  private final int bins;

  public AudioFeatures(AudioRecipe recipe) {
    this.recipe = recipe;
    int n = recipe.frameLength;
    window = new double[n];
    for (int i = 0; i < n; i++) {
      window[i] = 0.5 - 0.5 * Math.cos(2.0 * Math.PI * i / n);
    }
    cos = new double[recipe.nFft];
    sin = new double[recipe.nFft];
    for (int i = 0; i < recipe.nFft; i++) {
      cos[i] = Math.cos(2.0 * Math.PI * i / recipe.nFft);
      sin[i] = Math.sin(2.0 * Math.PI * i / recipe.nFft);
    }
    filters = recipe.melBins > 0 ? MelFilterbank.matrix(recipe) : MelFilterbank.linear(recipe);
    bins = filters[0].length;
    if (bins == 0) {
      throw new dev.edgeprune.core.EdgepruneException(
          "invalid audio recipe: no FFT bin lies in [fmin, fmax]");
    }
  }

  /** Feature bins per frame. */
  public int bins() {
    return bins;
  }

  /** Features of 16-bit PCM samples (scaled by 1/32768, as Python does for int16 input). */
  public float[] compute(short[] pcm) {
    double[] x = new double[pcm.length];
    for (int i = 0; i < x.length; i++) {
      x[i] = pcm[i] / 32768.0;
    }
    return compute(x);
  }

  /** Features of a waveform of samples in [-1, 1]. */
  public float[] compute(double[] waveform) {
    if (waveform.length == 0) {
      throw new dev.edgeprune.core.EdgepruneException("the recording holds no samples");
    }
    double[] x = fixLength(waveform);
    if (recipe.peakNormalize) {
      scaleToPeak(x);
    }
    int frames = recipe.frames();
    int fftBins = recipe.nFft / 2 + 1;
    double[] y = new double[frames * bins];
    double[] spectrum = new double[fftBins];
    for (int f = 0; f < frames; f++) {
      int start = f * recipe.hopLength;
      for (int k = 0; k < fftBins; k++) {
        double re = 0;
        double im = 0;
        for (int i = 0; i < recipe.frameLength; i++) {
          int phase = (int) ((long) k * i % recipe.nFft);
          double v = x[start + i] * window[i];
          re += v * cos[phase];
          im -= v * sin[phase];
        }
        double power = re * re + im * im;
        spectrum[k] = recipe.power == 2 ? power : Math.sqrt(power);
      }
      for (int b = 0; b < bins; b++) {
        double sum = 0;
        for (int k = 0; k < fftBins; k++) {
          sum += spectrum[k] * filters[k][b];
        }
        y[f * bins + b] = recipe.log ? Math.log(sum + recipe.logFloor) : sum;
      }
    }
    normalize(y, frames);
    float[] out = new float[y.length];
    for (int i = 0; i < y.length; i++) {
      out[i] = (float) y[i];
    }
    return out;
  }

  private double[] fixLength(double[] x) {
    int n = x.length;
    int length = recipe.length;
    double[] out = new double[length];
    if (n >= length) {
      int start = recipe.centre ? (n - length) / 2 : 0;
      System.arraycopy(x, start, out, 0, length);
    } else {
      int before = recipe.centre ? (length - n) / 2 : 0;
      System.arraycopy(x, 0, out, before, n);
    }
    return out;
  }

  /** Scale so that the largest |sample| is 1; silence stays silence. */
  private static void scaleToPeak(double[] x) {
    double peak = 0;
    for (double v : x) {
      peak = Math.max(peak, Math.abs(v));
    }
    if (peak > 0) {
      for (int i = 0; i < x.length; i++) {
        x[i] /= peak;
      }
    }
  }

  /** Subtract the mean and divide by the (floored) standard deviation: all, or per bin. */
  private void normalize(double[] y, int frames) {
    if (recipe.normalize.equals("none")) {
      return;
    }
    boolean perBin = recipe.normalize.equals("bin");
    int groups = perBin ? bins : 1;
    for (int g = 0; g < groups; g++) {
      double sum = 0;
      int count = 0;
      for (int i = g; i < y.length; i += perBin ? bins : 1) {
        sum += y[i];
        count++;
      }
      double mean = sum / count;
      double squares = 0;
      for (int i = g; i < y.length; i += perBin ? bins : 1) {
        squares += (y[i] - mean) * (y[i] - mean);
      }
      double std = Math.max(Math.sqrt(squares / count), recipe.stdFloor);
      for (int i = g; i < y.length; i += perBin ? bins : 1) {
        y[i] = (y[i] - mean) / std;
      }
    }
  }
}
