"""One exception family for errors a user can cause; the CLI prints them without a traceback."""


class EdgepruneError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class ModelError(EdgepruneError):
    """A .tflite file that is truncated, corrupt or not a TFLite model."""


class UnsupportedError(EdgepruneError):
    """A model or operation that edgeprune cannot handle (yet)."""


class RuntimeMissingError(EdgepruneError):
    """No TFLite interpreter is installed."""
