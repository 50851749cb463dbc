"""The host's operations: convert and package models, and work with boards.

convert, package, `device add|list|info|remove`, push and pull, declared like the core's
operations (`edgeprune.operation`): parameters once, progress through the context, typed results.
Running an operation on a board is `Device.run` (the CLI's `remote` parses a board operation's
arguments with the same declarations). TensorFlow, paramiko and pyserial are imported when an
operation runs, never by importing this module.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..choices import CONVERT_MODES
from ..errors import EdgepruneError
from ..operation import REQUIRED, Context, Operation, Param, Result, register, switch
from .groups import groupable, output_per_board

DEVICE = Param("device", "a registered board's name, or a device URL", default=REQUIRED,
               positional=True)  # fmt: skip
BOARD_NAME = Param("name", "the board's name", default=REQUIRED, positional=True)
GROUP_NAME = Param("name", "the group's name", default=REQUIRED, positional=True)
URL_HELP = (
    "ssh://user@host[:port][/WORKDIR][?python=PY&key=FILE], serial:///dev/ttyX[?baud=N] or "
    "local://[/WORKDIR]"
)


def open_device(name_or_url: str):
    """A `Device` for a registered name or a URL (not connected until first used)."""
    from .client import Device
    from .registry import resolve

    label, url = resolve(name_or_url)
    return Device(url, label)


# ---------------------------------------------------------------------------------------- convert


@dataclass
class ConvertResult(Result):
    source: str
    output: str
    mode: str
    bytes: int
    checked_on: str
    outputs: dict[str, Any]


def _samples(data: str | None, shape: tuple[int, ...], count: int):
    """Up to `count` samples from `data`, or seeded standard-normal ones; and where from."""
    import itertools

    import numpy as np

    from ..data import Samples

    if data:
        return list(itertools.islice(Samples(data, shape), count)), data
    rng = np.random.default_rng(0)
    return list(rng.standard_normal((count, *shape[1:])).astype(np.float32)), "random normal"


def _convert(
    context: Context,
    source: str,
    output: str,
    mode: str,
    data: str | None,
    float_io: bool,
    calibration_samples: int,
    check_samples: int,
) -> ConvertResult:
    from .._io import atomic_write_bytes
    from .convert import compare_outputs, convert, load_source

    if mode == "int8" and not data:
        raise EdgepruneError("--mode int8 needs calibration samples: pass --data FOLDER")
    model = load_source(source)
    try:
        calibration = None
        if mode == "int8":
            samples, _ = _samples(data, model.input_shape, calibration_samples)
            calibration = context.iterate(samples, "calibrate", len(samples), "sample")
        tflite = convert(model, mode, calibration, float_io=float_io)
        atomic_write_bytes(output, tflite)
        check, origin = _samples(data, model.input_shape, check_samples)
        outputs = compare_outputs(
            tflite, model, context.iterate(check, "check", len(check), "sample")
        )
    finally:
        model.close()
    return ConvertResult(str(source), str(output), mode, len(tflite), origin, outputs)


convert = register(
    Operation(
        "convert",
        "Keras (.keras/.h5) or SavedModel -> .tflite, checked against the source",
        (
            Param(
                "source",
                ".keras or .h5 file, or a SavedModel directory",
                default=REQUIRED,
                role="input",
                positional=True,
            ),  # fmt: skip
            Param("output", ".tflite file to write", default=REQUIRED, role="output", flag="-o"),
            Param(
                "mode",
                "float32; dynamic: int8 weights, float activations; int8: full integer, "
                "calibrated on --data; float16: fp16 weights",
                default="float32",
                choices=CONVERT_MODES,
            ),
            Param(
                "data", "calibration samples: a .npy/.npz file or folder of them", role="input"
            ),  # fmt: skip
            switch("float_io", "int8 mode: keep float32 input and output"),
            Param(
                "calibration_samples",
                "at most this many calibration samples",
                type=int,
                default=200,
            ),  # fmt: skip
            Param("check_samples", "samples compared after converting", type=int, default=32),
        ),
        _convert,
        ConvertResult,
        description="Converts, then runs the .tflite and the source model on the same samples "
        "(--data, else seeded random ones) and reports the max and mean absolute difference "
        "of every output. Needs TensorFlow (pip install 'edgeprune[host]').",
        progress=True,
    )
)

# ---------------------------------------------------------------------------------------- package


@dataclass
class PackageResult(Result):
    output: str
    manifest: dict[str, Any]
    reference: bool


def _package(
    context: Context,
    model: str,
    output: str,
    name: str,
    version: str,
    labels: str | None,
    recipe: str | None,
    file: list[str],
    description: str,
    reference: str | None,
) -> PackageResult:
    from ..package import Package, is_package
    from .packaging import build, read_labels, read_recipe

    source = Package(model) if is_package(model) else None  # repackaged: its parts by default
    files = {}
    for spec in file or ():
        path, _, inside = spec.partition("=")
        files[inside or Path(path).name] = path
    ref = None
    if reference:
        from ..model import Model
        from ..reference import build_from_file

        with context.bar("reference", unit="sample") as bar:
            m = source.model() if source else Model.load(model)
            ref = build_from_file(m, reference, progress=bar.update).to_bytes()
    elif source is not None:
        ref = source.reference_bytes
    kept = source.manifest if source is not None else {}
    manifest = build(
        model,
        output,
        name=name,
        version=version,
        labels=read_labels(labels) if labels else kept.get("labels"),
        recipe=read_recipe(recipe) if recipe else kept.get("preprocessing"),
        files=files,
        description=description or kept.get("description", ""),
        reference=ref,
        data=source.model_bytes if source is not None else None,
    )
    return PackageResult(str(output), manifest, ref is not None)


package = register(
    Operation(
        "package",
        "bundle a .tflite with its manifest, labels, recipe and files into an .edgepkg",
        (
            Param(
                "model",
                ".tflite file, or an .edgepkg whose labels, recipe, description and reference "
                "are kept unless given",
                default=REQUIRED,
                role="input",
                positional=True,
            ),
            Param("output", ".edgepkg file to write", default=REQUIRED, role="output", flag="-o"),
            Param("name", "package name", default=REQUIRED),
            Param("version", "package version, e.g. 1.0.0", default=REQUIRED),
            Param(
                "labels", "class labels: one per line, or a JSON list", role="input", metavar="FILE"
            ),  # fmt: skip
            Param(
                "recipe",
                "preprocessing recipe (AudioRecipe/ImageRecipe to_dict() as JSON)",
                role="input",
                metavar="JSON",
            ),  # fmt: skip
            Param(
                "file",
                "an extra file to include (as NAME inside the package); repeatable",
                role="input",
                metavar="PATH[=NAME]",
                many=True,
                default=(),
            ),  # fmt: skip
            Param("description", "one line about the model", default=""),
            Param(
                "reference",
                ".npz with x and y: labelled validation samples the model never trained on; the "
                "source reference built from them travels in the package, for personalize's "
                "checks",
                role="input",
                metavar="DATA",
            ),
        ),
        _package,
        PackageResult,
        progress=True,
    )
)

# ---------------------------------------------------------------------------------------- devices


@dataclass
class DeviceAdded(Result):
    name: str
    url: str


def _device_add(context: Context, name: str, url: str, replace: bool) -> DeviceAdded:
    from .registry import add

    add(name, url, replace)
    return DeviceAdded(name, url)


device_add = register(
    Operation(
        "device add",
        "remember a board by name",
        (
            Param("name", "a short name for the board", default=REQUIRED, positional=True),
            Param("url", URL_HELP, default=REQUIRED, positional=True),
            switch("replace", "overwrite an existing name"),
        ),
        _device_add,
        DeviceAdded,
        description=f"URL: {URL_HELP}",
    )
)


@dataclass
class DeviceList(Result):
    registry: str
    devices: dict[str, str]


def _device_list(context: Context) -> DeviceList:
    from .registry import load, registry_path

    return DeviceList(str(registry_path()), load())


device_list = register(Operation("device list", "the registered boards", (), _device_list,
                                 DeviceList))  # fmt: skip


@dataclass
class DeviceRemoved(Result):
    name: str


def _device_remove(context: Context, name: str) -> DeviceRemoved:
    from .registry import remove

    remove(name)
    return DeviceRemoved(name)


device_remove = register(
    Operation("device remove", "forget a board", (BOARD_NAME,), _device_remove, DeviceRemoved)
)


@dataclass
class GroupChanged(Result):
    group: str
    boards: list[str]
    removed: bool = False


def _group_add(context: Context, name: str, boards: list[str], replace: bool) -> GroupChanged:
    from .registry import add_group, load_groups

    add_group(name, boards, replace)
    return GroupChanged(name, load_groups()[name])


device_group_add = register(
    Operation(
        "device group add",
        "name several registered boards as one group (every device verb takes the group)",
        (
            GROUP_NAME,
            Param(
                "boards",
                "registered boards' names",
                default=REQUIRED,
                positional=True,
                many=True,
                metavar="BOARD",
            ),
            switch("replace", "change an existing group"),
        ),
        _group_add,
        GroupChanged,
        description="push, pull, remote and device info given a group run on all its boards at "
        "once (a bounded pool), one progress line per board, then a table; the command exits 2 "
        "naming the boards that failed, after the others finished. Nothing is retried.",
    )
)


@dataclass
class GroupList(Result):
    registry: str
    groups: dict[str, list[str]]


def _group_list(context: Context) -> GroupList:
    from .registry import load_groups, registry_path

    return GroupList(str(registry_path()), load_groups())


device_group_list = register(Operation("device group list", "the groups of boards", (),
                                       _group_list, GroupList))  # fmt: skip


def _group_remove(context: Context, name: str) -> GroupChanged:
    from .registry import load_groups, remove_group

    boards = load_groups().get(name, [])
    remove_group(name)
    return GroupChanged(name, boards, removed=True)


device_group_remove = register(
    Operation(
        "device group remove",
        "forget a group (its boards stay registered)",
        (GROUP_NAME,),
        _group_remove,
        GroupChanged,
    )
)


@dataclass
class DeviceInfo(Result):
    label: str
    url: str
    info: dict[str, Any]
    laptop: dict[str, str] = field(default_factory=dict)  # this edgeprune's version and digest
    mismatch: str | None = None  # how the board's edgeprune differs from this one


@groupable("device info")
def _device_info(context: Context, device: str) -> DeviceInfo:
    from firmware_bridge.info import edgeprune_build

    from .setup import mismatch

    with open_device(device) as board:
        info = board.info()
        return DeviceInfo(board.label, board.url, info, edgeprune_build(), mismatch(info))


device_info = register(
    Operation(
        "device info",
        "connect and show board, OS, runtime, Edge TPU, memory",
        (DEVICE,),
        _device_info,
        DeviceInfo,
    )
)


@dataclass
class DeviceSetup(Result):
    """A board set up (or found up to date) with this laptop's edgeprune and its runtime."""

    device: str
    url: str
    python: str
    venv: str
    offline: bool
    changed: bool
    pushed: list[str]
    edgeprune: str
    digest: str
    runtime: dict[str, str] | None
    machine: str
    board_python: str
    seconds: float
    registered: bool = False
    requirements: list[str] = field(default_factory=list)  # what pip installed (if it ran)
    fleet: dict[str, Any] | None = None  # the SuperNode's files (setup.supernode.install)


