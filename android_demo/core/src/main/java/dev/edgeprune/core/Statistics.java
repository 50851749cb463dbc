package dev.edgeprune.core;

/** S_in and S_out per layer (in the order of the layer list they were recorded for). */
public interface Statistics {
  /** S_in of layer i: [kh, kw, c_in] flat for spatial layers, [in] for dense ones. */
  double[] sIn(int layer);

  /** S_out of layer i: one sum of |output| per output channel. */
  double[] sOut(int layer);
}
