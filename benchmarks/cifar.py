"""CIFAR-10 for the benchmarks: features, a source CNN on all ten classes, adaptation/test splits.

An "individual" is a set of CIFAR-10 classes (docs/DESIGN.md, "Evaluation protocol"). The source
model is trained on the whole training split; individuals are drawn from the test split, which the
source model never saw. Other benchmark scripts import this module::

    from benchmarks import cifar
    X, y = cifar.load_cifar(split="test")                     # features, labels (cached)
    source = cifar.train_source(seed=0)                       # cached .tflite paths
    source["float32"], source["int8"]
    adapt, test = cifar.pair_split(X, y, ("cat", "dog"), fold=0)

Features are ``edgeprune.preprocess.image.features`` with :data:`RECIPE` (the recipe the device
uses too). Everything is seeded and cached under ``benchmarks/_cache/`` (gitignored): feature stacks
by (split, recipe, image files), models by (seed, epochs, recipe, training setup).

Run it to train (or find) the source model and print its test accuracy::

    python benchmarks/cifar.py [--data DIR] [--epochs N] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # `python benchmarks/cifar.py`: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import CACHE, REPO, digest, to_tflite_pair  # noqa: E402
from edgeprune._io import atomic_open, atomic_write_bytes  # noqa: E402
from edgeprune.preprocess.image import ImageRecipe, file_features  # noqa: E402

CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLITS = ("train", "test")

# Pixels scaled to [0, 1], then normalized per channel by the CIFAR-10 training-set statistics.
RECIPE = ImageRecipe(
    size=(32, 32),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
)

# Training setup: changing any of it changes the cache key of every model.
TRAIN = {
    "arch": "resnet8",
    "widths": [16, 32, 64],
    "batch_size": 128,
    "optimizer": "sgd-nesterov-0.9",
    "peak_learning_rate": 0.1,
    "warmup_epochs": 1,
    "schedule": "linear warmup, cosine decay to 0",
    "l2": 2.5e-4,  # = weight decay 5e-4 in SGD
    "augment": "4-px zero-pad random crop, horizontal flip",
    "representative_samples": 500,
    "version": 1,
}
# Seed 0: 80.7 % (float32) and 80.6 % (int8) test accuracy after 26 min of training on 2 shared
# cores; the target is >= 75 %.
EPOCHS = 15


def default_data_dir() -> Path:
    """``$EDGEPRUNE_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("EDGEPRUNE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def split_dir(data_dir: str | os.PathLike | None, split: str) -> Path:
    """``{data_dir}/cifar10/{split}``, checked to hold one folder per class."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    root = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = root / "cifar10" / split
    missing = [c for c in CLASSES if not (folder / c).is_dir()]
    if missing:
        raise SystemExit(
            f"no CIFAR-10 {split} images under {folder} (missing {', '.join(missing)}): pass "
            "--data DIR or set EDGEPRUNE_DATA to the folder holding cifar10/ "
            "(see the README for how to get the data)"
        )
    return folder


def list_images(data_dir: str | os.PathLike | None, split: str) -> tuple[list[Path], np.ndarray]:
    """Every image of a split, sorted by (class in :data:`CLASSES` order, file name), and its
    label (index into :data:`CLASSES`)."""
    folder = split_dir(data_dir, split)
    paths, labels = [], []
    for label, name in enumerate(CLASSES):
        files = sorted((folder / name).glob("*.jpg"))
        paths += files
        labels += [label] * len(files)
    return paths, np.array(labels, np.int64)


def _decode(paths: list[Path], recipe: ImageRecipe) -> np.ndarray:
    """Model inputs of image files: decoded by Pillow, then the project's NumPy front end."""
    X = np.empty((len(paths), *recipe.shape), np.float32)
    for i, path in enumerate(paths):
        X[i] = file_features(path, recipe)
    return X


def load_cifar(
    data_dir: str | os.PathLike | None = None, split: str = "train", recipe: ImageRecipe = RECIPE
) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split: ``(X float32 [N, 32, 32, 3], y int64 [N])``, sorted by
    (class, file name).

    Cached under ``benchmarks/_cache/`` by split, recipe and the image files' names and sizes, so
    every run after the first takes seconds instead of decoding 10,000 or 50,000 JPEGs.
    """
    paths, y = list_images(data_dir, split)
    files = [(p.parent.name, p.name, p.stat().st_size) for p in paths]
    cache = CACHE / f"cifar10-{split}-{digest(recipe.to_dict(), files)}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return z["X"], z["y"]
    X = _decode(paths, recipe)
    CACHE.mkdir(parents=True, exist_ok=True)
    with atomic_open(cache) as f:
        np.savez(f, X=X, y=y)
    return X, y


def class_indices(classes) -> list[int]:
    """Class names (from :data:`CLASSES`) or indices, as sorted unique indices."""
    if isinstance(classes, str):  # one class name, not a sequence of one-letter names
        classes = [classes]
    out = set()
    for c in classes:
        if isinstance(c, str):
            if c not in CLASSES:
                raise ValueError(f"unknown class {c!r}; expected one of {CLASSES}")
            out.add(CLASSES.index(c))
        elif 0 <= int(c) < len(CLASSES):
            out.add(int(c))
        else:
            raise ValueError(f"class index {c!r} out of range 0..{len(CLASSES) - 1}")
    if not out:
        raise ValueError("an individual needs at least one class")
    return sorted(out)


def pair_split(
    X: np.ndarray, y: np.ndarray, classes, fold: int, folds: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices into ``X``/``y`` of one individual's adaptation and held-out test images.

    The individual is the set of ``classes`` (names or indices); pass the *test* split, which
    the source model never saw. Each class's images are shuffled by a generator seeded with
    (seed, class) and cut into ``folds`` near-equal parts: part ``fold`` is the held-out test set
    (its labels used only to score), the other parts the unlabeled adaptation set. Stratified per
    class, so both parts keep the class balance; deterministic, and a class is cut the same way
    whichever classes it is paired with. Returns sorted ``(adapt_idx, test_idx)``.
    """
    y = np.asarray(y)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} samples but y has {len(y)}")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1} (got {fold})")
    adapt, test = [], []
    for c in class_indices(classes):
        members = np.flatnonzero(y == c)
        if len(members) < folds:
            raise ValueError(f"class {CLASSES[c]} has {len(members)} images, fewer than {folds}")
        parts = np.array_split(np.random.default_rng([seed, c]).permutation(members), folds)
        test.append(parts[fold])
        adapt += [p for i, p in enumerate(parts) if i != fold]
    return np.sort(np.concatenate(adapt)), np.sort(np.concatenate(test))


