"""The report's plots as matplotlib Figures: RSMs by category, Levels accuracy, reliability, entropy scatter.

Each `plot_*` function takes `aligned.report.Run`s (their `results` and `arrays`), writes one PNG
atomically and returns the Figure; `make_plots` draws every plot some run has data for and says why the
others are missing (`make_figures`: the same, returning the Figures by name).

Backend-neutral, like `aligned.plots`: figures are built with the object-oriented API
(`matplotlib.figure.Figure`), never through pyplot, and nothing here calls `matplotlib.use`, so
importing this module leaves a notebook's (inline) backend as it was; `Figure.savefig` writes the PNGs
without pyplot or a display. The Figures are `aligned.plots.NotebookFigure`s: a notebook shows them
inline (`display(figure)`, or a cell's last expression) with or without the inline backend active. No
pyplot registry holds them, so nothing needs closing.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.cluster.hierarchy
import scipy.spatial.distance
import scipy.stats
from matplotlib.figure import Figure

from aligned.artifacts import atomic_path
from aligned.data.levels import LEVEL_NAMES, LEVELS
from aligned.paths import as_path
from aligned.plots import NotebookFigure


def _save(figure: Figure, path: str | os.PathLike) -> Figure:
  with atomic_path(path) as tmp:
    figure.savefig(tmp, format="png", dpi=110)
  return figure


def _rank_image(matrix: np.ndarray) -> np.ndarray:
  """Off-diagonal entries as percentile ranks in [0, 1] (scales of dot, cosine and 1 - d differ)."""
  matrix = np.asarray(matrix, np.float64)
  off = ~np.eye(len(matrix), dtype=bool)
  image = np.full(matrix.shape, np.nan)
  image[off] = (scipy.stats.rankdata(matrix[off]) - 1) / max(off.sum() - 1, 1)
  return image


def _category_order(human: np.ndarray, categories: np.ndarray) -> np.ndarray:
  """Rows grouped by category (alphabetical, "other" last); inside a group, in the leaf order of an
  average-linkage clustering of the human dissimilarities, so related objects sit together."""
  distance = np.max(human) - np.asarray(human, np.float64)
  np.fill_diagonal(distance, 0.0)
  leaves = scipy.cluster.hierarchy.leaves_list(
    scipy.cluster.hierarchy.linkage(scipy.spatial.distance.squareform(distance, checks=False), "average")
  )
  position = np.empty(len(leaves), np.int64)
  position[leaves] = np.arange(len(leaves))
  groups = sorted(set(categories.tolist()), key=lambda c: (c == "other", c))
  rank = np.array([groups.index(c) for c in categories.tolist()])
  return np.lexsort((position, rank))


def plot_rsms(runs, path) -> Figure:
  """Human RSM and each model's over the same objects, rows sorted by category, side by side.

  Returns the Figure: one axis per matrix (human first), then the shared colorbar's.
  """
  first = next(run for run in runs if "rsm_human" in run.arrays)
  human = first.arrays["rsm_human"]
  categories = first.arrays.get("rsm_categories", np.full(len(human), "objects"))
  order = _category_order(human, categories)
  panels = [("human", human, None)] + [
    (run.name, run.arrays["rsm_model"], run.results.get("rsa_spearman"))
    for run in runs
    if "rsm_model" in run.arrays
  ]
  size = 3.6
  figure = NotebookFigure(figsize=(size * len(panels) + 2.4, size + 0.8), layout="constrained")
  axes = figure.subplots(1, len(panels), squeeze=False)
  sorted_categories = categories[order]
  starts = np.flatnonzero(np.r_[True, sorted_categories[1:] != sorted_categories[:-1]])
  ends = np.r_[starts[1:], len(order)]
  for k, (axis, (name, matrix, rho)) in enumerate(zip(axes[0], panels, strict=True)):
    image = axis.imshow(_rank_image(np.asarray(matrix)[np.ix_(order, order)]), cmap="viridis", vmin=0, vmax=1)
    for s in starts[1:]:
      axis.axhline(s - 0.5, color="white", lw=0.7)
      axis.axvline(s - 0.5, color="white", lw=0.7)
    if k == 0:
      axis.set_yticks((starts + ends - 1) / 2, sorted_categories[starts], fontsize=7)
    else:
      axis.set_yticks([])
    axis.set_xticks([])
    axis.set_title(name if rho is None else f"{name}\nSpearman {rho:.3f}", fontsize=9)
  figure.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="similarity (percentile rank)")
  figure.suptitle(f"RSMs of {len(human)} THINGS objects, sorted by category (diagonal blank)")
  return _save(figure, path)


def plot_levels_accuracy(runs, path) -> Figure:
  """Grouped bars per abstraction level (95 % CI), the human noise ceiling and chance drawn.

  Returns the Figure (one axis).
  """
  with_levels = [run for run in runs if "levels" in run.results]
  figure = NotebookFigure(figsize=(2.2 + 1.6 * len(LEVELS) * max(1, len(with_levels)) / 2, 4.2))
  axis = figure.subplots()
  width = 0.8 / len(with_levels)
  x = np.arange(len(LEVELS))
  for i, run in enumerate(with_levels):
    entries = [run.results["levels"]["per_level"][lv] for lv in LEVELS]
    acc = np.array([np.nan if e["accuracy"] is None else e["accuracy"] for e in entries])
    ci = np.array([e["accuracy_ci95"] or [np.nan, np.nan] for e in entries])
    axis.bar(
      x - 0.4 + width * (i + 0.5),
      100 * acc,
      width * 0.9,
      label=run.name,
      yerr=100 * np.abs(ci.T - acc),
      capsize=3,
    )
  reference = with_levels[0].results["levels"]["per_level"]
  for j, level in enumerate(LEVELS):
    ceiling = reference[level].get("noise_ceiling")
    if ceiling is None:
      continue
    low, high = reference[level]["noise_ceiling_ci95"]
    axis.fill_between([j - 0.45, j + 0.45], 100 * low, 100 * high, color="black", alpha=0.12, lw=0)
    axis.plot(
      [j - 0.45, j + 0.45],
      [100 * ceiling] * 2,
      color="black",
      lw=2,
      label="noise ceiling" if j == 0 else None,
    )
  axis.axhline(100 / 3, color="gray", ls="--", lw=1, label="chance")
  axis.set_xticks(x, [f"{LEVEL_NAMES[lv]}\n({lv})" for lv in LEVELS])
  axis.set_ylabel("odd-one-out accuracy (%)")
  axis.set_ylim(0, 100)
  axis.legend(fontsize=8, loc="upper right")
  axis.set_title("Levels: accuracy per abstraction level")
  figure.tight_layout()
  return _save(figure, path)


def _uncertainty(run, prefix: str) -> dict | None:
  return (
    run.results.get("uncertainty")
    if prefix == "things_"
    else run.results.get("levels", {}).get("uncertainty")
  )


def _reliability_panels(runs):
  panels = []
  for prefix, data in (("things_", "THINGS"), ("levels_", "Levels")):
    lines = [
      run for run in runs if f"{prefix}reliability_confidence" in run.arrays and _uncertainty(run, prefix)
    ]
    if lines:
      panels.append((data, prefix, lines))
  return panels


def plot_reliability(runs, path) -> Figure:
  """Reliability diagrams: accuracy against confidence per bin, one line per run, a panel per data set.

  Marker area grows with the bin's share of responses. Returns the Figure (one axis per data set).
  """
  panels = _reliability_panels(runs)
  figure = NotebookFigure(figsize=(5.2 * len(panels), 4.8))
  axes = figure.subplots(1, len(panels), squeeze=False)
  for axis, (data, prefix, lines) in zip(axes[0], panels, strict=True):
    axis.plot([1 / 3, 1], [1 / 3, 1], color="gray", ls="--", lw=1, label="calibrated")
    for i, run in enumerate(lines):
      conf = run.arrays[f"{prefix}reliability_confidence"]
      acc = run.arrays[f"{prefix}reliability_accuracy"]
      n = run.arrays[f"{prefix}reliability_n"]
      keep = n > 0
      color = f"C{i}"
      ece = _uncertainty(run, prefix)["ece"]
      axis.plot(conf[keep], acc[keep], "-", color=color, label=f"{run.name} (ECE {ece:.3f})")
      axis.scatter(conf[keep], acc[keep], s=8 + 120 * n[keep] / n.sum(), color=color, zorder=3)
    axis.set_xlim(0.3, 1.02)
    axis.set_ylim(0.0, 1.02)
    axis.set_xlabel("model confidence (max choice probability, CV temperature)")
    axis.set_ylabel("fraction of responses choosing the model's pair")
    axis.set_title(f"{data}: reliability diagram")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
  figure.tight_layout()
  return _save(figure, path)


def _entropy_panels(runs):
  panels = []
  for run in runs:
    for prefix, data in (("things_", "THINGS"), ("levels_", "Levels")):
      if f"{prefix}model_entropy" not in run.arrays:
        continue
      multi = run.arrays[f"{prefix}responses"] >= 2
      if multi.sum() >= 3:
        panels.append((run, prefix, data, multi))
  return panels


def plot_entropy_scatter(runs, path) -> Figure:
  """Model entropy against human entropy per triplet (triplets with >= 2 responses), one panel per run.

  Returns the Figure: a grid of up to 3 columns, the unused cells' axes switched off.
  """
  panels = _entropy_panels(runs)
  columns = min(len(panels), 3)
  rows = -(-len(panels) // columns)
  figure = NotebookFigure(figsize=(4.4 * columns, 4.2 * rows))
  axes = figure.subplots(rows, columns, squeeze=False)
  rng = np.random.default_rng(0)
  for axis, (run, prefix, data, multi) in zip(axes.flat, panels, strict=False):
    human = run.arrays[f"{prefix}human_entropy"][multi]
    model = run.arrays[f"{prefix}model_entropy"][multi]
    # Human entropies take few distinct values (counts of a few people): jitter them a little.
    jitter = rng.uniform(-0.015, 0.015, size=len(human))
    axis.scatter(human + jitter, model, s=6, alpha=0.35, lw=0)
    axis.plot([0, np.log(3)], [0, np.log(3)], color="gray", ls="--", lw=1)
    u = _uncertainty(run, prefix)
    rho = u.get("entropy_spearman") if u else None
    axis.set_title(f"{run.name} ({data})" + ("" if rho is None else f"\nSpearman {rho:.3f}"), fontsize=9)
    axis.set_xlabel("human choice entropy (nats)")
    axis.set_ylabel("model choice entropy (nats)")
    axis.set_xlim(-0.05, np.log(3) + 0.05)
    axis.set_ylim(-0.05, np.log(3) + 0.05)
  for axis in list(axes.flat)[len(panels) :]:
    axis.axis("off")
  figure.tight_layout()
  return _save(figure, path)


def make_plots(runs, folder: str | os.PathLike) -> tuple[dict[str, str], dict[str, str]]:
  """Draws every plot some run has data for. Returns ({name: file}, {name: why it is missing})."""
  drawn, missing = _draw_all(runs, folder)
  return {name: file for name, (file, _) in drawn.items()}, missing


def make_figures(runs, folder: str | os.PathLike) -> tuple[dict[str, Figure], dict[str, str]]:
  """`make_plots` (the same files written) for a notebook: returns ({name: Figure}, {name: why it is
  missing})."""
  drawn, missing = _draw_all(runs, folder)
  return {name: figure for name, (_, figure) in drawn.items()}, missing


def _draw_all(runs, folder: str | os.PathLike) -> tuple[dict[str, tuple[str, Figure]], dict[str, str]]:
  folder = as_path(folder)
  made, missing = {}, {}
  plans = [
    (
      "RSMs by category",
      "rsm.png",
      plot_rsms,
      any("rsm_human" in run.arrays for run in runs),
      "no run has an RSM (evaluate with --config.rsm)",
    ),
    (
      "Levels accuracy",
      "levels_accuracy.png",
      plot_levels_accuracy,
      any("levels" in run.results for run in runs),
      "no run has Levels results",
    ),
    (
      "reliability diagrams",
      "reliability.png",
      plot_reliability,
      bool(_reliability_panels(runs)),
      "no run has uncertainty results",
    ),
    (
      "entropy scatter",
      "entropy.png",
      plot_entropy_scatter,
      bool(_entropy_panels(runs)),
      "no run has triplets with two or more responses (human entropy is 0 for a single response)",
    ),
  ]
  for name, file, draw, available, why in plans:
    if available:
      made[name] = (file, draw(runs, folder / file))
    else:
      missing[name] = why
  return made, missing
