"""`edgeprune device setup`: put the running edgeprune and its runtime into a venv on a board.

The laptop builds a wheel of the edgeprune it is running (`build_wheel`: the files of the
`edgeprune` and `firmware_bridge` packages, the version carrying their digest as a local label),
copies it to the board over SSH and installs it with `edgeprune[litert]` into a venv there:
online with the board's own pip (its index, e.g. piwheels on Raspberry Pi OS), or `--offline`
from wheels for the board's platform that the laptop downloaded (pip download with the board's
own compatible tags) and pushed with it. A board whose venv already holds the same build and a
runtime is left alone. The device's URL then names the venv's python (`?python=`), the registry
entry is updated, and the agent is asked for INFO through the new URL to prove it runs.

What goes in is chosen by the board's wheel tags (`install_plan`): `edgeprune[litert]` on 64-bit
boards, `tflite-runtime` with numpy from piwheels on 32-bit ARM ones; `fleet` adds the `[fleet]`
extra (flwr) and the SuperNode's launch script and systemd unit (`supernode`).

It needs a shell on the board, so only ssh:// devices: the agent cannot install itself (it runs
only edgeprune operations) and a serial line has no shell (`no_shell` says what to do there).
"""

from __future__ import annotations

import base64
import configparser
import fcntl
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

from firmware_bridge import info as board_info

from . import install_plan, supernode
from .device_errors import DeviceError

DEFAULT_VENV = "~/.local/share/edgeprune/venv"
REMOTE_WHEELS = "~/.cache/edgeprune/wheels"  # on the board: the pushed wheels
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # reproducible wheels: the same files give the same bytes

# Run on the board with its python3: what it is, where home is, and what the venv holds.
PROBE = r"""
import importlib.util, json, os, platform, subprocess, sys
venv = os.path.expanduser(sys.argv[1])
out = {"python": platform.python_version(), "version": list(sys.version_info[:2]),
       "machine": platform.machine(), "home": os.path.expanduser("~"), "venv": venv,
       "has_venv": importlib.util.find_spec("ensurepip") is not None, "installed": None}
py = os.path.join(venv, "bin", "python")
if os.access(py, os.X_OK):
    code = ("import importlib.util, json; from firmware_bridge import info; "
            "print(json.dumps({'build': info.edgeprune_build(), 'runtime': info.runtime(), "
            "'flwr': importlib.util.find_spec('flwr') is not None}))")
    r = subprocess.run([py, "-c", code], capture_output=True, text=True)
    out["installed"] = json.loads(r.stdout) if r.returncode == 0 else {"error": r.stderr[-300:]}
print(json.dumps(out))
"""

# Run with the venv's python: the wheel tags it accepts, most specific first (pip's own list).
TAGS = r"""
import json
from pip._vendor.packaging import tags
seen = {"platforms": [], "abis": [], "interpreters": []}
for t in tags.sys_tags():
    for key, value in (("platforms", t.platform), ("abis", t.abi), ("interpreters", t.interpreter)):
        if value not in seen[key]:
            seen[key].append(value)
print(json.dumps(seen))
"""

# ------------------------------------------------------------------------------------ the wheel


def _source_tree() -> Path | None:
    """The checkout the running edgeprune comes from (a setup.cfg beside the package), if any."""
    import importlib.util

    spec = importlib.util.find_spec("edgeprune")
    package = Path(next(iter(spec.submodule_search_locations))).resolve()
    return package.parent if (package.parent / "setup.cfg").is_file() else None


def _metadata() -> tuple[str, str, list[str], str]:
    """(summary, requires-python, Requires-Dist lines, entry_points.txt) of the running
    edgeprune: from the checkout's setup.cfg when it runs from one, else its installed metadata."""
    tree = _source_tree()
    if tree is not None:
        cfg = configparser.ConfigParser()
        cfg.read(tree / "setup.cfg")
        requires = [r for r in cfg["options"]["install_requires"].split("\n") if r.strip()]
        for extra, lines in cfg["options.extras_require"].items():
            requires += [f'{r}; extra == "{extra}"' for r in lines.split("\n") if r.strip()]
        scripts = [s.strip() for s in cfg["options.entry_points"]["console_scripts"].split("\n")]
        entry = "[console_scripts]\n" + "".join(f"{s}\n" for s in scripts if s)
        return (
            cfg["metadata"]["description"],
            cfg["options"]["python_requires"],
            requires,
            entry,
        )
    from importlib.metadata import distribution

    dist = distribution("edgeprune")
    entry = "[console_scripts]\n" + "".join(
        f"{e.name} = {e.value}\n" for e in dist.entry_points if e.group == "console_scripts"
    )
    return (
        dist.metadata.get("Summary", ""),
        dist.metadata.get("Requires-Python", ">=3.10"),
        list(dist.requires or []),
        entry,
    )


