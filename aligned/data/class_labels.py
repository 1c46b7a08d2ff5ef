"""Class labels of the items of an embedding store, and label spaces matched by class name.

`store_labels` is the one place that decides where a store's labels come from:
- `tfds` stores (item i = record i of `tfds.data_source(name, split)`): the dataset's `label` feature,
  read with images left undecoded; class names from its `ClassLabel` (WordNet ids for imagenet2012,
  imagenet_v2, imagenet_a, imagenet_r and imagenet_sketch, which all use the 1,000-synset label file);
  when the dataset has `file_name`, every record's name must equal the store's id (same order).
  Ids that name their synset (ImageNet-train file names) give the labels directly, and a seeded
  sample of 2,000 records is checked instead of reading every (image-carrying) record.
- `image_folder` stores (ids = relative paths): the parent folder of each image is its class name
  (`n01440764/x.jpg` -> `n01440764`), so an ImageNet-R style folder shares ImageNet's names.

Datasets are compared by class *name*, never by index: `map_labels` moves labels of one dataset into
the label space of another (ImageNet-A's 200 classes into ImageNet's 1,000).

Superclass (BREEDS-style) tasks need a class -> superclass mapping: a user-supplied text file read by
`read_superclasses`, or one derived from the WordNet noun hierarchy (`aligned.data.wordnet.superclasses`,
`--config.superclasses=wordnet:DEPTH` in transfer).
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

import numpy as np

from aligned.data import wordnet
from aligned.embedding_store import EmbeddingStore
from aligned.errors import DataError
from aligned.paths import as_path, require_local
from aligned.progress import Progress

_SYNSET = re.compile(r"^(n\d{8})_")  # ImageNet-train file names: n01440764_10026.JPEG
_NOUN = re.compile(r"^n\d{8}$")  # a WordNet noun synset


class StoreLabels(NamedTuple):
  """labels: [n] int indices into `names` (the store's item order); names: class names."""

  labels: np.ndarray
  names: tuple[str, ...]


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _tfds_data_dir(store: EmbeddingStore, data_dir: str) -> str | None:
  """The tfds data_dir: given, else the one the extraction used (its workdir's config.json)."""
  if data_dir:
    return data_dir
  config = store.root.parent / "config.json"
  if config.exists():
    return json.loads(config.read_text()).get("data_dir") or None
  return None


def _tfds_labels(
  store: EmbeddingStore, ids: np.ndarray, data_dir: str, label_key: str, batch: int = 4096, sample: int = 2000
) -> StoreLabels:
  import tensorflow_datasets as tfds

  name, _, split = store.metadata["root"].rpartition("/")  # extraction writes "dataset/split"
  where = _tfds_data_dir(store, data_dir)
  if where:
    require_local(
      where, "tfds data_source reads array_record files through C++, which opens local files only"
    )
  try:
    builder = tfds.builder(name, data_dir=where)
    features = builder.info.features
    skip = {
      key: tfds.decode.SkipDecoding()
      for key, feature in features.items()
      if isinstance(feature, tfds.features.Image | tfds.features.Video)
    }
    source = tfds.data_source(name, split=split, data_dir=where, decoders=skip, download=False)
  except Exception as e:  # tfds raises many types for a missing or unprepared dataset
    first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]  # tfds lists every dataset after it
    raise DataError(
      where or "~/tensorflow_datasets", f"cannot open tfds {name}/{split}: {first_line}"
    ) from None
  if label_key not in features or not hasattr(features[label_key], "names"):
    raise DataError(store.root, f"tfds {name} has no ClassLabel feature {label_key!r}")
  if len(source) != len(ids):
    raise DataError(store.root, f"{len(ids)} items, but tfds {name}/{split} has {len(source)} records")
  names = tuple(features[label_key].names)
  index = {n: i for i, n in enumerate(names)}
  named = [item_class(item) for item in ids]
  from_ids = all(name in index for name in named)
  if from_ids:
    # ImageNet-train style ids name their synset: reading 1.28 M records (~140 GB) only for labels
    # is avoided; a seeded sample of records is still checked against the ids.
    labels = np.asarray([index[name] for name in named], np.int64)
    check = np.sort(np.random.default_rng(0).permutation(len(ids))[:sample])
  else:
    labels, check = np.empty(len(ids), np.int64), np.arange(len(ids))
  progress = Progress(len(check), "labels")
  for lo in range(0, len(check), batch):
    rows = check[lo : lo + batch]
    for i, record in zip(rows, source.__getitems__(rows.tolist()), strict=True):
      if from_ids and int(record[label_key]) != labels[i]:
        raise DataError(store.root, f"item {i} ({ids[i]!r}) has tfds label {names[int(record[label_key])]}")
      labels[i] = int(record[label_key])
      # The store's id of a record is its file_name: a mismatch means another build or order.
      if "file_name" in record and _text(record["file_name"]) != ids[i]:
        raise DataError(
          store.root,
          f"item {i} is {ids[i]!r} but tfds {name}/{split} record {i} is "
          f"{_text(record['file_name'])!r} (another data_dir or build?)",
        )
    progress.update(min(lo + batch, len(check)))
  return StoreLabels(labels, names)


