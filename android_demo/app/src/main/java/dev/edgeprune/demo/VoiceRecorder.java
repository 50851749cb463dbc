package dev.edgeprune.demo;

import android.annotation.SuppressLint;
import android.media.AudioFormat;
import android.media.AudioRecord;
import android.media.MediaRecorder;
import dev.edgeprune.core.EdgepruneException;

/** Records one utterance from the microphone: exactly the recipe's length, as 16-bit PCM. */
final class VoiceRecorder {
  private VoiceRecorder() {}

  /** Blocks while recording; the caller holds the RECORD_AUDIO permission. */
  @SuppressLint("MissingPermission")
  static short[] record(int sampleRate, int samples) {
    int channel = AudioFormat.CHANNEL_IN_MONO;
    int encoding = AudioFormat.ENCODING_PCM_16BIT;
    int minimum = AudioRecord.getMinBufferSize(sampleRate, channel, encoding);
    if (minimum <= 0) {
      throw new EdgepruneException("this phone cannot record at " + sampleRate + " Hz");
    }
    AudioRecord recorder = new AudioRecord(MediaRecorder.AudioSource.VOICE_RECOGNITION,
        sampleRate, channel, encoding, Math.max(minimum, 2 * samples));
    if (recorder.getState() != AudioRecord.STATE_INITIALIZED) {
      recorder.release();
      throw new EdgepruneException("the microphone is not available: allow recording in Settings");
    }
    short[] pcm = new short[samples];
    try {
      recorder.startRecording();
      int read = 0;
      while (read < samples) {
        int n = recorder.read(pcm, read, samples - read);
        if (n < 0) {
          throw new EdgepruneException("recording failed (AudioRecord error " + n + ")");
        }
        read += n;
      }
    } finally {
      recorder.stop();
      recorder.release();
    }
    return pcm;
  }
}
