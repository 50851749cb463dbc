package dev.edgeprune.core;

import static org.junit.Assert.assertArrayEquals;

import org.junit.Test;

/** The cut rules of Selection, including the tie rule Python leaves open. */
public class SelectionTest {
  @Test
  public void dropsTheLowestScoresOverAllArrays() {
    boolean[][] keep = Selection.keepTop(new double[][] {{5, 1, 4}, {2, 9}}, 0.4);
    assertArrayEquals(new boolean[] {true, false, true}, keep[0]);
    assertArrayEquals(new boolean[] {false, true}, keep[1]);
  }

  @Test
  public void tiesAtTheCutGoByPosition() {
    boolean[][] keep = Selection.keepTop(new double[][] {{3, 1, 1}, {1, 0}}, 0.6);
    // Drop 3 of 5: the 0, then the first two of the three tied 1s in position order.
    assertArrayEquals(new boolean[] {true, false, false}, keep[0]);
    assertArrayEquals(new boolean[] {true, false}, keep[1]);
  }

  @Test
  public void dropCountRoundsHalfToEvenAsPython() {
    // round(0.5 * 5) == 2 in Python (banker's rounding), not 3.
    boolean[][] keep = Selection.keepTop(new double[][] {{1, 2, 3, 4, 5}}, 0.5);
    assertArrayEquals(new boolean[] {false, false, true, true, true}, keep[0]);
    boolean[][] all = Selection.keepTop(new double[][] {{1, 2}}, 1.0);
    assertArrayEquals(new boolean[] {false, false}, all[0]);
  }

  @Test
  public void channelsStopAtTheCountClosestToTheTarget() {
    // Channels of 10 and 30 weights (80 in all): 0.3 -> 24 weights; dropping the 10-weight
    // channel (10) is 14 short, adding a 30-weight one (40) is 16 over: keep it at one channel.
    double[][] scores = {{1, 5}, {2, 6}};
    boolean[][] keep = Selection.keepTopSized(scores, 0.3, new int[] {10, 30});
    assertArrayEquals(new boolean[] {false, true}, keep[0]);
    assertArrayEquals(new boolean[] {true, true}, keep[1]);
    // 0.4 -> 32: 40 is 8 over, 10 is 22 short: drop both lowest channels.
    keep = Selection.keepTopSized(scores, 0.4, new int[] {10, 30});
    assertArrayEquals(new boolean[] {false, true}, keep[0]);
    assertArrayEquals(new boolean[] {false, true}, keep[1]);
  }

  @Test
  public void tiedChannelsGoInPositionOrderLikeAStableSort() {
    boolean[][] keep = Selection.keepTopSized(new double[][] {{2, 1}, {1, 1}}, 0.5,
        new int[] {4, 4});
    assertArrayEquals(new boolean[] {true, false}, keep[0]);
    assertArrayEquals(new boolean[] {false, true}, keep[1]);
  }
}
