package dev.edgeprune.core;

import static org.junit.Assert.assertArrayEquals;
import static org.junit.Assert.assertEquals;

import java.io.File;
import java.nio.file.Files;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class AtomicFilesTest {
  @Rule public TemporaryFolder folder = new TemporaryFolder();

  @Test
  public void replacesTheTargetAndLeavesNoTempFile() throws Exception {
    File target = new File(folder.getRoot(), "model.tflite");
    Files.write(target.toPath(), new byte[] {9, 9, 9, 9, 9});
    AtomicFiles.write(target, new byte[] {1, 2, 3});
    assertArrayEquals(new byte[] {1, 2, 3}, Files.readAllBytes(target.toPath()));
    assertEquals(1, folder.getRoot().list().length);
  }
}
