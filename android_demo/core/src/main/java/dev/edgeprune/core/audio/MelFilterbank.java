package dev.edgeprune.core.audio;

/**
 * The [n_fft / 2 + 1, bins] matrices that turn a spectrum into feature bins: the HTK mel
 * filterbank of {@code edgeprune.preprocess.audio.mel_matrix} (triangles linear in mel, peak 1,
 * DC weight 0), or a selection of the linear bins whose centre lies in [fmin, fmax].
 */
final class MelFilterbank {
  private MelFilterbank() {}

  static double hertzToMel(double f) {
    return 1127.0 * Math.log1p(f / 700.0);
  }

  static double[][] matrix(AudioRecipe r) {
    int fftBins = r.nFft / 2 + 1;
    double[] hz = linspace(0.0, r.sampleRate / 2.0, fftBins);
    double[] edges = linspace(hertzToMel(r.fmin), hertzToMel(r.fmax), r.melBins + 2);
    double[][] m = new double[fftBins][r.melBins];
    for (int k = 1; k < fftBins; k++) {
      double mel = hertzToMel(hz[k]);
      for (int b = 0; b < r.melBins; b++) {
        double rising = (mel - edges[b]) / (edges[b + 1] - edges[b]);
        double falling = (edges[b + 2] - mel) / (edges[b + 2] - edges[b + 1]);
        m[k][b] = Math.max(0.0, Math.min(rising, falling));
      }
    }
    return m;
  }

  static double[][] linear(AudioRecipe r) {
    int fftBins = r.nFft / 2 + 1;
    double[] hz = linspace(0.0, r.sampleRate / 2.0, fftBins);
    int count = 0;
    for (double f : hz) {
      count += f >= r.fmin && f <= r.fmax ? 1 : 0;
    }
    double[][] m = new double[fftBins][count];
    int b = 0;
    for (int k = 0; k < fftBins; k++) {
      if (hz[k] >= r.fmin && hz[k] <= r.fmax) {
        m[k][b++] = 1.0;
      }
    }
    return m;
  }

  /** NumPy's linspace: start + i * step, with the last point exactly stop. */
  private static double[] linspace(double start, double stop, int num) {
    double[] out = new double[num];
    double step = num > 1 ? (stop - start) / (num - 1) : 0.0;
    for (int i = 0; i < num; i++) {
      out[i] = start + i * step;
    }
    if (num > 1) {
      out[num - 1] = stop;
    }
    return out;
  }
}
