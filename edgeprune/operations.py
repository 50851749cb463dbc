"""The core's operations: what runs on a board as well as on a laptop.

inspect, record, prune, thin, personalize, reference, profile, compare, bench, verify and
unpack, each an `Operation` (see `edgeprune.operation`) with its parameters declared once and a
typed result.
Call them from Python as functions of keyword arguments:

    from edgeprune import operations as ops
    result = ops.prune(model="m.tflite", map="m.npz", sparsity=0.5, output="p.tflite")
    result.measured_sparsity

The command line generates its options from these declarations; the board agent runs them for
the host. Heavy modules (numpy, the runtime) are imported inside the functions that use them.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from . import charts
from .budget import parse_size
from .choices import (
    AUDIO_NORMALIZATIONS,
    DELEGATES,
    GRANULARITIES,
    RECIPE_KINDS,
    RULES,
    RUNNER_MODES,
    SCOPES,
    SCORES,
    STAGES,
    THIN_ALLOCATIONS,
    THIN_SCORES,
)
from .errors import EdgepruneError
from .operation import REQUIRED, Context, Operation, Param, Result, register, switch

MODEL = Param("model", ".tflite file or .edgepkg package", default=REQUIRED, role="input",
              positional=True)  # fmt: skip
OUTPUT = Param("output", "file to write", default=REQUIRED, role="output", flag="-o")
INPUT_SHAPE = Param(
    "input_shape",
    "input shape for a model whose input is dynamic, e.g. 1,224,224,3",
    metavar="SHAPE",
)


def fraction(text: Any) -> float:
    """A number between 0 and 1 (a sparsity, an agreement)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"a fraction between 0 and 1 (e.g. 0.5), not {text}")
    return value


def sparsity_or_auto(text: Any) -> float | str:
    return "auto" if text == "auto" else fraction(text)


def stage_list(value: Any) -> tuple[str, ...]:
    """Stages as a tuple: from "prior,prune" or from a list."""
    names = value.split(",") if isinstance(value, str) else list(value)
    return tuple(n.strip() for n in names if n.strip())


def positive(value: Any) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"at least 1, not {value}")
    return number


def _shape(text: str | None) -> tuple[int, ...] | None:
    from .profile import parse_shape

    return parse_shape(text) if text else None


# ---------------------------------------------------------------------------------------- inspect


@dataclass
class InspectResult(Result):
    model: str
    bytes: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    operators: list[str]
    layers: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    totals: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _inspect(context: Context, model: str) -> InspectResult:
    from .package import load_model
    from .summary import summarize

    return InspectResult(**summarize(load_model(model)))


inspect = register(
    Operation(
        "inspect",
        "operators, prunable layers, parameters and quantization",
        (MODEL,),
        _inspect,
        InspectResult,
        board=True,
    )
)

# ----------------------------------------------------------------------------------------- record

DATA = Param(
    "data",
    "unlabeled samples: a .npy/.npz file or a folder of them (one sample or a stack per "
    "array, real values or the input's own dtype), or .wav or image files (.png, .jpg, …) or "
    "a folder of them, made into inputs by the package's recipe or --recipe",
    default=REQUIRED,
    role="input",
    positional=True,
)
MODE = Param(
    "mode",
    "read activations from an instrumented model copy (instrument, fast) or with "
    "preserve_all_tensors (preserve)",
    default="instrument",
    choices=RUNNER_MODES,
)
MAX_MEMORY = Param(
    "max_memory",
    "refuse to start when the memory the model's declared shapes need is above this (e.g. "
    "2G, 512M; default 2G)",
    type=parse_size,
    metavar="SIZE",
)
RECIPE = Param(
    "recipe",
    "turn raw .wav/image DATA into model inputs with this recipe (JSON, from `edgeprune "
    "recipe`); a package's own recipe is used without it",
    role="input",
    metavar="FILE",
)


@dataclass
class RecordResult(Result):
    output: str
    samples: int
    layers: int


