"""`edgeprune` command line: inspect, record and prune .tflite models on the device."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import zlib
from collections import Counter
from typing import Any

from tqdm import tqdm

from . import prune as prune_mod
from .activations import ActivationMap, record
from .data import load_labelled
from .errors import EdgepruneError
from .layers import scan
from .model import Model
from .personalize import RULES, STAGES, check_stages, personalize, write_report
from .reference import Reference
from .runtime import MODES
from .summary import summarize


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


def load_model_and_samples(path: str, data: str | None = None) -> tuple[Model, Any]:
    """MODEL (a .tflite file or an .edgepkg package) and, when DATA is given, its samples:
    .npy/.npz arrays, or with a package that has a recipe, raw .wav/image files preprocessed
    on this machine exactly as the recipe says."""
    return _open(path, data)[:2]


def _open(path: str, data: str | None = None) -> tuple[Model, Any, Any]:
    """`load_model_and_samples` and the package (or None)."""
    from .package import open_model
    from .rawdata import open_samples

    model, package = open_model(path)
    if data is None:
        return model, None, package
    recipe = package.recipe if package is not None else None
    return model, open_samples(data, model.tensor(model.main.inputs[0]).shape, recipe), package


def _reference(path: str | None, package, model: Model) -> Reference | None:
    """The source reference: --reference FILE, else the package's own, else None."""
    if path is not None:
        ref = Reference.load(path)
        ref.check(model)
        return ref
    return package.reference() if package is not None else None


def cmd_inspect(args: argparse.Namespace) -> None:
    info = summarize(load_model_and_samples(args.model)[0])
    if args.json:
        return _print_json(info)
    print(f"{info['model']}: {info['bytes']:,} bytes")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            print(f"  {kind[:-1]:<6} {t['name']} {t['shape']} {t['dtype']}")
    ops = Counter(info["operators"])
    print("operators: " + ", ".join(f"{name}×{n}" for name, n in ops.most_common()))
    row = "{:>4} {:<10} {:<16} {:>10} {:>10} {:>10}  {}".format
    print("\n" + row("op", "layer", "weights", "params", "nonzero", "bytes", "quantization"))
    for r in info["layers"]:
        shape = "x".join(map(str, r["weight_shape"]))
        numbers = (f"{r[k]:,}" for k in ("params", "nonzero", "weight_bytes"))
        print(row(r["op"], r["opcode"][:10], shape, *numbers, r["weights"]))
    t = info["totals"]
    numbers = (f"{t[k]:,}" for k in ("params", "nonzero", "weight_bytes"))
    print(row("", "total", "", *numbers, f"sparsity {t['sparsity']:.1%}"))
    for s in info["skipped"]:
        print(f"skipped op {s['op']} {s['opcode']}: {s['reason']}")


def cmd_record(args: argparse.Namespace) -> None:
    model, samples = load_model_and_samples(args.model, args.data)
    amap = ActivationMap.load(args.resume, model) if args.resume else ActivationMap(model)
    progress = tqdm(samples, total=len(samples), desc="record", unit="sample", disable=args.quiet)
    record(model, progress, amap, mode=args.mode, num_threads=args.threads)
    amap.save(args.output)
    print(f"recorded {amap.count} samples over {len(amap.layers)} layers -> {args.output}")


def cmd_prune(args: argparse.Namespace) -> None:
    model, _ = load_model_and_samples(args.model)
    amap = ActivationMap.load(args.map, model) if args.map else None
    layers = amap.layers if amap else scan(model).layers
    chosen = prune_mod.masks(
        model,
        layers,
        amap,
        args.sparsity,
        score=args.score,
        scope=args.scope,
        granularity=args.granularity,
        keep_classifier=args.keep_classifier,
        seed=args.seed,
    )
    pruned = prune_mod.apply(model, chosen)
    pruned.save(args.output)
    zeros, total = prune_mod.measured_sparsity(pruned, layers)
    result = {
        "output": str(args.output),
        "requested_sparsity": args.sparsity,
        "measured_sparsity": zeros / total if total else 0.0,
        "zero_weights": zeros,
        "weights": total,
        "score": args.score,
        "scope": args.scope,
        "granularity": args.granularity,
        "keep_classifier": args.keep_classifier,
    }
    if args.json:
        return _print_json(result)
    print(
        f"wrote {args.output}: {zeros:,} of {total:,} weights are zero "
        f"(measured sparsity {result['measured_sparsity']:.1%}, requested {args.sparsity:.1%})"
    )


