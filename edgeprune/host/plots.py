"""Plots for reports (matplotlib, host extra)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .._io import atomic_write_bytes  # noqa: E402
from ..personalize import Report  # noqa: E402


def plot_sweep(report: Report, path: Path) -> Path:
    """What each rule saw along the sparsity sweep, with the chosen point marked."""
    xs = [c.sparsity for c in report.candidates]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(xs, [c.agreement for c in report.candidates], "o-", label="agreement with source")
    ax.plot(xs, [c.confidence for c in report.candidates], "s-", label="mean confidence")
    for key, label in (
        ("labelled_accuracy", "labelled accuracy"),
        ("test_accuracy", "test accuracy"),
    ):
        values = [getattr(c, key) for c in report.candidates]
        if values[0] is not None:
            ax.plot(xs, values, "^--", label=label)
    ax.axvline(report.best.sparsity, color="grey", linestyle=":", label=f"chosen ({report.rule})")
    ax.set_xlabel("requested sparsity")
    ax.set_ylim(0, 1.02)
    ax.set_title("Personalization sweep")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
    return path
