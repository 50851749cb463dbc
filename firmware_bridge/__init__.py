"""The board-side agent of edgeprune: one framed protocol (PROTOCOL.md) over serial or SSH stdio.

Start it with `python3 -m firmware_bridge serve --stdio` (what the host runs over SSH) or
`--serial PORT`. It needs only the standard library to start (and edgeprune's errors and _io,
which import nothing more); the rest of edgeprune is imported when an operation runs.
"""

__version__ = "0.1.0"
