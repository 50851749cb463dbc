"""FSDD source models: features, a small VGG-7-like CNN per held-out speaker, and its accuracy.

An "individual" is one FSDD speaker; its source model is trained on the other five speakers
(2,500 recordings) and never sees the individual's voice. Other benchmark scripts import this
module::

    from benchmarks import fsdd
    X, digits, speakers, indices = fsdd.load_fsdd()          # features of all 3,000 recordings
    source = fsdd.train_source("george", X, digits, speakers)  # cached .tflite paths
    source.float32, source.int8

Features are ``edgeprune.preprocess.audio.features`` with :data:`RECIPE` (the recipe the device
uses too). Everything is seeded and cached under ``benchmarks/_cache/`` (gitignored): feature
stacks by (recipe, data files), models by (held-out speaker, seed, recipe, training data,
training setup).

Run it to print the source accuracy on held-out speakers::

    python benchmarks/fsdd.py --speaker jackson
    python benchmarks/fsdd.py --all [--seed 0] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/fsdd.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, REPO, digest, to_tflite_pair  # noqa: E402
from edgeprune._io import atomic_open, atomic_write_bytes  # noqa: E402
from edgeprune.preprocess.audio import AudioRecipe, features, read_wav  # noqa: E402

SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
DIGITS = 10

# 1 s at 8 kHz (the recordings are trimmed; 99 % of them are shorter), centred; scaled to a peak
# of 1 (removes the recording level, which differs tenfold between speakers); 40 ms Hann frames
# every 20 ms, 512-point FFT; 32 HTK mel bands from 20 Hz to 4 kHz; natural log of the power.
# No per-utterance mean/variance normalization: measured worse on held-out speakers, because the
# zero padding (which sits at the log floor) weighs on the statistics in proportion to how
# short the recording is. 49 x 32 features: small to ship, fast to train.
RECIPE = AudioRecipe(
    sample_rate=8000,
    length=8000,
    align="centre",
    peak_normalize=True,
    frame_length=320,
    hop_length=160,
    window="hann",
    n_fft=512,
    power=2,
    mel_bins=32,
    fmin=20.0,
    fmax=4000.0,
    log=True,
    log_floor=1e-6,
    normalize="none",
)

# Training setup: changing any of it changes the cache key of every model.
WIDTHS = (8, 16, 32)
TRAIN = {
    "arch": "vgg7-8-16-32-flatten-dense64",
    "epochs": 15,
    "batch_size": 64,
    "learning_rate": 1e-3,
    "dropout": 0.3,
    "representative_samples": 200,
    "validation_share": 0.1,  # of each training speaker's recordings, never trained on
    "version": 2,
}


class Source(NamedTuple):
    """A trained source model: float32 and full-integer int8 .tflite files, and its log."""

    float32: Path
    int8: Path
    info: dict


def default_data_dir() -> Path:
    """``$EDGEPRUNE_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("EDGEPRUNE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def recordings_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The FSDD ``recordings/`` folder under ``data_dir`` (the data root or its ``fsdd/``)."""
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    for candidate in (root / "fsdd" / "recordings", root / "recordings", root):
        if candidate.is_dir() and any(candidate.glob("*_*_*.wav")):
            return candidate
    raise SystemExit(
        f"no FSDD recordings under {root}: pass --data DIR or set EDGEPRUNE_DATA to the folder "
        "holding fsdd/recordings/ (see the README for how to get the data)"
    )


def parse_name(path: Path) -> tuple[int, str, int]:
    """``{digit}_{speaker}_{index}.wav`` -> (digit, speaker, index)."""
    digit, speaker, index = path.stem.split("_")
    return int(digit), speaker, int(index)


def list_recordings(data_dir=None) -> list[Path]:
    """Every FSDD recording, sorted by (speaker, digit, index)."""
    paths = sorted(recordings_dir(data_dir).glob("*_*_*.wav"))
    return sorted(paths, key=lambda p: (parse_name(p)[1], parse_name(p)[0], parse_name(p)[2]))


def load_fsdd(
    data_dir: str | os.PathLike | None = None, recipe: AudioRecipe = RECIPE
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Features of every FSDD recording, sorted by (speaker, digit, index).

    Returns ``(X float32 [N, frames, bins, 1], digits int64 [N], speakers list[str] [N],
    indices int64 [N])``. Cached under ``benchmarks/_cache/`` by recipe and file names and sizes.
    """
    paths = list_recordings(data_dir)
    key = digest(recipe.to_dict(), [(p.name, p.stat().st_size) for p in paths])
    cache = CACHE / f"fsdd-features-{key}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return z["X"], z["digits"], [str(s) for s in z["speakers"]], z["indices"]
    X = np.empty((len(paths), *recipe.shape), np.float32)
    for i, path in enumerate(paths):
        waveform, _ = read_wav(path, recipe.sample_rate)
        X[i] = features(waveform, recipe)
    names = [parse_name(p) for p in paths]
    digits = np.array([d for d, _, _ in names], np.int64)
    speakers = [s for _, s, _ in names]
    indices = np.array([i for _, _, i in names], np.int64)
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_open(cache) as f:
        np.savez(f, X=X, digits=digits, speakers=np.array(speakers), indices=indices)
    return X, digits, speakers, indices


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    import tensorflow as tf

    return tf


def build_model(input_shape: tuple[int, ...], dropout: float = TRAIN["dropout"]):
    """The VGG-7-like source CNN: three blocks of [conv 3x3 ReLU ×2 → max-pool 2x2] with
    :data:`WIDTHS` filters, flatten, dense 64 ReLU, dense 10 logits; dropout before each dense.
    No batch normalization: it made held-out speakers worse and training slower."""
    tf = _tf()
    layers = tf.keras.layers
    body = []
    for filters in WIDTHS:
        body += [
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.Conv2D(filters, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
        ]
    return tf.keras.Sequential(
        [
            tf.keras.Input(input_shape),
            *body,
            layers.Flatten(),
            layers.Dropout(dropout),
            layers.Dense(64, activation="relu"),
            layers.Dropout(dropout),
            layers.Dense(DIGITS),
        ]
    )


def source_split(
    speakers: np.ndarray, held_out_speaker: str, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the source model's training recordings and of its validation recordings
    (:data:`TRAIN` ``validation_share`` of every other speaker's, seeded): the validation part is
    what the source reference is built from (`edgeprune package --reference`), never trained on."""
    train, validation = [], []
    for i, speaker in enumerate(SPEAKERS):
        if speaker == held_out_speaker:
            continue
        members = np.flatnonzero(np.asarray(speakers) == speaker)
        order = np.random.default_rng([seed, i]).permutation(members)
        cut = int(round(TRAIN["validation_share"] * len(order)))
        validation.append(order[:cut])
        train.append(order[cut:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(validation))


def train_source(
    held_out_speaker: str,
    X: np.ndarray,
    y: np.ndarray,
    speakers: list[str],
    seed: int = 0,
    progress=print,
) -> Source:
    """Train the source model on every speaker but ``held_out_speaker`` (Adam, seeded) and
    convert it to float32 and int8 .tflite (int8: representative set of training samples).

    Cached under ``benchmarks/_cache/`` by (speaker, seed, digest of the training data, which
    fixes the recipe, and :data:`TRAIN`); ``info`` holds the training time and accuracy."""
    speakers_arr = np.asarray(speakers)
    if held_out_speaker not in set(speakers):
        raise ValueError(f"unknown speaker {held_out_speaker!r}; expected one of {SPEAKERS}")
    train, _ = source_split(speakers_arr, held_out_speaker, seed)
    Xt, yt = X[train], np.asarray(y)[train]
    key = digest(held_out_speaker, seed, TRAIN, Xt, yt)
    stem = CACHE / f"fsdd-source-{held_out_speaker}-s{seed}-{key}"
    paths = Source(stem.with_suffix(".float32.tflite"), stem.with_suffix(".int8.tflite"), {})
    info_path = stem.with_suffix(".json")
    if paths.float32.exists() and paths.int8.exists() and info_path.exists():
        return paths._replace(info=json.loads(info_path.read_text()))

    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    tf.keras.backend.clear_session()
    model = build_model(Xt.shape[1:])
    model.compile(
        optimizer=tf.keras.optimizers.Adam(TRAIN["learning_rate"]),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    progress(
        f"training the source model without {held_out_speaker} (seed {seed}) on "
        f"{len(Xt)} recordings, {TRAIN['epochs']} epochs"
    )
    start = time.perf_counter()
    history = model.fit(
        Xt,
        yt,
        batch_size=TRAIN["batch_size"],
        epochs=TRAIN["epochs"],
        shuffle=True,
        verbose=0,
    )
    seconds = time.perf_counter() - start
    float32, int8, convert_seconds = to_tflite_pair(
        model, Xt, TRAIN["representative_samples"], seed
    )
    info = {
        "held_out_speaker": held_out_speaker,
        "seed": seed,
        "train": TRAIN,
        "train_recordings": int(len(Xt)),
        "train_seconds": round(seconds, 1),
        "convert_seconds": round(convert_seconds, 1),
        "final_train_accuracy": round(float(history.history["accuracy"][-1]), 4),
        "params": int(model.count_params()),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths.float32, float32)
    atomic_write_bytes(paths.int8, int8)
    atomic_write_bytes(info_path, json.dumps(info, indent=2).encode())
    progress(f"  trained in {seconds:.0f} s, converted in {convert_seconds:.0f} s")
    return paths._replace(info=info)


def predict(model_path: str | os.PathLike, X: np.ndarray) -> np.ndarray:
    """Logits (float, dequantized for int8 models) of a batch-1 .tflite model on each sample."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    logits = np.empty((len(X), out["shape"][-1]), np.float32)
    for i, x in enumerate(X):
        x = x[np.newaxis]
        if inp["dtype"] != np.float32:
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale) + in_zero, info.min, info.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        o = interpreter.get_tensor(out["index"])[0]
        logits[i] = (o.astype(np.float32) - out_zero) * out_scale if out_scale else o
    return logits


def accuracy(model_path: str | os.PathLike, X: np.ndarray, y: np.ndarray) -> float:
    return float((predict(model_path, X).argmax(axis=1) == np.asarray(y)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--speaker", choices=SPEAKERS, action="append", help="held-out speaker")
    which.add_argument("--all", action="store_true", help="every speaker in turn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", help="data root holding fsdd/ (default: $EDGEPRUNE_DATA or ../shared/data)"
    )
    args = parser.parse_args(argv)
    X, digits, speakers, _ = load_fsdd(args.data)
    speakers_arr = np.asarray(speakers)
    chosen = SPEAKERS if args.all else args.speaker
    rows = {}
    for speaker in chosen:
        source = train_source(speaker, X, digits, speakers, seed=args.seed)
        mine = speakers_arr == speaker
        rows[speaker] = (
            accuracy(source.float32, X[mine], digits[mine]),
            accuracy(source.int8, X[mine], digits[mine]),
            source.info["train_seconds"],
        )
    print(f"recipe: {json.dumps(RECIPE.to_dict())}")
    print(f"source accuracy on all 500 recordings of the held-out speaker (seed {args.seed}):")
    print(f"{'held-out speaker':<18}{'float32':>9}{'int8':>9}{'train s':>9}")
    for speaker, (f32, i8, seconds) in rows.items():
        print(f"{speaker:<18}{f32:>9.3f}{i8:>9.3f}{seconds:>9.1f}")
    if len(rows) > 1:
        values = np.array(list(rows.values()))
        mean, std = values.mean(axis=0), values.std(axis=0)
        print(f"{'mean':<18}{mean[0]:>9.3f}{mean[1]:>9.3f}{mean[2]:>9.1f}")
        print(f"{'std':<18}{std[0]:>9.3f}{std[1]:>9.3f}{std[2]:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