def open_model_and_samples(path: str, data: str | None = None, recipe: str | None = None):
    """MODEL (a .tflite file or an .edgepkg package), its samples from DATA (or None) and the
    package (or None): .npy/.npz arrays, or raw .wav/image files through the recipe file
    `recipe`, else the package's recipe."""
    from .edgetpu import refuse
    from .package import open_model

    model, package = open_model(path)
    refuse(model, "read its activations")
    if data is None:
        return model, None, package
    return model, open_data(model, package, data, recipe), package


def open_data(model: Any, package: Any, data: str, recipe: str | None = None):
    """DATA for `model`: .npy/.npz arrays, or raw .wav/image files through the recipe file
    `recipe`, else the package's recipe (`package` may be None: a plain .tflite)."""
    from .rawdata import open_samples

    if recipe is not None:
        from .preprocess import load_recipe

        chosen = load_recipe(recipe)
    else:
        chosen = package.recipe if package is not None else None
    return open_samples(data, model.single_input().shape, chosen)


def _check_memory(model: Any, limit: str | None) -> None:
    """Refuse a model whose declared shapes need more than `limit` (see edgeprune.budget)."""
    from .budget import check
    from .layers import scan

    check(model, [t for x in scan(model).layers for t in (x.input, x.output)], limit)


def _record(
    context: Context,
    model: str,
    data: str,
    output: str,
    resume: str | None,
    mode: str,
    threads,
    recipe: str | None = None,
    max_memory: str | None = None,
) -> RecordResult:
    from .activations import ActivationMap, record

    m, samples, _ = open_model_and_samples(model, data, recipe)
    _check_memory(m, max_memory)
    amap = ActivationMap.load(resume, m) if resume else ActivationMap(m)
    record(m, context.iterate(samples, "record", len(samples), "sample"), amap, mode, threads)
    amap.save(output)
    return RecordResult(str(output), amap.count, len(amap.layers))


record = register(
    Operation(
        "record",
        "run unlabeled samples and save the activation map",
        (
            MODEL,
            DATA,
            Param(
                "output",
                "activation map to write (.npz)",
                default=REQUIRED,
                role="output",
                flag="-o",
            ),  # fmt: skip
            Param(
                "resume",
                "add to this earlier map instead of starting empty",
                role="input",
                metavar="MAP",
            ),  # fmt: skip
            MODE,
            Param("threads", "interpreter threads", type=positive),
            RECIPE,
            MAX_MEMORY,
        ),
        _record,
        RecordResult,
        board=True,
        progress=True,
    )
)

# ------------------------------------------------------------------------------------------ prune

SCORE = Param(
    "score",
    "fine: Eq. 1 |w|·S_in; magnitude: |w|; random: seeded",
    default="fine",
    choices=SCORES,
)
SCOPE = Param(
    "scope",
    "layer: the same sparsity in every layer; global: one threshold; global_normalized: one "
    "threshold on scores divided by their layer mean",
    default="layer",
    choices=SCOPES,
)
GRANULARITY = Param(
    "granularity",
    "weight, or whole output channels ranked by S_out",
    default="weight",
    choices=GRANULARITIES,
)


@dataclass
class PruneResult(Result):
    output: str
    requested_sparsity: float
    measured_sparsity: float
    zero_weights: int
    weights: int
    score: str
    scope: str
    granularity: str
    keep_classifier: bool
    note: str | None = None  # why far fewer weights are zero than asked, when they are


def _prune(
    context: Context,
    model: str,
    map: str | None,
    sparsity: float,
    output: str,
    score: str,
    scope: str,
    granularity: str,
    keep_classifier: bool,
    seed: int,
) -> PruneResult:
    from . import prune as prune_mod
    from .activations import ActivationMap
    from .edgetpu import refuse
    from .layers import scan
    from .package import load_model
    from .summary import shortfall

    m = load_model(model)
    refuse(m, "prune its weights")
    amap = ActivationMap.load(map, m) if map else None
    layers = amap.layers if amap else scan(m).layers
    chosen = prune_mod.masks(
        m,
        layers,
        amap,
        sparsity,
        score=score,
        scope=scope,
        granularity=granularity,
        keep_classifier=keep_classifier,
        seed=seed,
    )
    pruned = prune_mod.apply(m, chosen, in_place=True)  # no second copy of a large model
    pruned.save(output)
    zeros, total = prune_mod.measured_sparsity(pruned, layers)
    measured = zeros / total if total else 0.0
    return PruneResult(
        str(output),
        sparsity,
        measured,
        zeros,
        total,
        score,
        scope,
        granularity,
        keep_classifier,
        shortfall(m, tuple(layers), sparsity, measured, keep_classifier),
    )


