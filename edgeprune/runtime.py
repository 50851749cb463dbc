"""Find a TFLite interpreter and run samples through it, reading the tensors asked for."""

from __future__ import annotations

import hashlib
import importlib
import os
import signal
import subprocess
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import native_stderr, vetted
from .choices import RUNNER_MODES as MODES
from .errors import EdgepruneError, RuntimeMissingError
from .input_range import to_input
from .model import Model, Tensor

# (module, attribute path to the Interpreter class, pip package), in order of preference.
RUNTIMES = (
    ("ai_edge_litert.interpreter", "Interpreter", "ai-edge-litert"),
    ("tflite_runtime.interpreter", "Interpreter", "tflite-runtime"),
    ("tensorflow", "lite.Interpreter", "tensorflow"),
)


def interpreter_class(runtime: str | None = None) -> tuple[type, str]:
    """The first importable Interpreter class (or the one named by `runtime`), with its name."""
    for module, attr, package in RUNTIMES:
        if runtime and runtime not in (module.split(".")[0], package):
            continue
        try:
            obj = importlib.import_module(module)
        except ImportError:
            continue
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj, package
    wanted = f"the runtime {runtime!r}" if runtime else "no TFLite interpreter"
    raise RuntimeMissingError(
        f"{wanted} is installed: pip install 'edgeprune[litert]' (ai-edge-litert), "
        "or tflite-runtime on Python <= 3.11"
    )


# A model is first loaded, allocated and invoked on zeros in a child process, once per sha256 in
# a process: a model that crashes the runtime (a segfault in a kernel) then ends the child, not
# this process nor a board agent, and is refused in one line. EDGEPRUNE_PROBE=0 turns it off.
# Models that passed, and those edgeprune wrote from them, are remembered (`vetted`) and skip it.
_PROBE = """
import sys
try:  # the address space PROBE_MEMORY allows, set before anything is loaded
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]),) * 2)
except (ImportError, ValueError, OSError):
    pass
import importlib
import numpy as np
cls = importlib.import_module(sys.argv[1])
for part in sys.argv[2].split("."):
    cls = getattr(cls, part)
try:
    interpreter = cls(model_content=sys.stdin.buffer.read(), num_threads=1)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
    interpreter.invoke()
except MemoryError:
    sys.exit(4)
except Exception as e:
    # Out of its address space (PROBE_MEMORY): 4; else an error the in-process load reports.
    sys.exit(4 if "alloc" in str(e).lower() else 3)
"""
PROBE_TIMEOUT = 300.0
PROBE_MEMORY = 4 << 30  # the child's address space, plus 4 bytes per byte of the model
_probed: set[str] = set()


def probe(content: bytes, failure: str, runtime: str | None = None) -> bool:
    """Run the model once in a child process; EdgepruneError if the runtime dies on it.

    True when the model is known to load and run (it passed now or before, here or in the
    `vetted` record); False when the probe is off (EDGEPRUNE_PROBE=0) or the child could not
    load it (the in-process load then says why)."""
    if os.environ.get("EDGEPRUNE_PROBE") == "0":
        return False
    digest = hashlib.sha256(content).hexdigest()
    if digest in _probed or vetted.known(digest):
        return True
    limit = PROBE_MEMORY + 4 * len(content)
    _, package = interpreter_class(runtime)
    module, attr = next((m, a) for m, a, p in RUNTIMES if p == package)
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, module, attr, str(limit)],
            input=content,
            capture_output=True,
            timeout=PROBE_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EdgepruneError(
            f"{failure}: one invocation on zeros did not finish in {PROBE_TIMEOUT:g} s"
        ) from None
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise EdgepruneError(
            f"{failure}: the interpreter crashed ({name}) running it in a child process; "
            "the model is malformed or hostile: re-export it"
        )
    if done.returncode == 4:
        raise EdgepruneError(
            f"{failure}: its tensors do not fit in {limit / 2**30:.1f} GiB of address space "
            "(tried in a child process)"
        )
    if done.returncode != 0:
        return False
    _probed.add(digest)
    vetted.remember(digest)
    return True


