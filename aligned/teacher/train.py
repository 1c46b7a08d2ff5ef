"""`fit_teacher(config, workdir)`: what `aligned-teacher` runs.

Embeddings -> training triplets (a human file, optionally with soft targets from a choice model, or
the SPoSE stand-in) -> object-disjoint CV over the (lambda, learning rate) grid -> final fit on
everything with the chosen point (W, b at T = 1, then T alone) -> the base model's own temperature
(transform held at identity, same objective and data: the calibrated UnAligNet control) -> evaluation
on the given human files -> `transform.npz`, `results.json`, `metrics.jsonl`, `plots/cv_curve.png`.
"""

from __future__ import annotations

import itertools
import os
import time

import ml_collections
import numpy as np

from aligned import artifacts, evaluators, metrics, plots, provenance
from aligned.data import embeddings as embeddings_io
from aligned.data import triplets as triplets_io
from aligned.distributed import data_mesh
from aligned.errors import DataError
from aligned.evaluators import HumanTripletEvaluator
from aligned.paths import as_path
from aligned.progress import Progress
from aligned.teacher import cross_validation, model, standin
from aligned.teacher.model import Hyperparams, TripletTargets
from aligned.teacher.optimize import FitOptions, Fitter
from aligned.transform import Teacher
from aligned.triplet_similarities import triplet_similarities


def _eval_files(config) -> list[tuple[str, str, int | None]]:
  """(file, format, index base) of every evaluation file."""
  files = [f for f in config.eval_triplets if f]
  formats = list(config.eval_formats) or ["odd_last"]
  bases = list(config.get("eval_index_bases", ())) or [None]
  if len(formats) == 1:
    formats = formats * len(files)
  if len(bases) == 1:
    bases = bases * len(files)
  if len(formats) != len(files):
    raise ValueError(f"{len(files)} eval_triplets but {len(formats)} eval_formats")
  if len(bases) != len(files):
    raise ValueError(f"{len(files)} eval_triplets but {len(bases)} eval_index_bases")
  return list(zip(files, formats, bases, strict=True))


def _choice_model(path: str, n_objects: int, what: str) -> np.ndarray:
  embeddings = embeddings_io.load_embeddings(path)
  if len(embeddings) != n_objects:
    raise DataError(path, f"{what} has {len(embeddings)} rows but the teacher's embeddings {n_objects}")
  return embeddings


def training_data(config, x: np.ndarray):
  """(all training triplets, CV fold data): the human file of `config.triplets` (folds select from
  it), or the SPoSE stand-in when it is empty (each fold samples its own, see `cross_validation`).

  With `config.soft_targets` set, a real file's one-hot responses are replaced by the choice
  probabilities of that embedding (e.g. SPoSE or VICE) on each training triplet: the
  approximate-Bayesian reading of uncertainty distillation (a model of many people's choices stands
  in for the per-triplet distribution that one response cannot give).
  """
  n_objects = len(x)
  if config.triplets:
    human = triplets_io.read_triplets(
      config.triplets, config.triplets_format, n_objects=n_objects, index_base=config.get("index_base")
    )
    data = TripletTargets.from_counts(human.triplets, human.counts)
    if config.soft_targets:
      model_ = _choice_model(config.soft_targets, n_objects, "the soft-target choice model")
      probs = standin.choice_probs(model_, data.triplets).astype(np.float32)
      data = TripletTargets(data.triplets, probs, np.ones(len(data), np.float32))
    return data, cross_validation.masked_folds(data)
  spose = _choice_model(config.standin.spose, n_objects, "the SPoSE stand-in")
  exclude = [np.zeros((0, 3), np.int32)]
  if config.standin.exclude_eval:
    for path, fmt, base in _eval_files(config):
      exclude.append(triplets_io.read_triplets(path, fmt, n_objects=n_objects, index_base=base).triplets)
  s, exclude = config.standin, np.concatenate(exclude)
  data = standin.standin_targets(spose, s.n_triplets, s.seed, s.responses, exclude)
  return data, standin.standin_folds(spose, s.n_triplets, s.n_val, s.seed, s.responses, exclude)


def _transform_scores(x, teacher: Teacher, path, fmt, base) -> dict:
  """Base (raw embeddings at their own fitted T) and teacher accuracy, p(human choice) and KL on one
  human file (of index base `base`)."""
  human = triplets_io.read_triplets(path, fmt, n_objects=len(x), index_base=base)
  result = {
    "file": str(path),
    "format": fmt,
    "n_triplets": human.n_triplets,
    "n_responses": human.n_responses,
  }
  for name, embed, temperature in (
    ("base", evaluators.fixed(x), teacher.base_temperature),
    ("teacher", lambda t: np.asarray(t.transform(x)), teacher.temperature),
  ):
    evaluator = HumanTripletEvaluator(human, embed, teacher.similarity, temperature, kl=True)
    result.update({f"{name}_{k}": v for k, v in evaluator.run(teacher).items()})
  if human.is_multi_response:
    result["noise_ceiling"] = metrics.noise_ceiling(human.counts)["noise_ceiling"]
  return result


