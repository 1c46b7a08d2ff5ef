"""Metrics of models against people on odd-one-out triplets, in one place.

Every stage that scores something on human triplets (the teacher's reports, the student's
evaluations, the evaluation stage) goes through here.

Definitions:
- **accuracy**: fraction of human *responses* whose chosen pair is strictly the model's most similar
  pair (`odd_one_out.predicted_pair_onehot`): a tie at the top counts as wrong, so a collapsed model
  scores 0, not 100 %.
- **mean_human_choice_prob**: mean over responses of the model's `softmax(s / temperature)`
  probability of the pair the person chose.
- **accuracy_ci95**: accuracy is a ratio of hits to responses summed over triplets; its 95 % interval is
  the normal approximation with the delta method over triplets (the binomial interval when every
  triplet has one response), since responses to one triplet are not independent.
- **noise ceiling** (per triplet t with n_t >= `min_responses` responses and pair counts c_t): the
  modal-choice proportion max_k c_tk / n_t, averaged over triplets: the accuracy of an oracle that
  always predicts the most common human choice, scored on the same people (slightly optimistic: the
  oracle sees the response it is scored on).
- **leave-one-out agreement**: each response is predicted by the modal choice of the *other*
  responses to its triplet; a tie among k modal pairs earns 1/k (a random tie-break in expectation).
  Averaged over responses; an unbiased estimate of how often a new person agrees with the crowd.
- **paired difference** of two models' accuracies on the same triplets: its 95 % interval is the
  percentile interval of a paired bootstrap over triplets (both models resampled with the same
  triplets, so the interval reflects the difference's own variability, not each model's).
- **per category** (THINGS): a triplet counts for each category that holds all three objects;
  `mixed` = no category holds all three.
"""

from __future__ import annotations

import math

import numpy as np

from aligned import odd_one_out

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def mean_ci95(values: np.ndarray) -> tuple[float, list[float]]:
  """Mean of `values` and its 95 % interval (normal approximation; zero width for one value)."""
  values = np.asarray(values)
  mean = float(np.mean(values))
  half = Z95 * float(np.std(values, ddof=1)) / math.sqrt(len(values)) if len(values) > 1 else 0.0
  return mean, [mean - half, mean + half]


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
  mean, interval = mean_ci95(counts.max(axis=1) / per_triplet)

  credit = np.zeros(len(counts))
  for k in range(3):
    others = counts.copy()
    others[:, k] -= 1  # remove one response choosing pair k
    is_modal = others == others.max(axis=1, keepdims=True)
    credit += np.where(counts[:, k] > 0, counts[:, k] * is_modal[:, k] / is_modal.sum(axis=1), 0.0)
  return {
    "noise_ceiling": mean,
    "noise_ceiling_ci95": interval,
    "loo_agreement": float(credit.sum() / per_triplet.sum()),
    "n_triplets": int(len(counts)),
    "n_responses": int(per_triplet.sum()),
  }


