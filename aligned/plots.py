"""Plots of run artifacts (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from aligned.artifacts import atomic_path  # noqa: E402


def plot_cv_curve(summary: list[dict], best: dict, path: str | os.PathLike, title: str = "") -> None:
  """Mean validation loss (with its standard error over folds, where given) and accuracy against
  lambda, one line per learning rate."""
  figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
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
  with atomic_path(path) as tmp:
    figure.savefig(tmp, format="png", dpi=120)
  plt.close(figure)


def plot_training_curves(metrics_jsonl: str | os.PathLike, path: str | os.PathLike, title: str = "") -> None:
  """Training loss and triplet accuracy against step, with the evaluations' (val/..., human/...)
  accuracies, from a run's metrics.jsonl."""
  import json

  train, evals = [], []
  for line in open(metrics_jsonl):
    record = json.loads(line)
    (train if "loss" in record else evals).append(record)
  figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
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
  with atomic_path(path) as tmp:
    figure.savefig(tmp, format="png", dpi=120)
  plt.close(figure)
