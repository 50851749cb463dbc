"""Keras (.keras/.h5) or SavedModel → .tflite, then the converted model checked against its source.

Modes: ``float32``; ``dynamic`` (dynamic-range: int8 weights, float activations); ``int8`` (full
integer: int8 weights and activations, calibrated on representative samples; int8 input and
output unless ``float_io``); ``float16`` (fp16 weights). A Keras model is exported as a SavedModel
of its inference call (``training=False``) with the batch dimension fixed to 1 — a board runs
one sample at a time — and converted from there, which is also what the SavedModel path does.

After converting, both models run on the same samples and the maximum and mean absolute
difference of every output is reported (in real units: quantized outputs are dequantized).
TensorFlow is imported here only, and only when a function needs it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import CONVERT_MODES as MODES
from ..errors import EdgepruneError, UnsupportedError
from ..model import Quantization, dequantize

SIGNATURE = "serving_default"


def _tf():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import tensorflow as tf
    except ImportError as e:
        raise EdgepruneError(
            "edgeprune convert needs TensorFlow: pip install 'edgeprune[host]'"
        ) from e
    return tf


@dataclass
class Source:
    """A model to convert: how to run it, its one input, and a SavedModel directory of it."""

    path: str
    kind: str  # "keras" or "savedmodel"
    input_name: str
    input_shape: tuple[int, ...]
    run: Callable[[np.ndarray], dict[str, np.ndarray]]
    saved_model: str  # directory the converter reads
    _tmp: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


def load_source(path: str | os.PathLike) -> Source:
    """A Keras model file or a SavedModel directory, ready to convert and to run."""
    path = Path(path)
    tf = _tf()
    if path.is_dir():
        if not (path / "saved_model.pb").exists():
            raise EdgepruneError(f"{path} is a folder without saved_model.pb: not a SavedModel")
        try:
            loaded = tf.saved_model.load(str(path))
        except Exception as e:  # TF raises many types for a broken SavedModel
            raise EdgepruneError(f"cannot load SavedModel {path}: {e}") from e
        return _from_saved_model(str(path), loaded, kind="savedmodel")
    if path.suffix not in (".keras", ".h5"):
        raise EdgepruneError(
            f"{path}: expected a Keras model (.keras or .h5) or a SavedModel directory"
        )
    if not path.is_file():
        raise EdgepruneError(f"cannot read {path}: no such file")
    try:
        model = tf.keras.models.load_model(str(path), compile=False)
    except Exception as e:
        raise EdgepruneError(f"cannot load Keras model {path}: {e}") from e
    return from_keras(model, str(path))


def from_keras(model, name: str = "<keras model>") -> Source:
    """A Source from an in-memory Keras model (exported to a temporary SavedModel)."""
    tf = _tf()
    if len(model.inputs) != 1:
        raise UnsupportedError(f"{name} has {len(model.inputs)} inputs; edgeprune needs 1")
    shape = tuple(model.inputs[0].shape)
    if any(d is None for d in shape[1:]):
        raise UnsupportedError(
            f"{name}: input shape {list(shape)} has unknown dimensions besides the batch; "
            "build the model with a fixed input shape"
        )
    shape = (1, *shape[1:])
    tmp = tempfile.TemporaryDirectory(prefix="edgeprune-convert-")
    archive = tf.keras.export.ExportArchive()
    archive.track(model)
    call = functools.partial(model.__call__, training=False)
    archive.add_endpoint(SIGNATURE, call, [tf.TensorSpec(shape, model.inputs[0].dtype)])
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(tmp.name, verbose=False)

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = tf.nest.flatten(model(x, training=False))
        return {f"output_{i}": np.asarray(y) for i, y in enumerate(outputs)}

    signature = tf.saved_model.load(tmp.name).signatures[SIGNATURE]
    (input_name,) = signature.structured_input_signature[1]
    return Source(name, "keras", input_name, shape, run, tmp.name, tmp)


def _from_saved_model(directory: str, loaded, kind: str) -> Source:
    if SIGNATURE not in loaded.signatures:
        raise EdgepruneError(
            f"{directory} has no '{SIGNATURE}' signature (it has "
            f"{', '.join(loaded.signatures) or 'none'}): export one"
        )
    signature = loaded.signatures[SIGNATURE]
    specs = signature.structured_input_signature[1]
    if len(specs) != 1:
        raise UnsupportedError(f"{directory} takes {len(specs)} inputs; edgeprune needs 1")
    ((name, spec),) = specs.items()
    shape = tuple(1 if d is None else d for d in spec.shape)
    if spec.shape.rank is None or any(d is None for d in tuple(spec.shape)[1:]):
        raise UnsupportedError(
            f"{directory}: input {name!r} has shape {spec.shape}; only the batch may be unknown"
        )

    def run(x: np.ndarray) -> dict[str, np.ndarray]:
        outputs = signature(**{name: _tf().constant(x, spec.dtype)})
        return {k: np.asarray(v) for k, v in outputs.items()}

    return Source(directory, kind, name, shape, run, directory)


def convert(
    source: Source,
    mode: str,
    calibration: Iterable[np.ndarray] | None = None,
    float_io: bool = False,
) -> bytes:
    """The .tflite bytes of `source` in `mode` (see the module docstring).

    `calibration` (needed for "int8") yields samples shaped like the input, with or without
    the batch axis; it is iterated once per calibration pass the converter makes.
    """
    if mode not in MODES:
        raise EdgepruneError(f"unknown mode {mode!r}: choose one of {', '.join(MODES)}")
    tf = _tf()
    converter = tf.lite.TFLiteConverter.from_saved_model(source.saved_model, [SIGNATURE])
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        if calibration is None:
            raise EdgepruneError("--mode int8 needs calibration samples: pass --data FOLDER")

        def representative() -> Iterator[list[np.ndarray]]:
            for x in calibration:
                yield [np.asarray(x, np.float32).reshape(source.input_shape)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if not float_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return bytes(converter.convert())
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EdgepruneError(f"the converter failed on {source.path} ({mode}): {first}") from e


def _signature_runner(tflite: bytes):
    from ..runtime import load_interpreter

    interpreter, _ = load_interpreter(
        tflite, "the interpreter cannot load the converted model", allocate=False
    )
    return interpreter.get_signature_runner(SIGNATURE)


def _quantize(x: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    dtype = np.dtype(details["dtype"])
    scale, zero_point = details["quantization"]
    if dtype.kind in "iu" and scale:
        info = np.iinfo(dtype)
        return Quantization.per_tensor(scale, zero_point).quantize(x, dtype, info.min, info.max)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, details: dict[str, Any]) -> np.ndarray:
    scale, zero_point = details["quantization"]
    quantized = y.dtype.kind in "iu" and scale
    return dequantize(y, Quantization.per_tensor(scale, zero_point) if quantized else None)


def compare_outputs(
    tflite: bytes, source: Source, samples: Iterable[np.ndarray]
) -> dict[str, dict[str, float]]:
    """Max and mean |tflite − source| per output over `samples` (real units), and the largest
    |source| output for scale."""
    runner = _signature_runner(tflite)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    ((input_name, input_details),) = inputs.items()
    worst: dict[str, float] = {}
    total: dict[str, float] = {}
    count: dict[str, int] = {}
    largest: dict[str, float] = {}
    n = 0
    for x in samples:
        x = np.asarray(x, np.float32).reshape(source.input_shape)
        expected = source.run(x)
        got = runner(**{input_name: _quantize(x, input_details)})
        if set(got) != set(expected):
            raise EdgepruneError(
                f"outputs differ: converted {sorted(got)}, source {sorted(expected)}"
            )
        for key, y in got.items():
            diff = np.abs(_dequantize(y, outputs[key]) - expected[key].astype(np.float64))
            worst[key] = max(worst.get(key, 0.0), float(diff.max(initial=0.0)))
            total[key] = total.get(key, 0.0) + float(diff.sum())
            count[key] = count.get(key, 0) + diff.size
            largest[key] = max(largest.get(key, 0.0), float(np.abs(expected[key]).max()))
        n += 1
    if not n:
        raise EdgepruneError("no samples to compare the converted model on")
    return {
        key: {
            "max_abs_diff": worst[key],
            "mean_abs_diff": total[key] / max(count[key], 1),
            "max_abs_source": largest[key],
            "samples": n,
        }
        for key in sorted(worst)
    }
