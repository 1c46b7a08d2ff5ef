"""How well people agree with each other on multi-response triplets: the ceiling for any model.

Definitions (per triplet t with n_t >= `min_responses` responses and pair counts c_t):
- modal-choice proportion: max_k c_tk / n_t. The **noise ceiling** is its mean over triplets: the
  accuracy of an oracle that always predicts the most common human choice, scored on the same people.
  (It is slightly optimistic, since the oracle sees the response it is scored on.)
- **leave-one-out agreement**: each response is predicted by the modal choice of the *other*
  responses to its triplet; a tie among k modal pairs earns 1/k (a random tie-break in expectation).
  Averaged over responses; an unbiased estimate of how often a new person agrees with the crowd.
"""

from __future__ import annotations

import numpy as np

_Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def noise_ceiling(counts: np.ndarray, min_responses: int = 2) -> dict:
  """Noise ceiling, its 95 % CI and leave-one-out agreement of per-triplet pair counts.

  Args:
    counts: [n, 3] responses choosing each pair, per triplet.
    min_responses: triplets with fewer responses are left out (a lone response agrees with itself).

  Returns:
    dict with `noise_ceiling`, `noise_ceiling_ci95` ([low, high], normal approximation over
    triplets), `loo_agreement`, `n_triplets` and `n_responses` used. Values are None if no triplet
    has `min_responses` responses.
  """
  counts = np.asarray(counts, dtype=np.int64)
  per_triplet = counts.sum(axis=1)
  counts = counts[per_triplet >= min_responses]
  per_triplet = per_triplet[per_triplet >= min_responses]
  if len(counts) == 0:
    return {
      "noise_ceiling": None,
      "noise_ceiling_ci95": None,
      "loo_agreement": None,
      "n_triplets": 0,
      "n_responses": 0,
    }
  modal = counts.max(axis=1) / per_triplet
  mean = float(modal.mean())
  half_width = _Z95 * float(modal.std(ddof=1)) / np.sqrt(len(modal)) if len(modal) > 1 else 0.0

  credit = np.zeros(len(counts))
  for k in range(3):
    others = counts.copy()
    others[:, k] -= 1  # remove one response choosing pair k
    is_modal = others == others.max(axis=1, keepdims=True)
    credit += np.where(counts[:, k] > 0, counts[:, k] * is_modal[:, k] / is_modal.sum(axis=1), 0.0)
  return {
    "noise_ceiling": mean,
    "noise_ceiling_ci95": [mean - half_width, mean + half_width],
    "loo_agreement": float(credit.sum() / per_triplet.sum()),
    "n_triplets": int(len(counts)),
    "n_responses": int(per_triplet.sum()),
  }
