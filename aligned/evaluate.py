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
"""

from __future__ import annotations

import os
import pathlib

import jax.numpy as jnp
import ml_collections
import numpy as np

from aligned import artifacts, odd_one_out, rsa
from aligned.data import embeddings as embeddings_io
from aligned.data import similarity_matrices
from aligned.data import triplets as triplets_io
from aligned.errors import DataError
from aligned.noise_ceiling import noise_ceiling
from aligned.transform import load_transform
from aligned.triplet_similarities import triplet_similarities


def triplet_metrics(sims: np.ndarray, counts: np.ndarray, temperature: float = 1.0) -> dict:
  """Accuracy and mean probability of the human choice, over responses."""
  sims, counts = jnp.asarray(sims), jnp.asarray(counts)
  # Hits counted as an integer so the reported fraction is exact (e.g. 1427 / 2171).
  hits = int(jnp.sum(odd_one_out.predicted_pair_onehot(sims) * counts))
  return {
    "accuracy": hits / int(counts.sum()),
    "mean_human_choice_prob": float(odd_one_out.mean_choice_prob(sims, counts, temperature)),
  }


def _optional(value) -> str | None:
  return str(value) if value else None


def evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Scores embeddings on a human triplet file (and optionally a human similarity matrix)."""
  workdir = pathlib.Path(workdir)
  if not config.embeddings:
    raise ValueError("set --config.embeddings to an [objects, features] .npy or .txt file")
  if not config.triplets:
    raise ValueError("set --config.triplets to a human triplet file")
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())

  embeddings = embeddings_io.load_embeddings(config.embeddings, order=config.embeddings_order)
  if config.transform:
    transform = load_transform(config.transform)
    if embeddings.shape[1] != transform.in_features:
      raise DataError(
        config.transform,
        f"transform expects {transform.in_features} features but {config.embeddings} has "
        f"{embeddings.shape[1]}",
      )
    embeddings = np.asarray(transform(embeddings))

  human = triplets_io.read_triplets(config.triplets, config.triplets_format, n_objects=len(embeddings))
  sims = triplet_similarities(embeddings, human.triplets, config.similarity)
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
    "temperature": float(config.temperature),
  }
  ceiling = noise_ceiling(human.counts) if human.is_multi_response else None
  results["noise_ceiling"] = ceiling["noise_ceiling"] if ceiling else None
  results["noise_ceiling_ci95"] = ceiling["noise_ceiling_ci95"] if ceiling else None
  results["loo_agreement"] = ceiling["loo_agreement"] if ceiling else None

  if config.rsm:
    if not config.rsm_objects:
      raise ValueError("--config.rsm needs --config.rsm_objects (the matrix's object list)")
    human_rsm = similarity_matrices.load_human_rsm(config.rsm, config.rsm_objects, config.rsm_kind)
    if human_rsm.object_indices.max() >= len(embeddings):
      raise DataError(config.rsm_objects, f"object index beyond the {len(embeddings)} embeddings")
    chosen = jnp.asarray(embeddings[human_rsm.object_indices])
    model_rsm = np.asarray(odd_one_out.similarity_matrix(chosen, config.similarity))
    scores = rsa.rsa(model_rsm, human_rsm.similarity)
    results.update(
      rsm=str(config.rsm),
      rsm_n_objects=len(human_rsm.object_ids),
      rsa_spearman=scores["spearman"],
      rsa_pearson=scores["pearson"],
    )

  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  """A short human-readable table of `evaluate`'s results."""

  def pct(x):
    return "n/a" if x is None else f"{100 * x:6.2f} %"

  lines = [
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
  return "\n".join(lines)