def extras() -> list[str]:
    """The extras the running edgeprune declares (litert must be among them)."""
    found = []
    for line in _metadata()[2]:
        if "extra ==" in line:
            name = line.split("extra ==")[1].strip().strip("\"'")
            if name not in found:
                found.append(name)
    return found


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")


def build_wheel(directory: Path) -> tuple[Path, str]:
    """A wheel of the running edgeprune in `directory` (py3-none-any, reproducible: the same
    files give the same bytes), and its build digest: every file of its packages, the metadata
    of its setup.cfg (or installed metadata), the version with the digest as a local label."""
    summary, requires_python, requires, entry_points = _metadata()
    members = [(rel, path.read_bytes()) for rel, path in board_info.package_files()]
    digest = board_info.digest_of(members)
    base = board_info.edgeprune_version().split("+")[0]
    version = f"{base}+{digest[:12]}"
    name = f"edgeprune-{version}-py3-none-any.whl"
    info = f"edgeprune-{version}.dist-info"
    meta = [
        "Metadata-Version: 2.1",
        "Name: edgeprune",
        f"Version: {version}",
        f"Summary: {summary}",
        f"Requires-Python: {requires_python}",
    ]
    meta += [f"Provides-Extra: {e}" for e in extras()]
    meta += [f"Requires-Dist: {r}" for r in requires]
    members += [
        (f"{info}/METADATA", ("\n".join(meta) + "\n").encode()),
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: edgeprune device setup\nRoot-Is-Purelib: true\n"
            b"Tag: py3-none-any\n",
        ),
        (f"{info}/entry_points.txt", entry_points.encode()),
    ]
    record = "".join(f"{rel},{_record_hash(data)},{len(data)}\n" for rel, data in members)
    members.append((f"{info}/RECORD", (record + f"{info}/RECORD,,\n").encode()))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    tmp = directory / f".{name}.tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in members:
            entry = zipfile.ZipInfo(rel, ZIP_DATE)
            entry.external_attr = 0o644 << 16
            entry.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(entry, data)
    os.replace(tmp, path)
    return path, digest


# ----------------------------------------------------------------------------- the board's shell


class Shell:
    """Commands on the board over SSH (exec channels of one paramiko connection)."""

    def __init__(self, url):
        from .ssh_link import _connect

        self.client = _connect(url)
        self.label = url.text

    def run(self, argv: list[str], stdin: bytes | Path | None = None, progress=None) -> tuple:
        """(exit status, stdout, stderr) of `argv` run on the board; `stdin` is sent (a Path is
        streamed, calling `progress(done, total)`)."""
        channel = self.client.get_transport().open_session()
        channel.exec_command(shlex.join(argv))
        out: list[bytes] = []
        err: list[bytes] = []

        def drain(read, into):
            while data := read(65536):
                into.append(data)

        threads = [
            threading.Thread(target=drain, args=(channel.recv, out), daemon=True),
            threading.Thread(target=drain, args=(channel.recv_stderr, err), daemon=True),
        ]
        for t in threads:
            t.start()
        if isinstance(stdin, Path):
            total, done = stdin.stat().st_size, 0
            with stdin.open("rb") as f:
                while chunk := f.read(1 << 20):
                    channel.sendall(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
        elif stdin:
            channel.sendall(stdin)
        channel.shutdown_write()
        status = channel.recv_exit_status()
        for t in threads:
            t.join()
        channel.close()
        return (
            status,
            b"".join(out).decode(errors="replace"),
            b"".join(err).decode(errors="replace"),
        )

    def check(self, argv: list[str], what: str, **kw) -> str:
        status, out, err = self.run(argv, **kw)
        if status != 0:
            tail = "\n".join((err or out).strip().splitlines()[-6:])
            raise DeviceError(f"{self.label}: {what} failed (status {status}):\n{tail}")
        return out

    def close(self) -> None:
        self.client.close()


# --------------------------------------------------------------------------------------- set-up


def _with_python(url_text: str, python: str) -> str:
    """`url_text` with its ?python= set to `python` (other parameters kept)."""
    parts = urlsplit(url_text)
    params = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "python"]
    params.insert(0, ("python", python))
    query = "&".join(f"{k}={quote(v, safe='/~@:,.+-_')}" for k, v in params)
    return urlunsplit(parts._replace(query=query))