# ----- the source model -------------------------------------------------------------------------


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    return tf


def build_model(widths=(16, 32, 64), l2: float = 0.0):
    """ResNet-8 (He et al. 2016, CIFAR variant, one basic block per stage): conv3x3 stem, then
    per width a residual block [conv3x3 → BN → ReLU → conv3x3 → BN] + shortcut (1x1 conv + BN when
    the shape changes), ReLU after the add; stages 2 and 3 start with stride 2. Global average
    pooling gives the penultimate feature vector (``widths[-1]`` values) and one dense layer the
    10 logits: the model ends in that FULLY_CONNECTED, with no softmax. Convs have no bias; the
    converter folds each batch norm into its conv."""
    tf = _tf()
    layers = tf.keras.layers
    reg = tf.keras.regularizers.L2(l2) if l2 else None

    def conv_bn(x, filters, kernel, stride=1):
        x = layers.Conv2D(
            filters, kernel, stride, padding="same", use_bias=False, kernel_regularizer=reg
        )(x)
        return layers.BatchNormalization()(x)

    inputs = tf.keras.Input(RECIPE.shape)
    x = layers.ReLU()(conv_bn(inputs, widths[0], 3))
    for stage, filters in enumerate(widths):
        stride = 1 if stage == 0 else 2
        residual = conv_bn(layers.ReLU()(conv_bn(x, filters, 3, stride)), filters, 3)
        shortcut = x if stride == 1 and x.shape[-1] == filters else conv_bn(x, filters, 1, stride)
        x = layers.ReLU()(layers.Add()([shortcut, residual]))
    x = layers.GlobalAveragePooling2D()(x)
    logits = layers.Dense(len(CLASSES), kernel_regularizer=reg)(x)
    return tf.keras.Model(inputs, logits, name=TRAIN["arch"])


