package dev.edgeprune.core;

import java.util.Arrays;
import java.util.Comparator;
import java.util.stream.IntStream;

/**
 * Which entries to keep when the lowest scores over several arrays are dropped together, as
 * {@code _keep_top} in edgeprune/prune.py does.
 *
 * <p>Tie rule: entries are dropped in ascending (score, position) order, position counting
 * through the arrays in sequence. For channels with sizes this is exactly Python's stable argsort;
 * for single weights Python's argpartition breaks a tie at the cut arbitrarily, so the two sides
 * agree exactly whenever no two scores are equal at the cut (always so for distinct scores).
 */
final class Selection {
  private Selection() {}

  /** Keep-flags dropping round(sparsity * n) of the n entries with the lowest scores. */
  static boolean[][] keepTop(double[][] scores, double sparsity) {
    double[] flat = concat(scores);
    int n = flat.length;
    boolean[] keep = new boolean[n];
    Arrays.fill(keep, true);
    long drop = (long) Math.rint(sparsity * n); // Python's round(): half to even
    if (drop > 0 && drop < n) {
      double[] sorted = flat.clone();
      Arrays.sort(sorted);
      double cut = sorted[(int) drop - 1];
      long ties = drop;
      for (double s : flat) {
        ties -= s < cut ? 1 : 0;
      }
      for (int i = 0; i < n; i++) {
        if (flat[i] < cut) {
          keep[i] = false;
        } else if (flat[i] == cut && ties > 0) {
          keep[i] = false;
          ties--;
        }
      }
    } else if (drop > 0) {
      Arrays.fill(keep, false);
    }
    return split(keep, scores);
  }

  /**
   * Keep-flags for channels, where entry k of array a stands for sizes[a] weights: drop channels
   * in ascending score order until the dropped weights reach sparsity of all weights, or one
   * channel fewer when that lands closer to the target.
   */
  static boolean[][] keepTopSized(double[][] scores, double sparsity, int[] sizes) {
    double[] flat = concat(scores);
    long[] weight = new long[flat.length];
    int at = 0;
    for (int a = 0; a < scores.length; a++) {
      for (int k = 0; k < scores[a].length; k++) {
        weight[at++] = sizes[a];
      }
    }
    Integer[] order = IntStream.range(0, flat.length).boxed().toArray(Integer[]::new);
    Arrays.sort(order, Comparator.comparingDouble(i -> flat[i] == 0.0 ? 0.0 : flat[i]));
    long[] dropped = new long[flat.length + 1];
    for (int i = 0; i < flat.length; i++) {
      dropped[i + 1] = dropped[i] + weight[order[i]];
    }
    double target = sparsity * dropped[flat.length];
    int k = 0;
    while (k < dropped.length && dropped[k] < target) {
      k++;
    }
    if (k > 0 && target - dropped[k - 1] < dropped[k] - target) {
      k--;
    }
    boolean[] keep = new boolean[flat.length];
    Arrays.fill(keep, true);
    for (int i = 0; i < k; i++) {
      keep[order[i]] = false;
    }
    return split(keep, scores);
  }

  private static double[] concat(double[][] arrays) {
    return Arrays.stream(arrays).flatMapToDouble(Arrays::stream).toArray();
  }

  private static boolean[][] split(boolean[] keep, double[][] shapes) {
    boolean[][] out = new boolean[shapes.length][];
    int start = 0;
    for (int a = 0; a < shapes.length; a++) {
      out[a] = Arrays.copyOfRange(keep, start, start + shapes[a].length);
      start += shapes[a].length;
    }
    return out;
  }
}
