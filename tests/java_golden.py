"""Golden vectors for the Java core in ``android_demo/core``, written by the Python core.

``write(directory)`` lays out, for each model kind (float32, int8, uint8 with zero points, and
float16 weights behind DEQUANTIZE)::

    models/<kind>/model.tflite          the source model
    models/<kind>/instrumented.tflite   Model.with_outputs(ActivationMap.watched)
    models/<kind>/layers.txt            one prunable layer a line: op kind input output weight bias
    models/<kind>/watched.txt           the watched tensors, in ActivationMap order
    models/<kind>/activations.bin       per sample, the raw stored bytes of each watched tensor
    models/<kind>/map.bin               per layer, S_in then S_out as little-endian float64
    models/<kind>/info.properties       samples=N
    models/<kind>/cases/<case>/case.properties   granularity, scope, sparsity, keep_classifier
    models/<kind>/cases/<case>/keep.bin          per mask: keep flags (uint8), then bias flags
    models/<kind>/cases/<case>/pruned.tflite     prune.apply(model, masks)
    audio/<case>/recipe.json, pcm.bin (int16), features.bin (float32), info.properties

The Java tests (``android_demo/core/src/test``) read them: maps to float tolerance, masks and pruned
bytes exactly. Masks are cut where no two scores tie at the threshold (see ``tie_free_sparsity``),
because NumPy's argpartition breaks such ties arbitrarily while Java's rule is fixed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edgeprune import prune
from edgeprune.activations import FOLD_EVERY, ActivationMap
from edgeprune.model import Model
from edgeprune.preprocess.audio import AudioRecipe, features
from edgeprune.runtime import Runner
from tests.models import INPUT_SHAPES, build, random_inputs

KINDS = ("float32", "int8", "uint8", "float16")
# Past two float32 spills (every FOLD_EVERY) and one int16 spill (every 128 8-bit samples) on the
# Python side, where Java sums differently (a fold every FOLD_EVERY; exact longs when quantized).
SAMPLES = 2 * FOLD_EVERY + 6
CASES = (  # name, granularity, scope, sparsity, keep_classifier
    ("weight-layer", "weight", "layer", 0.5, False),
    ("weight-global", "weight", "global", 0.6, False),
    ("weight-normalized", "weight", "global_normalized", 0.4, True),
    ("channel-layer", "channel", "layer", 0.5, False),
    ("channel-global", "channel", "global", 0.3, False),
    ("channel-normalized", "channel", "global_normalized", 0.5, True),
)


def _cut_is_unique(values: np.ndarray, sparsity: float) -> bool:
    """Whether dropping round(sparsity * n) lowest of `values` selects one set, ties or not."""
    flat = np.sort(values.ravel())
    drop = round(sparsity * flat.size)
    return not 0 < drop < flat.size or flat[drop - 1] < flat[drop]


def _unique(scores: prune.Scores, sparsity: float, scope: str) -> bool:
    values = list(scores.values)
    if scope == "layer":
        return all(_cut_is_unique(v, sparsity) for v in values)
    if scores.granularity == "channel":
        return True  # channels are cut along a stable argsort: ties have a fixed order
    if scope == "global_normalized":
        values = [v / v.mean() if v.mean() > 0 else v for v in values]
    return _cut_is_unique(np.concatenate([v.ravel() for v in values]), sparsity)


def tie_free_sparsity(scores: prune.Scores, sparsity: float, scope: str) -> float:
    """`sparsity`, or the nearest one (in steps of 0.01) whose cut no tie straddles."""
    for step in range(40):
        for candidate in (sparsity + 0.01 * step, sparsity - 0.01 * step):
            if 0.0 <= candidate <= 1.0 and _unique(scores, candidate, scope):
                return round(candidate, 2)
    raise AssertionError(f"every sparsity near {sparsity} cuts through tied scores")


def _write_model(directory: Path, kind: str) -> None:
    directory.mkdir(parents=True)
    model = Model(build(kind, "mixed"))
    amap = ActivationMap(model)
    (directory / "model.tflite").write_bytes(model.to_bytes())
    (directory / "instrumented.tflite").write_bytes(model.with_outputs(amap.watched).to_bytes())
    (directory / "watched.txt").write_text(" ".join(map(str, amap.watched)) + "\n")
    (directory / "layers.txt").write_text(
        "".join(
            f"{x.op} {x.kind} {x.input} {x.output} {x.weight} {-1 if x.bias is None else x.bias}\n"
            for x in amap.layers
        )
    )
    runner = Runner(model, amap.watched)
    with open(directory / "activations.bin", "wb") as f:
        for x in random_inputs(SAMPLES, INPUT_SHAPES["mixed"][1:], seed=11):
            stored = runner.run(x, raw=True)
            for t in amap.watched:
                f.write(np.ascontiguousarray(stored[t]).tobytes())
            amap.update(stored)
            del stored  # raw views pin the interpreter's memory until dropped
    with open(directory / "map.bin", "wb") as f:
        for i in range(len(amap.layers)):
            f.write(amap.s_in(i).astype("<f8").tobytes())
            f.write(amap.s_out(i).astype("<f8").tobytes())
    (directory / "info.properties").write_text(f"samples={amap.count}\n")
    for name, granularity, scope, sparsity, keep_classifier in CASES:
        scores = prune.compute_scores(
            model, amap.layers, amap, "fine", granularity, keep_classifier
        )
        sparsity = tie_free_sparsity(scores, sparsity, scope)
        masks = scores.masks(sparsity, scope)
        case = directory / "cases" / name
        case.mkdir(parents=True)
        (case / "case.properties").write_text(
            f"granularity={granularity}\nscope={scope}\nsparsity={sparsity!r}\n"
            f"keep_classifier={str(keep_classifier).lower()}\n"
        )
        with open(case / "keep.bin", "wb") as f:
            for m in masks:
                f.write(np.ascontiguousarray(m.keep, np.uint8).tobytes())
                if m.keep_bias is not None:
                    f.write(np.ascontiguousarray(m.keep_bias, np.uint8).tobytes())
        (case / "pruned.tflite").write_bytes(prune.apply(model, masks).to_bytes())


def _write_audio(directory: Path) -> None:
    """Features of synthetic 16-bit recordings under recipes that use every option."""
    rng = np.random.default_rng(3)
    recipes = {
        # The spoken-digit recipe: 1 s at 8 kHz, log-mel 40, per-utterance normalization.
        "mel-utterance": (AudioRecipe(normalize="utterance"), 4800),
        "linear-bin-start": (
            AudioRecipe.from_dict(
                {
                    "align": "start",
                    "frame_length": 200,
                    "hop_length": 80,
                    "n_fft": 512,
                    "power": 1,
                    "mel_bins": 0,
                    "fmin": 300.0,
                    "fmax": 3400.0,
                    "normalize": "bin",
                }
            ),
            10400,
        ),
        "mel-raw-peak": (
            AudioRecipe(mel_bins=24, log=False, length=6000, peak_normalize=True),
            7000,
        ),
    }
    for name, (recipe, n) in recipes.items():
        t = np.arange(n) / recipe.sample_rate
        tone = 0.4 * np.sin(2 * np.pi * (300 + 900 * t) * t) + 0.05 * rng.standard_normal(n)
        pcm = np.clip(np.round(tone * 32767), -32768, 32767).astype("<i2")
        case = directory / name
        case.mkdir(parents=True)
        (case / "recipe.json").write_text(json.dumps(recipe.to_dict()))
        (case / "pcm.bin").write_bytes(pcm.tobytes())
        y = features(pcm, recipe)
        (case / "features.bin").write_bytes(y.astype("<f4").tobytes())
        (case / "info.properties").write_text(f"frames={y.shape[0]}\nbins={y.shape[1]}\n")


def write(directory: str | Path) -> Path:
    """Write every golden vector under `directory` (see the module docstring); returns it."""
    directory = Path(directory)
    for kind in KINDS:
        _write_model(directory / "models" / kind, kind)
    _write_audio(directory / "audio")
    return directory
