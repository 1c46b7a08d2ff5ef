"""`fit_teacher(config, workdir)`: what `python -m experiments.teacher` runs.

Embeddings -> training triplets (a human file or the SPoSE stand-in) -> object-disjoint CV over the
(lambda, learning rate) grid -> final fit on everything with the chosen point -> evaluation on the
given human files -> `transform.npz`, `results.json`, `metrics.jsonl`, `plots/cv_curve.png`.
"""

from __future__ import annotations

import itertools
import os
import pathlib
import time

import jax.numpy as jnp
import ml_collections
import numpy as np

from aligned import artifacts, odd_one_out, plots
from aligned.data import embeddings as embeddings_io
from aligned.data import triplets as triplets_io
from aligned.errors import DataError
from aligned.evaluate import triplet_metrics
from aligned.noise_ceiling import noise_ceiling
from aligned.progress import Progress
from aligned.sharding import data_mesh
from aligned.teacher import cross_validation, model, standin
from aligned.teacher.model import Hyperparams, TripletTargets
from aligned.teacher.optimize import FitOptions, Fitter
from aligned.triplet_similarities import triplet_similarities


def _eval_files(config) -> list[tuple[str, str]]:
  files = [f for f in config.eval_triplets if f]
  formats = list(config.eval_formats) or ["odd_last"]
  if len(formats) == 1:
    formats = formats * len(files)
  if len(formats) != len(files):
    raise ValueError(f"{len(files)} eval_triplets but {len(formats)} eval_formats")
  return list(zip(files, formats, strict=True))


def training_data(config, x: np.ndarray) -> TripletTargets:
  """The human triplet file of `config.triplets`, or the SPoSE stand-in when it is empty."""
  n_objects = len(x)
  if config.triplets:
    human = triplets_io.read_triplets(config.triplets, config.triplets_format, n_objects=n_objects)
    return TripletTargets.from_counts(human.triplets, human.counts)
  spose = embeddings_io.load_embeddings(config.standin.spose)
  if len(spose) != n_objects:
    raise DataError(
      config.embeddings, f"{n_objects} embeddings but the SPoSE stand-in labels {len(spose)} objects"
    )
  exclude = [np.zeros((0, 3), np.int32)]
  if config.standin.exclude_eval:
    for path, fmt in _eval_files(config):
      exclude.append(triplets_io.read_triplets(path, fmt, n_objects=n_objects).triplets)
  return standin.standin_targets(
    spose, config.standin.n_triplets, config.standin.seed, config.standin.responses, np.concatenate(exclude)
  )


def _transform_scores(x, transform, temp, path, fmt, similarity) -> dict:
  """Base (raw embeddings, T = 1) and teacher accuracy etc. on one human file."""
  human = triplets_io.read_triplets(path, fmt, n_objects=len(x))
  result = {
    "file": str(path),
    "format": fmt,
    "n_triplets": human.n_triplets,
    "n_responses": human.n_responses,
  }
  for name, embeddings, t in (("base", x, 1.0), ("teacher", np.asarray(transform(x)), temp)):
    sims = triplet_similarities(embeddings, human.triplets, similarity)
    scores = triplet_metrics(sims, human.counts, t)
    result[f"{name}_accuracy"] = scores["accuracy"]
    result[f"{name}_mean_human_choice_prob"] = scores["mean_human_choice_prob"]
    if human.is_multi_response:
      kl = odd_one_out.kl_divergence(
        jnp.asarray(sims), target_probs=jnp.asarray(human.choice_distribution(), jnp.float32), temperature=t
      )
      result[f"{name}_kl_to_humans"] = float(np.average(np.asarray(kl), weights=human.responses_per_triplet))
  if human.is_multi_response:
    result["noise_ceiling"] = noise_ceiling(human.counts)["noise_ceiling"]
  return result


