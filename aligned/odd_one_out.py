"""Odd-one-out kernels: pair similarities, choice probabilities, losses and metrics.

Every stage of the pipeline (teacher fitting, triplet labelling, student training, evaluation) goes
through these functions; they are written once, for any leading batch shape, and are `jit`/`vmap`
friendly. Conventions (the AligNet release's; a port that misses one trains at chance):

- A triplet's three pairs are ordered `[(0, 1), (0, 2), (1, 2)]`, so pair similarities are
  `[s01, s02, s12]`. Choosing pair `(i, j)` as the most similar means choosing the third item as the
  odd-one-out; a triplet stored "odd-one-out last" has its chosen pair at index 0.
- Shapes: `b` any leading batch shape, `d` features, `n` items.
- Choice probabilities are `softmax(similarities / temperature)` over the three pairs.
- Losses return one value per triplet; reduction and weighting are the caller's.

Example:
  >>> import jax.numpy as jnp
  >>> x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # items 0 and 1 alike
  >>> pair_similarities(x)
  Array([0.9, 0. , 0.1], dtype=float32)
  >>> bool(odd_one_out_correct(pair_similarities(x)))
  True
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Similarity = Literal["dot", "cosine"]

# Pair k joins items PAIRS[k]; the odd-one-out of pair k is item ODD_ITEM[k] = 2 - k.
PAIRS = ((0, 1), (0, 2), (1, 2))
ODD_ITEM = (2, 1, 0)


# ------------------------------------------------------------------------------------------------
# Pair similarities
# ------------------------------------------------------------------------------------------------


def pair_similarities(x: jax.Array, similarity: Similarity = "dot", eps: float = 1e-12) -> jax.Array:
  """Similarities of a triplet's three pairs.

  Args:
    x: [*b, 3, d] embeddings of the three items.
    similarity: "dot" (raw dot products, the release's choice) or "cosine".
    eps: floor of the norm for "cosine" (a zero vector gets similarity 0, not NaN).

  Returns:
    [*b, 3] similarities in order [s01, s02, s12].
  """
  if x.shape[-2] != 3:
    raise ValueError(f"pair_similarities expects [..., 3, d] embeddings, got shape {x.shape}")
  if similarity == "cosine":
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  elif similarity != "dot":
    raise ValueError(f"unknown similarity {similarity!r}; expected 'dot' or 'cosine'")
  x0, x1, x2 = x[..., 0, :], x[..., 1, :], x[..., 2, :]
  return jnp.stack([(x0 * x1).sum(-1), (x0 * x2).sum(-1), (x1 * x2).sum(-1)], axis=-1)


def pair_similarities_from_matrix(sim_matrix: jax.Array, triplets: jax.Array) -> jax.Array:
  """Gathers pair similarities of index triplets from a precomputed [n, n] similarity matrix.

  Args:
    sim_matrix: [n, n] similarities between all items (e.g. `Z @ Z.T`).
    triplets: [*b, 3] integer item indices.

  Returns:
    [*b, 3] similarities in order [s01, s02, s12].
  """
  i, j, k = triplets[..., 0], triplets[..., 1], triplets[..., 2]
  return jnp.stack([sim_matrix[i, j], sim_matrix[i, k], sim_matrix[j, k]], axis=-1)


def similarity_matrix(x: jax.Array, similarity: Similarity = "dot", eps: float = 1e-12) -> jax.Array:
  """[n, d] embeddings -> [n, n] similarity matrix (dot or cosine), matching `pair_similarities`."""
  if similarity == "cosine":
    x = x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)
  elif similarity != "dot":
    raise ValueError(f"unknown similarity {similarity!r}; expected 'dot' or 'cosine'")
  return x @ x.T


def permute_triplets(
  triplets: np.ndarray, pair_values: np.ndarray, perm: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
  """Reorders the items of each triplet and permutes its pair values consistently.

  Args:
    triplets: [*b, 3] items (indices, names, anything).
    pair_values: [*b, 3] per-pair values in order [v01, v02, v12] (similarities, counts, ...).
    perm: [*b, 3] or [3]: new position p holds old item perm[p].

  Returns:
    (new_triplets, new_pair_values). The new pair (p, q) is the old pair {perm[p], perm[q]}, whose
    index in [01, 02, 12] order is perm[p] + perm[q] - 1.
  """
  perm = np.broadcast_to(np.asarray(perm), np.shape(triplets))
  pair_perm = np.stack([perm[..., p] + perm[..., q] - 1 for p, q in PAIRS], axis=-1)
  return np.take_along_axis(triplets, perm, -1), np.take_along_axis(pair_values, pair_perm, -1)


def sort_odd_one_out_last(triplets: np.ndarray, similarities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Reorders each triplet so its similarities are sorted, s01 >= s02 >= s12.

  Then items 0 and 1 form the most similar pair (the odd-one-out is last) and s12 is the smallest,
  which satisfies both statements of the release format (see WORKSPACE.md, "decisions").
  """
  triplets, similarities = np.asarray(triplets), np.asarray(similarities)
  # Most similar pair first: its items go to positions 0, 1, the odd item last.
  top = np.argmax(similarities, axis=-1)
  perm_by_top = np.array([[0, 1, 2], [0, 2, 1], [1, 2, 0]])
  triplets, similarities = permute_triplets(triplets, similarities, perm_by_top[top])
  # Swapping items 0 and 1 keeps s01 and swaps s02 <-> s12: put the larger of the two in s02.
  swap = similarities[..., 2] > similarities[..., 1]
  perm = np.where(swap[..., None], np.array([1, 0, 2]), np.array([0, 1, 2]))
  return permute_triplets(triplets, similarities, perm)


# ------------------------------------------------------------------------------------------------
# Choice probabilities
# ------------------------------------------------------------------------------------------------


def choice_log_probs(sims: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """log p(pair k is chosen as most similar) = log_softmax(sims / temperature), [*b, 3] -> [*b, 3]."""
  return jax.nn.log_softmax(sims / temperature, axis=-1)


def choice_probs(sims: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """p(pair k is chosen as most similar) = softmax(sims / temperature), [*b, 3] -> [*b, 3]."""
  return jax.nn.softmax(sims / temperature, axis=-1)


def _target_log_probs(target_sims: jax.Array | None, target_probs: jax.Array | None) -> jax.Array:
  """Targets as log-probabilities (constants); exact zeros become -inf."""
  if (target_sims is None) == (target_probs is None):
    raise ValueError("give exactly one of target_sims (softmax, no temperature) or target_probs")
  if target_sims is not None:
    # The stored similarities carry the teacher's calibrated uncertainty: no temperature here.
    return jax.lax.stop_gradient(jax.nn.log_softmax(target_sims, axis=-1))
  p = jax.lax.stop_gradient(target_probs)
  return jnp.where(p > 0, jnp.log(jnp.where(p > 0, p, 1.0)), -jnp.inf)


def _kl_from_logs(log_p: jax.Array, log_q: jax.Array) -> jax.Array:
  """sum_k p_k (log p_k - log q_k) with 0 log 0 = 0, finite gradients when some p_k = 0.

  Both `where`s are needed: a single guarded product still sends NaN gradients through the
  untaken branch (optax PR #1786).
  """
  has_mass = log_p > -jnp.inf
  safe_log_p = jnp.where(has_mass, log_p, 0.0)
  terms = jnp.exp(safe_log_p) * (safe_log_p - jnp.where(has_mass, log_q, 0.0))
  return jnp.sum(jnp.where(has_mass, terms, 0.0), axis=-1)


def choice_entropy(log_probs: jax.Array) -> jax.Array:
  """Entropy (nats) of a choice distribution given as log-probabilities, [*b, 3] -> [*b].

  Zero-probability pairs (log p = -inf) contribute 0.
  """
  has_mass = log_probs > -jnp.inf
  safe = jnp.where(has_mass, log_probs, 0.0)
  return -jnp.sum(jnp.where(has_mass, jnp.exp(safe) * safe, 0.0), axis=-1)


def probs_entropy(probs: jax.Array) -> jax.Array:
  """Entropy (nats) of choice probabilities (e.g. human choice proportions), [*b, 3] -> [*b].

  Differentiable in `probs`, with 0 log 0 = 0 and finite gradients at exact zeros.
  """
  has_mass = probs > 0
  safe = jnp.where(has_mass, probs, 1.0)
  return -jnp.sum(jnp.where(has_mass, safe * jnp.log(safe), 0.0), axis=-1)


# ------------------------------------------------------------------------------------------------
# Losses (per triplet; the caller reduces)
# ------------------------------------------------------------------------------------------------


def hard_label_cross_entropy(
  sims: jax.Array, labels: jax.Array | int = 0, temperature: float | jax.Array = 1.0
) -> jax.Array:
  """-log p(chosen pair), [*b, 3] -> [*b].

  Args:
    sims: [*b, 3] predicted pair similarities [s01, s02, s12].
    labels: [*b] (or scalar) index of the pair chosen as most similar; 0 for odd-one-out-last data.
    temperature: divides the similarities.
  """
  log_q = choice_log_probs(sims, temperature)
  labels = jnp.broadcast_to(jnp.asarray(labels), log_q.shape[:-1])
  return -jnp.take_along_axis(log_q, labels[..., None], axis=-1)[..., 0]


def contrastive_loss(sims: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """The release's hard-label contrastive form, `-s01 / tau + logsumexp(s / tau)`, [*b, 3] -> [*b].

  Equal to `hard_label_cross_entropy(sims, 0, tau)`: it assumes odd-one-out-last triplets.
  """
  return -sims[..., 0] / temperature + jax.nn.logsumexp(sims / temperature, axis=-1)


def kl_divergence(
  sims: jax.Array,
  *,
  target_sims: jax.Array | None = None,
  target_probs: jax.Array | None = None,
  temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """KL(p || q): p the target choice distribution, q = softmax(sims / temperature), -> [*b].

  Args:
    sims: [*b, 3] predicted pair similarities.
    target_sims: [*b, 3] target similarities; p = softmax(target_sims) with no temperature.
    target_probs: [*b, 3] target probabilities (may contain exact zeros); alternative to target_sims.
    temperature: divides the predicted similarities (the release's tau = 100 for students).
  """
  log_p = _target_log_probs(target_sims, target_probs)
  return _kl_from_logs(log_p, choice_log_probs(sims, temperature))


def jensen_shannon_divergence(
  sims: jax.Array,
  *,
  target_sims: jax.Array | None = None,
  target_probs: jax.Array | None = None,
  temperature: float | jax.Array = 1.0,
) -> jax.Array:
  """JSD(p, q) = (KL(p || m) + KL(q || m)) / 2 with m = (p + q) / 2, in nats, -> [*b].

  The release's default student loss; arguments as in `kl_divergence`. Bounded by log 2.
  """
  log_p = _target_log_probs(target_sims, target_probs)
  log_q = choice_log_probs(sims, temperature)
  log_m = jnp.logaddexp(log_p, log_q) - jnp.log(2.0)
  return 0.5 * (_kl_from_logs(log_p, log_m) + _kl_from_logs(log_q, log_m))


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def predicted_pair_onehot(sims: jax.Array) -> jax.Array:
  """1 for the pair whose similarity is strictly the largest, [*b, 3] -> [*b, 3].

  A tie at the top gives all zeros: a tied (e.g. collapsed) model predicts nothing and scores 0.
  """
  xp = np if isinstance(sims, np.ndarray) else jnp  # numpy stays numpy (float64 is not cast to float32)
  s01, s02, s12 = sims[..., 0], sims[..., 1], sims[..., 2]
  return xp.stack([(s01 > s02) & (s01 > s12), (s02 > s01) & (s02 > s12), (s12 > s01) & (s12 > s02)], axis=-1)


def odd_one_out_correct(sims: jax.Array) -> jax.Array:
  """Whether the model picks the stored odd-one-out (the last item), [*b, 3] -> [*b] bool.

  As in the release: stack [s12, s02, s01] and require argmax == 2. argmax returns the first maximum,
  so a tie involving s01 is counted wrong.
  """
  return jnp.argmax(jnp.stack([sims[..., 2], sims[..., 1], sims[..., 0]], axis=-1), axis=-1) == 2


def odd_one_out_accuracy(sims: jax.Array, counts: jax.Array | None = None) -> jax.Array:
  """Fraction of (human) responses whose chosen pair the model predicts, ties wrong.

  Args:
    sims: [*b, 3] model pair similarities.
    counts: [*b, 3] number of responses choosing each pair; None for odd-one-out-last triplets
      with one response each (then equal to the mean of `odd_one_out_correct`).

  Returns:
    scalar accuracy over all responses.
  """
  if counts is None:
    return jnp.mean(odd_one_out_correct(sims))
  hits = jnp.sum(predicted_pair_onehot(sims) * counts)
  return hits / jnp.sum(counts)


def mean_choice_prob(sims: jax.Array, counts: jax.Array, temperature: float | jax.Array = 1.0) -> jax.Array:
  """Mean over responses of the model's probability of the pair the person chose (scalar)."""
  return jnp.sum(choice_probs(sims, temperature) * counts) / jnp.sum(counts)