prune = register(
    Operation(
        "prune",
        "write a pruned copy of a model",
        (
            MODEL,
            Param(
                "map",
                "activation map from `record` (needed for --score fine)",
                role="input",
                positional=True,
            ),  # fmt: skip
            Param("sparsity", "fraction of weights to zero", type=fraction, default=REQUIRED),
            SCORE,
            SCOPE,
            GRANULARITY,
            switch("keep_classifier", "leave the final layer unpruned"),
            Param("seed", "seed for --score random", type=int, default=0),
            Param("output", ".tflite file to write", default=REQUIRED, role="output", flag="-o"),
        ),
        _prune,
        PruneResult,
        board=True,
    )
)

# ------------------------------------------------------------------------------------------- thin


@dataclass
class ThinResult(Result):
    output: str
    removed_groups: int
    kept_groups: int
    free_groups: int
    channels_removed: int
    repaired_layers: int
    before: dict[str, int]  # file_bytes, macs, params, peak_bytes
    after: dict[str, int]
    frozen_ops: list[str] = field(default_factory=list)
    kept_reasons: dict[str, int] = field(default_factory=dict)


def _thin_totals(m) -> dict[str, int]:
    from .profile import profile

    p = profile(m)
    return {
        "file_bytes": m.nbytes,
        "macs": int(p["totals"]["macs"]),
        "params": int(p["totals"]["params"]),
        "peak_bytes": int(p["memory"]["peak_live_bytes"]),
    }


def _thin(
    context: Context,
    model: str,
    output: str,
    amount: float,
    score: str,
    allocation: str,
    map: str | None,
    data: str | None,
    keep_bias: bool,
    settle: bool,
) -> ThinResult:
    from collections import Counter

    from .activations import ActivationMap
    from .thin import shrink

    if score == "fine" and not map and amount > 0:
        raise EdgepruneError("--score fine needs --map (an activation map from `record`)")
    m, samples, _ = open_model_and_samples(model, data)
    amap = ActivationMap.load(map, m) if map else None
    result = shrink(m, amount, score, amap, samples, masked=amount == 0, zero_bias=not keep_bias,
                    allocation=allocation, settle=settle, progress=context)  # fmt: skip
    result.model.save(output)
    return ThinResult(
        str(output),
        len(result.removed),
        len(result.kept),
        result.free_groups,
        result.channels_before - result.channels_after,
        len(result.repaired),
        _thin_totals(m),
        _thin_totals(result.model),
        [f"{opcode} (op {i}): {why}" for i, opcode, why in result.frozen_ops],
        dict(Counter(why for _, why in result.kept if why)),
    )


thin = register(
    Operation(
        "thin",
        "remove channels from the graph: a smaller, faster model",
        (
            MODEL,
            Param(
                "amount",
                "fraction of the model's free channel groups to remove, lowest scores first; 0: "
                "remove the channels that are already zero (after prune --granularity channel)",
                type=fraction,
                default=0.0,
            ),
            Param(
                "score",
                "magnitude: L1 norm; fine: S_out (needs --map); reconstruction: the error the "
                "refit leaves (needs --data)",
                default="magnitude",
                choices=THIN_SCORES,
            ),
            Param(
                "allocation",
                "how many groups each layer loses. uniform: the same share of every layer; "
                "global: the whole model on one scale, the refit error as a share of each "
                "layer's output, removed greedily (needs --data; --score then picks the groups "
                "within each layer): more accurate and a smaller file for the same share of "
                "channels, but fewer MACs removed; macs: as global, down to the MACs uniform "
                "leaves, by refit error per MAC saved (needs --data)",
                default="uniform",
                choices=THIN_ALLOCATIONS,
            ),
            Param("map", "activation map from `record` (for --score fine)", role="input"),
            Param(
                "data",
                "unlabeled samples: refit the layers after removed channels to the dense model "
                "(label-free least squares)",
                role="input",
            ),
            switch(
                "keep_bias",
                "removed channels keep outputting act(bias), folded into the next layer",
            ),
            switch(
                "settle",
                "repair one depth level per pass over --data until every layer is refit to the "
                "inputs it will really get, 3x3 and larger convolutions over whole input windows: "
                "one pass per level, so slower (measured more accurate on a CIFAR ResNet-8, "
                "not on the FSDD CNN: benchmarks/RESULTS.md)",
            ),
            Param("output", ".tflite file to write", default=REQUIRED, role="output", flag="-o"),
        ),
        _thin,
        ThinResult,
        board=True,
        progress=True,
    )
)

