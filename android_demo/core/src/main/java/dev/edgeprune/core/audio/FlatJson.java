package dev.edgeprune.core.audio;

import dev.edgeprune.core.EdgepruneException;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * A reader for one flat JSON object of strings, numbers, booleans and null (what a recipe's
 * {@code to_dict()} gives), so that the core needs no JSON library.
 */
final class FlatJson {
  private final String text;
  private int at;

  private FlatJson(String text) {
    this.text = text;
  }

  /** The object's fields: String, Double, Boolean or null values, in file order. */
  static Map<String, Object> parse(String text) {
    FlatJson p = new FlatJson(text);
    Map<String, Object> fields = new LinkedHashMap<>();
    p.expect('{');
    if (p.peek() == '}') {
      p.at++;
    } else {
      do {
        String key = p.string();
        p.expect(':');
        fields.put(key, p.value());
      } while (p.accept(','));
      p.expect('}');
    }
    if (p.peek() != 0) {
      throw p.error("text after the object");
    }
    return fields;
  }

  private char peek() {
    while (at < text.length() && Character.isWhitespace(text.charAt(at))) {
      at++;
    }
    return at < text.length() ? text.charAt(at) : 0;
  }

  private boolean accept(char c) {
    if (peek() == c) {
      at++;
      return true;
    }
    return false;
  }

  private void expect(char c) {
    if (!accept(c)) {
      throw error("expected '" + c + "'");
    }
  }

  private EdgepruneException error(String why) {
    return new EdgepruneException("recipe JSON: " + why + " at character " + at
        + " (only a flat object of numbers, strings and booleans is read)");
  }

  private Object value() {
    char c = peek();
    if (c == '"') {
      return string();
    }
    for (String word : new String[] {"true", "false", "null"}) {
      if (text.startsWith(word, at)) {
        at += word.length();
        return word.equals("null") ? null : Boolean.valueOf(word.equals("true"));
      }
    }
    int start = at;
    while (at < text.length() && "+-0123456789.eE".indexOf(text.charAt(at)) >= 0) {
      at++;
    }
    try {
      return Double.valueOf(text.substring(start, at));
    } catch (NumberFormatException e) {
      throw error("expected a value");
    }
  }

  private String string() {
    expect('"');
    StringBuilder out = new StringBuilder();
    while (at < text.length() && text.charAt(at) != '"') {
      char c = text.charAt(at++);
      if (c == '\\') {
        if (at >= text.length()) {
          break;
        }
        char e = text.charAt(at++);
        if (e == 'u' && at + 4 <= text.length()) {
          out.append((char) Integer.parseInt(text.substring(at, at + 4), 16));
          at += 4;
        } else {
          out.append(e == 'n' ? '\n' : e == 't' ? '\t' : e);
        }
      } else {
        out.append(c);
      }
    }
    expect('"');
    return out.toString();
  }
}
