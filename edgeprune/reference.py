"""The source reference: what a device needs to judge a rewrite of the model without labels.

Built once on the host, where the source's own labelled validation data exists (data the source
never trained on), and shipped beside the model (inside an `.edgepkg`, or as a file for
`--reference`). It holds, for the source model's final layer:

- the validation confusion matrix (true × predicted counts): the source prior and accuracy (and
  what black-box shift estimation, Lipton et al. 2018, would need; not used yet);
- the temperature that calibrates the source's logits on validation (Guo et al. 2017): the
  label-shift EM needs calibrated posteriors, and the prior's log-ratio lives in logit units
  divided by it;
- class-conditional statistics of the penultimate features (mean per class, counts) and a
  stratified sample of labelled validation features: on it any rewrite of the final layer can be
  scored exactly, which is what the label-free accuracy estimate (`estimate`) calibrates on.

A model whose final bias a prior stage moved (`personalize`'s, or the fleet's) predicts for
another class prior than the validation data's: its reference, rebound to it (`rebind`), records
that prior (`model_prior`), so that a later prior stage estimates the user's prior from the one
the model really holds (not the validation's, which would count the first shift twice) and the
accuracy estimate weights the validation rows by it.

A reference belongs to one model: it carries the sha256 of the model's bytes and is refused for
any other. The file is an `.npz` without pickles, read with bounded sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_write_bytes
from .classifier import Classifier
from .errors import EdgepruneError
from .model import Model
from .runtime import Runner

FORMAT = "edgeprune-reference/1"
FILENAME = "reference.npz"  # its name inside a package
MAX_FEATURES = 4096  # validation feature rows kept (stratified): memory O(rows × features)
MAX_BYTES = 256 * 2**20  # a reference file larger than this is refused unread


def beside(model_path: str | os.PathLike) -> Path:
    """Where a model file's own reference is kept: `fleet.tflite` → `fleet.reference.npz`."""
    return Path(model_path).with_suffix(".reference.npz")


def model_digest(model: Model) -> str:
    """sha256 of the model's bytes: the identity a reference is bound to."""
    return hashlib.sha256(model.to_bytes()).hexdigest()