def _select(config, x, fold_data, base: Hyperparams, points, make_fitter, log):
  """(CV rows, CV summary, chosen grid point): object-disjoint CV when the grid has several points."""
  if len(points) == 1:
    return [], {"summary": []}, points[0]
  progress, done = Progress(len(points) * config.folds, "fits", every_s=0.0), itertools.count(1)

  def on_cv_row(row):
    log.write({"event": "cv", **row})
    print(
      f"cv fold {row['fold']} lambda {row['lam']:g} lr {row['learning_rate']:g}: "
      f"T {row['temperature']:.3g}, val loss {row['val_loss']:.4f} accuracy {100 * row['val_accuracy']:.2f} %",
      flush=True,
    )
    progress.update(next(done))

  rows, cv = cross_validation.cross_validate(
    x, fold_data, base, points, config.folds, config.seed, make_fitter, on_cv_row
  )
  return rows, cv, cv["best"]


# what the teacher writes into its workdir: `restart` deletes these (and nothing else)
OWNED = ("config.json", "results.json", "transform.npz", "metrics.jsonl", "plots")


def _check_provenance(config, workdir) -> None:
  """`restart`: deletes this stage's files first (only in a workdir its provenance.json shows as the
  teacher's); then records or checks the settings and inputs (embeddings, training triplets or the
  stand-in's choice model, soft targets, evaluation files): a rerun with others is refused."""
  if config.get("restart", False):
    provenance.start_over(workdir, "teacher", OWNED)
  inputs = {"embeddings": config.embeddings}
  if config.triplets:
    inputs["triplets"] = config.triplets
    if config.soft_targets:
      inputs["soft_targets"] = config.soft_targets
  else:
    inputs["standin.spose"] = config.standin.spose
  for k, path in enumerate(f for f in config.eval_triplets if f):
    inputs[f"eval_triplets[{k}]"] = path
  volatile = ("restart", "eval_triplets")  # the eval files: compared by content, as inputs
  provenance.check_or_record(workdir, "teacher", config.to_dict(), inputs, volatile)


def fit_teacher(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Fits the teacher of `config` in `workdir` (see the module docstring); returns the results."""
  workdir = as_path(workdir)
  if not config.embeddings:
    raise ValueError("set --config.embeddings to the [objects, features] embeddings to align")
  points = cross_validation.grid(config.lambdas, config.learning_rates)
  start = time.perf_counter()

  x = embeddings_io.load_embeddings(config.embeddings, order=config.embeddings_order)
  data, fold_data = training_data(config, x)
  if data.triplets.max() >= len(x):
    raise DataError(
      config.embeddings, f"{len(x)} embeddings, but a triplet uses object {data.triplets.max()}"
    )
  workdir.mkdir(parents=True, exist_ok=True)  # once the inputs are read: bad input writes nothing
  _check_provenance(config, workdir)
  artifacts.write_json(workdir / "config.json", config.to_dict())
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
    rows, cv, chosen = _select(config, x, fold_data, base, points, make_fitter, log)
    hparams = Hyperparams(**{**base.__dict__, "lam": chosen["lam"], "learning_rate": chosen["learning_rate"]})
    mean, std = model.standardization(x[cross_validation.used_objects(data.triplets)])
    fitter = make_fitter(x, mean, std, hparams)
    params, history = fitter.fit(data, on_log=lambda r: log.write({"event": "fit", **r}), progress=True)
    temp = fitter.fit_temperature(params, data)
    train_scores = fitter.evaluate(params, data, temp)
    # the control's calibration: the same 1-D fit on the raw embeddings (transform at identity)
    base_temp = model.fit_temperature(triplet_similarities(x, data.triplets, config.similarity), data)
    log.write({"event": "final", "temperature": temp, "base_temperature": base_temp, **train_scores})

  teacher = Teacher(
    model.to_transform(params, mean, std), temp, config.similarity, config.objective, base_temp
  )
  teacher.save(workdir / "transform.npz")
  evaluations = [_transform_scores(x, teacher, *file) for file in _eval_files(config)]
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
    "base_temperature": base_temp,
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
    f"temperature {results['temperature']:.4g} (base model {results['base_temperature']:.4g}); "
    f"{results['seconds']:.0f} s",
  ]
  for summary in results["cv_summary"]:
    lines.append(
      f"  cv lambda {summary['lam']:<8g} lr {summary['learning_rate']:<6g} val loss {summary['val_loss']:.4f} "
      f"accuracy {100 * summary['val_accuracy']:.2f} %"
    )
  for e in results["evaluations"]:
    line = (
      f"{as_path(e['file']).name}: base {100 * e['base_accuracy']:.2f} % -> teacher "
      f"{100 * e['teacher_accuracy']:.2f} % ({e['n_responses']:,} responses)"
    )
    if "noise_ceiling" in e:
      line += f", noise ceiling {100 * e['noise_ceiling']:.2f} %"
    lines.append(line)
  return "\n".join(lines)
