"""Representational similarity analysis: correlate a model's and people's similarity matrices.

Only the strict upper triangles are compared (the diagonal and the mirror half carry no extra
information). Spearman is Pearson on ranks, ties given their average rank.

A model's similarity matrix (RSM) over m objects is built from its embeddings in one of three ways:
- `dot`: `S_ij = x_i . x_j`; `cosine`: the same on unit-normalised rows;
- `triplet_softmax` (as in the SPoSE papers): `S_ij` is the mean over every third object k of the
  probability that i and j are chosen as the most similar pair of the triplet (i, j, k), i.e. that k
  is the odd one out, `softmax([x_i.x_j, x_i.x_k, x_j.x_k] / T)_0`. It is the similarity the model's
  own triplet choices imply, in [0, 1]; the diagonal is set to 1. Cost O(m^3): meant for the small
  matrices people rate (48 objects), not for all 1,854.

Confidence intervals resample **objects** with replacement (B times); a resampled matrix keeps the
pairs of two different draws whose objects differ (the pair of an object with a copy of itself would
be a diagonal entry), and the 2.5 / 97.5 percentiles of the B correlations form the 95 % interval.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from aligned import odd_one_out

RSM_KINDS = ("dot", "cosine", "triplet_softmax")


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


@functools.partial(jax.jit, static_argnames="chunk")
def _triplet_softmax(dots, temperature, chunk):
  m = dots.shape[0]
  s = dots / temperature
  eye = jnp.eye(m, dtype=bool)

  def rows(i):  # [chunk] rows i of S: p(k odd | i, j, k) summed over k not in {i, j}
    s_ij = s[i][:, :, None]  # [c, m(j), 1]
    s_ik = s[i][:, None, :]  # [c, 1, m(k)]
    s_jk = s[None, :, :]  # [1, m(j), m(k)]
    p = jax.nn.softmax(jnp.stack(jnp.broadcast_arrays(s_ij, s_ik, s_jk), -1), axis=-1)[..., 0]
    valid = ~eye[i][:, :, None] & ~eye[i][:, None, :] & ~eye[None, :, :]  # k != i, k != j
    return jnp.sum(jnp.where(valid, p, 0.0), axis=-1)

  starts = jnp.arange(0, m, chunk)
  out = jax.lax.map(lambda start: rows(jnp.minimum(start + jnp.arange(chunk), m - 1)), starts)
  return out.reshape(-1, m)[:m] / max(m - 2, 1)


def triplet_softmax_similarity(x: np.ndarray, temperature: float = 1.0, chunk: int = 8) -> np.ndarray:
  """[m, d] embeddings -> [m, m] mean probability that i, j are the chosen pair over third objects k.

  Example:
    >>> import numpy as np
    >>> x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]])
    >>> s = triplet_softmax_similarity(x)  # one triplet: S_01 = p(pair 01), the choice probability
    >>> bool(np.isclose(s[0, 1], np.exp(1.0) / (np.exp(1.0) + np.exp(0.0) + np.exp(0.1))))
    True
  """
  x = jnp.asarray(x, jnp.float32)
  if x.shape[0] < 3:
    raise ValueError(f"triplet_softmax needs at least 3 objects, got {x.shape[0]}")
  matrix = np.asarray(_triplet_softmax(x @ x.T, temperature, chunk), np.float64)
  np.fill_diagonal(matrix, 1.0)
  return matrix


def model_rsm(x: np.ndarray, kind: str = "dot", temperature: float = 1.0) -> np.ndarray:
  """[m, d] embeddings -> [m, m] similarity matrix: `dot`, `cosine` or `triplet_softmax`."""
  if kind == "triplet_softmax":
    return triplet_softmax_similarity(x, temperature)
  if kind not in RSM_KINDS:
    raise ValueError(f"unknown RSM kind {kind!r}; expected one of {RSM_KINDS}")
  return np.asarray(odd_one_out.similarity_matrix(jnp.asarray(x, jnp.float32), kind), np.float64)


def _rank_rows(values: np.ndarray) -> np.ndarray:
  """Average ranks along the last axis (ties share their mean rank), vectorised over rows."""
  return scipy.stats.rankdata(values, axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  a = a - a.mean(axis=-1, keepdims=True)
  b = b - b.mean(axis=-1, keepdims=True)
  denominator = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(denominator > 0, (a * b).sum(-1) / np.where(denominator > 0, denominator, 1.0), np.nan)


def bootstrap_rsa(
  model_similarity: np.ndarray, human_similarity: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> dict:
  """95 % bootstrap intervals (objects resampled) of the Spearman and Pearson RSA correlations.

  Returns:
    dict with `spearman_ci95`, `pearson_ci95` ([low, high]) and `n_boot`; resamples whose matrix is
    constant on one side (a correlation is undefined) are skipped.
  """
  model_similarity, human_similarity = np.asarray(model_similarity), np.asarray(human_similarity)
  if model_similarity.shape != human_similarity.shape:
    raise ValueError(f"matrix shapes differ: {model_similarity.shape} vs {human_similarity.shape}")
  m = len(model_similarity)
  rng = np.random.default_rng(seed)
  a_pos, b_pos = np.triu_indices(m, k=1)
  spearmans, pearsons = [], []
  for start in range(0, n_boot, 100):  # batches of resamples: vectorised ranks and correlations
    draws = rng.integers(0, m, size=(min(100, n_boot - start), m))
    i, j = draws[:, a_pos], draws[:, b_pos]  # [B, pairs] object of each end of each pair
    model = model_similarity[i, j]
    human = human_similarity[i, j]
    same = i == j  # an object paired with its own copy: a diagonal entry, not a pair
    for r in range(len(draws)):
      keep = ~same[r]
      spearmans.append(_pearson_rows(_rank_rows(model[r, keep]), _rank_rows(human[r, keep])))
      pearsons.append(_pearson_rows(model[r, keep], human[r, keep]))
  spearmans, pearsons = np.asarray(spearmans), np.asarray(pearsons)

  def interval(values):
    values = values[np.isfinite(values)]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))] if len(values) else None

  return {"spearman_ci95": interval(spearmans), "pearson_ci95": interval(pearsons), "n_boot": int(n_boot)}
