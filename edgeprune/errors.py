"""One exception family for errors a user can cause; the CLI prints them without a traceback.

Everything edgeprune raises on purpose derives from `EdgepruneError`: the core's errors below,
the board errors of `edgeprune.host.device_errors` (DeviceError and its link and remote errors)
and the agent's `firmware_bridge.protocol.ProtocolError`. This module imports nothing, so the
agent can use it on a board that has only Python.
"""


class EdgepruneError(Exception):
    """A problem with the user's input or environment; the message says what to do."""


class ModelError(EdgepruneError):
    """A .tflite file that is truncated, corrupt or not a TFLite model."""


class UnsupportedError(EdgepruneError):
    """A model or operation that edgeprune cannot handle (yet)."""


class RuntimeMissingError(EdgepruneError):
    """No TFLite interpreter is installed."""
