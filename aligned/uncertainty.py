"""Uncertainty alignment: does the model hesitate where people disagree?

A model's choice distribution for a triplet is `q = softmax(sims / T)` over the pairs
`[01, 02, 12]`; the human one is `p = counts / n` (the fraction of the n responses choosing each pair).

Definitions (all per triplet t unless said otherwise; probabilities from `aligned.odd_one_out`):

- **Temperature by cross-validation.** The triplets are split into k folds at random (seeded). For
  each fold, T is the minimiser of the held-out-free negative log-likelihood of the human responses,
  `NLL(T) = -sum_t sum_k c_tk log q_tk(T) / sum_t n_t`, over the other folds' triplets; the fold's
  triplets then get `q` with that T. Every metric below uses these **out-of-fold** probabilities, so
  no triplet is scored with a T fitted on its own responses. NLL is convex in 1/T, so a log-spaced
  grid followed by golden-section refinement finds the minimum (to about 1e-3 relative: the NLL is
  float32 and flat at its minimum). Above 200,000 triplets each T is fitted on a seeded sample of
  200,000 of its training triplets. `temperature` in the results is T
  fitted on all triplets (what one would use on new data); `cv_nll` is the held-out NLL.
- **KL**: `KL(p_t || q_t) = sum_k p_tk (log p_tk - log q_tk)` (nats, 0 log 0 = 0); `mean_kl` is its mean
  over triplets, with a 95 % normal-approximation CI. For a single response, p_t is one-hot and KL is
  `-log q` of the chosen pair. KL = 0 iff the model's distribution equals the human one.
- **Entropy correlation**: Spearman's rho between `H(q_t)` and `H(p_t)` over triplets with at least two
  responses (one response always has H(p) = 0). None when either entropy is constant.
- **Reaction times** (Levels): Spearman's rho between `H(q_t)` and the mean reaction time of triplet t;
  the same for `H(p_t)` as the human reference (people are slower where they disagree).
- **Expected calibration error**: each response is one prediction of the model, with confidence
  `max_k q_tk` and a hit if the person chose the model's top pair (a tie among m top pairs earns
  1/m, the expected hit of a random tie-break). Responses are binned by confidence into `n_bins` equal
  bins over [1/3, 1] (the range of a 3-way maximum); `ECE = sum_b (n_b / N) |acc_b - conf_b|`. The
  reliability diagram plots acc_b against conf_b. ECE is 0 for a model equal to the human
  distribution, and also for the constant model (always 1/3, right a third of the time): calibration
  is read beside accuracy and KL, never alone.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from aligned import odd_one_out, rsa
from aligned.metrics import mean_ci95

_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


# ------------------------------------------------------------------------------------------------
# Temperature
# ------------------------------------------------------------------------------------------------


@jax.jit
def _nll_at(sims, counts, log_temperatures):
  """[g] mean NLL of the responses at each temperature exp(log_temperatures)."""

  def one(log_t):
    log_q = odd_one_out.choice_log_probs(sims, jnp.exp(log_t))
    return -jnp.sum(counts * log_q) / jnp.sum(counts)

  return jax.lax.map(one, log_temperatures)


def choice_nll(sims: np.ndarray, counts: np.ndarray, temperature: float = 1.0) -> float:
  """Mean over responses of -log q(chosen pair); sims, counts: [n, 3]."""
  sims, counts = jnp.asarray(sims, jnp.float32), jnp.asarray(counts, jnp.float32)
  return float(_nll_at(sims, counts, jnp.log(jnp.asarray([temperature], jnp.float32)))[0])


def _scale(sims: np.ndarray) -> float:
  """Typical spread of a triplet's similarities: where the temperature search is centred."""
  spread = float(np.std(sims - np.mean(sims, axis=-1, keepdims=True))) if len(sims) else 0.0
  return spread if spread > 0 else 1.0


