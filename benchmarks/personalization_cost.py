"""Table 1 analogue: what one personalization costs against one backprop fine-tuning.

Same source model (FSDD, speaker george held out, float32) and the same 400 adaptation
recordings; each method runs in its own process, side by side in one run, and we report peak
memory, wall time and multiply-adds as ratios. The paper claims Fine-Pruning needs about
1/batch-size of backprop's memory and about half its MACs.

    python benchmarks/personalization_cost.py

MACs: one forward pass of the model costs M (`edgeprune profile`); personalization runs
N + R·(C + 4) forward passes (the recording pass over N samples, the source and each of C
candidates on the R-sample reservoir, the re-collection after pruning and the two final-layer
stages); backprop costs ≈ 3·M per sample and epoch (forward, and a backward pass of about twice
the forward), the usual estimate.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common, fsdd  # noqa: E402
from edgeprune.model import Model  # noqa: E402
from edgeprune.personalize import DEFAULT_SPARSITIES  # noqa: E402
from edgeprune.profile import profile  # noqa: E402

SPEAKER, EPOCHS, BATCH, RESERVOIR = "george", 10, 64, 256
FINETUNE = """
import sys, numpy as np
from benchmarks import baselines
data = np.load(sys.argv[2])
baselines.finetune(sys.argv[1], (data["x"], data["y"]), (data["x"][:1], data["y"][:1]), lr=1e-3)
"""


def main() -> int:
    started = time.perf_counter()
    info = common.machine()
    X, digits, names, _ = fsdd.load_fsdd()
    names = np.asarray(names)
    source = fsdd.train_source(SPEAKER, X, digits, list(names))
    x, y = X[names == SPEAKER][:400], digits[names == SPEAKER][:400]
    forward = profile(Model.load(source.float32))["totals"]["macs"]
    rows = {}
    with tempfile.TemporaryDirectory(prefix="cost-") as tmp:
        np.save(Path(tmp) / "x.npy", x)
        np.savez(Path(tmp) / "xy.npz", x=x, y=y)
        commands = {
            "edgeprune personalize (no labels)": [
                sys.executable,
                "-m",
                "edgeprune",
                "personalize",
                str(source.float32),
                str(Path(tmp) / "x.npy"),
                "-o",
                str(Path(tmp) / "p.tflite"),
                "-q",
            ],
            f"backprop fine-tuning, Adam, batch {BATCH}, {EPOCHS} epochs (labels)": [
                sys.executable,
                "-c",
                FINETUNE,
                str(source.float32),
                str(Path(tmp) / "xy.npz"),
            ],
        }
        for name, argv in commands.items():
            wall, cpu, rss, _ = common.run_child(argv)
            rows[name] = (wall, cpu, rss)
    passes = len(x) + RESERVOIR * (len(DEFAULT_SPARSITIES) + 4)
    macs = {
        "edgeprune personalize (no labels)": passes * forward,
        f"backprop fine-tuning, Adam, batch {BATCH}, {EPOCHS} epochs (labels)": 3
        * forward
        * len(x)
        * EPOCHS,
    }
    names_ = list(rows)
    ours, theirs = rows[names_[0]], rows[names_[1]]
    lines = [
        "## personalization_cost: one personalization vs one backprop fine-tuning (Table 1)",
        "",
        f"- Command: `{common.command()}`",
        f"- Run at: {common.now()}; took {time.perf_counter() - started:.0f} s",
        common.machine_markdown(info),
        f"- Model: FSDD source without {SPEAKER}, float32, {forward:,} MACs per forward pass; "
        f"{len(x)} adaptation recordings; each method in its own process (peak RSS of that "
        "process; the backprop process includes TensorFlow itself, which is what it costs).",
        "",
        "| method | wall s | CPU s | peak RSS MiB | MACs (estimate) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (wall, cpu, rss) in rows.items():
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {rss / 2**20:.0f} | {macs[name]:.3g} |")
    lines += [
        "",
        f"Ratios, personalization / backprop: memory {ours[2] / theirs[2]:.2f}, wall time "
        f"{ours[0] / theirs[0]:.2f}, MACs {macs[names_[0]] / macs[names_[1]]:.2f} (the paper: "
        f"memory ≈ 1/batch size = {1 / BATCH:.3f}, MACs ≈ 0.5).",
    ]
    common.publish("personalization_cost", "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
