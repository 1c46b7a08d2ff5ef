"""Machine-learning transfer of frozen embeddings: few-shot linear probes and distribution shift.

Definitions (results.json of `aligned-transfer` follows them):

- **Probes**: ridge and logistic linear probes, defined in `aligned.probes`.
- **Few-shot**: for each seed, each class's training items are shuffled once; the k-shot set is the
  first k of every class (so the 5 shots contain the 1 shot). Accuracy is over all test items, in the
  training dataset's label space (classes matched by name). A tie between classes goes to the lowest
  index, so constant features score the frequency of class 0 (chance on balanced test sets).
  Reported per k: mean and sample standard deviation (ddof 1; 0 for one seed) over seeds.
- **Shift**: one probe trained on all items of a training store, scored on each evaluation store
  with labels mapped by class name; when `restrict` is set the argmax runs only over the classes
  present in the evaluation set (the ImageNet-A/R protocol: 200 of the 1,000 classes).
- **Subpopulation shift (BREEDS-style)**: classes grouped by a class -> superclass mapping (a file,
  or `wordnet:DEPTH`: each ImageNet class's WordNet ancestor DEPTH steps below `entity` along its
  primary hypernyms, `aligned.data.wordnet.superclasses`); within each superclass (>= 2 classes
  present) a seeded half of the classes is the source, the rest the target. A probe over
  superclasses is trained on source classes and scored on the test items of the
  source classes (in distribution) and of the target classes (unseen subpopulations).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import ml_collections
import numpy as np
from etils import epath

from aligned import artifacts, provenance
from aligned.data import wordnet
from aligned.data.class_labels import StoreLabels, map_labels, read_superclasses, store_labels
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.paths import as_path
from aligned.probes import accuracy, fit_probe
from aligned.progress import Progress

# -- Few-shot -----------------------------------------------------------------------------------


def shot_order(y: np.ndarray, n_classes: int, seed: int) -> list[np.ndarray]:
  """Per class, the indices of its items in a seeded random order (first k = the k shots)."""
  rng = np.random.default_rng(seed)
  return [rng.permutation(np.flatnonzero(y == c)) for c in range(n_classes)]


def k_shot_indices(order: list[np.ndarray], k: int) -> np.ndarray:
  """The first k items of every class (fewer where a class has fewer), class by class."""
  return np.concatenate([indices[:k] for indices in order])


def summarize(accuracies: list[float]) -> dict:
  """{"mean", "std" (ddof 1; 0 for one value), "seeds"} of per-seed accuracies."""
  values = np.asarray(accuracies, np.float64)
  std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return {"mean": float(values.mean()), "std": std, "seeds": [float(v) for v in values]}


def fewshot(
  train_x: np.ndarray,
  train_y: np.ndarray,
  test_x: np.ndarray,
  test_y: np.ndarray,
  n_classes: int,
  shots=(1, 5, 10, 25),
  seeds=(0, 1, 2),
  methods=("ridge", "logistic"),
  config=None,
  progress: Progress | None = None,
) -> tuple[dict, dict]:
  """Few-shot accuracies {method: {"k": summary}} and details {method: {"k": {"l2": [...], ...}}}.

  Labels of train and test must already share one label space of `n_classes` classes.
  """
  results = {m: {str(k): [] for k in shots} for m in methods}
  details = {m: {str(k): {"l2": [], "n_train": []} for k in shots} for m in methods}
  done = 0
  for seed in seeds:
    order = shot_order(np.asarray(train_y), n_classes, seed)
    for k in shots:
      index = k_shot_indices(order, k)
      for method in methods:
        probe = fit_probe(method, train_x[index], train_y[index], n_classes, config, seed)
        results[method][str(k)].append(accuracy(probe, test_x, test_y))
        details[method][str(k)]["l2"].append(float(probe.l2))
        details[method][str(k)]["n_train"].append(len(index))
        done += 1
        if progress is not None:
          progress.update(done, method=method, k=k, seed=seed)
  summary = {m: {k: summarize(v) for k, v in per_k.items()} for m, per_k in results.items()}
  return summary, details


# -- Subpopulation shift (BREEDS-style) ---------------------------------------------------------


class SubpopulationTask(NamedTuple):
  """superclasses: names; source/target: [n_classes] superclass index of each class, or -1."""

  superclasses: tuple[str, ...]
  source: np.ndarray
  target: np.ndarray


def subpopulation_task(names: tuple[str, ...], mapping: dict[str, str], seed: int = 0) -> SubpopulationTask:
  """Splits the classes of each superclass (>= 2 of them among `names`) into source and target halves.

  >>> task = subpopulation_task(("a1", "a2", "b1", "b2", "c"), {"a1": "A", "a2": "A", "b1": "B", "b2": "B", "c": "C"})
  >>> task.superclasses, int((task.source >= 0).sum()), int((task.target >= 0).sum())
  (('A', 'B'), 2, 2)
  """
  members: dict[str, list[int]] = {}
  for i, name in enumerate(names):
    if name in mapping:
      members.setdefault(mapping[name], []).append(i)
  superclasses = tuple(sorted(s for s, m in members.items() if len(m) >= 2))
  if len(superclasses) < 2:
    raise DataError(None, "the superclass mapping gives fewer than 2 superclasses with >= 2 classes present")
  rng = np.random.default_rng(seed)
  source, target = np.full(len(names), -1), np.full(len(names), -1)
  for s, superclass in enumerate(superclasses):
    classes = rng.permutation(members[superclass])
    half = len(classes) // 2
    source[classes[:half]], target[classes[half:]] = s, s
  return SubpopulationTask(superclasses, source, target)


# -- The transfer job ---------------------------------------------------------------------------


def _parse_stores(entries) -> dict[str, epath.Path]:
  """`NAME=STORE` or `STORE` (named by its source: tfds "dataset/split", or the image folder's name)."""
  stores = {}
  for entry in entries:
    name, sep, path = entry.partition("=")
    path = as_path(path if sep else entry)
    if not sep:
      metadata = EmbeddingStore(path).metadata
      root = str(metadata.get("root", ""))
      name = root if metadata.get("source") == "tfds" else as_path(root).name or path.parent.name
    if name in stores:
      raise ValueError(f"two stores are named {name!r}; name them with NAME=STORE")
    stores[name] = path
  return stores


def _parse_pair(entry: str) -> tuple[str, list[str]]:
  train, sep, evals = entry.partition("->")
  if not sep or not train.strip() or not evals.strip():
    raise ValueError(f"{entry!r}: want TRAIN->EVAL[,EVAL...] (store names)")
  return train.strip(), [e.strip() for e in evals.split(",") if e.strip()]


def dataset_key(name: str) -> str:
  """Results key of a store name: its dataset ("imagenet2012/validation" -> "imagenet2012")."""
  return name.split("/", 1)[0]


class _Stores:
  """Features and labels of named stores, each read once."""

  def __init__(self, paths: dict[str, epath.Path], config):
    self.paths, self.config, self._cache = paths, config, {}

  def __contains__(self, name: str) -> bool:
    return name in self.paths

  def get(self, name: str) -> tuple[np.ndarray, StoreLabels]:
    if name not in self.paths:
      raise ValueError(f"no store named {name!r}; known: {', '.join(self.paths) or 'none'} (config.stores)")
    if name not in self._cache:
      ids, x = EmbeddingStore(self.paths[name]).read()
      labels = store_labels(self.paths[name], ids, self.config.data_dir, self.config.label_key)
      self._cache[name] = (x, labels)
    return self._cache[name]


def _fewshot_job(stores: _Stores, train: str, test: str, config, results: dict) -> None:
  x, train_labels = stores.get(train)
  test_x, test_labels = stores.get(test)
  n_classes = len(train_labels.names)
  test_y = map_labels(test_labels.labels, test_labels.names, train_labels.names, stores.paths[test])
  total = len(config.seeds) * len(config.shots) * len(config.methods)
  summary, details = fewshot(
    x,
    train_labels.labels,
    test_x,
    test_y,
    n_classes,
    tuple(config.shots),
    tuple(config.seeds),
    tuple(config.methods),
    config,
    Progress(total, "probes"),
  )
  results["fewshot"][dataset_key(train)] = summary
  results["details"]["fewshot"][dataset_key(train)] = {
    "train": train,
    "test": test,
    "n_classes": n_classes,
    "n_test": len(test_y),
    **details,
  }


def _shift_job(stores: _Stores, train: str, evals: list[str], config, results: dict) -> None:
  x, labels = stores.get(train)
  probe = fit_probe(config.shift_probe, x, labels.labels, len(labels.names), config)
  scores = {}
  for name in evals:
    if name not in stores:
      results["details"]["skipped"].append(name)  # "when present": a missing dataset is no error
      continue
    eval_x, eval_labels = stores.get(name)
    y = map_labels(eval_labels.labels, eval_labels.names, labels.names, stores.paths[name])
    allowed = np.isin(np.arange(len(labels.names)), y) if config.restrict_to_eval_classes else None
    key = dataset_key(name) if dataset_key(name) not in scores else name
    scores[key] = accuracy(probe, eval_x, y, allowed)
  results["shift"][dataset_key(train)] = scores
  results["details"]["shift"][dataset_key(train)] = {
    "train": train,
    "probe": config.shift_probe,
    "l2": float(probe.l2),
    "n_train": len(x),
  }


def superclass_mapping(spec: str, class_names) -> tuple[dict[str, str], str]:
  """(class -> superclass, a short name for result keys) from `config.superclasses`: a file of
  `CLASS SUPERCLASS` lines, or `wordnet:DEPTH` (WordNet ancestors of the classes at that depth)."""
  depth = _wordnet_depth(spec)
  if depth is not None:
    return wordnet.superclasses(list(class_names), depth), f"wordnet{depth}"
  return read_superclasses(spec), as_path(spec).stem


def _wordnet_depth(spec: str) -> int | None:
  """DEPTH of a `wordnet:DEPTH` spec, None for a file; a ValueError for a malformed spec."""
  if not spec.startswith("wordnet:"):
    return None
  depth = spec.removeprefix("wordnet:")
  if not depth.isdigit():
    raise ValueError(
      f"superclasses {spec!r}: expected wordnet:DEPTH with DEPTH a whole number, e.g. wordnet:6"
    )
  return int(depth)


def _breeds_job(stores: _Stores, train: str, test: str, config, results: dict) -> None:
  x, labels = stores.get(train)
  mapping, name = superclass_mapping(config.superclasses, labels.names)
  test_x, test_labels = stores.get(test)
  test_y = map_labels(test_labels.labels, test_labels.names, labels.names, stores.paths[test])
  task = subpopulation_task(labels.names, mapping, config.breeds_seed)
  rows = task.source[labels.labels] >= 0
  probe = fit_probe(
    config.shift_probe, x[rows], task.source[labels.labels[rows]], len(task.superclasses), config
  )
  scores = {}
  for part, assignment in (("source", task.source), ("target", task.target)):
    keep = assignment[test_y] >= 0
    scores[part] = accuracy(probe, test_x[keep], assignment[test_y[keep]])
  key = f"{dataset_key(train)}:breeds_{name}"
  results["shift"][key] = scores
  results["details"]["shift"][key] = {
    "train": train,
    "test": test,
    "superclasses": list(task.superclasses),
    "n_source_classes": int((task.source >= 0).sum()),
    "n_target_classes": int((task.target >= 0).sum()),
  }


def transfer(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> dict:
  """Few-shot, shift and subpopulation-shift accuracies of the configured stores -> W/results.json."""
  workdir = as_path(workdir)
  stores = _Stores(_parse_stores(config.stores), config)
  pairs = {key: [_parse_pair(e) for e in config.get(key, ())] for key in ("fewshot", "shift", "breeds")}
  for key in ("fewshot", "breeds"):
    for train, evals in pairs[key]:
      if len(evals) != 1:
        raise ValueError(f"{key}: {train}->{','.join(evals)}: want exactly one test store")
  if config.shift_probe not in ("ridge", "logistic"):
    raise ValueError(f"shift_probe {config.shift_probe!r}: expected ridge or logistic")
  if pairs["breeds"] and _wordnet_depth(config.superclasses) is None:
    read_superclasses(config.superclasses)  # a bad file or spec is reported before any probe is fit
  results = {"fewshot": {}, "shift": {}, "details": {"fewshot": {}, "shift": {}, "skipped": []}}
  start = time.perf_counter()

  for train, (test,) in pairs["fewshot"]:
    _fewshot_job(stores, train, test, config, results)
  for train, evals in pairs["shift"]:
    _shift_job(stores, train, evals, config, results)
  for train, (test,) in pairs["breeds"]:
    _breeds_job(stores, train, test, config, results)

  results["details"]["seconds"] = time.perf_counter() - start
  # after every store is read: bad input writes nothing
  artifacts.write_json(workdir / "config.json", config.to_dict())
  # recomputed on every run: provenance.json only says what these results were made from
  inputs = {f"stores.{name}": path for name, path in stores.paths.items()}
  if config.superclasses and _wordnet_depth(config.superclasses) is None:
    inputs["superclasses"] = config.superclasses
  provenance.record(workdir, "transfer", config.to_dict(), inputs)
  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  lines = []
  for dataset, methods in results["fewshot"].items():
    for method, per_k in methods.items():
      cells = "  ".join(f"{k}-shot {100 * v['mean']:.2f} ± {100 * v['std']:.2f} %" for k, v in per_k.items())
      lines.append(f"few-shot {dataset} {method:8s} {cells}")
  for train, evals in results["shift"].items():
    cells = "  ".join(f"{name} {100 * acc:.2f} %" for name, acc in evals.items())
    lines.append(f"shift {train} -> {cells}")
  if results["details"]["skipped"]:
    lines.append(f"skipped (no store): {', '.join(results['details']['skipped'])}")
  return "\n".join(lines) or "nothing to do (config.fewshot, config.shift and config.breeds are empty)"
