"""What a run shows its user: the per-epoch table, metrics.json/.csv, and the diagnostic pictures.

Pictures use matplotlib's object API (``Figure`` + Agg), never pyplot's global state, so a
training run in a notebook or a server process does not open windows or leak figures.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from edgeport.runtime.atomic import atomic_write_bytes
from edgeport.runtime.preprocess import load_image

__all__ = ["TABLE_COLUMNS", "table_header", "table_row", "write_metrics", "confusion_matrix", "per_class_metrics",
           "plot_curves", "plot_confusion", "plot_top_losses"]

TABLE_COLUMNS = ("epoch", "phase", "train_loss", "val_loss", "accuracy", "error_rate", "time")


def table_header() -> str:
    return f"{'epoch':>5}  {'phase':<8}  {'train_loss':>10}  {'val_loss':>8}  {'accuracy':>8}  {'error_rate':>10}  {'time':>6}"


def table_row(row: dict[str, Any]) -> str:
    return (f"{row['epoch']:>5}  {row['phase']:<8}  {row['train_loss']:>10.4f}  {row['val_loss']:>8.4f}  "
            f"{row['val_accuracy']:>8.4f}  {row['error_rate']:>10.4f}  {row['seconds']:>5.1f}s")


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> None:
    """``metrics.json`` (everything) and ``metrics.csv`` (one row per epoch), both atomically."""
    atomic_write_bytes(out_dir / "metrics.json", lambda fh: fh.write(json.dumps(metrics, indent=2).encode()))
    history = metrics["history"]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]) if history else ["epoch"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_bytes(out_dir / "metrics.csv", lambda fh: fh.write(text.getvalue().encode()))


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Rows: actual class, columns: predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (targets, preds), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, classes: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support per class (0.0 where a class was never predicted / never present)."""
    out = {}
    for i, name in enumerate(classes):
        tp, predicted, actual = matrix[i, i], matrix[:, i].sum(), matrix[i, :].sum()
        out[name] = {"precision": float(tp / predicted) if predicted else 0.0,
                     "recall": float(tp / actual) if actual else 0.0, "support": int(actual)}
    return out


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    atomic_write_bytes(path, lambda fh: fig.savefig(fh, format="png", dpi=100))


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Train/val loss and val accuracy per epoch, a dashed line between phases."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 4))
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [r["train_loss"] for r in history], "o-", label="train loss")
    loss_ax.plot(epochs, [r["val_loss"] for r in history], "o-", label="val loss")
    acc_ax.plot(epochs, [r["val_accuracy"] for r in history], "o-", color="green", label="val accuracy")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for row in history:
            if row["epoch"] > 1 and row["phase"] != history[row["epoch"] - 2]["phase"]:
                ax.axvline(row["epoch"] - 0.5, color="grey", linestyle="--")  # phase boundary
        ax.set_xlabel("epoch")
        ax.legend()
    loss_ax.set_title("loss")
    acc_ax.set_title("validation accuracy")
    _save(fig, path)


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    size = max(4, 0.6 * len(classes) + 2)
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=90)
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="confusion matrix (validation)")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if count > matrix.max() / 2 else "black")
    _save(fig, path)


def plot_top_losses(files: list[Path], targets: np.ndarray, preds: np.ndarray, losses: np.ndarray,
                    probs: np.ndarray, classes: list[str], path: Path, k: int = 9) -> list[dict[str, Any]]:
    """fastai's ``plot_top_losses``: the ``k`` validation images the model got most wrong.

    Returns the listed items (file, actual, predicted, loss, probability of the actual class).
    """
    from matplotlib.figure import Figure

    order = np.argsort(-losses)[:k]
    items = [{"file": str(files[i]), "actual": classes[targets[i]], "predicted": classes[preds[i]],
              "loss": float(losses[i]), "prob_actual": float(probs[i, targets[i]])} for i in order]
    cols = 3
    rows = max(1, -(-len(items) // cols))
    fig = Figure(figsize=(3.2 * cols, 3.4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax, item in zip(axes, items):
        image = load_image(item["file"])
        image.thumbnail((256, 256))
        ax.imshow(np.asarray(image))
        ax.set_title(f"{item['predicted']} / {item['actual']}\nloss {item['loss']:.2f}  p {item['prob_actual']:.2f}",
                     fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle("top losses: predicted / actual, loss, probability of actual")
    _save(fig, path)
    return items