def load_interpreter(
    content: bytes,
    failure: str,
    runtime: str | None = None,
    allocate: bool = True,
    probed: bool = False,
    **options: Any,
) -> tuple[Any, str]:
    """An interpreter over the model bytes `content`, and the name of its runtime package.

    `options` go to the Interpreter (num_threads, delegates, op resolver...). Its warnings (that
    preserve mode is for debugging, that tf.lite is deprecated) are silenced; a model it cannot
    load raises EdgepruneError("`failure`: why"), and so does one that crashes the runtime in
    the child-process `probe` (skipped with `probed`: the caller probed the model it derives
    `content` from)."""
    cls, package = interpreter_class(runtime)
    if not probed:
        probe(bytes(content), failure, runtime)
    try:
        with warnings.catch_warnings(), native_stderr.silenced():  # -q: no XNNPACK INFO line
            warnings.simplefilter("ignore")
            interpreter = cls(model_content=content, **options)
            if allocate:
                interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        raise EdgepruneError(f"{failure}: {e}") from e
    return interpreter, package


def fit_input(sample: np.ndarray, t: Tensor, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """`sample` shaped (one sample gets its batch axis) and typed for input tensor `t`, quantized
    if the input is quantized; `shape` is the input's shape when it was resized from `t.shape`."""
    shape = tuple(shape) if shape is not None else tuple(t.shape)
    sample = np.asarray(sample)
    if sample.shape != shape:
        if sample.shape != shape[1:]:
            raise EdgepruneError(
                f"sample shape {sample.shape} does not fit the model input {shape}; "
                "reshape the data or export the model for this shape"
            )
        sample = sample[None]
    return to_input(sample, t)  # refused when the values cannot be what the input holds


class Runner:
    """Invokes a model one sample at a time and returns its outputs and watched tensors as floats.

    mode "instrument" runs a copy of the model whose watched tensors are extra outputs (keeps the
    runtime's memory planning and delegates); mode "preserve" runs the model itself with
    `experimental_preserve_all_tensors`. Both read tensors by their index in the main subgraph.
    `only_watch` (instrument) reads the watched tensors alone and runs only the operators up to
    the last one they need.
    """

    def __init__(
        self,
        model: Model,
        watch: Sequence[int] = (),
        mode: str = "instrument",
        num_threads: int | None = None,
        runtime: str | None = None,
        only_watch: bool = False,
    ):
        if mode not in MODES:
            raise EdgepruneError(f"unknown runner mode {mode!r}: choose one of {', '.join(MODES)}")
        self.input = model.single_input()
        extra = {"experimental_preserve_all_tensors": True} if mode == "preserve" else {}
        if only_watch and (mode != "instrument" or not watch):
            raise EdgepruneError("only_watch needs mode 'instrument' and tensors to watch")
        content = model.with_outputs(list(watch), only_watch) if mode == "instrument" else model
        # A rewrite that does not load is edgeprune's doing, not the user's model's.
        what = f"edgeprune's rewrite of {model.name}" if model.derived else model.name
        # The model itself is probed, not each instrumented copy of it; not at all when it is
        # vetted: it passed before, or edgeprune derived it from a model that did.
        if not model.vetted:
            model.vetted = probe(model.to_bytes(), f"the interpreter cannot load {what}", runtime)
        self.interpreter, self.runtime = load_interpreter(
            content.to_bytes(),
            f"the interpreter cannot load {what}",
            runtime,
            probed=True,
            num_threads=num_threads,
            **extra,
        )
        self.mode = mode
        self.model = model
        self.read = tuple(dict.fromkeys([*([] if only_watch else model.main.outputs), *watch]))

    def _feed(self, sample: np.ndarray) -> np.ndarray:
        return fit_input(sample, self.input)

    def run(self, sample: np.ndarray, raw: bool = False) -> dict[int, np.ndarray]:
        """Invoke on one sample; returns {tensor index: values} for the outputs and watches.

        By default the values are real-valued copies. With raw=True they are the stored values
        (quantized where the tensor is), as zero-copy views valid only until the next run.
        """
        interp = self.interpreter
        interp.set_tensor(self.input.index, self._feed(sample))
        interp.invoke()
        if raw:
            return {index: interp.tensor(index)() for index in self.read}
        values = {}
        for index in self.read:
            stored = interp.get_tensor(index)
            q = self.model.tensor(index).quantization
            values[index] = q.dequantize(stored) if q is not None else stored
        return values
