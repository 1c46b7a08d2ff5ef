"""The teacher: an affine transform of frozen embeddings fit to human odd-one-out choices.

    z = ((x - mean) / std) @ W + b,   s_ij = z_i . z_j  (or cosine),   p = softmax(s / T)

`mean` and `std` are scalars over the training objects' embeddings (as gLocal), constants of the fit.
The trainable parameters are `weights` W [d, d] and `bias` b [d]. Everything here is a pure function
of (params, data); `optimize.py` runs it.

The fit has two steps, so that the penalty's strength is identifiable:
1. W and b at T = 1 (as gLocal). Fitting T jointly would not be: (W, b, T) -> (cW, cb, c^2 T) leaves
   every prediction unchanged and multiplies the identity penalty by c^2, so lambda would only pick
   a rescaling and cross-validation would choose among rescalings.
2. T alone, by the same objective on the same training data (`fit_temperature`, a 1-D search), so
   the teacher's choice probabilities are calibrated. A model that is uncertain where people are
   gets the larger T.

Objectives (per triplet, reduced by per-triplet weights):
- "hard": cross-entropy of the human responses, -sum_k c_k log p_k / sum_k c_k. With one response per
  triplet this is the hard-label cross-entropy of the pair judged most similar.
- "distill" (uncertainty distillation): KL(p_target || p_model) to per-triplet choice distributions
  (response proportions, or a choice model's probabilities), so that the teacher is as uncertain as
  people where they disagree.
Both differ only by a per-triplet constant (the targets' entropy), so the fitted T is the same
1-D minimiser for both: that of the weighted cross-entropy.
Regularisers: "identity", lambda ||W - mean(diag W) I||_F^2 (keeps the backbone's local structure),
or "l2", lambda ||W||_F^2.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from aligned import odd_one_out, uncertainty
from aligned.transform import AffineTransform, apply_affine

Objective = Literal["hard", "distill"]
Regularizer = Literal["identity", "l2"]


@dataclasses.dataclass(frozen=True)
class TripletTargets:
  """Training data for the teacher: index triplets with target choice distributions.

  Attributes:
    triplets: [n, 3] int32 object indices.
    probs: [n, 3] float32 target probability of each pair [01, 02, 12] (response proportions,
      or a model's soft choice distribution).
    weights: [n] float32 per-triplet weight (e.g. number of responses; 0 for padding).
  """

  triplets: np.ndarray
  probs: np.ndarray
  weights: np.ndarray

  def __len__(self) -> int:
    return len(self.triplets)

  def select(self, mask_or_index) -> TripletTargets:
    return TripletTargets(
      self.triplets[mask_or_index], self.probs[mask_or_index], self.weights[mask_or_index]
    )

  @classmethod
  def from_counts(cls, triplets: np.ndarray, counts: np.ndarray) -> TripletTargets:
    """Response counts -> proportions, weighted by the number of responses."""
    n = counts.sum(axis=1, keepdims=True)
    return cls(np.asarray(triplets, np.int32), (counts / n).astype(np.float32), n[:, 0].astype(np.float32))


@dataclasses.dataclass(frozen=True)
class Hyperparams:
  objective: Objective = "distill"
  regularizer: Regularizer = "identity"
  lam: float = 1e-3
  learning_rate: float = 1e-2
  similarity: odd_one_out.Similarity = "dot"


def standardization(x: np.ndarray) -> tuple[float, float]:
  """Scalar mean and std over all entries of the (training objects') embeddings, as gLocal."""
  x = np.asarray(x, np.float64)
  return float(x.mean()), float(x.std())


def init_params(d: int, init_scale: float | None = None) -> dict:
  """W = init_scale * I (default 1 / sqrt(d), so initial similarities are O(1)), b = 0."""
  scale = d**-0.5 if init_scale is None else init_scale
  return {"weights": jnp.eye(d, dtype=jnp.float32) * scale, "bias": jnp.zeros((d,), jnp.float32)}


def transformed(params: dict, x: jax.Array, mean: float, std: float) -> jax.Array:
  """z = ((x - mean) / std) @ W + b for [..., d] embeddings."""
  return apply_affine({"weights": params["weights"], "bias": params["bias"], "mean": mean, "std": std}, x)


def regularization(weights: jax.Array, kind: Regularizer) -> jax.Array:
  """||W - mean(diag W) I||_F^2 ("identity") or ||W||_F^2 ("l2")."""
  if kind == "identity":
    if weights.shape[0] != weights.shape[1]:
      raise ValueError(f"the identity regulariser needs a square W, got {weights.shape}")
    return jnp.sum((weights - jnp.mean(jnp.diag(weights)) * jnp.eye(weights.shape[0])) ** 2)
  if kind == "l2":
    return jnp.sum(weights**2)
  raise ValueError(f"unknown regularizer {kind!r}; expected 'identity' or 'l2'")


def per_triplet_loss(
  sims: jax.Array,
  probs: jax.Array,
  temp: jax.Array,
  objective: Objective,
  neg_entropy: jax.Array | None = None,
) -> jax.Array:
  """[b, 3] model similarities, [b, 3] targets -> [b] loss, through the foundation kernels.

  `neg_entropy` ([b], sum_k p_k log p_k of the constant targets) may be precomputed once per
  dataset: then KL(p || q) = neg_entropy + CE(p, q), which halves the logarithms in the hot loop.
  """
  if objective == "hard":
    return -jnp.sum(probs * odd_one_out.choice_log_probs(sims, temp), axis=-1)
  if objective == "distill":
    if neg_entropy is None:
      return odd_one_out.kl_divergence(sims, target_probs=probs, temperature=temp)
    return neg_entropy - jnp.sum(probs * odd_one_out.choice_log_probs(sims, temp), axis=-1)
  raise ValueError(f"unknown objective {objective!r}; expected 'hard' or 'distill'")


def batch_arrays(data: TripletTargets, n_objects: int) -> dict:
  """Host-side arrays of a batch, with per-dataset constants precomputed for the hot loop.

  `pairs`: flat indices `i * n + j` of the three pairs into an [n, n] matrix (one gather each);
  `neg_entropy`: sum_k p_k log p_k of the targets.
  """
  t = data.triplets.astype(np.int64)
  pairs = np.stack(
    [t[:, 0] * n_objects + t[:, 1], t[:, 0] * n_objects + t[:, 2], t[:, 1] * n_objects + t[:, 2]], 1
  )
  p = data.probs.astype(np.float64)
  plogp = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0)
  return {
    "triplets": data.triplets.astype(np.int32),
    "pairs": pairs.astype(np.int32 if n_objects**2 < 2**31 else np.int64),
    "probs": data.probs.astype(np.float32),
    "neg_entropy": plogp.sum(axis=1).astype(np.float32),
    "weights": data.weights.astype(np.float32),
  }


def _sums(sims: jax.Array, batch: dict, temp: jax.Array, objective: Objective) -> dict:
  """Weighted sums over a batch: loss, weight, and hits (responses whose pair the model predicts,
  ties wrong; for soft targets the expected agreement with one response)."""
  loss = per_triplet_loss(sims, batch["probs"], temp, objective, batch.get("neg_entropy"))
  hits = jnp.sum(odd_one_out.predicted_pair_onehot(sims) * batch["probs"], axis=-1)
  w = batch["weights"]
  return {"loss": jnp.sum(loss * w), "weight": jnp.sum(w), "hits": jnp.sum(hits * w)}


def _normalize_if_cosine(z: jax.Array, similarity: str) -> jax.Array:
  if similarity == "cosine":
    return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return z


def data_sums_matrix(
  params: dict, x: jax.Array, mean: float, std: float, batch: dict, hparams: Hyperparams, temp=1.0
) -> dict:
  """Few objects: S = Z Z^T once, then three gathers per triplet. Returns weighted sums (`_sums`)."""
  z = _normalize_if_cosine(transformed(params, x, mean, std), hparams.similarity)
  sim_matrix = z @ z.T
  if "pairs" in batch:  # precomputed flat pair indices: one 1-D gather per pair
    sims = sim_matrix.reshape(-1)[batch["pairs"]]
  else:
    sims = odd_one_out.pair_similarities_from_matrix(sim_matrix, batch["triplets"])
  return _sums(sims, batch, temp, hparams.objective)


def data_sums_chunked(
  params: dict,
  x: jax.Array,
  mean: float,
  std: float,
  batch: dict,
  hparams: Hyperparams,
  chunk: int,
  temp=1.0,
) -> dict:
  """Many objects: Z once, then `lax.scan` over chunks of triplets gathering [chunk, 3, d] rows of Z.

  Never materialises [n_triplets, 3, d]; the batch length must be a multiple of `chunk`. Z costs one
  [n, d] x [d, d] product per step, far less than transforming three rows per triplet.
  """
  z = _normalize_if_cosine(transformed(params, x, mean, std), hparams.similarity)
  chunks = jax.tree.map(lambda a: a.reshape(-1, chunk, *a.shape[1:]), batch)

  def body(_, piece):
    sims = odd_one_out.pair_similarities(z[piece["triplets"]])  # dot of (normalised) rows
    return None, _sums(sims, piece, temp, hparams.objective)

  # Per-chunk sums as scan outputs (no carry); rematerialised in the backward pass, so memory stays
  # at one chunk's activations.
  _, sums = jax.lax.scan(jax.checkpoint(body), None, chunks)
  return jax.tree.map(jnp.sum, sums)


def score(
  params: dict,
  x: np.ndarray,
  mean: float,
  std: float,
  data: TripletTargets,
  hparams: Hyperparams,
  temp: float,
) -> dict:
  """Weighted mean loss at `temp` and accuracy of a fitted transform on triplets of `x`'s objects (the
  same sums as the fit, without a Fitter: e.g. held-out objects in cross-validation)."""
  batch = jax.tree.map(jnp.asarray, batch_arrays(data, len(x)))
  sums = data_sums_matrix(params, jnp.asarray(x, jnp.float32), mean, std, batch, hparams, temp)
  return {"loss": float(sums["loss"] / sums["weight"]), "accuracy": float(sums["hits"] / sums["weight"])}


def fit_temperature(sims: np.ndarray, data: TripletTargets) -> float:
  """The T minimising the weighted cross-entropy of the targets under softmax(sims / T) (step 2).

  Cross-entropy and KL to the targets differ by the targets' entropy, a constant in T, so this is the
  minimiser of both objectives. sims: [n, 3] pair similarities of `data.triplets`.
  """
  return uncertainty.fit_temperature(sims, data.probs * data.weights[:, None])


def to_transform(params: dict, mean: float, std: float) -> AffineTransform:
  """The fitted W, b as a gLocal-format transform."""
  return AffineTransform(
    np.asarray(params["weights"], np.float32), np.asarray(params["bias"], np.float32), mean, std
  )