def response_hits(sims: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """[t] responses whose chosen pair is strictly the model's largest (ties score nothing)."""
  return (odd_one_out.predicted_pair_onehot(np.asarray(sims)) * np.asarray(counts)).sum(axis=-1)


def triplet_metrics(sims: np.ndarray, counts: np.ndarray, temperature: float = 1.0) -> dict:
  """Accuracy and mean probability of the human choice, over responses.

  Args:
    sims: [t, 3] model similarities [s01, s02, s12].
    counts: [t, 3] human responses choosing each pair.
    temperature: of the model's choice probabilities `softmax(sims / temperature)`.

  >>> triplet_metrics(np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), np.array([[3, 1, 0], [1, 0, 0]]))["accuracy"]
  0.6
  """
  # Hits counted as an integer so the reported fraction is exact (e.g. 1427 / 2171).
  hits = int(response_hits(sims, counts).sum())
  return {
    "accuracy": hits / int(np.sum(counts)),
    "mean_human_choice_prob": float(
      odd_one_out.mean_choice_prob(np.asarray(sims, np.float32), np.asarray(counts), temperature)
    ),
  }


def ratio_ci95(hits: np.ndarray, responses: np.ndarray) -> list[float] | None:
  """95 % interval of sum(hits) / sum(responses) over triplets (delta method, normal approximation)."""
  hits, responses = np.asarray(hits, np.float64), np.asarray(responses, np.float64)
  t = len(hits)
  if t == 0 or responses.sum() == 0:
    return None
  ratio = hits.sum() / responses.sum()
  if t < 2:
    return [ratio, ratio]
  residual = hits - ratio * responses
  se = np.sqrt((residual**2).sum() / (t * (t - 1))) / responses.mean()
  return [float(ratio - Z95 * se), float(ratio + Z95 * se)]


def accuracy_summary(sims: np.ndarray, counts: np.ndarray, hits: np.ndarray | None = None) -> dict:
  """Accuracy over responses with its 95 % interval, beside the noise ceiling of the same triplets.

  `hits` ([t] responses the model predicts) may be given when already computed.
  """
  counts = np.asarray(counts)
  if len(counts) == 0:
    return {"accuracy": None, "accuracy_ci95": None, "n_triplets": 0, "n_responses": 0, "noise_ceiling": None}
  hits = response_hits(sims, counts) if hits is None else hits
  responses = counts.sum(axis=-1)
  ceiling = noise_ceiling(counts) if (responses > 1).any() else None
  return {
    "accuracy": float(hits.sum() / responses.sum()),
    "accuracy_ci95": ratio_ci95(hits, responses),
    "n_triplets": int(len(counts)),
    "n_responses": int(responses.sum()),
    "noise_ceiling": ceiling and ceiling["noise_ceiling"],
    "noise_ceiling_ci95": ceiling and ceiling["noise_ceiling_ci95"],
    "loo_agreement": ceiling and ceiling["loo_agreement"],
  }


def paired_difference(
  hits_a: np.ndarray, hits_b: np.ndarray, responses: np.ndarray, n_boot: int = 2000, seed: int = 0
) -> dict:
  """Accuracy of model a minus model b on the same triplets, with a paired-bootstrap 95 % interval.

  Args:
    hits_a, hits_b: [t] responses each model predicts (`response_hits`), same triplets, same order.
    responses: [t] responses per triplet.
    n_boot: bootstrap resamples of the triplets.
  Returns {difference, ci95 [lo, hi], p_below_zero (bootstrap fraction <= 0), n_triplets}.
  """
  hits_a, hits_b, responses = (np.asarray(v, np.float64) for v in (hits_a, hits_b, responses))
  if not (hits_a.shape == hits_b.shape == responses.shape) or hits_a.ndim != 1:
    raise ValueError(f"need equal [t] arrays, got {hits_a.shape}, {hits_b.shape}, {responses.shape}")
  rng = np.random.default_rng(seed)
  diff = hits_a - hits_b
  boot = np.empty(n_boot)
  for start in range(0, n_boot, 256):  # bounded memory: [256, t] resample indices at a time
    idx = rng.integers(0, len(diff), size=(min(256, n_boot - start), len(diff)))
    boot[start : start + len(idx)] = diff[idx].sum(axis=1) / responses[idx].sum(axis=1)
  lo, hi = np.percentile(boot, [2.5, 97.5])
  return {
    "difference": float(diff.sum() / responses.sum()),
    "ci95": [float(lo), float(hi)],
    "p_below_zero": float(np.mean(boot <= 0)),
    "n_triplets": int(len(diff)),
  }


def per_category_accuracy(
  sims: np.ndarray, counts: np.ndarray, triplets: np.ndarray, categories: np.ndarray, names
) -> dict:
  """`accuracy_summary` per category (all three objects in it) and for `mixed` triplets (none).

  Args:
    sims, counts: [t, 3] model similarities and human counts.
    triplets: [t, 3] object indices (rows of `categories`).
    categories: [n_objects, c] bool membership (c <= 63).
    names: the c category names.
  """
  categories, triplets, counts = np.asarray(categories), np.asarray(triplets), np.asarray(counts)
  # One bit per category: the categories holding all three objects are the AND of their bit sets
  # ([t] integers, not a [t, 3, c] boolean array).
  bits = (categories.astype(np.uint64) << np.arange(categories.shape[1], dtype=np.uint64)).sum(axis=1)
  shared = bits[triplets[:, 0]] & bits[triplets[:, 1]] & bits[triplets[:, 2]]
  hits = response_hits(sims, counts)
  result = {}
  for c, name in enumerate(names):
    inside = (shared >> np.uint64(c)) & np.uint64(1) == 1
    result[name] = accuracy_summary(sims[inside], counts[inside], hits[inside])
  mixed = shared == 0
  result["mixed"] = accuracy_summary(sims[mixed], counts[mixed], hits[mixed])
  return result
