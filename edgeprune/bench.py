"""Run-time benchmark of a .tflite model: initialization time, latency percentiles over timed
runs after a warm-up, peak RSS growth, threads and delegate, and optionally energy.

Latency is the wall time of `invoke()` alone (the input is set once before the warm-up, as
LiteRT's benchmark tools do). Peak RSS is the process's high-water mark (VmHWM) after the
interpreter was built and run, minus its resident size (VmRSS) just before, with the mark reset
first (Linux: /proc/self/clear_refs); elsewhere it falls back to ru_maxrss, which cannot be reset.
It is meaningful in a fresh process, as `edgeprune bench` runs: a long-lived process that freed
memory earlier reuses those resident pages, and their reuse does not raise the mark.

Given real samples (`samples`: raw files through a recipe, or arrays), each one is also timed on
its way through, in two parts: its preprocessing (read the file, the recipe's front end, the
input's dtype) and its inference (`invoke()`), so a user sees what the front end costs on the
board beside what the model does.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from . import native_stderr
from .choices import DELEGATES
from .errors import EdgepruneError
from .model import Model
from .runtime import fit_input, interpreter_class, load_interpreter

EDGETPU_LIBRARY = "libedgetpu.so.1"
_STATUS = Path("/proc/self/status")


# ----- memory -----------------------------------------------------------------------------------


def _status_kib(field: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def reset_peak_rss() -> tuple[int, str]:
    """Reset the high-water mark if the OS allows it; (resident bytes now, method)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        rss = _status_kib("VmRSS")
        if rss is not None:
            return rss * 1024, "VmHWM after reset - VmRSS before (Linux /proc/self)"
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024
    return peak * scale, "ru_maxrss growth (the process's earlier peak may hide some)"


def peak_rss() -> int:
    hwm = _status_kib("VmHWM")
    if hwm is not None:
        return hwm * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024)


# ----- interpreter ------------------------------------------------------------------------------


def make_interpreter(
    content: bytes, delegate: str = "xnnpack", threads: int | None = None, allocate: bool = True
):
    """An interpreter for `content` with the chosen delegate; (interpreter, runtime, note).

    allocate=False leaves allocation to the caller, e.g. after resizing a dynamic input (a model
    whose layers cannot be planned for the placeholder shape fails to allocate before that)."""
    if delegate not in DELEGATES:
        raise EdgepruneError(f"unknown delegate {delegate!r}: choose one of {', '.join(DELEGATES)}")
    cls, runtime = interpreter_class()
    module = sys.modules[cls.__module__]
    options: dict[str, Any] = {"num_threads": threads}
    note = ""
    if delegate == "none":
        resolver = getattr(module, "OpResolverType", None)
        if resolver is None:
            raise EdgepruneError(f"{runtime} cannot turn its default delegates off; use xnnpack")
        options["experimental_op_resolver_type"] = resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    elif delegate == "edgetpu":
        options["experimental_delegates"] = [_edgetpu_delegate(module, runtime)]
        if b"edgetpu-custom-op" not in content:
            note = (
                "the model is not compiled for the Edge TPU (no edgetpu-custom-op): it runs on "
                "the CPU; compile it with edgetpu_compiler"
            )
    interpreter, _ = load_interpreter(
        content,
        f"the interpreter cannot load the model ({delegate})",
        runtime,
        allocate=allocate,
        **options,
    )
    return interpreter, runtime, note


def _edgetpu_delegate(module, runtime: str):
    load = getattr(module, "load_delegate", None)  # every runtime's interpreter module has it
    if load is None:
        raise EdgepruneError(f"{runtime} has no load_delegate: install ai-edge-litert")
    try:
        ctypes.CDLL(EDGETPU_LIBRARY)  # fails cleanly; a failed load_delegate leaves noise behind
        return load(EDGETPU_LIBRARY)
    except (ValueError, OSError, RuntimeError) as e:
        raise EdgepruneError(
            f"the Coral Edge TPU delegate is not available ({EDGETPU_LIBRARY}: {e}); install "
            "libedgetpu1-std from Coral's apt repository, plug the Edge TPU in, or run "
            "--delegate xnnpack"
        ) from e


