"""Evaluate object embeddings against human odd-one-out choices and a human similarity matrix.

`evaluate(config, workdir)` is what `python -m experiments.evaluate` runs; it is importable from
Colab and tests. It writes `workdir/config.json` and `workdir/results.json` and returns the results.

Definitions:
- `accuracy`: fraction of human **responses** whose chosen pair is strictly the model's most similar
  pair (ties count as wrong, so a collapsed model scores 0).
- `mean_human_choice_prob`: mean over responses of the model's softmax(similarity / temperature)
  probability of the pair the person chose (temperature 1 by default; a calibrated temperature is
  the teacher's and the evaluation suite's business).
- `noise_ceiling`: see `aligned.noise_ceiling`; null for files with one response per triplet.
- `accuracy_ci95`: 95 % interval of the accuracy, a ratio of hits to responses summed over triplets;
  normal approximation with the delta method over triplets (the binomial interval when every triplet
  has one response), since responses to one triplet are not independent.
- `per_category` (THINGS, 1,854 objects): the same accuracy, noise ceiling and interval on the
  triplets whose three objects all belong to one of the 27 high-level categories of
  `category_mat_manual.tsv` (an object may be in several; a triplet counts for each category that
  holds all three), and on `mixed` triplets, those no category holds entirely.
- `uncertainty`: temperature by cross-validation, KL, entropy correlation and calibration; see
  `aligned.uncertainty` (definitions there and in WORKSPACE.md).
- `rsa_*_ci95`: bootstrap over objects (`aligned.rsa`); `rsm_similarity` is how the model's matrix
  was built (dot, cosine or triplet_softmax).
- `levels` (with `config.levels`): the same per abstraction level of the Levels set (global =
  between_class, local = within_class, class_boundary), with the human noise ceiling per level,
  reaction-time summaries and the uncertainty metrics including RT correlations.

Per-triplet arrays for the report's plots go to `workdir/arrays.npz` (model and human RSMs with their
object ids and categories, entropies, reliability bins), written before `results.json`.
"""

from __future__ import annotations

import os
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np

from aligned import artifacts, odd_one_out, rsa, uncertainty
from aligned.data import embeddings as embeddings_io
from aligned.data import levels as levels_io
from aligned.data import similarity_matrices, things
from aligned.data import triplets as triplets_io
from aligned.errors import DataError
from aligned.noise_ceiling import noise_ceiling
from aligned.transform import load_transform
from aligned.triplet_similarities import triplet_similarities

_Z95 = 1.959963984540054