_REGISTRY = threading.Lock()  # a group's boards update the registry one at a time


@groupable("device setup")
def _device_setup(
    context: Context,
    device: str,
    venv: str,
    python: str,
    offline: bool,
    force: bool,
    index_url: str | None,
    extra_index_url: str | None,
    fleet: bool,
    superlink: str | None,
    superlink_ca: str | None,
    data: str,
    enable: bool,
) -> DeviceSetup:
    from .registry import add as register_device
    from .registry import load, resolve
    from .setup import Options, set_up
    from .supernode import Options as NodeOptions

    if (superlink is None) == fleet:
        raise EdgepruneError(
            "device setup: --fleet needs --superlink HOST:PORT (the SuperLink the board's "
            "SuperNode joins), and --superlink needs --fleet"
        )
    node = NodeOptions(superlink, data, superlink_ca, enable) if fleet else None
    options = Options(venv, python, offline, force, index_url, extra_index_url, node)
    label, url = resolve(device)
    bars: dict[str, Any] = {}

    def step(text: str) -> None:  # one bar per phase: its elapsed time shows it is alive
        if "phase" in bars:
            bars.pop("phase").close()
        bars["phase"] = context.bar(text, None, "step")

    def transfer(name: str):
        def progress(done: int, total: int) -> None:
            if name not in bars:
                bars[name] = context.bar(f"copy {name[:40]}", total, "B")
            bars[name].set(done)
            if done >= total:
                bars.pop(name).close()

        return progress

    try:
        done = set_up(url, options, step=step, transfer=transfer)
    finally:
        for bar in bars.values():
            bar.close()
    with _REGISTRY:
        registered = load().get(label) == url
        if registered and done["url"] != url:
            register_device(label, done["url"], replace=True)
    return DeviceSetup(device=label, registered=registered, **done)


