package dev.edgeprune.core;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * S_in and S_out per prunable layer, accumulated one invocation at a time in memory independent of
 * the number of samples (DESIGN.md, Eq. 1). Per sample it only adds |t| into a float32 running sum
 * per watched tensor; every {@link #FOLD_EVERY} samples (and whenever S_in or S_out is read) those
 * are folded into double S_in and S_out. Mirrors {@code ActivationMap} in edgeprune/activations.py.
 */
public final class ActivationMap implements Statistics {
  /** Samples per float32 partial sum: relative rounding stays below 1e-5. */
  public static final int FOLD_EVERY = 64;

  private final List<Layer> layers;
  private final Map<Integer, AbsSum> sums = new LinkedHashMap<>();
  private final double[][] sIn;
  private final double[][] sOut;
  private int count;
  private int pending;

  public ActivationMap(TfliteModel model, List<Layer> layers) {
    this.layers = Collections.unmodifiableList(new ArrayList<>(layers));
    for (Layer layer : layers) {
      sums.computeIfAbsent(layer.input, t -> new AbsSum(model.tensor(t)));
      sums.computeIfAbsent(layer.output, t -> new AbsSum(model.tensor(t)));
    }
    sIn = new double[layers.size()][];
    sOut = new double[layers.size()][];
    for (int i = 0; i < layers.size(); i++) {
      sIn[i] = new double[layers.get(i).sInSize()];
      sOut[i] = new double[layers.get(i).outChannels()];
    }
  }

  /** Tensors the runner must expose (every layer's input and output), in Python's order. */
  public int[] watched() {
    return sums.keySet().stream().mapToInt(Integer::intValue).toArray();
  }

  /** Bytes one sample of a watched tensor takes. */
  public int byteSize(int tensor) {
    return sums.get(tensor).byteSize();
  }

  /** Samples added so far. */
  public int count() {
    return count;
  }

  /** Add one invocation: the stored (raw, little-endian) bytes of every watched tensor. */
  public void update(Map<Integer, ByteBuffer> stored) {
    for (Map.Entry<Integer, AbsSum> e : sums.entrySet()) {
      ByteBuffer values = stored.get(e.getKey());
      if (values == null) {
        throw new EdgepruneException("no values for watched tensor " + e.getKey());
      }
      e.getValue().add(values);
    }
    count++;
    if (++pending >= FOLD_EVERY) {
      fold();
    }
  }

  private void fold() {
    if (pending == 0) {
      return;
    }
    Map<Integer, double[]> taken = new LinkedHashMap<>();
    for (Map.Entry<Integer, AbsSum> e : sums.entrySet()) {
      taken.put(e.getKey(), e.getValue().take());
    }
    for (int i = 0; i < layers.size(); i++) {
      Layer layer = layers.get(i);
      add(sIn[i], layer.sIn(taken.get(layer.input), sums.get(layer.input).shape()));
      add(sOut[i], layer.sOut(taken.get(layer.output)));
    }
    pending = 0;
  }

  private static void add(double[] into, double[] values) {
    for (int k = 0; k < into.length; k++) {
      into[k] += values[k];
    }
  }

  @Override
  public double[] sIn(int layer) {
    fold();
    return Arrays.copyOf(sIn[layer], sIn[layer].length);
  }

  @Override
  public double[] sOut(int layer) {
    fold();
    return Arrays.copyOf(sOut[layer], sOut[layer].length);
  }
}
