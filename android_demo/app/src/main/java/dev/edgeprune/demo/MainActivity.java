package dev.edgeprune.demo;

import android.Manifest;
import android.app.Activity;
import android.content.pm.PackageManager;
import android.os.Bundle;
import android.widget.ArrayAdapter;
import android.widget.Button;
import android.widget.SeekBar;
import android.widget.Spinner;
import android.widget.TextView;
import java.io.File;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.Locale;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * The demo screen: record unlabelled digits (they feed the activation map), record labelled ones
 * (they only measure accuracy), pick a sparsity, personalize, and see before/after figures. All
 * model work runs on one worker thread; the UI thread only posts results.
 */
public final class MainActivity extends Activity {
  private static final int PERMISSION_REQUEST = 1;
  private static final String OUTPUT = "personalized.tflite";

  private final ExecutorService worker = Executors.newSingleThreadExecutor();
  private Personalization session;
  private TextView status;
  private Spinner digit;
  private SeekBar sparsity;
  private Runnable afterPermission;

  @Override
  protected void onCreate(Bundle savedInstanceState) {
    super.onCreate(savedInstanceState);
    setContentView(R.layout.activity_main);
    status = findViewById(R.id.status);
    digit = findViewById(R.id.digit);
    sparsity = findViewById(R.id.sparsity);
    TextView sparsityLabel = findViewById(R.id.sparsity_label);
    Integer[] digits = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    digit.setAdapter(new ArrayAdapter<>(this, android.R.layout.simple_spinner_item, digits));
    sparsityLabel.setText(getString(R.string.sparsity, sparsity.getProgress() * 10));
    sparsity.setOnSeekBarChangeListener(new SeekBar.OnSeekBarChangeListener() {
      @Override
      public void onProgressChanged(SeekBar bar, int progress, boolean fromUser) {
        sparsityLabel.setText(getString(R.string.sparsity, progress * 10));
      }

      @Override
      public void onStartTrackingTouch(SeekBar bar) {}

      @Override
      public void onStopTrackingTouch(SeekBar bar) {}
    });
    Button unlabelled = findViewById(R.id.record_unlabelled);
    Button labelled = findViewById(R.id.record_labelled);
    Button personalize = findViewById(R.id.personalize);
    unlabelled.setOnClickListener(v -> withMicrophone(() -> record(-1)));
    labelled.setOnClickListener(
        v -> withMicrophone(() -> record((Integer) digit.getSelectedItem())));
    personalize.setOnClickListener(v -> personalize(sparsity.getProgress() / 10.0));
    worker.execute(this::load);
  }

  private void load() {
    try (InputStream model = getAssets().open("model.tflite");
        InputStream recipe = getAssets().open("recipe.json")) {
      session = new Personalization(Streams.readAll(model),
          new String(Streams.readAll(recipe), StandardCharsets.UTF_8));
      show(String.format(Locale.US, "Model loaded: %d prunable layers.%n%s", session.layerCount(),
          counts()));
    } catch (Exception e) {
      show("Cannot load the model: " + e.getMessage()
          + "\nPut model.tflite and recipe.json in app/src/main/assets (see README.md).");
    }
  }

  private void withMicrophone(Runnable action) {
    if (checkSelfPermission(Manifest.permission.RECORD_AUDIO)
        == PackageManager.PERMISSION_GRANTED) {
      action.run();
    } else {
      afterPermission = action;
      requestPermissions(new String[] {Manifest.permission.RECORD_AUDIO}, PERMISSION_REQUEST);
    }
  }

  @Override
  public void onRequestPermissionsResult(int code, String[] permissions, int[] results) {
    if (code == PERMISSION_REQUEST && results.length > 0
        && results[0] == PackageManager.PERMISSION_GRANTED && afterPermission != null) {
      afterPermission.run();
    } else {
      show("Recording needs the microphone permission.");
    }
    afterPermission = null;
  }

  /** Record one utterance: unlabelled (label -1) into the map, else into the test set. */
  private void record(int label) {
    worker.execute(() -> {
      if (session == null) {
        return;
      }
      show(getString(R.string.speak_now));
      try {
        short[] pcm = VoiceRecorder.record(session.recipe.sampleRate, session.recipe.length);
        if (label < 0) {
          session.addUnlabelled(pcm);
        } else {
          session.addLabelled(pcm, label);
        }
        show(counts());
      } catch (RuntimeException e) {
        show("Recording failed: " + e.getMessage());
      }
    });
  }

  private String counts() {
    return String.format(Locale.US, "Unlabelled recordings (adaptation): %d%n"
        + "Labelled recordings (test only): %d", session.unlabelled(), session.labelled());
  }

  private void personalize(double target) {
    worker.execute(() -> {
      if (session == null || session.unlabelled() == 0) {
        show("Record at least one unlabelled digit first.");
        return;
      }
      try {
        Personalization.Result r = session.personalize(target, new File(getFilesDir(), OUTPUT));
        show(report(r));
      } catch (Exception e) {
        show("Personalization failed: " + e.getMessage());
      }
    });
  }

  private String report(Personalization.Result r) {
    StringBuilder s = new StringBuilder(counts());
    s.append(String.format(Locale.US, "%n%nTarget sparsity %.0f%% (classifier kept)%n",
        100 * r.sparsity));
    s.append(String.format(Locale.US, "%-22s%10s%10s%n", "", "before", "after"));
    s.append(String.format(Locale.US, "%-22s%10d%10d%n", "file bytes", r.bytes, r.bytes));
    s.append(String.format(Locale.US, "%-22s%10d%10d%n", "deflated bytes", r.compressedBefore,
        r.compressedAfter));
    s.append(String.format(Locale.US, "%-22s%9.1f%%%9.1f%%%n", "zero weights",
        100 * r.sparsityBefore, 100 * r.sparsityAfter));
    if (r.tested > 0) {
      s.append(String.format(Locale.US, "%-22s%9.1f%%%9.1f%%%n",
          "accuracy (" + r.tested + " labelled)", 100 * r.accuracyBefore, 100 * r.accuracyAfter));
    } else {
      s.append("accuracy: record a few labelled digits to measure it\n");
    }
    s.append("\nWritten to ").append(r.written.getAbsolutePath());
    return s.toString();
  }

  private void show(String text) {
    runOnUiThread(() -> status.setText(text));
  }

  @Override
  protected void onDestroy() {
    worker.execute(() -> {
      if (session != null) {
        session.close();
      }
    });
    worker.shutdown();
    super.onDestroy();
  }
}
