package dev.edgeprune.core;

import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/**
 * Fine-Pruning scores of every prunable weight (Eq. 1: A(w) = |w| * S_in(w)) or output channel
 * (S_out), computed once and cut at any sparsity. Mirrors {@code compute_scores} and
 * {@code Scores.masks} in edgeprune/prune.py for the score "fine".
 */
public final class Scores {
  /** Single weights, or whole output channels with their bias. */
  public enum Granularity { WEIGHT, CHANNEL }

  /**
   * The same sparsity in every layer, one threshold over all scores, or one threshold over
   * scores divided by their layer's mean (raw Eq. 1 scores are scale-dependent across layers).
   */
  public enum Scope { LAYER, GLOBAL, GLOBAL_NORMALIZED }

  private final List<Layer> layers;
  private final double[][] values;
  private final Granularity granularity;

  private Scores(List<Layer> layers, double[][] values, Granularity granularity) {
    this.layers = layers;
    this.values = values;
    this.granularity = granularity;
  }

  /**
   * Scores of {@code layers} (those {@code stats} was recorded for, in its order); with
   * {@code keepClassifier} the last layer (the final classifier) is left out and never pruned.
   */
  public static Scores compute(TfliteModel model, List<Layer> layers, Statistics stats,
      Granularity granularity, boolean keepClassifier) {
    int n = keepClassifier ? Math.max(layers.size() - 1, 0) : layers.size();
    double[][] values = new double[n][];
    for (int i = 0; i < n; i++) {
      Layer layer = layers.get(i);
      values[i] = granularity == Granularity.WEIGHT
          ? weightScores(model, layer, stats.sIn(i))
          : stats.sOut(i);
      for (double v : values[i]) {
        if (!(v >= 0 && v < Double.POSITIVE_INFINITY)) {
          throw new EdgepruneException("activation statistics of layer " + i
              + " are not finite: the recordings overflowed the model; record again");
        }
      }
    }
    return new Scores(Collections.unmodifiableList(new ArrayList<>(layers.subList(0, n))),
        values, granularity);
  }

  private static double[] weightScores(TfliteModel model, Layer layer, double[] sIn) {
    double[] w = model.dequantized(layer.weight);
    double[] scores = new double[w.length];
    for (int k = 0; k < w.length; k++) {
      scores[k] = Math.abs(w[k]) * sIn[layer.sInIndex(k)];
    }
    return scores;
  }

  /** Keep-masks that remove {@code sparsity} of the weights with the lowest scores. */
  public List<Mask> masks(double sparsity, Scope scope) {
    if (!(sparsity >= 0.0 && sparsity <= 1.0)) {
      throw new EdgepruneException("sparsity must be between 0 and 1, got " + sparsity);
    }
    boolean[][] keeps;
    if (scope == Scope.LAYER) {
      keeps = new boolean[values.length][];
      for (int i = 0; i < values.length; i++) {
        keeps[i] = Selection.keepTop(new double[][] {values[i]}, sparsity)[0];
      }
    } else {
      double[][] v = scope == Scope.GLOBAL_NORMALIZED ? normalized() : values;
      if (granularity == Granularity.CHANNEL) {
        int[] sizes = new int[v.length];
        for (int i = 0; i < v.length; i++) {
          sizes[i] = layers.get(i).weightCount() / v[i].length;
        }
        keeps = Selection.keepTopSized(v, sparsity, sizes);
      } else {
        keeps = Selection.keepTop(v, sparsity);
      }
    }
    List<Mask> masks = new ArrayList<>();
    for (int i = 0; i < keeps.length; i++) {
      Layer layer = layers.get(i);
      if (granularity == Granularity.WEIGHT) {
        masks.add(new Mask(layer, keeps[i], null));
      } else {
        boolean[] weights = new boolean[layer.weightCount()];
        for (int k = 0; k < weights.length; k++) {
          weights[k] = keeps[i][layer.channelOf(k)];
        }
        masks.add(new Mask(layer, weights, keeps[i]));
      }
    }
    return masks;
  }

  /** Each layer's scores divided by their mean (NumPy's bits), unless the mean is 0. */
  private double[][] normalized() {
    double[][] out = new double[values.length][];
    for (int i = 0; i < values.length; i++) {
      double mean = PairwiseSum.mean(values[i]);
      out[i] = values[i].clone();
      if (mean > 0) {
        for (int k = 0; k < out[i].length; k++) {
          out[i][k] /= mean;
        }
      }
    }
    return out;
  }
}