device_setup = register(
    Operation(
        "device setup",
        "install this edgeprune and its runtime into a venv on the board (over SSH)",
        (
            DEVICE,
            Param("venv", "the venv on the board", default="~/.local/share/edgeprune/venv"),
            Param("python", "the board's Python that creates the venv", default="python3"),
            switch(
                "offline",
                "the board has no internet: download the wheels for its platform here and "
                "push them with edgeprune",
            ),
            switch("force", "reinstall even when the board is up to date"),
            Param(
                "index_url",
                "the package index pip uses instead of its configured one",
                metavar="URL",
            ),
            Param(
                "extra_index_url",
                "one more package index; default: piwheels for 32-bit ARM boards (numpy), "
                "none for others; '' for none",
                metavar="URL",
            ),
            switch(
                "fleet",
                "also install flwr and this board's Flower SuperNode (launch script and systemd "
                "user unit) joining --superlink",
            ),
            Param(
                "superlink", "the fleet's SuperLink (Fleet API) as HOST:PORT", metavar="HOST:PORT"
            ),
            Param(
                "superlink_ca",
                "the SuperLink's CA certificate here (PEM), copied to the board for TLS; "
                "without it the SuperNode connects --insecure",
                metavar="PEM",
            ),
            Param(
                "data",
                "the board's samples the SuperNode reads (relative: in the device's work "
                "directory)",
                default="samples",
            ),
            switch("enable", "enable and start the SuperNode's systemd user unit now"),
        ),
        _device_setup,
        DeviceSetup,
        description="Builds a wheel of the edgeprune running here, copies it to the board and "
        "installs it with its runtime into the venv: edgeprune[litert] on 64-bit boards, "
        "tflite-runtime and numpy from piwheels on 32-bit ARM ones; with the board's pip, or "
        "--offline from wheels downloaded here for the board's platform (pip download with the "
        "board's own wheel tags). A board that already has this build is left as it is. The "
        "device's URL then names the venv's python (a registered device is updated), and the "
        "agent is started through it to check. With --fleet it also installs flwr and writes "
        "the board's SuperNode: a launch script and a systemd user unit (enabled only with "
        "--enable). Given a group, every board is set up at once. Needs ssh:// devices.",
        progress=True,
    )
)