def _laptop_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(base).expanduser() / "edgeprune" / "wheels"


def no_shell(url_text: str, scheme: str) -> DeviceError:
    """Why a link without a shell cannot be set up, and what to do instead: over ssh once, or
    by hand with the wheel built here (its path and the exact commands are in the message)."""
    where = _laptop_cache() / "edgeprune"
    for old in where.glob("edgeprune-*.whl"):
        old.unlink()
    wheel, _ = build_wheel(where)
    venv = DEFAULT_VENV
    arm32 = " ".join(shlex.quote(r) for r in install_plan.ARM32_RUNTIME)
    return DeviceError(
        f"{url_text}: device setup installs over SSH (it needs a shell on the board); a {scheme} "
        f"link has none. Set the board up once over ssh (edgeprune device add NAME "
        f"ssh://USER@HOST; edgeprune device setup NAME), or by hand: edgeprune push NAME {wheel}, "
        f"then on the board run: python3 -m venv {venv} && {venv}/bin/pip install "
        f"~/edgeprune/'{wheel.name}[litert]' (32-bit ARM: ~/edgeprune/{wheel.name} {arm32} "
        f"--extra-index-url {install_plan.PIWHEELS})"
    )


_SAVED = re.compile(r"^(?:Saved|File was already downloaded) (.+\.whl)$")