@dataclass(frozen=True)
class Reference:
    """The source model's behaviour on labelled validation data (see the module docstring)."""

    model_sha256: str
    confusion: np.ndarray  # [C, C] counts, rows: true class, columns: predicted class
    temperature: float  # logits / temperature are calibrated posteriors on validation
    feature_means: np.ndarray  # [C, D] mean penultimate feature per true class
    features: np.ndarray  # [k, D] float32, a stratified sample of validation features
    labels: np.ndarray  # [k] their true classes
    model_prior: np.ndarray | None = None  # [C] the prior the model predicts for, if moved

    @property
    def classes(self) -> int:
        return self.confusion.shape[0]

    @property
    def size(self) -> int:
        return int(self.confusion.sum())

    @property
    def prior(self) -> np.ndarray:
        """The class prior the model predicts for: the one a prior stage gave it, else the
        validation label frequencies (smoothed, never 0)."""
        if self.model_prior is not None:
            return self.model_prior
        counts = self.confusion.sum(axis=1) + 0.5
        return counts / counts.sum()

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.size, 1))

    def check(self, model: Model) -> None:
        """Refuse to judge a model this reference was not built for."""
        if model_digest(model) != self.model_sha256:
            raise EdgepruneError(
                "the reference was built for another model (its sha256 differs): build one for "
                "this model with `edgeprune reference MODEL VALIDATION.npz -o REF` or package "
                "them together with `edgeprune package --reference`"
            )

    def rebind(self, model: Model, prior: Any = None) -> Reference:
        """This reference for `model`, whose final layer alone was rewritten (the prior and
        prototype stages): the penultimate features held still describe it, so its confusion
        (each true class's validation count, spread as the new layer predicts that class's
        sampled rows) and its temperature are recomputed with the new final layer. `prior`:
        the class prior a kept prior stage gave the model (None: the one it had). The stage
        added T · log(prior / validation prior) to the logits (T: this reference's
        temperature); the new temperature is fitted with that offset taken out, so a prior
        stage alone leaves it as it was (the validation rows are too few to weight to a
        skewed prior: 120 rows gave T 10.4 for 1.1)."""
        logits = Classifier.of(model).logits(self.features.astype(np.float64))
        predicted = logits.argmax(axis=1)
        confusion = self.confusion.copy()
        for k, count in enumerate(self.confusion.sum(axis=1)):
            rows = predicted[self.labels == k]
            if rows.size:
                spread = np.round(np.bincount(rows, minlength=self.classes) / rows.size * count)
                spread[np.argmax(spread)] += count - spread.sum()  # rounding: rows keep counts
                confusion[k] = spread
        try:
            prior = self.model_prior if prior is None else _prior(prior, self.classes, "prior")
        except ValueError as e:
            raise EdgepruneError(f"cannot rebind the reference: {e}") from None
        if prior is not None:  # the prior's offset out: calibrate what the layer adds to it
            validation = replace(self, model_prior=None).prior
            logits = logits - self.temperature * np.log(prior / validation)
        return replace(
            self,
            model_sha256=model_digest(model),
            confusion=confusion,
            temperature=fit_temperature(logits, self.labels),
            model_prior=prior,
        )

    def row_weights(self, prior: np.ndarray | None = None) -> np.ndarray:
        """Weights (summing to 1) that make the validation feature rows, stratified by class, a
        sample of `prior` (None: the model's, `self.prior`)."""
        prior = self.prior if prior is None else np.asarray(prior, float)
        share = np.bincount(self.labels, minlength=self.classes) / len(self.labels)
        weights = (prior / np.maximum(share, 1e-12))[self.labels]
        return weights / weights.sum()

    # ----- files -------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        meta = {
            "format": FORMAT,
            "model_sha256": self.model_sha256,
            "temperature": self.temperature,
        }
        if self.model_prior is not None:
            meta["prior"] = [float(p) for p in self.model_prior]
        buffer = io.BytesIO()
        np.savez_compressed(
            buffer,
            meta=np.array(json.dumps(meta)),
            confusion=self.confusion.astype(np.int64),
            feature_means=self.feature_means.astype(np.float32),
            features=self.features.astype(np.float32),
            labels=self.labels.astype(np.int32),
        )
        return buffer.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_bytes(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "reference") -> Reference:
        """Parse and check a reference; any malformation is one EdgepruneError naming `where`."""
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:  # what it inflates to, before it does
                inflated = sum(i.file_size for i in zf.infolist())
            if max(len(data), inflated) > MAX_BYTES:
                raise ValueError(f"it holds more than {MAX_BYTES >> 20} MiB")
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                meta = json.loads(str(npz["meta"]))
                if not isinstance(meta, dict) or meta.get("format") != FORMAT:
                    raise ValueError(f"not a {FORMAT} file")
                ref = cls(
                    model_sha256=str(meta["model_sha256"]),
                    confusion=_array(npz, "confusion", "iu", 2),
                    temperature=float(meta["temperature"]),
                    feature_means=_array(npz, "feature_means", "f", 2),
                    features=_array(npz, "features", "f", 2).astype(np.float32),
                    labels=_array(npz, "labels", "iu", 1).astype(np.int64),
                )
                if "prior" in meta:
                    ref = replace(ref, model_prior=_prior(meta["prior"], ref.classes, "its prior"))
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            EOFError,
            zipfile.BadZipFile,
            zlib.error,
        ) as e:
            raise EdgepruneError(
                f"{where} is not a readable reference ({e}); rebuild it with `edgeprune reference`"
            ) from e
        ref._validate(where)
        return ref

    @classmethod
    def load(cls, path: str | os.PathLike) -> Reference:
        try:
            size = os.path.getsize(path)
            if size > MAX_BYTES:
                raise EdgepruneError(f"{path}: a reference larger than {MAX_BYTES >> 20} MiB")
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise EdgepruneError(f"cannot read reference {path}: {e.strerror}") from e
        return cls.from_bytes(data, str(path))

    def _validate(self, where: str) -> None:
        c = self.confusion.shape[0]
        k, d = self.features.shape
        problems = []
        if self.confusion.shape != (c, c) or c < 2 or np.any(self.confusion < 0):
            problems.append("the confusion matrix must be square, C ≥ 2, non-negative")
        if self.feature_means.shape[0] != c or self.feature_means.shape[1] != d:
            problems.append("feature means must be [classes, features]")
        if self.labels.shape != (k,) or (k and (self.labels.min() < 0 or self.labels.max() >= c)):
            problems.append("labels must be one class id per feature row")
        if k < 2 or d < 1:
            problems.append("it needs at least 2 validation feature rows")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            problems.append("the temperature must be positive")
        if not (np.all(np.isfinite(self.features)) and np.all(np.isfinite(self.feature_means))):
            problems.append("features must be finite")
        if problems:
            raise EdgepruneError(f"{where}: bad reference: {'; '.join(problems)}")

    def fits(self, classifier: Classifier) -> None:
        """Refuse a reference whose shapes do not match the model's final layer."""
        if (self.classes, self.features.shape[1]) != classifier.weight.shape:
            raise EdgepruneError(
                f"the reference has {self.classes} classes × {self.features.shape[1]} features, "
                f"the model's final layer {classifier.weight.shape[0]} × "
                f"{classifier.weight.shape[1]}: it was built for another model"
            )


