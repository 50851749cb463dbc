"""An emulated Raspberry Pi for the tests: Debian bookworm arm64 under qemu-user, sshd inside.

`scripts/pi_rootfs.sh` builds the root filesystem once and caches it as a tarball; `EmulatedPi`
extracts a fresh copy into a test directory, gives it this machine's DNS and CA certificates (so
the board's pip reaches PyPI), mounts /proc, and starts the board's own sshd (the aarch64
binary, through qemu-aarch64-static and binfmt_misc) chrooted into it on a free 127.0.0.1 port,
with a throw-away host key (in a known_hosts file, checked as for a real board) and a user key
for the board's `pi` user. Everything that runs over SSH there is aarch64: `python3` is the
board's Debian Python 3.11.

Runs only when EDGEPRUNE_EMULATED_PI=1 (`EDGEPRUNE_EMULATED_PI=1 .ci/run` builds the root
filesystem and runs it; it does not fit CI's time by default). Needs root (chroot, mount), the
cached tarball and an enabled qemu-aarch64 binfmt entry; `missing()` says which is absent, for
the skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from tests.device_rig import _accepts, free_port, keygen

ROOTFS = Path(
    os.environ.get("EDGEPRUNE_PI_ROOTFS", "/var/cache/edgeprune/pi-bookworm-arm64.tar.gz")
)
BINFMT = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONFIG = "/etc/edgeprune-test"  # inside the board: sshd's config, host key, authorized keys
# The CPU qemu emulates: a Raspberry Pi 4's. qemu's default ("max") has SVE, which no Pi has, and
# under qemu 7.2 NumPy's OpenBLAS SVE kernels intermittently return inf/NaN from float32 products
# (x.T @ x of the repair's Gram sums: 3 runs of 3 with the default CPU, 0 of 3 with cortex-a72).
CPU = "cortex-a72"


def missing() -> str | None:
    """Why the emulated Pi cannot run here, or None."""
    if os.environ.get("EDGEPRUNE_EMULATED_PI") != "1":
        return (
            "the emulated-Pi test takes half an hour on 2 cores: set EDGEPRUNE_EMULATED_PI=1 "
            "to run it"
        )
    if os.geteuid() != 0:
        return "the emulated Pi needs root (chroot, mount)"
    if not ROOTFS.is_file():
        return (
            f"no emulated-Pi root filesystem at {ROOTFS}: run `bash scripts/pi_rootfs.sh` as root"
        )
    try:
        enabled = BINFMT.read_text().startswith("enabled")
    except OSError:
        enabled = False
    if not enabled:
        return "binfmt_misc has no enabled qemu-aarch64 entry: run `bash scripts/pi_rootfs.sh`"
    if shutil.which("ssh-keygen") is None:
        return "needs ssh-keygen (apt-get install openssh-client)"
    return None


def _owner(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise RuntimeError(f"no user {user} in the emulated Pi")


def _unlock(root: Path, user: str) -> None:
    """Give `user` no password ("*") instead of a locked one ("!"): sshd refuses a locked
    account even for key logins when it does not use PAM."""
    shadow = root / "etc/shadow"
    lines = shadow.read_text().splitlines()
    for i, line in enumerate(lines):
        fields = line.split(":")
        if fields[0] == user and fields[1].startswith("!"):
            fields[1] = "*"
            lines[i] = ":".join(fields)
    shadow.write_text("\n".join(lines) + "\n")


class EmulatedPi:
    """A fresh emulated Pi in `directory`; `url()` is its device URL, `known_hosts` its key."""

    user = "pi"

    def __init__(self, directory: Path):
        self.dir = directory
        self.root = directory / "root"
        self.root.mkdir()
        started = time.monotonic()
        subprocess.run(
            ["tar", "-C", str(self.root), "--numeric-owner", "-xzf", str(ROOTFS)], check=True
        )
        self.extract_seconds = time.monotonic() - started
        shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        if CA_BUNDLE.exists():
            (self.root / CA_BUNDLE.relative_to("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(CA_BUNDLE, self.root / CA_BUNDLE.relative_to("/"))
        # /proc, and a private /dev/pts (terminals, as a board has). Never bind this machine's
        # /sys: under qemu-user, LiteRT's CPU probe (cpuinfo) reads the x86 host's sysfs as an
        # arm64 board's and every invoke segfaults.
        subprocess.run(["mount", "-t", "proc", "proc", str(self.root / "proc")], check=True)
        self.mounted = True
        pts = "newinstance,ptmxmode=0666,mode=0620"
        subprocess.run(["mount", "-t", "devpts", "-o", pts, "devpts", str(self.root / "dev/pts")],
                       check=True)  # fmt: skip
        ptmx = self.root / "dev/ptmx"
        ptmx.unlink(missing_ok=True)
        ptmx.symlink_to("pts/ptmx")

        config = self.root / CONFIG.lstrip("/")
        config.mkdir(parents=True)
        keygen(config / "host_key")
        self.user_key = keygen(directory / "user_key")
        (config / "authorized_keys").write_text((directory / "user_key.pub").read_text())
        self.port = free_port()
        (config / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {CONFIG}/host_key\n"
            f"AuthorizedKeysFile {CONFIG}/authorized_keys\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
            "Subsystem sftp internal-sftp\nLogLevel ERROR\n"
            f"SetEnv QEMU_CPU={CPU}\n"  # every session's processes: the Pi's CPU
        )
        (self.root / "run/sshd").mkdir(parents=True, exist_ok=True)
        self.known_hosts = directory / "known_hosts"
        key = (config / "host_key.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(key)}\n")
        self.home = Path("/home", self.user)
        self.uid, self.gid = _owner(self.root, self.user)
        _unlock(self.root, self.user)

        self.log = directory / "sshd.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                ["chroot", str(self.root), "/usr/sbin/sshd", "-D", "-e", "-f",
                 f"{CONFIG}/sshd_config"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "QEMU_CPU": CPU},
            )  # fmt: skip
        deadline = time.monotonic() + 120  # the aarch64 sshd starts under qemu
        while not _accepts(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulated Pi's sshd did not start: {self.log.read_text()}")
            time.sleep(0.1)

    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}?key={self.user_key}"

    def path(self, on_board: str) -> Path:
        """This machine's path of a file on the board (`~` is the pi user's home)."""
        if on_board.startswith("~/"):
            on_board = f"{self.home}/{on_board[2:]}"
        return self.root / on_board.lstrip("/")

    def stop(self) -> None:
        """Stop sshd and every process still running in the board, then unmount /proc and
        /dev/pts."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for pid in _pids_in(self.root):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        if self.mounted:
            for mount in ("dev/pts", "proc"):
                subprocess.run(["umount", "-l", str(self.root / mount)], check=False)
            self.mounted = False


def _pids_in(root: Path) -> list[int]:
    """The processes whose root directory is `root` (started inside the board)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(entry / "root") == str(root):
                    pids.append(int(entry.name))
    return pids
