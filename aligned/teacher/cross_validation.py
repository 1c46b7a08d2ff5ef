"""Object-disjoint k-fold cross-validation of the teacher's hyper-parameters.

Objects (not triplets) are split into k folds. For fold f every validation triplet has its three
objects in fold f and every training triplet none, so a validation score measures generalisation to
*new objects*, which is what the teacher must do on ImageNet. The embedding standardisation of each
split is computed on its training objects only.

Where the triplets come from a fixed file, the folds select from it (`masked_folds`): with k folds a
random triplet is a training triplet with probability ((k-1)/k)^3 and a validation one with (1/k)^3,
so each candidate trains on 8-30 % of the data. Where triplets can be drawn (the stand-in), each fold
gets a full-size training set sampled within its own training objects and a held-out set within its
held-out objects (`aligned.teacher.standin.standin_folds`), so the candidates are compared at the size
of the final fit.
"""

from __future__ import annotations

import itertools

import numpy as np

from aligned.teacher import model
from aligned.teacher.model import Hyperparams, TripletTargets


def object_folds(n_objects: int, k: int, seed: int) -> np.ndarray:
  """[n_objects] fold id in 0..k-1, balanced, a random function of the seed."""
  if k < 2:
    raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
  folds = np.arange(n_objects) % k
  return np.random.default_rng(seed).permutation(folds)


def fold_masks(triplets: np.ndarray, fold_of_object: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, validation) boolean masks over triplets for one fold."""
  in_fold = fold_of_object[triplets] == fold  # [n, 3]
  return ~in_fold.any(axis=1), in_fold.all(axis=1)


def used_objects(triplets: np.ndarray) -> np.ndarray:
  return np.unique(triplets)


def grid(lambdas, learning_rates) -> list[dict]:
  """The grid points, lambda-major."""
  if not len(lambdas) or not len(learning_rates):
    raise ValueError("the hyper-parameter grid is empty: give at least one lambda and one learning rate")
  return [
    {"lam": float(lam), "learning_rate": float(lr)} for lam, lr in itertools.product(lambdas, learning_rates)
  ]


def _restrict(x: np.ndarray, data: TripletTargets) -> tuple[np.ndarray, TripletTargets]:
  """The embeddings of the objects `data` uses, and `data` with triplets re-indexed into them."""
  objects = used_objects(data.triplets)
  local = np.searchsorted(objects, data.triplets).astype(np.int32)
  return x[objects], TripletTargets(local, data.probs, data.weights)


def masked_folds(data: TripletTargets):
  """Fold data of a fixed triplet set (a human file): per fold, the triplets with no object in it
  (training) and those with all three objects in it (validation); mixed triplets are dropped."""

  def fold_data(fold: int, fold_of_object: np.ndarray) -> tuple[TripletTargets, TripletTargets]:
    train_mask, val_mask = fold_masks(data.triplets, fold_of_object, fold)
    return data.select(train_mask), data.select(val_mask)

  return fold_data


def cross_validate(
  x: np.ndarray,
  fold_data,
  base: Hyperparams,
  points: list[dict],
  k: int,
  seed: int,
  make_fitter,
  on_result=None,
) -> tuple[list[dict], dict]:
  """Fits every grid point on every fold; returns (rows, best point by mean validation loss).

  Each fit is the full two-step fit: W, b at T = 1, then T alone on the fold's training triplets;
  the validation loss is taken at that T (accuracy does not depend on T). A fold's fit sees only its
  training objects' embeddings, and standardises with their mean and std.

  Args:
    fold_data: (fold, [n_objects] fold of each object) -> (train, validation) TripletTargets whose
      objects lie outside / inside the fold (`masked_folds`, or the stand-in's `standin_folds`).
    make_fitter: (x, mean, std, hparams) -> an object with `fit(data)`, `fit_temperature(params,
      data)` and `evaluate(params, data, temperature)` (x: the training objects' embeddings).
    on_result: called with each row as it is computed (for metrics.jsonl and progress).
  """
  folds = object_folds(len(x), k, seed)
  rows = []
  for fold in range(k):
    train, val = fold_data(fold, folds)
    if not len(train) or not len(val):
      raise ValueError(f"fold {fold} has {len(train)} training and {len(val)} validation triplets")
    # Each side sees only its own objects (the matrix path's cost grows with their square).
    (x_train, train), (x_val, val) = _restrict(x, train), _restrict(x, val)
    mean, std = model.standardization(x_train)
    for point in points:
      hparams = Hyperparams(**{**base.__dict__, **point})
      fitter = make_fitter(x_train, mean, std, hparams)
      params, _ = fitter.fit(train)
      temperature = fitter.fit_temperature(params, train)
      row = {
        "fold": fold,
        **point,
        "n_train": len(train),
        "n_val": len(val),
        "temperature": temperature,
        **{f"train_{k}": v for k, v in fitter.evaluate(params, train, temperature).items()},
        **{
          f"val_{k}": v for k, v in model.score(params, x_val, mean, std, val, hparams, temperature).items()
        },
      }
      rows.append(row)
      if on_result:
        on_result(row)
  summary = []
  for point in points:
    mine = [r for r in rows if r["lam"] == point["lam"] and r["learning_rate"] == point["learning_rate"]]
    summary.append(
      {
        **point,
        "val_loss": float(np.mean([r["val_loss"] for r in mine])),
        "val_loss_sem": float(np.std([r["val_loss"] for r in mine], ddof=1) / np.sqrt(len(mine))),
        "val_accuracy": float(np.mean([r["val_accuracy"] for r in mine])),
      }
    )
  best = min(summary, key=lambda s: s["val_loss"])
  return rows, {"best": best, "summary": summary}
