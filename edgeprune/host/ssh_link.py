"""The agent over SSH: paramiko, host keys checked against known_hosts, agent started by exec.

An unknown host key is refused, never added: the error shows its fingerprint and how to accept
it with the ordinary ssh client. A host that is an alias in ~/.ssh/config ($EDGEPRUNE_SSH_CONFIG)
is read with paramiko's SSHConfig as ssh reads it: its HostName, Port, User and IdentityFile
(what the URL says wins); the host key is checked for the real host name. Authentication tries
the key named in the URL (else the config's), the SSH agent and the usual ~/.ssh keys. The
command sent is built from fixed words plus the URL's python and work directory, each checked to
be one plain word and quoted.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import os
import shlex
from dataclasses import replace
from pathlib import Path

from .device_errors import DeviceError, HostKeyError, LinkError
from .links import (
    Link,
    LinkURL,
    StderrTail,
    agent_argv,
    check_agent_words,
    explain_exit,
    safe_word,
)

CONNECT_TIMEOUT = 15.0
WINDOW = 16 << 20  # bytes the agent may send before we read (downloads)
MAX_PACKET = 1 << 18  # bytes per SSH packet the board may send us (OpenSSH sends up to 256 KiB)


def known_hosts_path() -> Path:
    """$EDGEPRUNE_KNOWN_HOSTS, else ~/.ssh/known_hosts."""
    return Path(os.environ.get("EDGEPRUNE_KNOWN_HOSTS") or "~/.ssh/known_hosts").expanduser()


def ssh_config_path() -> Path:
    """$EDGEPRUNE_SSH_CONFIG, else ~/.ssh/config."""
    return Path(os.environ.get("EDGEPRUNE_SSH_CONFIG") or "~/.ssh/config").expanduser()


def resolve_host(url: LinkURL) -> LinkURL:
    """`url` with what ~/.ssh/config says about its host filled in: HostName, Port, User and
    IdentityFile (as ?key=) where the URL gives none. Unchanged when there is no config."""
    import paramiko

    path = ssh_config_path()
    if not path.is_file():
        return url
    try:
        entry = paramiko.SSHConfig.from_path(str(path)).lookup(url.host)
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise DeviceError(f"{path}: cannot read it: {e}") from None
    params = dict(url.params)
    keys = [k for k in entry.get("identityfile", []) if Path(k).expanduser().is_file()]
    if "key" not in params and keys:
        params["key"] = keys[0]
    try:
        port = url.port or int(entry.get("port", 22))
    except ValueError:
        raise DeviceError(f"{path}: Port of {url.host} is not a number") from None
    return replace(
        url,
        host=entry.get("hostname", url.host),
        port=port,
        user=url.user or entry.get("user"),
        params=params,
    )


def fingerprint(key) -> str:
    """OpenSSH's SHA256 fingerprint of a paramiko key."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _ssh_command(url: LinkURL) -> str:
    port = f"-p {url.port} " if url.port and url.port != 22 else ""
    user = f"{url.user}@" if url.user else ""
    return f"ssh {port}{user}{url.host}"


def _refuse_unknown(url: LinkURL, known: Path):
    import paramiko

    class RefuseUnknown(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client, hostname, key):
            raise HostKeyError(
                f"{hostname} is not a known host in {known}; its {key.get_name()} key has "
                f"fingerprint {fingerprint(key)}. If that is your board's key (on the board: "
                f"ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), accept it by connecting "
                f"once with `{_ssh_command(url)}` and answering yes, then try again"
            )

    return RefuseUnknown()


def _transport_class():
    """paramiko's Transport preferring AES-GCM (no separate MAC pass: faster in Python), with a
    large channel window and packet size so a download is not throttled by window updates."""
    import paramiko

    class Transport(paramiko.Transport):
        _preferred_ciphers = tuple(
            sorted(paramiko.Transport._preferred_ciphers, key=lambda name: "-gcm@" not in name)
        )

        def __init__(self, sock, **kwargs):
            kwargs.setdefault("default_window_size", WINDOW)
            kwargs.setdefault("default_max_packet_size", MAX_PACKET)
            super().__init__(sock, **kwargs)

    return Transport


