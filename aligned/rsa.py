"""Representational similarity analysis: correlate a model's and people's similarity matrices.

Only the strict upper triangles are compared (the diagonal and the mirror half carry no extra
information). Spearman is Pearson on ranks, ties given their average rank.
"""

from __future__ import annotations

import numpy as np
import scipy.stats


def upper_triangle(matrix: np.ndarray) -> np.ndarray:
  """The m (m - 1) / 2 entries above the diagonal of an [m, m] matrix, row by row."""
  matrix = np.asarray(matrix)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"expected a square matrix, got shape {matrix.shape}")
  return matrix[np.triu_indices(len(matrix), k=1)]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  a = np.asarray(a, np.float64) - np.mean(a)
  b = np.asarray(b, np.float64) - np.mean(b)
  denominator = np.sqrt((a * a).sum() * (b * b).sum())
  return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  return pearson(scipy.stats.rankdata(a), scipy.stats.rankdata(b))


def rsa(model_similarity: np.ndarray, human_similarity: np.ndarray) -> dict:
  """Spearman and Pearson correlation between the upper triangles of two [m, m] matrices."""
  if np.shape(model_similarity) != np.shape(human_similarity):
    raise ValueError(
      f"matrix shapes differ: model {np.shape(model_similarity)}, human {np.shape(human_similarity)}"
    )
  a, b = upper_triangle(model_similarity), upper_triangle(human_similarity)
  return {"spearman": spearman(a, b), "pearson": pearson(a, b), "n_pairs": int(len(a))}