# ------------------------------------------------------------------------------------ push, pull

RECURSIVE = switch("recursive", "copy a folder and everything in it", flag="-r")


@dataclass
class Transfer(Result):
    """A finished push or pull: where the file (or folder) is now, and what moved.

    For a folder `path` is the folder, `size` the bytes of all its files, `files` each file's
    own result; `skipped` counts the files not sent because the same content was already
    there (for one file: 1 or 0).
    """

    device: str
    source: str
    path: str
    size: int
    sha256: str
    resumed_from: int = 0
    reconnected_at: list[int] = field(default_factory=list)
    reconnects: int = 0
    skipped: int = 0
    files: list[dict[str, Any]] = field(default_factory=list)


def _moved(context: Context, verb: str, device: str, source: str, move) -> Transfer:
    """Run one push or pull (of one file or a folder, over one link) with a byte bar;
    `move(board, progress)` returns the result."""
    bars = []

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(context.bar(verb, total, "B"))
        bars[0].total = total
        bars[0].set(done)

    with open_device(device) as board:
        try:
            result = move(board, progress)
        finally:
            for bar in bars:
                bar.close()
    names = {"path", "size", "sha256", "resumed_from", "reconnected_at", "reconnects", "files"}
    kept = {k: v for k, v in result.items() if k in names}
    return Transfer(board.label, source, skipped=int(result.get("skipped", 0)), **kept)


