"""PNG charts: compare (profiles) and the personalization sweep.

Importing this module registers them in `edgeprune.charts` (where matplotlib is installed), so
the operations that draw them find them by name; matplotlib itself is imported when one draws.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path
from typing import Any

from .. import charts
from .._io import atomic_write_bytes


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    _pyplot().close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def plot_compare(result: dict[str, Any], path: str | os.PathLike) -> Path:
    """Ratios B / A of every total, and per-op effective MACs of both when the graphs match."""
    plt = _pyplot()
    rows = [r for r in result["totals"] if r["ratio"] is not None]
    panels = 2 if result["ops"] else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.0 * panels, 4.2), dpi=110, squeeze=False)
    ax = axes[0][0]
    ax.barh([r["metric"] for r in rows], [r["ratio"] for r in rows], color="tab:blue")
    ax.axvline(1.0, color="grey", linestyle=":")
    ax.invert_yaxis()
    ax.set_xlabel("B / A")
    ax.set_title(f"B: {Path(result['b']).name}\nvs A: {Path(result['a']).name}", fontsize=9)
    if result["ops"]:
        ax = axes[0][1]
        xs = range(len(result["ops"]))
        a = [r["effective_macs"][0] or 0 for r in result["ops"]]
        b = [r["effective_macs"][1] or 0 for r in result["ops"]]
        ax.bar([x - 0.2 for x in xs], a, width=0.4, label="A")
        ax.bar([x + 0.2 for x in xs], b, width=0.4, label="B")
        ax.set_xticks(list(xs), [str(r["op"]) for r in result["ops"]], fontsize=7)
        ax.set_xlabel("op index (ops with MACs or weights)")
        ax.set_ylabel("effective MACs")
        ax.set_title("per op", fontsize=9)
        ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(report: dict[str, Any], path: str | os.PathLike) -> Path:
    """What each selection rule saw along a personalization sweep (a `Report.to_dict()`), the
    chosen point marked."""
    plt = _pyplot()
    candidates = report["candidates"]
    xs = [c["sparsity"] for c in candidates]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(xs, [c["agreement"] for c in candidates], "o-", label="agreement before pruning")
    ax.plot(xs, [c["agreement_lower"] for c in candidates], ":", label="its 95 % lower bound")
    ax.plot(xs, [c["confidence"] for c in candidates], "s-", label="mean confidence")
    for key, label in (
        ("estimated_accuracy", "estimated accuracy (no labels)"),
        ("labelled_accuracy", "labelled accuracy"),
        ("test_accuracy", "test accuracy"),
    ):
        values = [c[key] for c in candidates]
        if values[0] is not None:
            ax.plot(xs, values, "^--", label=label)
    chosen = candidates[report["chosen"]]["sparsity"]
    ax.axvline(chosen, color="grey", linestyle=":", label=f"chosen ({report['rule']})")
    ax.set_xlabel("requested sparsity")
    ax.set_ylim(0, 1.02)
    ax.set_title("Personalization sweep")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


if importlib.util.find_spec("matplotlib") is not None:
    charts.register("compare", plot_compare)
    charts.register("sweep", plot_sweep)