# ------------------------------------------------------------------------------------ personalize


@dataclass
class PersonalizeResult(Result):
    output: str
    bytes: int
    deflated_source: int
    deflated_output: int
    report: dict[str, Any]
    written: list[str] = field(default_factory=list)


def _reference(path: str | None, package, model):
    """The source reference: --reference FILE, else the package's own, else None."""
    from .reference import Reference

    if path is not None:
        ref = Reference.load(path)
        ref.check(model)
        return ref
    return package.reference() if package is not None else None


def _save_personalized(output: str, source: str, chosen, rep, package, ref, recipe: str | None):
    """The personalized model as a .tflite, or as a package (-o X.edgepkg) that keeps the source
    package's labels and recipe (or --recipe) and a reference bound to the new model, where the
    reference still describes it (only the final layer changed)."""
    from pathlib import Path

    from .package import SUFFIX

    if Path(output).suffix != SUFFIX:
        chosen.save(output)
        return
    from .package_writer import write_personalized
    from .preprocess import load_recipe

    changed = {s.name for s in rep.stages if s.applied} - {"source", "prior", "prototypes"}
    if ref is not None and changed:
        rep.notes.append(
            f"the package holds no reference: {', '.join(sorted(changed))} changed the features "
            "the source reference describes; build one with `edgeprune reference`"
        )
    bound = None
    if ref is not None and not changed:
        kept = [s.details["model_prior"] for s in rep.stages if s.name == "prior" and s.applied]
        bound = ref.rebind(chosen, kept[0] if kept else None)
    made = load_recipe(recipe) if recipe else None
    write_personalized(output, chosen, package, made, bound, name=Path(source).stem)


def _personalize(
    context: Context,
    model: str,
    data: str,
    recipe: str | None,
    output: str,
    sparsity: float | str,
    rule: str,
    agreement: float,
    labels: str | None,
    test: str | None,
    report: str | None,
    score: str,
    scope: str,
    granularity: str,
    prune_classifier: bool,
    stages: tuple[str, ...],
    reference: str | None,
    support_size: int,
    eval_samples: int,
    mode: str,
    shrink: float,
    max_memory: str | None = None,
) -> PersonalizeResult:
    import zlib

    from .data import load_labelled
    from .personalize import check_stages, personalize, write_report

    fixed = None if sparsity == "auto" else sparsity
    stages = check_stages(stages, fixed)
    m, samples, package = open_model_and_samples(model, data, recipe)
    _check_memory(m, max_memory)
    ref = _reference(reference, package, m)
    chosen, rep = personalize(
        m,
        context.iterate(samples, "record", len(samples), "sample"),
        reference=ref,
        rule="fixed" if fixed is not None else rule,
        fixed=fixed,
        agreement=agreement,
        labelled=load_labelled(labels) if labels else None,
        test=load_labelled(test) if test else None,
        score=score,
        scope=scope,
        granularity=granularity,
        keep_classifier=not prune_classifier,
        stages=stages,
        support_size=support_size,
        evaluation_size=eval_samples,
        mode=mode,
        shrink=shrink,
        progress=context,
    )
    _save_personalized(output, model, chosen, rep, package, ref, recipe)
    written = write_report(rep, report, str(output)) if report else []
    if report and len(rep.candidates) > 1 and charts.available("sweep"):
        written.append(charts.draw("sweep", rep.to_dict(), f"{report}/sweep.png"))
    before, after = (len(zlib.compress(x.to_bytes(), 6)) for x in (m, chosen))
    return PersonalizeResult(
        str(output), chosen.nbytes, before, after, rep.to_dict(), [str(p) for p in written]
    )