def cmd_personalize(args: argparse.Namespace) -> None:
    fixed = None if args.sparsity == "auto" else _sparsity(args.sparsity)
    stages = check_stages(args.stages.split(",") if args.stages else (), fixed)
    model, samples, package = _open(args.model, args.data)
    reference = _reference(args.reference, package, model)
    progress = tqdm(samples, total=len(samples), desc="record", unit="sample", disable=args.quiet)
    chosen, report = personalize(
        model,
        progress,
        reference=reference,
        rule="fixed" if fixed is not None else args.rule,
        fixed=fixed,
        agreement=args.agreement,
        labelled=load_labelled(args.labels) if args.labels else None,
        test=load_labelled(args.test) if args.test else None,
        score=args.score,
        scope=args.scope,
        granularity=args.granularity,
        keep_classifier=not args.prune_classifier,
        stages=stages,
        support_size=args.support_size,
        evaluation_size=args.eval_samples,
        mode=args.mode,
    )
    chosen.save(args.output)
    written = write_report(report, args.report, str(args.output)) if args.report else []
    if args.report and len(report.candidates) > 1:
        try:
            from .host.charts import plot_sweep

            written.append(plot_sweep(report, f"{args.report}/sweep.png"))
        except ImportError:  # on a board without matplotlib: the tables say it all
            pass
    if args.json:
        return _print_json({**report.to_dict(), "output": str(args.output)})
    print(f"wrote {args.output}")
    for note in report.notes:
        print(f"note: {note}")
    for stage in report.stages:
        print(f"  {_stage_line(stage)}")
    source, final = report.stages[0], report.stages[-1]
    if final.test_accuracy is not None:
        print(f"held-out accuracy: source {source.test_accuracy:.1%} -> {final.test_accuracy:.1%}")
    before, after = (len(zlib.compress(m.to_bytes(), 6)) for m in (model, chosen))
    print(
        f"size: {chosen.nbytes:,} bytes, as the source (same graph, weights rewritten in place); "
        f"deflate-compressed {before:,} -> {after:,} bytes"
    )
    for path in written:
        print(f"report: {path}")


def cmd_reference(args: argparse.Namespace) -> None:
    from .reference import build_from_file

    model = _open(args.model)[0]
    with tqdm(desc="reference", unit="sample", disable=args.quiet) as bar:
        ref = build_from_file(model, args.data, progress=bar.update)
    ref.save(args.output)
    print(
        f"wrote {args.output}: {ref.classes} classes, {ref.size} validation samples, source "
        f"accuracy {ref.accuracy:.1%}, temperature {ref.temperature:.2f}"
    )


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _stage_line(stage) -> str:
    """One line per stage: what it did, its label-free estimate and, with --test, the truth."""
    if stage.name == "source":
        line = f"source: estimated accuracy {_percent(stage.estimated_accuracy)}"
    elif stage.applied:
        line = f"{stage.name}: kept"
    elif stage.check is None:
        return f"{stage.name}: skipped ({stage.reason})"
    else:
        line = f"{stage.name}: refused, {stage.reason}"
    if stage.check is not None:
        c = stage.check
        line += (
            f"; estimated accuracy {_percent(c['before'])} -> {_percent(c['after'])} "
            f"(lower bound of the change {100 * c['lower']:+.1f} pts)"
        )
    if stage.name == "prune" and stage.applied:
        line += (
            f"; sparsity {stage.details['sparsity']:.2f} (measured {stage.details['measured']:.1%})"
        )
    if stage.proposed_test_accuracy is not None:
        line += f"; held-out accuracy of the proposal {_percent(stage.proposed_test_accuracy)}"
    elif stage.name == "source" and stage.test_accuracy is not None:
        line += f", held-out {_percent(stage.test_accuracy)}"
    return line


