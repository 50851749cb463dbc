"""What the README's two commands cost on a fresh clone: time, and the size of .venv after each.

    python3 scripts/setup_cost.py [--repo DIR] [--dry-run]

Clones the repository's HEAD (committed files only) into a temporary directory, then runs
`bash scripts/demo.sh` and after it `bash scripts/test.sh` there, as the README has a new user do,
with an empty pip cache (every wheel is downloaded, as on a fresh machine), no data directory
(EDGEPRUNE_DATA unset) and no emulated-Pi root filesystem (the emulated-Pi test skips, as on a
machine that never ran scripts/pi_rootfs.sh). Writes the figures, with the command, machine, date
and commit, into README.md between the `setup-cost` markers (--dry-run: prints them only).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- setup-cost: begin -->", "<!-- setup-cost: end -->"
COMMANDS = ("bash scripts/demo.sh", "bash scripts/test.sh")


def size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            p = Path(root, name)
            if not p.is_symlink():
                total += p.stat().st_size
    return total


def machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem = int(line.split()[1]) // 2**20
    return f"{cpu}, {os.cpu_count()} cores, {mem} GiB RAM, {platform.platform()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=REPO, help="repository to clone")
    parser.add_argument("--dry-run", action="store_true", help="print, do not write README.md")
    args = parser.parse_args()

    commit = subprocess.run(
        ["git", "-C", str(args.repo), "rev-parse", "--short", "HEAD"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    load = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeprune-setup-cost-") as tmp:
        clone = Path(tmp, "edgeprune")
        subprocess.run(["git", "clone", "--quiet", str(args.repo), str(clone)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
        env.pop("EDGEPRUNE_DATA", None)
        env["PIP_CACHE_DIR"] = str(Path(tmp, "pip-cache"))
        env["EDGEPRUNE_PI_ROOTFS"] = str(Path(tmp, "no-pi-rootfs.tar.gz"))
        env["PATH"] = os.pathsep.join(
            p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p
        )
        for command in COMMANDS:
            print(f"setup_cost: {command} in {clone}", file=sys.stderr, flush=True)
            start = time.monotonic()
            status = subprocess.run(command.split(), cwd=clone, env=env).returncode
            seconds = time.monotonic() - start
            rows.append((command, seconds, size(clone / ".venv"), status))
        python = subprocess.run(
            [str(clone / ".venv/bin/python"), "--version"], capture_output=True, text=True
        ).stdout.strip()

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    lines = [
        BEGIN,
        "| command (in this order, on a fresh clone) | time | `.venv` after it |",
        "|---|---|---|",
    ]
    for command, seconds, nbytes, status in rows:
        failed = f" (exit status {status})" if status else ""
        lines.append(
            f"| `{command}`{failed} | {seconds / 60:.1f} min ({seconds:.0f} s) | "
            f"{nbytes / 2**30:.2f} GiB ({nbytes / 2**20:,.0f} MiB) |"
        )
    lines += [
        "",
        f"Measured by `python3 scripts/setup_cost.py` on {date} (commit {commit}): {machine()}, "
        f"{python}; an empty pip cache (every wheel downloaded), no data directory, no "
        "emulated-Pi root filesystem (that test skipped); load average "
        f"{load:.1f} when it started (other jobs on the machine slow it down). The times include "
        "the downloads, so they depend on the network.",
        END,
    ]
    block = "\n".join(lines)
    print(block)
    if not args.dry_run:
        readme = REPO / "README.md"
        text = readme.read_text()
        if BEGIN not in text:
            raise SystemExit(f"setup_cost: no {BEGIN} marker in {readme}")
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        readme.write_text(pattern.sub(lambda _: block, text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