@groupable("push")
def _push(context: Context, device: str, file: str, remote: str | None, recursive: bool
          ) -> Transfer:  # fmt: skip
    from . import copying

    return _moved(context, "push", device, file,
                  lambda b, p: copying.push(b, Path(file), remote, recursive, p))  # fmt: skip


push = register(
    Operation(
        "push",
        "copy a file (or with -r a folder) to a board's work directory (resumable)",
        (
            DEVICE,
            Param(
                "file",
                "the file or folder to copy",
                default=REQUIRED,
                role="input",
                positional=True,
            ),  # fmt: skip
            Param(
                "remote",
                "path on the board (default: the file's name); DIR/ puts it into DIR",
                long="--as",
                metavar="PATH",
            ),  # fmt: skip
            RECURSIVE,
        ),
        _push,
        Transfer,
        description="Like scp: a file whose identical content is already there is not sent "
        "again, an interrupted push resumes where it stopped, and every file of a folder goes "
        "over the same link.",
        progress=True,
    )
)


@groupable("pull", output_per_board)
def _pull(context: Context, device: str, path: str, output: str, recursive: bool) -> Transfer:
    from . import copying

    return _moved(context, "pull", device, path,
                  lambda b, p: copying.pull(b, path, output, recursive, p))  # fmt: skip


pull = register(
    Operation(
        "pull",
        "copy a file (or with -r a folder) from a board's work directory (resumable)",
        (
            DEVICE,
            Param(
                "path",
                "path on the board, relative to its work directory",
                default=REQUIRED,
                positional=True,
            ),  # fmt: skip
            Param(
                "output",
                "file, or directory to put it in (an existing one, or DIR/; default: here)",
                default=".",
                role="output",
                flag="-o",
            ),  # fmt: skip
            RECURSIVE,
        ),
        _pull,
        Transfer,
        description="Like scp: -o DIR/ (or an existing directory) puts it into DIR, any other "
        "-o names the copy; a local file with identical content is not fetched again.",
        progress=True,
    )
)


@dataclass
class Listing(Result):
    """What is at a path in a board's work directory."""

    device: str
    path: str
    type: str
    entries: list[dict[str, Any]]
    truncated: bool = False


@groupable("ls")
def _ls(context: Context, device: str, path: str, recursive: bool) -> Listing:
    with open_device(device) as board:
        listed = board.list(path or "", recursive)
    return Listing(board.label, listed["path"], listed["type"], listed["entries"],
                   listed["truncated"])  # fmt: skip


ls = register(
    Operation(
        "ls",
        "list a board's work directory (or a folder or file in it)",
        (
            DEVICE,
            Param(
                "path",
                "a folder or file in the work directory (default: all of it)",
                default="",
                positional=True,
            ),  # fmt: skip
            switch("recursive", "list the folders inside too", flag="-r"),
        ),
        _ls,
        Listing,
    )
)