def fit_temperature(
  sims: np.ndarray, counts: np.ndarray, decades: float = 4.0, grid: int = 33, tol: float = 1e-4
) -> float:
  """T minimising the responses' NLL: a log grid over scale * 10^[-decades, decades], then golden section.

  Args:
    sims: [n, 3] model similarities.
    counts: [n, 3] responses per pair.
    decades: half-width of the search range in powers of ten around the similarities' spread.
    grid: grid points; the golden-section search refines between the best point's neighbours.
    tol: stop when the bracket is narrower than this in log T.
  """
  sims, counts = jnp.asarray(sims, jnp.float32), jnp.asarray(counts, jnp.float32)
  centre = math.log(_scale(np.asarray(sims)))
  logs = np.linspace(centre - decades * math.log(10), centre + decades * math.log(10), grid)
  values = np.asarray(_nll_at(sims, counts, jnp.asarray(logs, jnp.float32)))
  best = int(np.argmin(values))
  lo, hi = logs[max(best - 1, 0)], logs[min(best + 1, grid - 1)]
  # Golden section on [lo, hi]: NLL is convex in 1/T, hence unimodal in log T.
  a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
  fa, fb = (_nll_at(sims, counts, jnp.asarray([x], jnp.float32))[0] for x in (a, b))
  while hi - lo > tol:
    if fa <= fb:
      hi, b, fb = b, a, fa
      a = hi - _GOLDEN * (hi - lo)
      fa = _nll_at(sims, counts, jnp.asarray([a], jnp.float32))[0]
    else:
      lo, a, fa = a, b, fb
      b = lo + _GOLDEN * (hi - lo)
      fb = _nll_at(sims, counts, jnp.asarray([b], jnp.float32))[0]
  return float(math.exp((lo + hi) / 2))


def fold_ids(n: int, folds: int, seed: int = 0) -> np.ndarray:
  """[n] fold of each triplet: a seeded random, balanced assignment to `folds` folds."""
  if folds < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
  if n < folds:
    raise ValueError(f"{n} triplets cannot be split into {folds} folds")
  return np.random.default_rng(seed).permutation(np.arange(n) % folds)


def cross_validated_probs(
  sims: np.ndarray, counts: np.ndarray, folds: int = 5, seed: int = 0, max_fit: int = 200_000
) -> dict:
  """Out-of-fold choice probabilities with a temperature fitted on the other folds.

  A scalar needs few triplets: with more than `max_fit` triplets, each temperature is fitted on a
  seeded random `max_fit` of its training triplets (the probabilities still cover every triplet).

  Returns:
    dict with `probs` [n, 3] out-of-fold q, `fold_temperatures` [folds], `temperature` (fitted on
    all triplets) and `cv_nll` (the mean held-out NLL over responses).
  """
  sims, counts = np.asarray(sims, np.float32), np.asarray(counts)
  fold = fold_ids(len(sims), folds, seed)
  # Fitting rows: all triplets, or a seeded sample of max_fit of them.
  fit_rows = (
    np.sort(np.random.default_rng(seed + 1).permutation(len(sims))[:max_fit]) if len(sims) > max_fit else None
  )
  fit_sims = sims if fit_rows is None else sims[fit_rows]
  fit_counts = counts if fit_rows is None else counts[fit_rows]
  fit_fold = fold if fit_rows is None else fold[fit_rows]
  log_probs = np.zeros(sims.shape, np.float32)
  temperatures = []
  for f in range(folds):
    held_out = fold == f
    # The other folds enter as zero-weighted rows, not a subset: one array shape, one compilation.
    t = fit_temperature(fit_sims, fit_counts * (fit_fold != f)[:, None])
    temperatures.append(t)
    log_probs[held_out] = np.asarray(odd_one_out.choice_log_probs(jnp.asarray(sims[held_out]), t))
  cv_nll = float(-(counts * log_probs).sum() / counts.sum())
  return {
    "probs": np.exp(log_probs),
    "log_probs": log_probs,
    "fold_temperatures": temperatures,
    "temperature": fit_temperature(fit_sims, fit_counts),
    "cv_nll": cv_nll,
  }


# ------------------------------------------------------------------------------------------------
# Metrics of choice distributions
# ------------------------------------------------------------------------------------------------


def kl_per_triplet(human_probs: np.ndarray, model_log_probs: np.ndarray) -> np.ndarray:
  """[n] KL(p || q) in nats, p the human choice distribution, q given as log-probabilities."""
  # kl_divergence takes similarities; log q are similarities whose softmax (T = 1) is q itself.
  return np.asarray(
    odd_one_out.kl_divergence(jnp.asarray(model_log_probs), target_probs=jnp.asarray(human_probs))
  )


def entropy(probs: np.ndarray) -> np.ndarray:
  """[n] entropy (nats) of [n, 3] choice probabilities."""
  return np.asarray(odd_one_out.probs_entropy(jnp.asarray(probs)))


def spearman_or_none(a: np.ndarray, b: np.ndarray) -> float | None:
  """Spearman's rho, or None when there are under 3 values or either side is constant."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
    return None
  return rsa.spearman(a, b)


def top_pair_credit(probs: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """[n] responses choosing the model's top pair; a tie among m top pairs shares 1/m each."""
  probs = np.asarray(probs)
  top = probs == probs.max(axis=-1, keepdims=True)
  return (np.asarray(counts) * top).sum(axis=-1) / top.sum(axis=-1)