def fit_teacher(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  workdir = pathlib.Path(workdir)
  if not config.embeddings:
    raise ValueError("set --config.embeddings to the [objects, features] embeddings to align")
  points = cross_validation.grid(config.lambdas, config.learning_rates)
  workdir.mkdir(parents=True, exist_ok=True)
  artifacts.write_json(workdir / "config.json", config.to_dict())
  start = time.perf_counter()

  x = embeddings_io.load_embeddings(config.embeddings, order=config.embeddings_order)
  data = training_data(config, x)
  if data.triplets.max() >= len(x):
    raise DataError(
      config.embeddings, f"{len(x)} embeddings, but a triplet uses object {data.triplets.max()}"
    )
  base = Hyperparams(objective=config.objective, regularizer=config.regularizer, similarity=config.similarity)
  options = FitOptions(
    steps=config.steps,
    batch_size=config.batch_size,
    seed=config.seed,
    path=config.path,
    chunk=config.chunk,
    init_scale=config.init_scale or None,
    log_every=config.log_every,
  )
  mesh = data_mesh()

  def make_fitter(x_, mean, std, hparams):
    return Fitter(x_, mean, std, hparams, options, mesh)

  with artifacts.MetricsLog(workdir / "metrics.jsonl") as log:
    cv_progress, cv_done = Progress(len(points) * config.folds, "fits", every_s=0.0), itertools.count(1)

    def on_cv_row(row):
      log.write({"event": "cv", **row})
      print(
        f"cv fold {row['fold']} lambda {row['lam']:g} lr {row['learning_rate']:g}: "
        f"val loss {row['val_loss']:.4f} accuracy {100 * row['val_accuracy']:.2f} %",
        flush=True,
      )
      cv_progress.update(next(cv_done))

    if len(points) > 1:
      rows, cv = cross_validation.cross_validate(
        x, data, base, points, config.folds, config.seed, make_fitter, on_cv_row
      )
      chosen = cv["best"]
    else:
      rows, cv, chosen = [], {"summary": []}, points[0]

    hparams = Hyperparams(**{**base.__dict__, "lam": chosen["lam"], "learning_rate": chosen["learning_rate"]})
    mean, std = model.standardization(x[cross_validation.used_objects(data.triplets)])
    fitter = make_fitter(x, mean, std, hparams)
    params, history = fitter.fit(data, on_log=lambda r: log.write({"event": "fit", **r}), progress=True)
    train_scores = fitter.evaluate(params, data)
    log.write({"event": "final", **train_scores})

  transform, temp = model.to_transform(params, mean, std, hparams)
  artifacts.save_npz(
    workdir / "transform.npz",
    weights=transform.weights,
    bias=transform.bias,
    mean=np.float32(mean),
    std=np.float32(std),
    temperature=np.float32(temp),
  )
  evaluations = [
    _transform_scores(x, transform, temp, path, fmt, config.similarity) for path, fmt in _eval_files(config)
  ]
  results = {
    "embeddings": str(config.embeddings),
    "n_objects": len(x),
    "n_features": int(x.shape[1]),
    "training_data": str(config.triplets) if config.triplets else "spose_standin",
    "n_training_triplets": len(data),
    "objective": config.objective,
    "regularizer": config.regularizer,
    "similarity": config.similarity,
    "path": fitter.path,
    "n_devices": int(mesh.devices.size),
    "chosen": chosen,
    "temperature": temp,
    "cv_summary": cv["summary"],
    "cv_rows": rows,
    "train": train_scores,
    "evaluations": evaluations,
    "seconds": time.perf_counter() - start,
  }
  if cv["summary"]:
    plots.plot_cv_curve(cv["summary"], chosen, workdir / "plots" / "cv_curve.png")
  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  lines = [
    f"teacher on {results['embeddings']} ({results['n_objects']} x {results['n_features']}), "
    f"{results['objective']} objective, {results['n_training_triplets']:,} training triplets "
    f"({results['training_data']})",
    f"chosen lambda {results['chosen']['lam']:g}, lr {results['chosen']['learning_rate']:g}; "
    f"temperature {results['temperature']:.4g}; {results['seconds']:.0f} s",
  ]
  for summary in results["cv_summary"]:
    lines.append(
      f"  cv lambda {summary['lam']:<8g} lr {summary['learning_rate']:<6g} val loss {summary['val_loss']:.4f} "
      f"accuracy {100 * summary['val_accuracy']:.2f} %"
    )
  for e in results["evaluations"]:
    line = (
      f"{pathlib.Path(e['file']).name}: base {100 * e['base_accuracy']:.2f} % -> teacher "
      f"{100 * e['teacher_accuracy']:.2f} % ({e['n_responses']:,} responses)"
    )
    if "noise_ceiling" in e:
      line += f", noise ceiling {100 * e['noise_ceiling']:.2f} %"
    lines.append(line)
  return "\n".join(lines)