def _prior(values: Any, classes: int, what: str) -> np.ndarray:
    """A class prior: `classes` finite positive numbers, normalized (ValueError otherwise)."""
    prior = np.asarray(values, dtype=np.float64)
    if prior.shape != (classes,) or not np.all(np.isfinite(prior)) or np.any(prior <= 0):
        raise ValueError(f"{what} must be {classes} positive numbers, one a class")
    return prior / prior.sum()


def _array(npz, key: str, kinds: str, ndim: int) -> np.ndarray:
    value = npz[key]
    if value.dtype.kind not in kinds or value.ndim != ndim:
        raise ValueError(f"{key} must be a {ndim}-d array of kind {kinds!r}")
    return value


def classifier_outputs(
    model: Model, samples: Iterable[np.ndarray], progress=None
) -> Iterable[tuple[np.ndarray, np.ndarray]]:
    """(penultimate features [D], logits [C]) of the final layer per sample, real-valued."""
    c = Classifier.of(model)
    runner = Runner(model, [c.layer.input, c.layer.output])
    for x in samples:
        values = runner.run(x)
        yield c.features(values[c.layer.input])[0], c.scores(values[c.layer.output])[0]
        if progress is not None:
            progress()


def fit_temperature(
    logits: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """The T minimizing the (weighted) NLL of softmax(logits / T) (golden-section on log T)."""
    weights = np.full(len(labels), 1 / len(labels)) if weights is None else weights

    def nll(log_t: float) -> float:
        z = logits / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        return float(weights @ (np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(z)), labels]))

    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return float(np.exp((low + high) / 2))


def build(
    model: Model,
    samples: Iterable[np.ndarray],
    labels: np.ndarray,
    max_features: int = MAX_FEATURES,
    seed: int = 0,
    progress=None,
) -> Reference:
    """The reference of `model` from labelled validation `samples` (never trained on)."""
    classifier = Classifier.of(model)
    labels = np.asarray(labels, np.int64)
    c, d = classifier.weight.shape
    if labels.ndim != 1 or (labels.size and (labels.min() < 0 or labels.max() >= c)):
        raise EdgepruneError(f"validation labels must be class ids 0..{c - 1}")
    features = np.zeros((len(labels), d), np.float32)
    logits = np.zeros((len(labels), c))
    n = 0
    for n, (f, z) in enumerate(classifier_outputs(model, samples, progress), start=1):
        if n > len(labels):
            break
        features[n - 1], logits[n - 1] = f, z
    if n != len(labels) or n < 2 * c:
        raise EdgepruneError(
            f"a reference needs one label per sample and at least 2 samples per class "
            f"({n} samples, {len(labels)} labels, {c} classes)"
        )
    confusion = np.zeros((c, c), np.int64)
    np.add.at(confusion, (labels, logits.argmax(axis=1)), 1)
    counts = np.bincount(labels, minlength=c)
    means = np.zeros((c, d))
    np.add.at(means, labels, features)
    means /= np.maximum(counts, 1)[:, None]
    rng = np.random.default_rng(seed)
    per_class = max(1, max_features // c)
    keep = np.sort(
        np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per_class] for k in range(c)])
    )
    return Reference(
        model_sha256=model_digest(model),
        confusion=confusion,
        temperature=fit_temperature(logits, labels),
        feature_means=means,
        features=features[keep],
        labels=labels[keep],
    )


def build_from_file(model: Model, path: str | os.PathLike, progress=None) -> Reference:
    """`build` from an .npz of labelled validation samples (arrays x and y)."""
    from .data import load_labelled

    x, y = load_labelled(path)
    return build(model, iter(x), y, progress=progress)