def augment(X: np.ndarray, rng: np.random.Generator, pad: int = 4, chunk: int = 5000):
    """A copy of ``X`` where each image is randomly cropped from its ``pad``-pixel zero-padded
    version (zero is the mean pixel after normalization) and flipped left-right with probability
    1/2: one gather per chunk, the flip folded into the column index."""
    n, h, w, _ = X.shape
    out = np.empty_like(X)
    for start in range(0, n, chunk):
        batch = X[start : start + chunk]
        m = len(batch)
        padded = np.pad(batch, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        rows = rng.integers(0, 2 * pad + 1, m)[:, None] + np.arange(h)
        cols = rng.integers(0, 2 * pad + 1, m)[:, None] + np.arange(w)
        flip = rng.random(m) < 0.5
        cols[flip] = cols[flip, ::-1]
        images = np.arange(m)[:, None, None]
        out[start : start + m] = padded[images, rows[:, :, None], cols[:, None]]
    return out


def _schedule(steps_per_epoch: int, epochs: int):
    """Learning rate per step: linear warmup to the peak, then cosine decay to 0."""
    tf = _tf()
    warmup = TRAIN["warmup_epochs"] * steps_per_epoch
    return tf.keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=epochs * steps_per_epoch - warmup,
        warmup_target=TRAIN["peak_learning_rate"],
        warmup_steps=warmup,
    )


