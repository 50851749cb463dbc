"""`edgeprune convert` and `package`: the host side of getting a model onto a board.

`register` only declares arguments; TensorFlow is imported by `convert` when it runs.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    """Add convert and package to edgeprune's parser."""
    p = sub.add_parser(
        "convert",
        help="Keras (.keras/.h5) or SavedModel -> .tflite, checked against the source",
        description="Converts, then runs the .tflite and the source model on the same samples "
        "(--data, else seeded random ones) and reports the max and mean absolute difference "
        "of every output. Needs TensorFlow (pip install 'edgeprune[host]').",
    )
    p.add_argument("source", help=".keras or .h5 file, or a SavedModel directory")
    p.add_argument("-o", "--output", required=True, help=".tflite file to write")
    p.add_argument(
        "--mode",
        choices=("float32", "dynamic", "int8", "float16"),
        default="float32",
        help="float32; dynamic: int8 weights, float activations; int8: full integer, "
        "calibrated on --data; float16: fp16 weights",
    )
    p.add_argument("--data", help="calibration samples: a .npy/.npz file or folder of them")
    p.add_argument(
        "--float-io", action="store_true", help="int8 mode: keep float32 input and output"
    )
    p.add_argument(
        "--calibration-samples", type=int, default=200, help="at most this many (default 200)"
    )
    p.add_argument(
        "--check-samples", type=int, default=32, help="samples compared after converting"
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser(
        "package",
        help="bundle a .tflite with its manifest, labels, recipe and files into an .edgepkg",
    )
    p.add_argument("model", help=".tflite file")
    p.add_argument("-o", "--output", required=True, help=".edgepkg file to write")
    p.add_argument("--name", required=True, help="package name")
    p.add_argument("--version", required=True, help="package version, e.g. 1.0.0")
    p.add_argument("--labels", metavar="FILE", help="class labels: one per line, or a JSON list")
    p.add_argument(
        "--recipe",
        metavar="JSON",
        help="preprocessing recipe (AudioRecipe/ImageRecipe to_dict() as JSON)",
    )
    p.add_argument(
        "--file",
        action="append",
        default=[],
        metavar="PATH[=NAME]",
        help="an extra file to include (as NAME inside the package); repeatable",
    )
    p.add_argument("--description", default="", help="one line about the model")
    p.add_argument(
        "--reference",
        metavar="DATA",
        help=".npz with x and y: labelled validation samples the model never trained on; the "
        "source reference built from them travels in the package, for personalize's checks",
    )
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.set_defaults(func=cmd_package)


def _samples(args: argparse.Namespace, shape: tuple[int, ...], count: int):
    """Up to `count` samples from --data, or seeded standard-normal ones; and where from."""
    import itertools

    import numpy as np

    from ..data import Samples

    if args.data:
        return list(itertools.islice(Samples(args.data, shape), count)), args.data
    rng = np.random.default_rng(0)
    return list(rng.standard_normal((count, *shape[1:])).astype(np.float32)), "random normal"


def cmd_convert(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from .._io import atomic_write_bytes
    from ..errors import EdgepruneError
    from .convert import compare_outputs, convert, load_source

    source = load_source(args.source)
    try:
        calibration = None
        if args.mode == "int8":
            if not args.data:
                raise EdgepruneError("--mode int8 needs calibration samples: pass --data FOLDER")
            calibration, _ = _samples(args, source.input_shape, args.calibration_samples)
            calibration = tqdm(
                calibration, desc="calibrate", unit="sample", disable=args.quiet, leave=False
            )
        data = convert(source, args.mode, calibration, float_io=args.float_io)
        atomic_write_bytes(args.output, data)
        check, origin = _samples(args, source.input_shape, args.check_samples)
        check = tqdm(check, desc="check", unit="sample", disable=args.quiet, leave=False)
        outputs = compare_outputs(data, source, check)
    finally:
        source.close()
    report: dict[str, Any] = {
        "source": args.source,
        "output": args.output,
        "mode": args.mode,
        "bytes": len(data),
        "checked_on": origin,
        "outputs": outputs,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"wrote {args.output}: {len(data):,} bytes, {args.mode}")
    for name, d in outputs.items():
        print(
            f"  {name}: max |tflite - source| {d['max_abs_diff']:.3g}, "
            f"mean {d['mean_abs_diff']:.3g} (largest |source| {d['max_abs_source']:.3g}; "
            f"{d['samples']} samples, {origin})"
        )


def cmd_package(args: argparse.Namespace) -> None:
    from pathlib import Path

    from .packaging import build, read_labels, read_recipe

    files = {}
    for spec in args.file:
        path, _, inside = spec.partition("=")
        files[inside or Path(path).name] = path
    reference = None
    if args.reference:
        from ..model import Model
        from ..reference import build_from_file

        reference = build_from_file(Model.load(args.model), args.reference).to_bytes()
    manifest = build(
        args.model,
        args.output,
        name=args.name,
        version=args.version,
        labels=read_labels(args.labels) if args.labels else None,
        recipe=read_recipe(args.recipe) if args.recipe else None,
        files=files,
        description=args.description,
        reference=reference,
    )
    if args.json:
        print(json.dumps(manifest, indent=2))
        return
    recipe = manifest["preprocessing"]
    print(
        f"wrote {args.output}: {manifest['name']} {manifest['version']}, model "
        f"{manifest['model']['bytes']:,} bytes, {len(manifest['files'])} extra file(s), "
        f"recipe {recipe['kind'] if recipe else 'none'}, "
        f"{len(manifest['labels']) if manifest['labels'] else 'no'} labels, "
        f"{'a' if reference else 'no'} source reference"
    )