personalize = register(
    Operation(
        "personalize",
        "record, sweep sparsities, choose one without labels, write the model and a report",
        (
            MODEL,
            DATA,
            RECIPE,
            Param(
                "output",
                "personalized .tflite to write, or .edgepkg: a package keeping the labels, "
                "recipe and (when only the final layer changed) the reference",
                default=REQUIRED,
                role="output",
                flag="-o",
            ),  # fmt: skip
            Param(
                "sparsity",
                "auto (the rule decides) or 0..1: that sparsity, if it passes the check",
                type=sparsity_or_auto,
                default="auto",
            ),
            Param(
                "rule",
                "among sparsities whose agreement with the model before pruning has a 95%% lower "
                "bound of at least --agreement and whose estimated accuracy does not drop: "
                "fidelity, the largest; infomax, the most confident and diverse predictions; "
                "labels: the best accuracy on --labels (no check)",
                default="fidelity",
                choices=tuple(r for r in RULES if r != "fixed"),
            ),
            Param(
                "agreement",
                "the least agreement (its 95%% lower bound) a pruned candidate keeps with the "
                "model before pruning",
                type=fraction,
                default=0.95,
            ),
            Param(
                "labels",
                ".npz (x, y): a few labelled samples, held out from DATA, for --rule labels",
                role="input",
                metavar="FILE",
            ),  # fmt: skip
            Param(
                "test",
                ".npz (x, y): held-out samples to report accuracy on; never used to choose",
                role="input",
                metavar="FILE",
            ),  # fmt: skip
            Param(
                "report",
                "write report.json, report.md (and sweep.png) into this folder",
                role="output",
                metavar="DIR",
            ),  # fmt: skip
            SCORE,
            SCOPE,
            GRANULARITY,
            switch("prune_classifier", "also prune the final layer (kept by default)"),
            Param(
                "stages",
                "comma-separated stages, a subsequence of the one order prior,prototypes,prune: "
                "prior (label-shift EM folded into the final bias), prototypes (final layer from "
                "your own features, plus the prior), prune (Eq. 1). Each is kept only if the "
                "label-free check says it does not hurt",
                type=stage_list,
                default=STAGES,
            ),
            Param(
                "reference",
                "the model's source reference (made by `edgeprune reference`); an .edgepkg "
                "carries its own. Without one only pruning runs, where no check prediction "
                "changes",
                role="input",
                metavar="FILE",
            ),
            Param(
                "support_size",
                "prototype stage: features kept per class",
                type=positive,
                default=20,
            ),  # fmt: skip
            Param(
                "eval_samples",
                "how many check samples (a uniform reservoir of the check half) judge each stage",
                type=positive,
                default=256,
            ),  # fmt: skip
            MODE,
            Param(
                "shrink",
                "first remove this fraction of channel groups (thin) and refit the next layers "
                "on your samples; kept only if the check passes, then the stages run",
                type=fraction,
                default=0.0,
            ),
            MAX_MEMORY,
        ),
        _personalize,
        PersonalizeResult,
        description="One pass over unlabeled samples; half of them fit each stage, the other "
        "half check it: a stage is kept only if its label-free accuracy estimate (against the "
        "source reference) does not drop, with a 95 % confidence bound. Candidate sparsities "
        "are cut from the one activation map and judged the same way.",
        board=True,
        progress=True,
    )
)

# -------------------------------------------------------------------------------------- reference


@dataclass
class ReferenceResult(Result):
    output: str
    classes: int
    samples: int
    accuracy: float
    temperature: float


def _make_reference(context: Context, model: str, data: str, output: str) -> ReferenceResult:
    from .package import load_model
    from .reference import build_from_file

    with context.bar("reference", unit="sample") as bar:
        ref = build_from_file(load_model(model), data, progress=bar.update)
    ref.save(output)
    return ReferenceResult(str(output), ref.classes, ref.size, ref.accuracy, ref.temperature)