def item_class(item: str) -> str | None:
  """The class an item id names, the one rule every stage uses: the WordNet synset of an ImageNet
  file name (`n01440764_10026.JPEG`, in a folder or not); for a bare synset id (a WordNet noun, the
  text demo's items) its lexicographer file (`n01440764` -> `noun.animal`); else the parent folder of
  a relative path (`aardvark/aardvark_01b.jpg` -> `aardvark`); None when the id names none of these.

  >>> item_class("n01440764_10026.JPEG"), item_class("train/aardvark/aardvark_01b.jpg")
  ('n01440764', 'train/aardvark')
  """
  match = _SYNSET.match(os.path.basename(item))  # local: an item id, not a file
  if match:
    return match.group(1)
  if _NOUN.match(item):
    noun = wordnet.load_nouns().get(item)
    return noun.lexname if noun else None
  return os.path.dirname(item) or None  # local: an item id, not a file


def labels_from_ids(ids: np.ndarray, where: str | os.PathLike | None = None) -> StoreLabels:
  """Class labels of items from their ids (`item_class`); class names sorted, labels index them."""
  classes = []
  for row, item in enumerate(np.asarray(ids).astype(str), start=1):
    name = item_class(item)
    if name is None:
      raise DataError(
        where,
        f"cannot tell the class of item {item!r}: not an ImageNet file name, not a WordNet noun and "
        "not in a class folder (want CLASS/IMAGE)",
        row=row,
      )
    classes.append(name)
  names, labels = np.unique(np.asarray(classes), return_inverse=True)
  return StoreLabels(labels.reshape(-1).astype(np.int64), tuple(str(n) for n in names))


def store_labels(
  root: str | os.PathLike, ids: np.ndarray | None = None, data_dir: str = "", label_key: str = "label"
) -> StoreLabels:
  """Class labels and names of every item of the store at `root`, in the store's item order.

  Args:
    root: an embedding store folder (written by `aligned.extract`).
    ids: the store's ids if already read (saves a second read).
    data_dir: tfds data_dir; empty: the extraction's (`root/../config.json`), else tfds' default.
    label_key: the tfds feature holding the class.
  """
  store = EmbeddingStore(root)
  source = store.metadata.get("source")
  if ids is None:
    ids, _ = store.read()
  ids = np.asarray(ids).astype(str)
  if source == "tfds":
    return _tfds_labels(store, ids, data_dir, label_key)
  if source == "image_folder":
    return labels_from_ids(ids, store.root)
  raise DataError(store.root, f"items of a {source!r} store have no class labels (want tfds or image_folder)")


def map_labels(labels: np.ndarray, names: tuple[str, ...], to_names: tuple[str, ...], where) -> np.ndarray:
  """Labels over `names` re-indexed into `to_names` by class name; a class missing there is an error."""
  index = {name: i for i, name in enumerate(to_names)}
  missing = sorted({names[i] for i in np.unique(labels)} - set(index))
  if missing:
    raise DataError(
      where, f"{len(missing)} classes are not in the probe's label space (first: {missing[:3]})"
    )
  lookup = np.asarray([index.get(name, -1) for name in names], np.int64)
  return lookup[labels]


def read_superclasses(path: str | os.PathLike) -> dict[str, str]:
  """A class -> superclass mapping: one `CLASS SUPERCLASS` pair a line (tab or spaces; `#` comments).

  Example lines: `n02085620 dog`, `n02123045 cat`. A class listed twice is an error.
  """
  path = as_path(path)
  if not path.exists():
    raise DataError(path, "superclass mapping not found")
  mapping: dict[str, str] = {}
  for row, line in enumerate(path.read_text().splitlines(), start=1):
    line = line.split("#", 1)[0].strip()
    if not line:
      continue
    fields = line.split(None, 1)
    if len(fields) != 2:
      raise DataError(path, "want `CLASS SUPERCLASS`", row=row)
    name, superclass = fields[0], fields[1].strip()
    if name in mapping:
      raise DataError(path, f"class {name!r} listed twice", row=row)
    mapping[name] = superclass
  if len(set(mapping.values())) < 2:
    raise DataError(path, "fewer than 2 superclasses")
  return mapping
