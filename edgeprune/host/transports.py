"""Device URLs and the links they open: a registry of transports, scheme -> link class.

    ssh://[user@]host[:port][/WORKDIR][?python=PY&key=FILE]   the agent over an SSH exec channel
    serial:///dev/ttyUSB0[?baud=921600]                         the agent on a serial port
    local://[/WORKDIR][?python=PY]                               the agent as a child process here

As pyserial's `serial_for_url` does, `open_link(url)` looks the URL's scheme up in a table and
opens the link class registered for it; another transport joins with `register(scheme, cls)`.
The layering has no cycle: `links` is the base (Link, LinkURL, shared helpers) and knows no
scheme; each transport module (ssh_link, serial_link, local_link) imports only `links`; this
module imports the built-in transports to fill the table, and the client imports this module.
The transports import their third-party libraries (paramiko, pyserial) only when a link opens.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, urlsplit

from .device_errors import DeviceError
from .links import Link, LinkURL
from .local_link import LocalLink
from .serial_link import SerialLink
from .ssh_link import SshLink

_TRANSPORTS: dict[str, type[Link]] = {}


def register(scheme: str, link_class: type[Link]) -> None:
    """Open URLs `scheme://...` with `link_class` (its `parameters` and `check` vet them first)."""
    _TRANSPORTS[scheme.lower()] = link_class


def schemes() -> tuple[str, ...]:
    """The URL schemes a device URL may have, in the order they were registered."""
    return tuple(_TRANSPORTS)


register("ssh", SshLink)
register("serial", SerialLink)
register("local", LocalLink)


def _not_a_device_url(text: str) -> DeviceError:
    examples = [cls.example or f"{scheme}://" for scheme, cls in _TRANSPORTS.items()]
    listed = ", ".join(examples[:-1]) + " or " + examples[-1] if len(examples) > 1 else examples[0]
    return DeviceError(f"{text!r} is not a device URL: use {listed}")


def parse_url(text: str) -> LinkURL:
    """Parse and check a device URL; DeviceError with the accepted forms when it is wrong."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    link_class = _TRANSPORTS.get(scheme)
    if link_class is None or "://" not in text:
        raise _not_a_device_url(text)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(params) - set(link_class.parameters))
    if unknown:
        allowed = ", ".join(link_class.parameters) or "no parameters"
        raise DeviceError(
            f"{text}: unknown parameter {unknown[0]!r} (a {scheme} URL takes {allowed})"
        )
    try:
        port = parts.port
    except ValueError:
        raise DeviceError(f"{text}: the port must be a number") from None
    url = LinkURL(
        scheme,
        unquote(parts.username or "") or None,
        parts.hostname,
        port,
        unquote(parts.path),
        params,
        text,
    )
    link_class.check(url)
    return url


def open_link(url: str | LinkURL) -> Link:
    """Open the link a device URL names."""
    url = parse_url(url) if isinstance(url, str) else url
    if url.scheme not in _TRANSPORTS:
        raise _not_a_device_url(url.text)
    return _TRANSPORTS[url.scheme](url)