reference = register(
    Operation(
        "reference",
        "the source reference personalize needs to check its rewrites without labels",
        (
            MODEL,
            Param(
                "data",
                ".npz with x (validation samples) and y (their class ids)",
                default=REQUIRED,
                role="input",
                positional=True,
            ),  # fmt: skip
            Param(
                "output", "reference .npz to write", default=REQUIRED, role="output", flag="-o"
            ),  # fmt: skip
        ),
        _make_reference,
        ReferenceResult,
        description="Run MODEL over labelled validation samples it never trained on and keep "
        "what a device needs to estimate accuracy without labels: the confusion matrix, a "
        "calibration temperature, per-class feature statistics and a sample of features.",
        board=True,
        progress=True,
    )
)

# ---------------------------------------------------------------------------- profile and compare


@dataclass
class ProfileResult(Result):
    model: str
    convention: str
    shapes: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    ops: list[dict[str, Any]]
    not_profiled: list[dict[str, Any]]
    totals: dict[str, Any]
    memory: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _profile_dict(path: str, input_shape: str | None) -> dict[str, Any]:
    from .package import load_model
    from .profile import profile as profile_model

    return profile_model(load_model(path), _shape(input_shape))


def _profile(context: Context, model: str, input_shape: str | None) -> ProfileResult:
    return ProfileResult(**_profile_dict(model, input_shape))


profile = register(
    Operation(
        "profile",
        "MACs (dense and effective), parameters, weight bytes, peak activation memory",
        (MODEL, INPUT_SHAPE),
        _profile,
        ProfileResult,
        description="Static profile: 1 MAC = one multiply-add; effective MACs count only "
        "non-zero weights. MODEL is a .tflite file or an .edgepkg package.",
        board=True,
    )
)


@dataclass
class CompareResult(Result):
    a: str
    b: str
    convention: str
    totals: list[dict[str, Any]]
    same_graph: bool
    ops: list[dict[str, Any]]
    not_profiled: dict[str, Any]
    plot: str | None = None


def _compare(
    context: Context, a: str, b: str, input_shape: str | None, plot: str | None
) -> CompareResult:
    from .profile import compare as compare_profiles

    pa, pb = (_profile_dict(path, input_shape) for path in (a, b))
    result = compare_profiles(pa, pb)
    if plot:
        result["plot"] = str(charts.draw("compare", result, plot))
    return CompareResult(**result)


compare = register(
    Operation(
        "compare",
        "two models' profiles side by side, with ratios B / A",
        (
            Param(
                "a",
                ".tflite file or .edgepkg package (the reference)",
                default=REQUIRED,
                role="input",
                positional=True,
            ),  # fmt: skip
            Param(
                "b",
                ".tflite file or .edgepkg package",
                default=REQUIRED,
                role="input",
                positional=True,
            ),  # fmt: skip
            INPUT_SHAPE,
            Param(
                "plot",
                "also draw the comparison into this PNG (needs matplotlib)",
                role="output",
                metavar="PNG",
            ),  # fmt: skip
        ),
        _compare,
        CompareResult,
        board=True,
    )
)

# ------------------------------------------------------------------------------------------ bench


@dataclass
class BenchResult(Result):
    model: str
    runtime: str
    delegate: str
    threads: int | None
    inputs: list[dict[str, Any]]
    init_ms: float
    runs: int
    warmup: int
    latency_ms: dict[str, float]
    peak_rss_delta_bytes: int
    rss_method: str
    note: str | None = None
    energy: dict[str, Any] | None = None
    front_end: dict[str, Any] | None = None  # the --recipe front end's cost per input
    samples: dict[str, Any] | None = None  # --data: preprocessing and inference per sample


