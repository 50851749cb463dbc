package dev.edgeprune.demo;

import dev.edgeprune.core.ActivationMap;
import dev.edgeprune.core.AtomicFiles;
import dev.edgeprune.core.Layer;
import dev.edgeprune.core.LayerScan;
import dev.edgeprune.core.Pruner;
import dev.edgeprune.core.Scores;
import dev.edgeprune.core.TfliteModel;
import dev.edgeprune.core.audio.AudioFeatures;
import dev.edgeprune.core.audio.AudioRecipe;
import java.io.File;
import java.io.FileInputStream;
import java.io.IOException;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.Deflater;

/**
 * One user's session: the activation map over their unlabelled recordings (run through the
 * instrumented model), their labelled test recordings (never adapted on), and personalized models
 * cut from the map. Not thread-safe: the activity calls it from one worker thread.
 */
final class Personalization implements AutoCloseable {
  /** Before/after figures of one personalization. */
  static final class Result {
    double sparsity;
    int bytes;
    int compressedBefore;
    int compressedAfter;
    double sparsityBefore;
    double sparsityAfter;
    int tested;
    double accuracyBefore;
    double accuracyAfter;
    File written;
  }

  final AudioRecipe recipe;
  private final AudioFeatures features;
  private final TfliteModel source;
  private final List<Layer> layers;
  private final ActivationMap map;
  private final LiteRtModel instrumented;
  private final List<float[]> testFeatures = new ArrayList<>();
  private final List<Integer> testLabels = new ArrayList<>();

  Personalization(byte[] model, String recipeJson) {
    recipe = AudioRecipe.fromJson(recipeJson);
    features = new AudioFeatures(recipe);
    source = TfliteModel.parse(model);
    layers = LayerScan.scan(source);
    map = new ActivationMap(source, layers);
    instrumented = new LiteRtModel(source.withOutputs(map.watched()));
  }

  int unlabelled() {
    return map.count();
  }

  int labelled() {
    return testLabels.size();
  }

  int layerCount() {
    return layers.size();
  }

  void addUnlabelled(short[] pcm) {
    map.update(instrumented.run(features.compute(pcm)));
  }

  void addLabelled(short[] pcm, int digit) {
    testFeatures.add(features.compute(pcm));
    testLabels.add(digit);
  }

  /**
   * Fine-prune the source model at {@code sparsity} (same sparsity in every layer, final
   * classifier kept: the Python personalize defaults), write it atomically to {@code out}, and
   * measure it against the source.
   */
  Result personalize(double sparsity, File out) throws IOException {
    Scores scores = Scores.compute(source, layers, map, Scores.Granularity.WEIGHT, true);
    TfliteModel pruned = Pruner.apply(source, scores.masks(sparsity, Scores.Scope.LAYER));
    AtomicFiles.write(out, pruned.bytes());
    TfliteModel reloaded;
    try (FileInputStream in = new FileInputStream(out)) {
      reloaded = TfliteModel.parse(Streams.readAll(in)); // what the app will load next time
    }
    Result r = new Result();
    r.sparsity = sparsity;
    r.written = out;
    r.bytes = reloaded.byteSize();
    r.compressedBefore = compressedSize(source.bytes());
    r.compressedAfter = compressedSize(reloaded.bytes());
    r.sparsityBefore = measured(source);
    r.sparsityAfter = measured(reloaded);
    r.tested = testLabels.size();
    if (r.tested > 0) {
      r.accuracyBefore = accuracy(source);
      r.accuracyAfter = accuracy(reloaded);
    }
    return r;
  }

  private double measured(TfliteModel model) {
    long[] zerosAndTotal = Pruner.measuredSparsity(model, layers);
    return zerosAndTotal[1] == 0 ? 0 : (double) zerosAndTotal[0] / zerosAndTotal[1];
  }

  private double accuracy(TfliteModel model) {
    try (LiteRtModel runner = new LiteRtModel(model)) {
      int right = 0;
      for (int i = 0; i < testLabels.size(); i++) {
        right += runner.predict(testFeatures.get(i)) == testLabels.get(i) ? 1 : 0;
      }
      return (double) right / testLabels.size();
    }
  }

  /** Bytes after Deflate: what pruning saves in a download or a compressed store. */
  private static int compressedSize(byte[] data) {
    Deflater deflater = new Deflater(Deflater.BEST_COMPRESSION);
    deflater.setInput(data);
    deflater.finish();
    byte[] chunk = new byte[1 << 16];
    int total = 0;
    while (!deflater.finished()) {
      total += deflater.deflate(chunk);
    }
    deflater.end();
    return total;
  }

  @Override
  public void close() {
    instrumented.close();
  }
}