def fit(X: np.ndarray, y: np.ndarray, seed: int, epochs: int, progress=print):
    """The trained Keras model and its per-epoch log. Augmentation is redrawn in NumPy before
    each epoch (cheap next to the epoch itself); the learning rate follows the optimizer's step
    count across the per-epoch ``fit`` calls."""
    tf = _tf()
    tf.keras.utils.set_random_seed(seed)
    tf.keras.backend.clear_session()
    model = build_model(TRAIN["widths"], TRAIN["l2"])
    steps = -(-len(X) // TRAIN["batch_size"])
    model.compile(
        optimizer=tf.keras.optimizers.SGD(_schedule(steps, epochs), momentum=0.9, nesterov=True),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,  # XLA took 1.5x the CPU time per epoch of plain TF ops here
    )
    rng = np.random.default_rng(seed)
    log = []
    for epoch in range(epochs):
        start = time.perf_counter()
        history = model.fit(
            augment(X, rng), y, batch_size=TRAIN["batch_size"], epochs=1, shuffle=True, verbose=0
        )
        entry = {
            "epoch": epoch + 1,
            "seconds": round(time.perf_counter() - start, 1),
            "loss": round(float(history.history["loss"][-1]), 4),
            "accuracy": round(float(history.history["accuracy"][-1]), 4),
        }
        log.append(entry)
        progress(
            f"  epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.3f}, "
            f"train accuracy {entry['accuracy']:.3f}, {entry['seconds']:.0f} s"
        )
    return model, log


def train_source(
    seed: int = 0, epochs: int = EPOCHS, data_dir: str | os.PathLike | None = None, progress=print
) -> dict:
    """The source model trained on all 50,000 training images: ``{"float32": Path, "int8": Path,
    "info": dict}`` (batch-1 .tflite files whose single output is the 10 logits of a final
    FULLY_CONNECTED; ``info`` has the setup, parameter count, training time and per-epoch log).

    Cached under ``benchmarks/_cache/`` by (seed, epochs, recipe, :data:`TRAIN`); the training
    images are only loaded when the model has to be trained. The int8 model is calibrated on
    :data:`TRAIN` ``["representative_samples"]`` training images drawn with the seed.
    """
    stem = CACHE / f"cifar10-source-s{seed}-e{epochs}-{digest(RECIPE.to_dict(), TRAIN)}"
    paths = {kind: stem.with_suffix(f".{kind}.tflite") for kind in ("float32", "int8")}
    info_path = stem.with_suffix(".json")
    if all(p.exists() for p in (*paths.values(), info_path)):
        return {**paths, "info": json.loads(info_path.read_text())}

    X, y = load_cifar(data_dir, "train")
    progress(f"training {TRAIN['arch']} (seed {seed}) on {len(X)} images, {epochs} epochs")
    start = time.perf_counter()
    model, log = fit(X, y, seed, epochs, progress)
    seconds = time.perf_counter() - start
    float32, int8, convert_seconds = to_tflite_pair(model, X, TRAIN["representative_samples"], seed)
    info = {
        "seed": seed,
        "epochs": epochs,
        "train": TRAIN,
        "recipe": RECIPE.to_dict(),
        "params": int(model.count_params()),
        "train_seconds": round(seconds, 1),
        "convert_seconds": round(convert_seconds, 1),
        "log": log,
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(paths["float32"], float32)
    atomic_write_bytes(paths["int8"], int8)
    atomic_write_bytes(info_path, json.dumps(info, indent=2).encode())
    progress(f"  trained in {seconds:.0f} s, converted in {convert_seconds:.0f} s")
    return {**paths, "info": info}


# ----- evaluating a .tflite model ---------------------------------------------------------------


def predict(model_path: str | os.PathLike, X: np.ndarray, batch: int = 250) -> np.ndarray:
    """Logits (dequantized for int8 models) of a .tflite model on each sample of ``X``.

    The batch-1 model's input is resized to ``batch`` samples (the graph has no fixed-batch
    reshape), which gives the same per-sample results many times faster."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model_path), num_threads=2)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    in_scale, in_zero = inp["quantization"]
    out_scale, out_zero = out["quantization"]
    logits = np.empty((len(X), out["shape"][-1]), np.float32)
    size = None
    for start in range(0, len(X), batch):
        x = X[start : start + batch]
        if len(x) != size:
            size = len(x)
            interpreter.resize_tensor_input(inp["index"], [size, *inp["shape"][1:]])
            interpreter.allocate_tensors()
        if inp["dtype"] != np.float32:
            limits = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / in_scale) + in_zero, limits.min, limits.max)
        interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
        interpreter.invoke()
        o = interpreter.get_tensor(out["index"]).astype(np.float32)
        logits[start : start + size] = (o - out_zero) * out_scale if out_scale else o
    return logits


def accuracy(model_path: str | os.PathLike, X: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy over all ten classes."""
    return float((predict(model_path, X).argmax(axis=1) == np.asarray(y)).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--data", help="data root holding cifar10/ (default: $EDGEPRUNE_DATA or ../shared/data)"
    )
    parser.add_argument("--epochs", type=int, default=EPOCHS, help=f"default {EPOCHS}")
    parser.add_argument("--seed", type=int, default=0, help="default 0")
    args = parser.parse_args(argv)
    source = train_source(args.seed, args.epochs, args.data)
    info = source["info"]
    X, y = load_cifar(args.data, "test")
    print(f"recipe: {json.dumps(RECIPE.to_dict())}")
    print(
        f"source model: {TRAIN['arch']} {TRAIN['widths']}, {info['params']:,} params, "
        f"{info['epochs']} epochs in {info['train_seconds']:.0f} s (seed {info['seed']})"
    )
    for kind in ("float32", "int8"):
        print(f"{kind:>8}: test accuracy {accuracy(source[kind], X, y):.4f} on {len(X):,} images")
        print(f"          {source[kind].relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