def _bench(
    context: Context,
    model: str,
    runs: int,
    warmup: int,
    threads: int,
    delegate: str,
    input_shape: str | None,
    energy: str | None,
    idle_seconds: float,
    recipe: str | None = None,
    data: str | None = None,
) -> BenchResult:
    from .bench import bench as bench_model
    from .edgetpu import check_delegate
    from .package import open_model

    if warmup < 0:
        raise EdgepruneError("bench: warmup must be >= 0")
    m, package = open_model(model)
    check_delegate(m, delegate)
    samples = open_data(m, package, data, recipe) if data else None
    front_end = _front_end(recipe, m) if recipe and samples is None else None
    with context.bar("bench", runs, "run") as bar, _sample_bar(context, samples) as sample_bar:
        result = bench_model(
            m,
            runs=runs,
            warmup=warmup,
            threads=threads,
            delegate=delegate,
            input_shape=_shape(input_shape),
            energy=energy,
            idle_seconds=idle_seconds,
            progress=bar.set,
            samples=samples,
            sample_progress=sample_bar.set if sample_bar else None,
        )
    if samples is not None:
        result["samples"].update(source=data, recipe=_recipe_kind(samples))
    return BenchResult(**result, front_end=front_end)


def _sample_bar(context: Context, samples: Any):
    """A bar over --data's samples (none without them)."""
    if samples is None:
        return contextlib.nullcontext()
    return context.bar("bench --data", len(samples), "sample")


def _recipe_kind(samples: Any) -> str | None:
    """The recipe `samples` go through ("audio", "image"), None for arrays."""
    recipe = getattr(samples, "recipe", None)
    return recipe.to_dict()["kind"] if recipe is not None else None


def _front_end(path: str, model) -> dict[str, Any]:
    """The recipe's front end timed, once the recipe is known to make the model's inputs."""
    from .preprocess import front_end_ms, load_recipe

    recipe = load_recipe(path)
    if tuple(recipe.shape) != tuple(model.single_input().shape[1:]):
        raise EdgepruneError(
            f"the recipe makes inputs of shape {list(recipe.shape)} but the model takes "
            f"{list(model.single_input().shape[1:])}"
        )
    return front_end_ms(recipe)


bench = register(
    Operation(
        "bench",
        "latency percentiles, init time, peak RSS, delegate; energy per inference",
        (
            MODEL,
            Param("runs", "timed runs", type=positive, default=50),
            Param("warmup", "untimed runs first", type=int, default=5),
            Param("threads", "interpreter threads", type=positive, default=1),
            Param(
                "delegate",
                "xnnpack: LiteRT's default CPU delegate; none: reference kernels; edgetpu: the "
                "Coral Edge TPU through libedgetpu.so.1",
                default="xnnpack",
                choices=DELEGATES,
            ),
            INPUT_SHAPE,
            Param("energy", "auto or a meter name (see above)", metavar="METER"),
            Param("idle_seconds", "idle power window in seconds", type=float, default=2.0),
            Param(
                "recipe",
                "the recipe that makes --data's raw .wav/image files into inputs (a package's "
                "own without it); alone, its front end timed on a synthetic input",
                role="input",
                metavar="FILE",
            ),
            Param(
                "data",
                "real samples to time one by one: .wav or image files or a folder of them "
                "(through the recipe), or .npy/.npz; each one's preprocessing (read, front end, "
                "to the input's dtype) and inference are reported apart (p50, p90 per sample)",
                role="input",
                metavar="DATA",
            ),
        ),
        _bench,
        BenchResult,
        description="Warm-up runs, then timed runs of invoke(). --energy measures energy per "
        "inference with idle power subtracted: auto (RAPL, INA2xx hwmon, Pi 5 PMIC, else an "
        "estimate), rapl, hwmon[:SENSOR], pi5-pmic, um24c|um25c|um34c:PORT[@BAUD], estimate.",
        board=True,
        progress=True,
    )
)

# ---------------------------------------------------------------------------- verify and unpack

PACKAGE = Param("package", ".edgepkg file", default=REQUIRED, role="input", positional=True)


@dataclass
class VerifyResult(Result):
    package: str
    ok: bool
    checks: list[str]
    problems: list[str]
    name: str | None = None
    version: str | None = None

    def problem(self) -> str | None:
        return None if self.ok else f"{self.package} failed verification: {self.problems[0]}"


def _verify(context: Context, package: str) -> VerifyResult:
    from .package import verify as verify_package

    return VerifyResult(**verify_package(package))


