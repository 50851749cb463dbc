package dev.edgeprune.core;

/** What to keep of one layer: a flag per weight (flat, C order) and, for channels, per bias. */
public final class Mask {
  public final Layer layer;
  final boolean[] keepWeights;
  /** One flag per output channel for channel pruning (the bias goes too), else null. */
  final boolean[] keepChannels;

  Mask(Layer layer, boolean[] keepWeights, boolean[] keepChannels) {
    this.layer = layer;
    this.keepWeights = keepWeights;
    this.keepChannels = keepChannels;
  }

  /** Number of weights this mask removes. */
  public int pruned() {
    int n = 0;
    for (boolean k : keepWeights) {
      n += k ? 0 : 1;
    }
    return n;
  }
}