def expected_calibration_error(probs: np.ndarray, counts: np.ndarray, n_bins: int = 10) -> dict:
  """ECE over responses and the reliability-diagram bins (see the module docstring).

  Args:
    probs: [n, 3] model choice probabilities.
    counts: [n, 3] human responses per pair.
    n_bins: equal-width confidence bins over [1/3, 1].

  Returns:
    dict with `ece` and `bins`: a list of {lower, upper, confidence, accuracy, n_responses}, with
    confidence and accuracy None in empty bins.

  Example:
    >>> import numpy as np
    >>> result = expected_calibration_error(np.array([[0.9, 0.05, 0.05]]), np.array([[1, 1, 0]]))
    >>> round(result["ece"], 6)  # 90 % confident, right half the time
    0.4
  """
  probs, counts = np.asarray(probs, np.float64), np.asarray(counts, np.float64)
  confidence = probs.max(axis=-1)
  responses = counts.sum(axis=-1)
  credit = top_pair_credit(probs, counts)
  edges = np.linspace(1.0 / 3.0, 1.0, n_bins + 1)
  which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
  total = responses.sum()
  ece, bins = 0.0, []
  for b in range(n_bins):
    inside = which == b
    n_b = responses[inside].sum()
    if n_b == 0:
      bins.append(
        {"lower": edges[b], "upper": edges[b + 1], "confidence": None, "accuracy": None, "n_responses": 0}
      )
      continue
    conf_b = float((confidence[inside] * responses[inside]).sum() / n_b)
    acc_b = float(credit[inside].sum() / n_b)
    ece += n_b / total * abs(acc_b - conf_b)
    bins.append(
      {
        "lower": float(edges[b]),
        "upper": float(edges[b + 1]),
        "confidence": conf_b,
        "accuracy": acc_b,
        "n_responses": int(n_b),
      }
    )
  return {"ece": float(ece), "bins": bins}


def uncertainty_alignment(
  sims: np.ndarray,
  counts: np.ndarray,
  folds: int = 5,
  n_bins: int = 10,
  seed: int = 0,
  mean_rt: np.ndarray | None = None,
  max_fit: int = 200_000,
) -> tuple[dict, dict]:
  """All uncertainty metrics of the module docstring, with the temperature cross-validated.

  Args:
    sims: [n, 3] model similarities of n unique triplets.
    counts: [n, 3] human responses per pair.
    folds: cross-validation folds over triplets.
    n_bins: reliability-diagram bins.
    seed: fold assignment.
    mean_rt: optional [n] mean reaction time per triplet (NaN where unknown).
    max_fit: triplets each temperature is fitted on at most (see `cross_validated_probs`).

  Returns:
    (results, arrays): JSON-ready metrics, and per-triplet arrays for plots (`model_entropy`,
    `human_entropy`, `kl`, `responses`) plus the reliability bins as arrays.
  """
  counts = np.asarray(counts)
  cv = cross_validated_probs(sims, counts, folds, seed, max_fit)
  responses = counts.sum(axis=-1)
  human = counts / responses[:, None]
  kl = kl_per_triplet(human, cv["log_probs"])
  model_h, human_h = entropy(cv["probs"]), entropy(human)
  multi = responses >= 2
  mean_kl, kl_ci = mean_ci95(kl)
  calibration = expected_calibration_error(cv["probs"], counts, n_bins)
  results = {
    "temperature": cv["temperature"],
    "fold_temperatures": cv["fold_temperatures"],
    "folds": folds,
    "cv_nll": cv["cv_nll"],
    "mean_kl": mean_kl,
    "kl_ci95": kl_ci,
    "mean_kl_multi_response": float(kl[multi].mean()) if multi.any() else None,
    "entropy_spearman": spearman_or_none(model_h[multi], human_h[multi]),
    "n_triplets_multi_response": int(multi.sum()),
    "ece": calibration["ece"],
    "reliability": calibration["bins"],
  }
  if mean_rt is not None:
    known = np.isfinite(mean_rt)
    results["rt_spearman"] = spearman_or_none(model_h[known], mean_rt[known])
    results["rt_human_entropy_spearman"] = spearman_or_none(human_h[known & multi], mean_rt[known & multi])
  bins = calibration["bins"]
  arrays = {
    "model_entropy": model_h.astype(np.float32),
    "human_entropy": human_h.astype(np.float32),
    "kl": kl.astype(np.float32),
    "responses": responses.astype(np.int32),
    "reliability_confidence": np.array(
      [np.nan if b["confidence"] is None else b["confidence"] for b in bins]
    ),
    "reliability_accuracy": np.array([np.nan if b["accuracy"] is None else b["accuracy"] for b in bins]),
    "reliability_n": np.array([b["n_responses"] for b in bins]),
    "reliability_edges": np.linspace(1.0 / 3.0, 1.0, n_bins + 1),
  }
  return results, arrays
