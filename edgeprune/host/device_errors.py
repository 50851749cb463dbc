"""Errors a user can meet when working with a board; each message says what to do."""

from __future__ import annotations

from ..errors import EdgepruneError


class DeviceError(EdgepruneError):
    """A board that cannot be reached, or that did not do what was asked."""


class LinkError(DeviceError):
    """The link could not be opened, or ended: unreachable board, cut cable, stopped agent."""


class HostKeyError(LinkError):
    """An SSH host key that is unknown or changed; never accepted automatically."""


class AgentMissingError(LinkError):
    """The board has no Python or no edgeprune agent where the URL says."""


class RemoteError(DeviceError):
    """The agent answered with an ERROR frame; `code` is its code (PROTOCOL.md)."""

    def __init__(self, code: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.details = details or {}  # the rest of the ERROR payload, e.g. exit_code