def random_input(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Seeded input data: standard normal floats, or integers over the type's range."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True, dtype=dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(bool)
    raise EdgepruneError(f"cannot make random input of type {dtype}")


# ----- the benchmark ----------------------------------------------------------------------------


def latency_stats(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1e3
    return {
        "min": float(ms.min()),
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p95": float(np.percentile(ms, 95)),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
    }


def bench(
    model: Model,
    runs: int = 50,
    warmup: int = 5,
    threads: int | None = 1,
    delegate: str = "xnnpack",
    input_shape: tuple[int, ...] | None = None,
    energy: str | None = None,
    idle_seconds: float = 2.0,
    progress: Callable[[int], None] | None = None,
    samples: Iterable[np.ndarray] | None = None,
    sample_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Benchmark `model` (see the module docstring); `progress(n)` is told of each timed run.

    With `samples`, each is then prepared and run once, timed apart (`time_samples`), and
    `sample_progress(n)` is told of each."""
    if runs < 1 or warmup < 0:
        raise EdgepruneError("--runs must be >= 1 and --warmup >= 0")
    meter, no_meter = open_energy(energy) if energy else (None, [])
    content = model.to_bytes()
    interpreter_class()  # import the runtime before the memory window opens
    rss_before, rss_method = reset_peak_rss()
    t0 = time.perf_counter()
    interpreter, runtime, note = make_interpreter(content, delegate, threads, input_shape is None)
    details = interpreter.get_input_details()
    if input_shape is not None:  # resized before the first allocation
        if len(details) != 1:
            raise EdgepruneError("--input-shape needs a model with 1 input")
        try:
            interpreter.resize_tensor_input(details[0]["index"], list(input_shape), strict=False)
            with native_stderr.silenced():  # the delegate is applied here: its INFO line
                interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise EdgepruneError(f"the model cannot run with input shape {input_shape}: {e}") from e
        details = interpreter.get_input_details()
    init_seconds = time.perf_counter() - t0
    for i, d in enumerate(details):
        if input_shape is None and np.any(d["shape_signature"][1:] < 0):
            raise EdgepruneError(
                f"input {d['name']!r} has dynamic shape {d['shape_signature'].tolist()} "
                "(-1 = unknown): benchmark it for a shape you give with --input-shape"
            )
        interpreter.set_tensor(d["index"], random_input(tuple(d["shape"]), d["dtype"], seed=i))
    invoke = interpreter.invoke
    for _ in range(warmup):
        invoke()
    times = []
    clock = time.perf_counter
    for n in range(runs):
        start = clock()
        invoke()
        times.append(clock() - start)
        if progress:
            progress(n + 1)
    result: dict[str, Any] = {
        "model": model.name,
        "runtime": runtime,
        "delegate": delegate,
        "threads": threads,
        "inputs": [{"name": d["name"], "shape": d["shape"].tolist()} for d in details],
        "warmup": warmup,
        "runs": runs,
        "init_ms": init_seconds * 1e3,
        "latency_ms": latency_stats(times),
        "peak_rss_delta_bytes": max(0, peak_rss() - rss_before),
        "rss_method": rss_method,
    }
    if note:
        result["note"] = note
    if samples is not None:
        result["samples"] = time_samples(interpreter, model, details[0], samples, sample_progress)
    if energy:
        result["energy"] = measure_energy(model, meter, no_meter, invoke, idle_seconds, input_shape)
    return result


def time_samples(
    interpreter,
    model: Model,
    detail: dict[str, Any],
    samples: Iterable[np.ndarray],
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Each sample's preprocessing (producing it: a file read and made into an input by the
    recipe; then shaped and typed for the input) and inference (`invoke()`), in ms per sample."""
    if len(interpreter.get_input_details()) != 1:
        raise EdgepruneError("--data needs a model with 1 input")
    tensor, shape = model.single_input(), tuple(detail["shape"])
    prepare, infer = [], []
    clock, invoke = time.perf_counter, interpreter.invoke
    samples = iter(samples)
    while True:
        start = clock()
        sample = next(samples, None)
        if sample is None:
            break
        interpreter.set_tensor(detail["index"], fit_input(sample, tensor, shape))
        ready = clock()
        invoke()
        prepare.append(ready - start)
        infer.append(clock() - ready)
        if progress:
            progress(len(infer))
    if not infer:
        raise EdgepruneError("--data holds no samples")
    return {
        "count": len(infer),
        "preprocess_ms": latency_stats(prepare),
        "inference_ms": latency_stats(infer),
    }


def open_energy(spec: str):
    """(the meter `spec` names, or None for the estimate; why `auto` found no meter)."""
    from . import energy as meters

    if spec == "auto":
        return meters.auto_meter()
    return meters.open_meter(spec), []


def measure_energy(
    model: Model,
    meter,
    no_meter: list[str],
    invoke: Callable[[], object],
    idle_seconds: float,
    input_shape: tuple[int, ...] | None,
) -> dict[str, Any]:
    """Energy per inference from `meter`, or estimated from the profile when there is none."""
    from .energy import per_inference

    if meter is None:
        from .energy.estimate import estimate
        from .profile import profile, tensor_shapes

        shapes, _ = tensor_shapes(model, input_shape)
        result = {"meter": "estimate", "method": "MACs and bytes moved x per-operation energies"}
        result.update(estimate(model, profile(model, input_shape), shapes))
        if no_meter:
            result["no_meter_because"] = no_meter
        return result
    try:
        return per_inference(meter, invoke, idle_seconds)
    finally:
        meter.close()