def _connect(url: LinkURL):
    import paramiko

    url = resolve_host(url)
    known = known_hosts_path()
    client = paramiko.SSHClient()
    if known.exists():
        client.load_host_keys(str(known))
    client.set_missing_host_key_policy(_refuse_unknown(url, known))
    key = url.params.get("key")
    user = url.user or getpass.getuser()
    where = f"{url.host}:{url.port or 22}"
    try:
        client.connect(
            url.host,
            url.port or 22,
            user,
            key_filename=os.path.expanduser(key) if key else None,
            allow_agent=True,
            look_for_keys=key is None,
            timeout=CONNECT_TIMEOUT,
            banner_timeout=CONNECT_TIMEOUT,
            auth_timeout=CONNECT_TIMEOUT,
            transport_factory=_transport_class(),
        )
    except DeviceError:
        client.close()
        raise
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostKeyError(
            f"the host key of {where} CHANGED (now {fingerprint(e.key)}): someone may be "
            f"intercepting the connection. If the board was reinstalled, remove the old key with "
            f"`ssh-keygen -R '[{url.host}]:{url.port or 22}' -f {known}` and accept the new one"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        client.close()
        if isinstance(e, paramiko.AuthenticationException) or "authentication" in str(e):
            raise LinkError(
                f"ssh authentication as {user} on {where} failed: install your public key on "
                f"the board (ssh-copy-id {'-p ' + str(url.port) + ' ' if url.port else ''}"
                f"{user}@{url.host}), load it into ssh-agent, or name it with ?key=PATH"
            ) from None
        raise LinkError(
            f"cannot reach {where} over ssh: {e}; is the board on and sshd running?"
        ) from None
    return client


class SshLink(Link):
    """`python3 -m firmware_bridge serve --stdio` on the board, over an SSH exec channel.

    Its URL: ssh://[user@]host[:port][/WORKDIR][?python=PY&key=FILE]
    """

    parameters = ("python", "key")
    example = "ssh://user@host[:port]"
    chunk_size = 1 << 20  # bounded by the session's max_payload: few frames, few replies
    window = 8

    @classmethod
    def check(cls, url: LinkURL) -> None:
        if not url.host:
            raise DeviceError(
                f"{url.text}: an ssh URL needs a host, e.g. ssh://pi@raspberrypi.local"
            )
        check_agent_words(url)

    def __init__(self, url: LinkURL):
        self.label = url.text
        self.python = safe_word(url.params.get("python", "python3"), "python")
        self.client = _connect(url)
        transport = self.client.get_transport()
        transport.set_keepalive(15)
        self.channel = transport.open_session(window_size=WINDOW, max_packet_size=MAX_PACKET)
        self.channel.exec_command(shlex.join(agent_argv(self.python, url.workdir)))
        self.stderr = StderrTail(self.channel.recv_stderr)

    def read(self) -> bytes:
        try:
            return self.channel.recv(1 << 20)
        except (OSError, EOFError):
            return b""

    def write(self, data: bytes) -> None:
        self.write_parts((data,))

    def write_parts(self, parts) -> None:
        """Each part, one SSH packet's worth at a time: paramiko's own sendall re-slices the
        rest of a large buffer after every packet (quadratic in its length)."""
        piece = self.channel.out_max_packet_size or 32768
        try:
            for part in parts:
                view = memoryview(part)
                for start in range(0, len(view), piece):
                    self.channel.sendall(bytes(view[start : start + piece]))
        except (OSError, EOFError) as e:
            raise LinkError(f"the ssh link to {self.label} is closed: {e}") from None

    def close(self) -> None:
        try:
            self.channel.shutdown_write()  # end of file: the agent finishes and exits
            self.channel.status_event.wait(5)
        except (OSError, EOFError):
            pass
        self.client.close()

    def failure(self) -> DeviceError:
        self.channel.status_event.wait(2)
        status = self.channel.exit_status if self.channel.exit_status_ready() else None
        if status == -1:
            status = None
        return explain_exit(self.label, self.python, status, self.stderr.text())