def triplet_metrics(sims: np.ndarray, counts: np.ndarray, temperature: float = 1.0) -> dict:
  """Accuracy and mean probability of the human choice, over responses."""
  sims, counts = jnp.asarray(sims), jnp.asarray(counts)
  # Hits counted as an integer so the reported fraction is exact (e.g. 1427 / 2171).
  hits = int(jnp.sum(odd_one_out.predicted_pair_onehot(sims) * counts))
  return {
    "accuracy": hits / int(counts.sum()),
    "mean_human_choice_prob": float(odd_one_out.mean_choice_prob(sims, counts, temperature)),
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
  return [float(ratio - _Z95 * se), float(ratio + _Z95 * se)]


def _hits(sims: np.ndarray, counts: np.ndarray) -> np.ndarray:
  """[t] responses whose chosen pair is strictly the model's largest (ties score nothing)."""
  sims, counts = np.asarray(sims), np.asarray(counts)
  s01, s02, s12 = sims[:, 0], sims[:, 1], sims[:, 2]
  top = np.stack([(s01 > s02) & (s01 > s12), (s02 > s01) & (s02 > s12), (s12 > s01) & (s12 > s02)], axis=-1)
  return (top * counts).sum(axis=-1)


def accuracy_summary(sims: np.ndarray, counts: np.ndarray, hits: np.ndarray | None = None) -> dict:
  """Accuracy over responses with its 95 % interval, beside the noise ceiling of the same triplets.

  `hits` ([t] responses the model predicts) may be given when already computed.
  """
  counts = np.asarray(counts)
  if len(counts) == 0:
    return {"accuracy": None, "accuracy_ci95": None, "n_triplets": 0, "n_responses": 0, "noise_ceiling": None}
  hits = _hits(sims, counts) if hits is None else hits
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
  hits = _hits(sims, counts)
  result = {}
  for c, name in enumerate(names):
    inside = (shared >> np.uint64(c)) & np.uint64(1) == 1
    result[name] = accuracy_summary(sims[inside], counts[inside], hits[inside])
  mixed = shared == 0
  result["mixed"] = accuracy_summary(sims[mixed], counts[mixed], hits[mixed])
  return result


def _optional(value) -> str | None:
  return str(value) if value else None


def _category_of(objects: np.ndarray, concepts: things.ThingsConcepts) -> np.ndarray:
  """The first high-level category of each object ("other" if none): the RSM plots' sort key."""
  member = concepts.categories[objects]
  first = np.argmax(member, axis=1)
  return np.where(member.any(axis=1), np.asarray(concepts.category_names)[first], "other")


def _rsa_results(config, embeddings: np.ndarray, fitted_temperature: float | None) -> tuple[dict, dict]:
  human_rsm = similarity_matrices.load_human_rsm(config.rsm, config.rsm_objects, config.rsm_kind)
  if human_rsm.object_indices.max() >= len(embeddings):
    raise DataError(config.rsm_objects, f"object index beyond the {len(embeddings)} embeddings")
  kind = config.rsm_similarity or config.similarity
  temperature = config.rsm_temperature or fitted_temperature or config.temperature
  model = rsa.model_rsm(embeddings[human_rsm.object_indices], kind, temperature)
  scores = rsa.rsa(model, human_rsm.similarity)
  intervals = rsa.bootstrap_rsa(model, human_rsm.similarity, config.bootstrap, config.seed)
  results = dict(
    rsm=str(config.rsm),
    rsm_n_objects=len(human_rsm.object_ids),
    rsa_spearman=scores["spearman"],
    rsa_pearson=scores["pearson"],
    rsm_similarity=kind,
    rsm_temperature=float(temperature) if kind == "triplet_softmax" else None,
    rsa_spearman_ci95=intervals["spearman_ci95"],
    rsa_pearson_ci95=intervals["pearson_ci95"],
    rsa_n_boot=intervals["n_boot"],
  )
  arrays = {"rsm_model": model.astype(np.float32), "rsm_human": human_rsm.similarity.astype(np.float32)}
  arrays["rsm_object_ids"] = np.asarray(human_rsm.object_ids)
  if len(embeddings) == things.N_OBJECTS:
    arrays["rsm_categories"] = _category_of(human_rsm.object_indices, things.load_concepts())
  return results, arrays


def _levels_results(config, transform) -> tuple[dict, dict]:
  """Accuracy, noise ceiling, RTs and uncertainty per abstraction level of a Levels response file."""
  if not config.levels_embeddings:
    raise ValueError("--config.levels needs --config.levels_embeddings (image embeddings with ids)")
  stimuli = levels_io.read_levels_stimuli(config.levels_stimuli) if config.levels_stimuli else None
  responses = levels_io.read_levels_responses(config.levels, stimuli)
  ids, embeddings = levels_io.load_image_embeddings(config.levels_embeddings, config.levels_ids or None)
  if transform is not None:
    if embeddings.shape[1] != transform.in_features:
      raise DataError(
        config.transform,
        f"transform expects {transform.in_features} features but {config.levels_embeddings} has "
        f"{embeddings.shape[1]}",
      )
    embeddings = np.asarray(transform(embeddings))
  data = levels_io.levels_triplets(responses, ids, str(config.levels_ids or config.levels_embeddings))
  sims = triplet_similarities(embeddings, data.human.triplets, config.similarity)
  counts = data.human.counts
  per_level = {}
  for level in levels_io.LEVELS:
    here = data.levels == level
    per_level[level] = {
      **accuracy_summary(sims[here], counts[here]),
      "rt": levels_io.rt_summary(responses.rt[responses.levels == level]),
    }
  results = {
    "responses": str(config.levels),
    "embeddings": str(config.levels_embeddings),
    "n_responses": int(counts.sum()),
    "n_triplets": data.human.n_triplets,
    "n_timeouts": responses.n_timeouts,
    "trial_types": responses.trial_types,
    "overall": {**accuracy_summary(sims, counts), "rt": levels_io.rt_summary(responses.rt)},
    "per_level": per_level,
  }
  arrays = {"levels_level": data.levels, "levels_mean_rt": data.mean_rt.astype(np.float32)}
  if config.uncertainty_folds:
    scores, per_triplet = uncertainty.uncertainty_alignment(
      sims, counts, config.uncertainty_folds, config.ece_bins, config.seed, mean_rt=data.mean_rt
    )
    results["uncertainty"] = scores
    arrays.update({f"levels_{k}": v for k, v in per_triplet.items()})
  return results, arrays


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Scores embeddings on a human triplet file (and optionally a human similarity matrix, Levels)."""
  workdir = pathlib.Path(workdir)
  if not config.embeddings and not config.get("levels"):
    raise ValueError("set --config.embeddings to an [objects, features] .npy or .txt file")
  if config.embeddings and not config.triplets:
    raise ValueError("set --config.triplets to a human triplet file")
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  transform = load_transform(config.transform) if config.transform else None

  results, arrays = {}, {}
  if config.embeddings:
    things_results, things_arrays = _things_results(config, transform)
    results.update(things_results)
    arrays.update(things_arrays)
  if config.get("levels"):
    results["levels"], levels_arrays = _levels_results(config, transform)
    arrays.update(levels_arrays)

  artifacts.save_npz(workdir / "arrays.npz", **arrays)  # before results.json, which marks a complete run
  artifacts.write_json(workdir / "results.json", results)
  return results


def _things_results(config, transform) -> tuple[dict, dict]:
  """Accuracy, noise ceiling, categories, uncertainty and RSA on THINGS objects."""
  embeddings = embeddings_io.load_embeddings(config.embeddings, order=config.embeddings_order)
  if transform is not None:
    if embeddings.shape[1] != transform.in_features:
      raise DataError(
        config.transform,
        f"transform expects {transform.in_features} features but {config.embeddings} has "
        f"{embeddings.shape[1]}",
      )
    embeddings = np.asarray(transform(embeddings))

  human = triplets_io.read_triplets(config.triplets, config.triplets_format, n_objects=len(embeddings))
  sims = triplet_similarities(embeddings, human.triplets, config.similarity)
  summary = accuracy_summary(sims, human.counts)
  results = {
    "embeddings": str(config.embeddings),
    "embeddings_order": config.embeddings_order,
    "n_objects": int(embeddings.shape[0]),
    "n_features": int(embeddings.shape[1]),
    "transform": _optional(config.transform),
    "similarity": config.similarity,
    "triplets": str(config.triplets),
    "triplets_format": config.triplets_format,
    "n_triplets": human.n_triplets,
    "n_responses": human.n_responses,
    "chance": 1.0 / 3.0,
    **triplet_metrics(sims, human.counts, config.temperature),
    "accuracy_ci95": summary["accuracy_ci95"],
    "temperature": float(config.temperature),
  }
  ceiling = noise_ceiling(human.counts) if human.is_multi_response else None
  results["noise_ceiling"] = ceiling["noise_ceiling"] if ceiling else None
  results["noise_ceiling_ci95"] = ceiling["noise_ceiling_ci95"] if ceiling else None
  results["loo_agreement"] = ceiling["loo_agreement"] if ceiling else None
  arrays = {}

  if config.categories and len(embeddings) == things.N_OBJECTS:
    concepts = things.load_concepts()
    results["per_category"] = per_category_accuracy(
      sims, human.counts, human.triplets, concepts.categories, concepts.category_names
    )
  fitted = None
  if config.uncertainty_folds and human.n_triplets >= config.uncertainty_folds:
    results["uncertainty"], per_triplet = uncertainty.uncertainty_alignment(
      sims, human.counts, config.uncertainty_folds, config.ece_bins, config.seed
    )
    fitted = results["uncertainty"]["temperature"]
    arrays.update({f"things_{k}": v for k, v in per_triplet.items()})

  if config.rsm:
    if not config.rsm_objects:
      raise ValueError("--config.rsm needs --config.rsm_objects (the matrix's object list)")
    rsa_results, rsa_arrays = _rsa_results(config, embeddings, fitted)
    results.update(rsa_results)
    arrays.update(rsa_arrays)
  return results, arrays


def format_results(results: dict) -> str:
  """A short human-readable table of `evaluate`'s results."""

  def pct(x):
    return "n/a" if x is None else f"{100 * x:6.2f} %"

  lines = []
  if "accuracy" in results:
    lines += [
      f"embeddings      {results['embeddings']} ({results['n_objects']} x {results['n_features']}, "
      f"{results['embeddings_order']} order, {results['similarity']}"
      + (f", transform {results['transform']})" if results["transform"] else ")"),
      f"triplets        {results['triplets']} ({results['triplets_format']}): "
      f"{results['n_triplets']:,} unique, {results['n_responses']:,} responses",
      f"accuracy        {pct(results['accuracy'])}",
      f"chance          {pct(results['chance'])}",
      f"noise ceiling   {pct(results['noise_ceiling'])}"
      + ("" if results["noise_ceiling"] is not None else " (one response per triplet)"),
      f"p(human choice) {results['mean_human_choice_prob']:.4f} (temperature {results['temperature']:g})",
    ]
  if "rsa_spearman" in results:
    lines.append(
      f"RSA ({results['rsm_n_objects']} objects)  Spearman {results['rsa_spearman']:.4f}, "
      f"Pearson {results['rsa_pearson']:.4f}"
    )
  if "uncertainty" in results:
    u = results["uncertainty"]
    lines.append(f"uncertainty     T {u['temperature']:.4g} (CV), KL {u['mean_kl']:.4f}, ECE {u['ece']:.4f}")
  if "levels" in results:
    for level, entry in results["levels"]["per_level"].items():
      lines.append(
        f"Levels {level:<15s} {pct(entry['accuracy'])} (noise ceiling {pct(entry['noise_ceiling'])}, "
        f"{entry['n_responses']:,} responses)"
      )
  return "\n".join(lines)
