"""The image demo's stand-in for people: odd-one-out judgments that follow the class labels.

A "person" sees two images of one class and one of another (another colour or shape kind) and picks
the image of the other class as the odd one out. `simulate_people` writes a training file for the
teacher and a held-out file for evaluation that share no triplet, both in the `odd_last` format
(`i j k` a line, the odd one out last, 0-based item indices into the store).

It also writes a Levels-format response file (`levels.csv`, the columns of the Levels codebook that
`aligned.data.levels` reads, with a `triplet_type` column) at the three abstraction levels, built
from the shapes' hierarchy:
- global (`between_class`): two images of one shape kind in different colours, one of another kind;
  the other kind is the odd one out;
- class boundary (`class_boundary`): two images of one class, one of the same kind in another colour;
- local (`within_class`): three images of one class; the odd one out is the one whose size stands
  apart (the largest gap between the sorted sizes, kept only where it is at least twice the other).
Reaction times are simulated (log-normal around 1.5 s); one simulated participant.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pathlib

import ml_collections
import numpy as np

from aligned import artifacts, paths
from aligned.data.class_labels import labels_from_ids
from aligned.demo import shapes
from aligned.embedding_store import EmbeddingStore
from aligned.sampling import sample_triplets

TRAIN_FILE, EVAL_FILE, EMBEDDINGS_FILE = "train_triplets.txt", "eval_triplets.txt", "item_embeddings.npy"
LEVELS_FILE = "levels.csv"
LEVELS_COLUMNS = (
  "subject_id",
  "exp_trial_type",
  "image1Path",
  "image2Path",
  "image3Path",
  "selected_image",
  "rt",
  "triplet_type",
)


def label_triplets(labels, n: int, seed: int, exclude=None) -> np.ndarray:
  """[n, 3] triplets, odd one out last: two items with one label and one with another."""
  labels = np.unique(np.asarray(labels), return_inverse=True)[1].reshape(-1)
  triplets = sample_triplets("class_border", n, seed, len(labels), labels, exclude=exclude)
  t = labels[triplets]
  odd = np.where(t[:, 0] == t[:, 1], 2, np.where(t[:, 0] == t[:, 2], 1, 0))
  order = np.stack([np.delete(np.arange(3), k) for k in range(3)])[odd]  # the two of one class
  return np.concatenate([np.take_along_axis(triplets, order, 1), triplets[np.arange(n), odd][:, None]], 1)


def read_hierarchy(path: str | os.PathLike) -> dict[str, str]:
  """synset -> superclass from a `synset  class  superclass` file with one header row."""
  superclass_of = {}
  for line in paths.as_path(path).read_text().splitlines()[1:]:
    synset, _, superclass = line.split("\t")
    superclass_of[synset] = superclass
  return superclass_of


def _write_triplets(path: os.PathLike, triplets) -> None:
  with artifacts.atomic_path(path) as tmp:
    tmp.write_text("".join(f"{i} {j} {k}\n" for i, j, k in triplets))


def simulate_people(config: ml_collections.ConfigDict, folder: os.PathLike) -> dict:
  """Reads the base store (`config.store`), writes its embeddings and the two triplet files.

  Config: store, hierarchy (the shapes' hierarchy.tsv), n_eval_triplets, n_teacher_triplets, seed.
  """
  ids, x = EmbeddingStore(config.store).read()
  artifacts.save_npy(folder / EMBEDDINGS_FILE, x.astype(np.float32))
  labels = labels_from_ids(ids, config.store)
  held_out = label_triplets(labels.labels, config.n_eval_triplets, config.seed)
  train = label_triplets(labels.labels, config.n_teacher_triplets, config.seed + 1, exclude=held_out)
  _write_triplets(folder / EVAL_FILE, held_out)
  _write_triplets(folder / TRAIN_FILE, train)
  superclass_of = read_hierarchy(config.hierarchy)
  n_kinds = len({superclass_of[labels.names[k]] for k in labels.labels})
  results = {"items": f"{len(ids)} shapes images ({n_kinds} shape kinds)", "n_items": len(ids)}
  if config.get("n_levels_triplets"):
    built = json.loads((paths.as_path(config.hierarchy).parent / shapes.SETTINGS_FILE).read_text())
    sizes = train_sizes(ids, built["settings"], [c["synset"] for c in built["classes"]])
    kinds = np.asarray([superclass_of[labels.names[k]] for k in labels.labels])
    trials = levels_trials(labels.labels, kinds, sizes, config.n_levels_triplets, config.seed + 2)
    _write_levels(folder / LEVELS_FILE, ids, trials, config.seed + 3)
    results["levels"] = {level: int(len(t)) for level, t in trials.items()}
  artifacts.write_json(folder / "results.json", results)
  return results


# -- Levels -----------------------------------------------------------------------------------------


def train_sizes(ids, settings: dict, synsets: list[str]) -> np.ndarray:
  """The shape size of each train image from its file name `nXXXXXXXX_i.JPEG`, with the build's
  settings and its class synsets in label order (class k = the synset's position)."""
  position = {synset: k for k, synset in enumerate(synsets)}
  sizes = []
  for name in np.asarray(ids).astype(str):
    synset, number = pathlib.PurePosixPath(name).stem.split("_")
    sizes.append(shapes.shape_radius(settings, 0, position[synset], int(number)))
  return np.asarray(sizes)


def levels_trials(labels, kinds, sizes, n: int, seed: int) -> dict[str, np.ndarray]:
  """{level: [m, 3] item triplets, odd one out last}, up to n per level (see the module docstring)."""
  rng = np.random.default_rng(seed)
  labels, kinds, sizes = np.asarray(labels), np.asarray(kinds), np.asarray(sizes)
  members = {c: np.flatnonzero(labels == c) for c in np.unique(labels)}
  kind_classes = {k: np.unique(labels[kinds == k]) for k in np.unique(kinds)}
  if len(kind_classes) < 2 or min(len(c) for c in kind_classes.values()) < 2:
    raise ValueError("a Levels-format file needs >= 2 shape kinds and >= 2 colours of each")
  if min(len(m) for m in members.values()) < 3:
    raise ValueError("a Levels-format file needs >= 3 images of each class (its local triplets)")
  out = {"between_class": [], "class_boundary": [], "within_class": []}
  for _ in range(20 * n):
    if all(len(v) >= n for v in out.values()):
      break
    kind, other = rng.choice(list(kind_classes), 2, replace=False)
    a, b = rng.choice(kind_classes[kind], 2, replace=False)
    if len(out["between_class"]) < n:
      odd = rng.choice(members[rng.choice(kind_classes[other])])
      out["between_class"].append((rng.choice(members[a]), rng.choice(members[b]), odd))
    if len(out["class_boundary"]) < n:
      pair = rng.choice(members[a], 2, replace=False)
      out["class_boundary"].append((*pair, rng.choice(members[b])))
    if len(out["within_class"]) < n:
      three = rng.choice(members[a], 3, replace=False)
      three = three[np.argsort(sizes[three])]
      low, high = np.diff(sizes[three])
      if max(low, high) >= 2 * min(low, high):  # one size clearly stands apart
        out["within_class"].append(tuple(three[[1, 2, 0]] if low > high else three))
  return {level: np.asarray(t, np.int64).reshape(-1, 3) for level, t in out.items()}


def _write_levels(path: os.PathLike, ids, trials: dict[str, np.ndarray], seed: int) -> None:
  """The trials as a Levels response file: image positions shuffled, the odd one out selected."""
  rng, ids = np.random.default_rng(seed), np.asarray(ids).astype(str)
  text = io.StringIO()
  writer = csv.writer(text, lineterminator="\n")
  writer.writerow(LEVELS_COLUMNS)
  for level, triplets in trials.items():
    for triplet in triplets:
      shown = ids[triplet[rng.permutation(3)]]
      rt = 1500 * np.exp(0.3 * rng.normal())
      writer.writerow(["simulated", "exp_trial", *shown, ids[triplet[2]], f"{rt:.0f}", level])
  with artifacts.atomic_path(path) as tmp:
    tmp.write_text(text.getvalue())
