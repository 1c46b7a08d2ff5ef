"""Evaluate object embeddings against human odd-one-out choices and a human similarity matrix.

`evaluate(config, workdir)` is what `aligned-evaluate` runs; it is importable from
Colab and tests. It writes `workdir/config.json` and `workdir/results.json` and returns the results.

Definitions: `accuracy`, `mean_human_choice_prob`, `accuracy_ci95`, `noise_ceiling` (+ interval and
`loo_agreement`; null for files with one response per triplet) and `per_category` are those of
`aligned.metrics` (temperature 1 for the choice probability unless configured; a calibrated
temperature is the uncertainty section's business). Beside them:
- `uncertainty`: temperature by cross-validation, KL, entropy correlation and calibration; see
  `aligned.uncertainty` (definitions there).
- `rsa_*_ci95`: bootstrap over objects (`aligned.rsa`); `rsm_similarity` is how the model's matrix
  was built (dot, cosine or triplet_softmax).
- `levels` (with `config.levels`): the same per abstraction level of the Levels set (global =
  between_class, local = within_class, class_boundary), with the human noise ceiling per level,
  reaction-time summaries and the uncertainty metrics including RT correlations.

Per-triplet arrays for the report go to `workdir/arrays.npz` (responses each model predicts and
responses per triplet, `things_hits` / `things_responses`, for paired comparisons of models; model and
human RSMs with their object ids and categories, entropies, reliability bins), written before
`results.json`.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from aligned import artifacts, metrics, provenance, rsa, uncertainty
from aligned.data import embeddings as embeddings_io
from aligned.data import levels as levels_io
from aligned.data import similarity_matrices, things
from aligned.data import triplets as triplets_io
from aligned.errors import DataError
from aligned.evaluators import HumanTripletEvaluator, fixed
from aligned.paths import as_path
from aligned.transform import load_teacher
from aligned.triplet_similarities import triplet_similarities


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
    embeddings = np.asarray(transform(embeddings, source=config.levels_embeddings))
  data = levels_io.levels_triplets(responses, ids, str(config.levels_ids or config.levels_embeddings))
  sims = triplet_similarities(embeddings, data.human.triplets, config.similarity)
  counts = data.human.counts
  per_level = {}
  for level in levels_io.LEVELS:
    here = data.levels == level
    per_level[level] = {
      **metrics.accuracy_summary(sims[here], counts[here]),
      "rt": levels_io.rt_summary(responses.rt[responses.levels == level]),
    }
  results = {
    "responses": str(config.levels),
    "embeddings": str(config.levels_embeddings),
    "n_responses": int(counts.sum()),
    "n_triplets": data.human.n_triplets,
    "n_timeouts": responses.n_timeouts,
    "trial_types": responses.trial_types,
    "overall": {**metrics.accuracy_summary(sims, counts), "rt": levels_io.rt_summary(responses.rt)},
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
  workdir = as_path(workdir)
  if not config.embeddings and not config.get("levels"):
    raise ValueError("set --config.embeddings to an [objects, features] .npy or .txt file")
  if config.embeddings and not config.triplets:
    raise ValueError("set --config.triplets to a human triplet file")
  transform = load_teacher(config.transform).transform if config.transform else None

  results, arrays = {}, {}
  if config.embeddings:
    things_results, things_arrays = _things_results(config, transform)
    results.update(things_results)
    arrays.update(things_arrays)
  if config.get("levels"):
    results["levels"], levels_arrays = _levels_results(config, transform)
    arrays.update(levels_arrays)

  # written once every input has been read: bad input leaves the workdir as it was
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  # recomputed on every run: provenance.json only says what these results were made from
  keys = ("embeddings", "transform", "triplets", "rsm", "rsm_objects", "levels", "levels_stimuli")
  inputs = {k: config.get(k) for k in (*keys, "levels_embeddings", "levels_ids") if config.get(k)}
  provenance.record(workdir, "evaluate", config.to_dict(), inputs)
  artifacts.save_npz(workdir / "arrays.npz", **arrays)  # before results.json, which marks a complete run
  artifacts.write_json(workdir / "results.json", results)
  return results


def _things_results(config, transform) -> tuple[dict, dict]:
  """Accuracy, noise ceiling, categories, uncertainty and RSA on THINGS objects."""
  embeddings = embeddings_io.load_embeddings(config.embeddings, order=config.embeddings_order)
  if transform is not None:
    if embeddings.shape[1] != transform.in_features:  # named by the transform: one for another backbone
      raise DataError(
        config.transform,
        f"expects {transform.in_features} features but {config.embeddings} has {embeddings.shape[1]}: "
        "a transform for another backbone?",
      )
    embeddings = np.asarray(transform(embeddings, source=config.embeddings))

  human = triplets_io.read_triplets(
    config.triplets, config.triplets_format, n_objects=len(embeddings), index_base=config.get("index_base")
  )
  evaluator = HumanTripletEvaluator(human, fixed(embeddings), config.similarity, config.temperature)
  sims = evaluator.similarities(embeddings)
  hits = metrics.response_hits(sims, human.counts)
  summary = metrics.accuracy_summary(sims, human.counts, hits)
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
    **evaluator.scores(sims),
    "accuracy_ci95": summary["accuracy_ci95"],
    "temperature": float(config.temperature),
    "noise_ceiling": summary["noise_ceiling"],
    "noise_ceiling_ci95": summary["noise_ceiling_ci95"],
    "loo_agreement": summary["loo_agreement"],
  }
  # per triplet, in the file's order: what paired comparisons of models need (report differences)
  arrays = {
    "things_hits": hits.astype(np.float32),
    "things_responses": human.counts.sum(axis=1).astype(np.float32),
  }

  if config.categories and len(embeddings) == things.N_OBJECTS:
    concepts = things.load_concepts()
    results["per_category"] = metrics.per_category_accuracy(
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
