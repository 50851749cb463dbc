package dev.edgeprune.core;

/** A problem with the user's model or data; the message says what to do about it. */
public class EdgepruneException extends RuntimeException {
  private static final long serialVersionUID = 1L;

  public EdgepruneException(String message) {
    super(message);
  }
}
