"""Models compiled for the Coral Edge TPU: recognised, and named with what to do instead.

`edgetpu_compiler` moves every layer it can map into one custom op, `edgetpu-custom-op`, whose
weights and activations are an opaque blob only libedgetpu reads. Nothing in such a model can be
pruned, recorded or counted by edgeprune: the CPU model it was compiled from can, and compiling
that again gives the Edge TPU model back.
"""

from __future__ import annotations

from .errors import UnsupportedError
from .model import Model, Operator

CUSTOM_OP = "edgetpu-custom-op"
WHAT_TO_DO = (
    "prune or personalize the CPU model it was compiled from, then compile that with "
    "edgetpu_compiler; run it on a Coral with --delegate edgetpu"
)


def compiled_ops(model: Model) -> list[Operator]:
    """The model's Edge TPU custom ops (empty for a model that runs on a CPU)."""
    return [op for op in model.operators if op.custom and op.opcode == CUSTOM_OP]


def refuse(model: Model, action: str) -> None:
    """Raise one line if `model` is compiled for the Edge TPU: `action` cannot see inside."""
    ops = compiled_ops(model)
    if ops:
        raise UnsupportedError(
            f"{model.name} is compiled for the Edge TPU: its layers are inside {len(ops)} "
            f"{CUSTOM_OP} op(s), where edgeprune cannot {action}; {WHAT_TO_DO}"
        )


def note(model: Model) -> str | None:
    """What a count of the model's weights or MACs misses, if it is compiled for the Edge TPU."""
    ops = compiled_ops(model)
    if not ops:
        return None
    return (
        f"compiled for the Edge TPU: the weights and MACs inside {len(ops)} {CUSTOM_OP} op(s) "
        f"are not visible, so not counted here; profile the CPU model it was compiled from"
    )


def check_delegate(model: Model, delegate: str) -> None:
    """Raise one line, instead of the runtime's unresolved-custom-op message, when a model
    compiled for the Edge TPU is to run without the Edge TPU delegate."""
    if compiled_ops(model) and delegate != "edgetpu":
        raise UnsupportedError(
            f"{model.name} is compiled for the Edge TPU ({CUSTOM_OP}): run it with --delegate "
            "edgetpu on a board with a Coral and libedgetpu, or use the CPU model it was "
            "compiled from"
        )
