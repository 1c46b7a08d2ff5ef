"""Plots of run artifacts (teacher CV curve, student training curves) as matplotlib Figures.

Backend-neutral: figures are built with the object-oriented API (`matplotlib.figure.Figure`), never
through pyplot, and nothing here calls `matplotlib.use`, so importing this module leaves a notebook's
backend (inline in Jupyter and Colab) as it was. `Figure.savefig` renders the PNG without pyplot or a
display, so the files are written headless as well. Each function writes its PNG atomically and
returns the Figure, a `NotebookFigure`: in a notebook, `display(figure)` or the figure as a cell's last
expression shows it inline as a PNG, whether or not the inline backend has been activated yet (a plain
Figure shows as text until `%matplotlib inline` or a first pyplot figure registers matplotlib's display
formatters). No pyplot figure registry is involved, so nothing needs closing: an unreferenced Figure is
freed like any Python object.
"""

from __future__ import annotations

import io
import json
import os

from matplotlib.figure import Figure

from aligned.paths import as_path, atomic_path


class NotebookFigure(Figure):
  """A plain `matplotlib.figure.Figure` that IPython displays as a PNG (`_repr_png_`) with no pyplot
  and no backend set up; where the inline backend's formatters are registered, they take precedence."""

  def _repr_png_(self) -> bytes:
    buffer = io.BytesIO()
    self.savefig(buffer, format="png", bbox_inches="tight")  # as the inline backend draws figures
    return buffer.getvalue()


def _save(figure: Figure, path: str | os.PathLike, dpi: int) -> Figure:
  with atomic_path(path) as tmp:  # a local temporary file, renamed or uploaded whole
    figure.savefig(tmp, format="png", dpi=dpi)
  return figure


def plot_cv_curve(summary: list[dict], best: dict, path: str | os.PathLike, title: str = "") -> Figure:
  """Mean validation loss (with its standard error over folds, where given) and accuracy against
  lambda, one line per learning rate. Writes the PNG to `path`; returns the Figure (two axes)."""
  figure = NotebookFigure(figsize=(10, 4))
  loss_axis, accuracy_axis = figure.subplots(1, 2)
  for lr in sorted({row["learning_rate"] for row in summary}):
    rows = sorted((r for r in summary if r["learning_rate"] == lr), key=lambda r: r["lam"])
    lams = [max(r["lam"], 1e-12) for r in rows]
    sem = [r["val_loss_sem"] for r in rows] if all("val_loss_sem" in r for r in rows) else None
    loss_axis.errorbar(lams, [r["val_loss"] for r in rows], yerr=sem, fmt="o-", capsize=3, label=f"lr {lr:g}")
    accuracy_axis.plot(lams, [100 * r["val_accuracy"] for r in rows], "o-", label=f"lr {lr:g}")
  loss_axis.axvline(
    max(best["lam"], 1e-12), color="gray", linestyle="--", label=f"chosen lambda {best['lam']:g}"
  )
  for axis, label in ((loss_axis, "validation loss"), (accuracy_axis, "validation accuracy (%)")):
    axis.set_xscale("log")
    axis.set_xlabel("lambda")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
  loss_axis.legend()
  figure.suptitle(title or "teacher cross-validation (object-disjoint folds)")
  figure.tight_layout()
  return _save(figure, path, dpi=120)


def plot_training_curves(
  metrics_jsonl: str | os.PathLike, path: str | os.PathLike, title: str = ""
) -> Figure:
  """Training loss and triplet accuracy against step, with the evaluations' (val/..., human/...)
  accuracies, from a run's metrics.jsonl. Writes the PNG to `path`; returns the Figure (two axes)."""
  train, evals = [], []
  with as_path(metrics_jsonl).open("r") as lines:
    for line in lines:
      record = json.loads(line)
      (train if "loss" in record else evals).append(record)
  figure = NotebookFigure(figsize=(10, 4))
  loss_axis, accuracy_axis = figure.subplots(1, 2)
  series = sorted({k.rsplit("/", 1)[0] for r in evals for k in r if k.endswith(("/loss", "/accuracy"))})
  colour = {name: f"C{i + 1}" for i, name in enumerate(series)}  # the same series, the same colour
  if train:
    steps = [r["step"] for r in train]
    loss_axis.plot(steps, [r["loss"] for r in train], color="C0", label="train")
    accuracy_axis.plot(steps, [100 * r["accuracy"] for r in train], color="C0", label="train (batch)")
  for name in series:
    for axis, key, scale in ((loss_axis, f"{name}/loss", 1), (accuracy_axis, f"{name}/accuracy", 100)):
      rows = [r for r in evals if key in r]
      if rows:
        axis.plot(
          [r["step"] for r in rows], [scale * r[key] for r in rows], "o-", color=colour[name], label=name
        )
  for axis, label in ((loss_axis, "loss"), (accuracy_axis, "triplet accuracy (%)")):
    axis.set_xlabel("step")
    axis.set_ylabel(label)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
  figure.suptitle(title or "student fine-tuning")
  figure.tight_layout()
  return _save(figure, path, dpi=120)