def download_wheels(
    wheel: Path, tags: dict[str, list[str]], version: list[int], plan: install_plan.InstallPlan
) -> list[Path]:
    """The dependency wheels of `plan`'s targets for a board with pip tags `tags`, downloaded
    here (pip download, binary only, with the plan's indexes) into a cache directory per
    platform (kept: a second board or set-up downloads nothing); returns the files it needs."""
    platform = tags["platforms"][0]
    where = _laptop_cache() / f"cp{version[0]}{version[1]}-{platform}"
    where.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--progress-bar=off"]
    argv += ["--dest", str(where), "--python-version", f"{version[0]}.{version[1]}"]
    argv += ["--implementation", "cp", *plan.index_args()]
    for p in tags["platforms"]:
        argv += ["--platform", p]
    for a in tags["abis"]:
        argv += ["--abi", a]
    argv += plan.targets(str(wheel))
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    # One download into a cache directory at a time (a group's boards of one platform, or two
    # commands): pip would otherwise take a file another pip is still writing as downloaded.
    with open(where / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        r = subprocess.run(argv, capture_output=True, text=True, env=env)
        for stale in where.glob("edgeprune-*.whl"):
            stale.unlink()
    if r.returncode != 0:
        tail = "\n".join(r.stderr.strip().splitlines()[-6:])
        indexes = " ".join(plan.index_args()) or "pip's configured index"
        raise DeviceError(
            f"downloading edgeprune's dependencies for {platform} (Python "
            f"{version[0]}.{version[1]}) from {indexes} failed here; that index may have no "
            f"wheel for the platform:\n{tail}"
        )
    saved = (_SAVED.match(line.strip()) for line in r.stdout.splitlines())
    names = {Path(m.group(1)).name for m in saved if m}
    return sorted(where / n for n in names if not n.startswith("edgeprune-"))


@dataclass
class Options:
    """How to set a board up (beyond its URL): the venv, the board's python, offline or with
    the board's pip, the indexes, and the fleet's SuperNode (None: no fleet)."""

    venv: str = DEFAULT_VENV
    python: str = "python3"
    offline: bool = False
    force: bool = False
    index_url: str | None = None
    extra_index_url: str | None = None  # None: piwheels for 32-bit ARM boards
    fleet: supernode.Options | None = None


def set_up(
    url_text: str,
    options: Options | None = None,
    step: Callable[[str], None] = lambda s: None,
    transfer=None,
) -> dict[str, Any]:
    """Install the running edgeprune and its runtime (and flwr, for a fleet) into a venv on the
    ssh:// board `url_text`; for a fleet, write the SuperNode's launch script and unit too.

    `step(text)` is told each phase; `transfer(name)` returns a progress(done, total) callback
    for a file being copied. Returns what was done: the new URL, versions, wheels pushed.
    """
    from .links import safe_word
    from .transports import parse_url

    o = options or Options()
    url = parse_url(url_text)
    if url.scheme != "ssh":
        raise no_shell(url_text, url.scheme)
    safe_word(o.venv, "venv")
    safe_word(o.python, "python")
    if o.fleet is not None:
        o.fleet.check()
    started = time.monotonic()
    digest = _digest_now()
    shell = Shell(url)
    try:
        step("probe the board")
        board = _probe(shell, url_text, o)
        venv_path = board["venv"]
        venv_python = f"{venv_path}/bin/python"
        installed = board["installed"] or {}
        current = (
            not o.force
            and installed.get("build", {}).get("digest") == digest
            and installed.get("runtime") is not None
            and (o.fleet is None or installed.get("flwr"))
        )
        pushed: list[str] = []
        requirements: list[str] = []
        if not current:
            if board["installed"] is None:
                step(f"create the venv {venv_path}")
                shell.check([o.python, "-m", "venv", venv_path], "creating the venv")
            step("read the board's wheel tags")
            tags = json.loads(shell.check([venv_python, "-c", TAGS], "reading pip tags"))
            plan = install_plan.plan(
                tags["platforms"], o.fleet is not None, o.index_url, o.extra_index_url
            )
            with tempfile.TemporaryDirectory() as tmp:
                step("build the edgeprune wheel")
                wheel, digest = build_wheel(Path(tmp))
                files = [wheel]
                if o.offline:
                    step(f"download wheels for {tags['platforms'][0]} here")
                    files += download_wheels(wheel, tags, board["version"], plan)
                remote_dir = f"{board['home']}/{REMOTE_WHEELS.removeprefix('~/')}"
                pushed = _push_files(shell, remote_dir, files, transfer)
                requirements = plan.targets(wheel.name)
                step("pip install " + ("from the pushed wheels" if o.offline else "(board's pip)"))
                _pip_install(shell, url_text, venv_python, remote_dir, wheel.name, plan, o)
        if o.fleet is not None:
            step("write the SuperNode's launch script")
            home = board["home"]
            workdir = supernode.board_path(url.workdir or "~/edgeprune", home, home)
            files_on_board = supernode.node_files(home, workdir, o.fleet)
            fleet = supernode.install(shell, files_on_board, venv_path, o.fleet)
        else:
            fleet = None
    finally:
        shell.close()

    new_url = _with_python(url_text, venv_python)
    step("start the agent")
    from .client import Device

    with Device(new_url) as device:
        now = device.info()
    board_build = now.get("edgeprune_build") or {}
    if board_build.get("digest") != digest:
        raise DeviceError(
            f"{url_text}: after set-up the agent runs edgeprune {now.get('edgeprune')} (build "
            f"{str(board_build.get('digest'))[:12]}), not the one installed (build {digest[:12]})"
        )
    return {
        "url": new_url,
        "python": venv_python,
        "venv": venv_path,
        "offline": o.offline,
        "changed": not current,
        "pushed": pushed,
        "requirements": requirements,
        "edgeprune": now.get("edgeprune"),
        "digest": digest,
        "runtime": now.get("runtime"),
        "machine": now.get("machine"),
        "board_python": now.get("python"),
        "fleet": fleet,
        "seconds": round(time.monotonic() - started, 1),
    }


def _digest_now() -> str:
    """The build digest of edgeprune's files as they are now, as the wheel will carry it (not
    `info.edgeprune_build()`, cached for the process: a long-lived one may outlive an edit)."""
    return board_info.digest_of([(rel, p.read_bytes()) for rel, p in board_info.package_files()])


def _probe(shell: Shell, url_text: str, o: Options) -> dict[str, Any]:
    """What the board is (Python, home, the venv and what it holds), or why it cannot be set
    up (no python, too old, no venv module)."""
    python = o.python
    status, out, err = shell.run([python, "-c", PROBE, o.venv])
    if status == 127 or ("not found" in err and not out):
        raise DeviceError(
            f"{url_text}: {python} was not found on the board; install Python 3.10 or newer "
            "there (Debian/Raspberry Pi OS: sudo apt-get install python3 python3-venv)"
        )
    if status != 0:
        raise DeviceError(f"{url_text}: probing the board with {python} failed: {err.strip()}")
    board = json.loads(out)
    if tuple(board["version"]) < (3, 10):
        raise DeviceError(
            f"{url_text}: the board's {python} is Python {board['python']}; edgeprune needs "
            "3.10 or newer (Raspberry Pi OS bookworm has 3.11)"
        )
    if board["installed"] is None and not board["has_venv"]:
        raise DeviceError(
            f"{url_text}: the board's {python} has no venv module; there, run "
            "sudo apt-get install python3-venv, then try again"
        )
    return board


def _push_files(shell: Shell, remote_dir: str, files: list[Path], transfer) -> list[str]:
    """Copy `files` into `remote_dir` on the board, except those already there with the same
    size; returns the names copied."""
    have = _remote_sizes(shell, remote_dir)
    shell.check(["mkdir", "-p", remote_dir], "creating the wheel directory")
    pushed = []
    for f in files:
        if have.get(f.name) == f.stat().st_size:
            continue
        target = f"{remote_dir}/{f.name}"
        shell.check(
            ["sh", "-c", 'cat > "$1.part" && mv "$1.part" "$1"', "sh", target],
            f"copying {f.name}",
            stdin=f,
            progress=transfer(f.name) if transfer else None,
        )
        pushed.append(f.name)
    return pushed


def _pip_install(
    shell: Shell,
    url_text: str,
    venv_python: str,
    remote_dir: str,
    wheel: str,
    plan: install_plan.InstallPlan,
    o: Options,
) -> None:
    """pip install the plan's targets with the board's pip (offline: from `remote_dir` only);
    then only this build's edgeprune wheel stays in `remote_dir`."""
    argv = [venv_python, "-m", "pip", "install", "--quiet", "--upgrade"]
    argv += ["--disable-pip-version-check", "--no-input"]
    argv += ["--no-index", "--find-links", remote_dir] if o.offline else plan.index_args()
    if o.force:
        argv += ["--force-reinstall"]
    argv += plan.targets(f"{remote_dir}/{wheel}")
    status, out, err = shell.run(argv)
    if status != 0:
        tail = "\n".join(err.strip().splitlines()[-6:])
        hint = (
            ""
            if o.offline
            else "; if the board has no internet, run `edgeprune device setup "
            "--offline` (the laptop downloads the wheels)"
        )
        raise DeviceError(f"{url_text}: pip install failed on the board{hint}:\n{tail}")
    # One wheel per build is enough: older edgeprune wheels go.
    shell.run(
        [
            "sh",
            "-c",
            'for f in "$1"/edgeprune-*.whl; do [ "$f" = "$2" ] || rm -f "$f"; done',
            "sh",
            remote_dir,
            f"{remote_dir}/{wheel}",
        ]
    )


def _remote_sizes(shell: Shell, directory: str) -> dict[str, int]:
    """Name -> size of the wheels already in `directory` on the board."""
    status, out, _ = shell.run(
        ["sh", "-c", 'cd "$1" 2>/dev/null && for f in *.whl; do [ -f "$f" ] && '
         'printf "%s %s\\n" "$(wc -c < "$f")" "$f"; done; true', "sh", directory]
    )  # fmt: skip
    sizes = {}
    for line in out.splitlines():
        size, _, name = line.strip().partition(" ")
        if size.isdigit():
            sizes[name] = int(size)
    return sizes


def mismatch(board: dict[str, Any]) -> str | None:
    """Why the board's edgeprune is not this laptop's, or None when it is the same build."""
    local = board_info.edgeprune_build()
    build = board.get("edgeprune_build")
    if build and build.get("digest") == local["digest"]:
        return None

    def named(build: dict[str, str]) -> str:
        if "+" in build["version"]:
            return build["version"]
        return f"{build['version']} (build {build['digest'][:12]})"

    theirs = named(build) if build else str(board.get("edgeprune", "unknown"))
    return f"the board runs edgeprune {theirs}, this laptop {named(local)}"