verify = register(
    Operation(
        "verify",
        "check a package: safe structure, sha256s, model, recipe",
        (PACKAGE,),
        _verify,
        VerifyResult,
        board=True,
    )
)


@dataclass
class UnpackResult(Result):
    output: str
    files: list[str]


def _unpack(context: Context, package: str, output: str) -> UnpackResult:
    from .package import unpack as unpack_package

    return UnpackResult(str(output), [str(p) for p in unpack_package(package, output)])


unpack = register(
    Operation(
        "unpack",
        "verify a package and extract it into a new directory",
        (
            PACKAGE,
            Param(
                "output",
                "directory to create (or an empty one)",
                default=REQUIRED,
                role="output",
                flag="-o",
            ),  # fmt: skip
        ),
        _unpack,
        UnpackResult,
        board=True,
    )
)

# ----------------------------------------------------------------------------------------- recipe


def numbers(text: Any) -> tuple[float, ...]:
    """One number ("0.5") or one per channel ("0.485,0.456,0.406") from the command line."""
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise EdgepruneError(f"expected numbers separated by commas, got {text!r}") from None


@dataclass
class RecipeResult(Result):
    output: str
    kind: str
    shape: list[int]
    recipe: dict[str, Any]


def _recipe(
    context: Context,
    model: str,
    output: str,
    kind: str,
    size: tuple[int, ...] | None,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
    scale: float | None,
    from_model: bool,
    bgr: bool,
    sample_rate: int | None,
    length: int | None,
    frame_length: int | None,
    hop_length: int | None,
    mel_bins: int | None,
    normalize: str | None,
) -> RecipeResult:
    import json

    from ._io import atomic_write_bytes
    from .package import load_model
    from .preprocess.make import audio_recipe, image_recipe

    m = load_model(model)
    t = m.tensor(m.main.inputs[0])
    if kind == "image":
        made = image_recipe(t, size, mean, std, scale, from_model, bgr)
    else:
        audio = dict(sample_rate=sample_rate, length=length, frame_length=frame_length)
        audio.update(hop_length=hop_length, mel_bins=mel_bins, normalize=normalize)
        made = audio_recipe(t, **audio)
    d = made.to_dict()
    atomic_write_bytes(output, json.dumps(d, indent=2).encode() + b"\n")
    return RecipeResult(str(output), kind, list(made.shape), d)


recipe = register(
    Operation(
        "recipe",
        "write a preprocessing recipe (JSON) that turns raw images or .wav files into this "
        "model's inputs, for --recipe or `edgeprune package --recipe`",
        (
            MODEL,
            Param("output", "recipe to write (.json)", default=REQUIRED, role="output", flag="-o"),
            Param("kind", "what the raw files are", default="image", choices=RECIPE_KINDS),
            Param("size", "image: H,W (default: the model's input size)", type=_shape),
            Param("mean", "image: subtracted after --scale, one value or R,G,B", type=numbers),
            Param("std", "image: divided by after the mean, one value or R,G,B", type=numbers),
            Param("scale", "image: pixels (0-255) times this first (default 1/255)", type=float),
            switch(
                "from_model",
                "image: normalize as the model's own uint8/int8 input quantization says (raw "
                "pixel bytes), instead of --mean/--std",
            ),
            switch("bgr", "image: the model takes BGR channels"),
            Param("sample_rate", "audio: Hz (default 8000)", type=positive),
            Param("length", "audio: samples, padded or cropped (default 8000)", type=positive),
            Param("frame_length", "audio: samples per frame (default 256)", type=positive),
            Param("hop_length", "audio: samples between frames (default 128)", type=positive),
            Param("mel_bins", "audio: mel bands, 0: linear spectrogram (default 40)", type=int),
            Param("normalize", "audio: how features are normalized", choices=AUDIO_NORMALIZATIONS),
        ),
        _recipe,
        RecipeResult,
        description="An image recipe resizes (bilinear), orders channels and normalizes: "
        "(pixel × scale − mean) / std, or --from-model for a quantized model made for raw "
        "pixels. An audio recipe makes a log-mel spectrogram; it must match the model's "
        "input shape.",
    )
)
