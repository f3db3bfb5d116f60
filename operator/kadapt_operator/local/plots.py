"""Charts that ``kadapt run`` and ``kadapt compare`` write next to their results (matplotlib).

People read a curve faster than a column of numbers: did the loss still fall, did the eval
metric level off, which strategy buys the most accuracy per unit of cost. matplotlib is an
optional dependency (the ``plots`` extra): without it the runs still work and say how to get
the charts. Drawing uses the non-interactive Agg backend, so it works without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The training curve's file in a run directory.
CURVE_FILE = "training-curve.png"
#: Metrics drawn on the curve's lower panel, in order of preference (the first present wins).
CURVE_METRICS = ("accuracy", "macro_f1", "perplexity")
INSTALL_HINT = "pip install 'kadapt[plots]' (matplotlib) to get it"


def plotting_available() -> bool:
    """True when matplotlib can be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def training_curve(points: Sequence[Mapping[str, float]], path: Path, title: str) -> Path:
    """Draw the loss (training and validation) and the eval metric per evaluation into a PNG.

    ``points`` are the trainer's curve (``ProgressReport.curve``): one per evaluation with
    ``step``, ``loss`` (mean training loss since the previous point) and the evaluation's metrics.

    Raises:
        ValueError: when there is no point to draw.
    """
    if not points:
        raise ValueError("the run reported no training-curve point (no step finished)")
    plt = _pyplot()
    steps = [p["step"] for p in points]
    metric = next((m for m in CURVE_METRICS if any(m in p for p in points)), None)
    fig, axes = plt.subplots(2 if metric else 1, 1, sharex=True, figsize=(7, 6 if metric else 3.5), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(steps, [p["loss"] for p in points], marker="o", label="training loss")
    if any("eval_loss" in p for p in points):
        with_eval = [p for p in points if "eval_loss" in p]
        loss_ax.plot([p["step"] for p in with_eval], [p["eval_loss"] for p in with_eval], marker="s", label="eval_loss")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    loss_ax.grid(alpha=0.3)
    loss_ax.set_title(title)
    if metric:
        with_metric = [p for p in points if metric in p]
        metric_ax = axes[1][0]
        metric_ax.plot([p["step"] for p in with_metric], [p[metric] for p in with_metric], marker="o", color="C2")
        metric_ax.set_ylabel(metric)
        metric_ax.grid(alpha=0.3)
    axes[-1][0].set_xlabel("optimizer step")
    return _save(fig, plt, path)


def accuracy_vs_cost(rows: Sequence[Mapping[str, Any]], path: Path, title: str, currency: str) -> Path:
    """One point per strategy (cost on x, accuracy on y), the best per unit of cost marked.

    ``rows`` need ``strategy``, ``accuracy``, ``cost`` and ``best_value`` (True for the marked one).

    Raises:
        ValueError: when no row has both an accuracy and a cost.
    """
    usable = [r for r in rows if r.get("accuracy") is not None and r.get("cost") is not None]
    if not usable:
        raise ValueError("no strategy finished with an accuracy and a cost")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in usable:
        best = bool(row.get("best_value"))
        ax.scatter([row["cost"]], [row["accuracy"]], s=140 if best else 60, marker="*" if best else "o",
                   color="C3" if best else "C0", zorder=3)  # fmt: skip
        label = f"{row['strategy']} (best per {currency})" if best else str(row["strategy"])
        ax.annotate(label, (row["cost"], row["accuracy"]), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel(f"cost ({currency})")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, plt, path)


def _save(fig: Any, plt: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