def _sparsity(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("sparsity is a fraction between 0 and 1, e.g. 0.5")
    return value


# More subcommands live beside the code they drive: each module has `register(subparsers)`, which
# only declares arguments (heavy or host-only imports happen inside the command functions).
COMMAND_GROUPS: tuple[str, ...] = (
    "edgeprune.host.devices_cli",
    "edgeprune.measure_cli",
    "edgeprune.package_cli",
    "edgeprune.host.companion_cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgeprune",
        description="Personalize TFLite models on the device: record how strongly each weight is "
        "used on unlabeled samples, then prune the weights that are used least (Fine-Pruning).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="operators, prunable layers, parameters and quantization")
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("record", help="run unlabeled samples and save the activation map")
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument(
        "data",
        help="a .npy/.npz file or folder of them: one sample or a stack per array",
    )
    p.add_argument("-o", "--output", required=True, help="activation map to write (.npz)")
    p.add_argument(
        "--resume",
        metavar="MAP",
        help="add to this earlier map instead of starting empty",
    )
    p.add_argument(
        "--mode",
        choices=MODES,
        default="instrument",
        help="read activations from an instrumented model copy (default, fast) or "
        "with preserve_all_tensors",
    )
    p.add_argument("--threads", type=int, default=None, help="interpreter threads")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("prune", help="write a pruned copy of a model")
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument("map", nargs="?", help="activation map from `record` (needed for --score fine)")
    p.add_argument("--sparsity", type=_sparsity, required=True, help="fraction of weights to zero")
    p.add_argument(
        "--score",
        choices=prune_mod.SCORES,
        default="fine",
        help="fine: Eq. 1 |w|·S_in (default); magnitude: |w|; random: seeded",
    )
    p.add_argument(
        "--scope",
        choices=prune_mod.SCOPES,
        default="layer",
        help="layer: same sparsity in every layer (default); global: one threshold; "
        "global_normalized: one threshold on scores divided by their layer mean",
    )
    p.add_argument(
        "--granularity",
        choices=prune_mod.GRANULARITIES,
        default="weight",
        help="weight (default) or whole output channels ranked by S_out",
    )
    p.add_argument("--keep-classifier", action="store_true", help="leave the final layer unpruned")
    p.add_argument("--seed", type=int, default=0, help="seed for --score random")
    p.add_argument("-o", "--output", required=True, help=".tflite file to write")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser(
        "personalize",
        help="record, sweep sparsities, choose one without labels, write the model and a report",
        description="One pass over unlabeled samples; half of them fit each stage, the other "
        "half check it: a stage is kept only if its label-free accuracy estimate (against the "
        "source reference) does not drop, with a 95 % confidence bound. Candidate sparsities "
        "are cut from the one activation map and judged the same way.",
    )
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument("data", help="unlabeled samples: a .npy/.npz file or folder of them")
    p.add_argument("-o", "--output", required=True, help="personalized .tflite to write")
    p.add_argument(
        "--sparsity",
        default="auto",
        help="auto (the rule decides) or 0..1: that sparsity, if it passes the check",
    )
    p.add_argument(
        "--rule",
        choices=[r for r in RULES if r != "fixed"],
        default="fidelity",
        help="among sparsities whose agreement with the model before pruning has a 95%% lower "
        "bound of at least --agreement and whose estimated accuracy does not drop: fidelity, "
        "the largest (default); infomax, the most confident and diverse predictions; labels: "
        "the best accuracy on --labels (no check)",
    )
    p.add_argument(
        "--agreement",
        type=float,
        default=0.95,
        help="the least agreement (its 95%% lower bound) a pruned candidate keeps with the model "
        "before pruning",
    )
    p.add_argument(
        "--labels",
        metavar="FILE",
        help=".npz (x, y): a few labelled samples, held out from DATA, for --rule labels",
    )
    p.add_argument(
        "--test",
        metavar="FILE",
        help=".npz (x, y): held-out samples to report accuracy on; never used to choose",
    )
    p.add_argument("--report", metavar="DIR", help="write report.json, report.md and sweep.png")
    p.add_argument("--score", choices=prune_mod.SCORES, default="fine")
    p.add_argument("--scope", choices=prune_mod.SCOPES, default="layer")
    p.add_argument("--granularity", choices=prune_mod.GRANULARITIES, default="weight")
    p.add_argument(
        "--prune-classifier",
        action="store_true",
        help="also prune the final layer (kept by default)",
    )
    p.add_argument(
        "--stages",
        default=",".join(STAGES),
        help="comma-separated stages, a subsequence of the one order prior,prototypes,prune: "
        "prior (label-shift EM folded into the final bias), prototypes (final layer from your "
        "own features, plus the prior), prune (Eq. 1). Each is kept only if the label-free "
        "check says it does not hurt",
    )
    p.add_argument(
        "--reference",
        metavar="FILE",
        help="the model's source reference (made by `edgeprune reference`); an .edgepkg "
        "carries its own. Without one only pruning runs, where no check prediction changes",
    )
    p.add_argument(
        "--support-size", type=int, default=20, help="prototype stage: features kept per class"
    )
    p.add_argument(
        "--eval-samples",
        type=int,
        default=256,
        help="how many check samples (a uniform reservoir of the check half) judge each stage",
    )
    p.add_argument("--mode", choices=MODES, default="instrument", help="runner mode")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_personalize)

    p = sub.add_parser(
        "reference",
        help="the source reference personalize needs to check its rewrites without labels",
        description="Run MODEL over labelled validation samples it never trained on and keep "
        "what a device needs to estimate accuracy without labels: the confusion matrix, a "
        "calibration temperature, per-class feature statistics and a sample of features.",
    )
    p.add_argument("model", help=".tflite file or .edgepkg package")
    p.add_argument("data", help=".npz with x (validation samples) and y (their class ids)")
    p.add_argument("-o", "--output", required=True, help="reference .npz to write")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_reference)

    for group in COMMAND_GROUPS:
        importlib.import_module(group).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EdgepruneError as e:
        print(f"edgeprune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeprune: interrupted; nothing was written", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
