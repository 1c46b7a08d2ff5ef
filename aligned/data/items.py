"""Item sources: what the item indices of a store, an AligNet file or a human triplet file point to.

Two kinds, one per consumer:
- *records* (`record(i) -> (id, uint8 image)`), read by extraction and wrapped by `ImageItems`:
  `ImageFolderSource` (every image under a folder, item i = the i-th relative path in sorted order,
  the path its id) and `TfdsSource` (a `tfds.data_source` split, item i = record i, the index AligNet
  files store; id = the record's `file_name`);
- *model inputs* (`load(indices) -> {name: [m, ...]}`), read by the student: `ImageItems` (records
  decoded and cubic-resized by host threads, or read already resized from an image cache), `TextItems`
  (texts tokenised once, e.g. the THINGS concepts from `things_texts`) and `SyntheticImages` (a
  generated learnable task for smoke runs).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os

import numpy as np
from etils import epath

from aligned.backbones.preprocessing import preprocess, scale_and_normalize
from aligned.data import things, wordnet
from aligned.data.alignet_files import alignet_path, write_alignet
from aligned.errors import DataError
from aligned.paths import as_path, files_under, require_local

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


TEXT_SOURCES = ("things_words", "wordnet_nouns")
TFDS_IDS = ("file_name", "index")  # a tfds record's id: its file_name feature, or (stated) its index


def format_texts(template: str, words, ids, definitions) -> list[str]:
  """One text per item from a template with the fields {word}, {id}, {definition}."""
  try:
    return [
      template.format(word=w, id=i, definition=d) for w, i, d in zip(words, ids, definitions, strict=True)
    ]
  except (KeyError, IndexError) as e:
    raise ValueError(
      f"template {template!r} uses an unknown field {e}; known: word, id, definition"
    ) from None


def things_texts(template: str) -> tuple[np.ndarray, list[str]]:
  """(concept ids, texts) of the 1,854 THINGS concepts in sorted order."""
  concepts = things.load_concepts()
  return np.asarray(concepts.ids), format_texts(template, concepts.words, concepts.ids, concepts.definitions)


def wordnet_texts(template: str, n_items: int, lexnames, seed: int) -> tuple[np.ndarray, list[str]]:
  """(synset ids, texts) of concrete WordNet nouns outside THINGS (`wordnet.concrete_nouns`): none
  has a THINGS concept's WordNet id or a lemma equal to a THINGS word, so a model trained on them has
  never seen a THINGS item. {definition} is the gloss up to its first `;`."""
  concepts = things.load_concepts()
  nouns = wordnet.concrete_nouns(
    exclude_ids=[i for i in concepts.wordnet_ids if i],
    exclude_words=concepts.words,
    lexnames=tuple(lexnames),
    n=n_items,
    seed=seed,
  )
  return nouns.ids, format_texts(template, nouns.words, nouns.ids, nouns.definitions)


def text_source(source: str, template: str, wordnet_config=None) -> tuple[np.ndarray, list[str]]:
  """(ids, texts) of a text source: `things_words` or `wordnet_nouns` (with `wordnet_config` holding
  n_items, lexnames and seed)."""
  if source == "things_words":
    return things_texts(template)
  if source == "wordnet_nouns":
    w = wordnet_config
    return wordnet_texts(template, w.n_items, w.lexnames, w.seed)
  raise ValueError(f"unknown text source {source!r}; expected one of {TEXT_SOURCES}")


def image_folder_items(root: str | os.PathLike) -> np.ndarray:
  """Relative paths of all images under `root`, sorted (the store's item order)."""
  root = as_path(root)
  if not root.is_dir():
    raise DataError(root, "a file, not an image folder" if root.exists() else "image folder not found")
  paths = sorted(
    p.relative_to(root).as_posix() for p in files_under(root) if p.suffix.lower() in IMAGE_SUFFIXES
  )
  if not paths:
    raise DataError(root, f"no images ({', '.join(IMAGE_SUFFIXES)}) under this folder")
  return np.asarray(paths)


def load_image(path: str | os.PathLike) -> np.ndarray:
  """Decodes one image to uint8 RGB; a DataError naming the file if it cannot be read."""
  from PIL import Image, UnidentifiedImageError

  try:
    with as_path(path).open("rb") as f, Image.open(f) as image:
      return np.asarray(image.convert("RGB"))
  except (OSError, UnidentifiedImageError) as e:
    raise DataError(path, f"cannot decode image ({e})") from None


class ImageFolderSource:
  """Images under a folder; item i is the i-th relative path in sorted order (its id), or the i-th of
  `ids` (relative paths under `root`, e.g. the same images in another order)."""

  def __init__(self, root: str | os.PathLike, ids=None):
    self.root = as_path(root)
    self.ids = image_folder_items(root) if ids is None else np.asarray(ids, dtype=str)

  def __len__(self) -> int:
    return len(self.ids)

  def record(self, i: int) -> tuple[str, np.ndarray]:
    return str(self.ids[i]), load_image(self.root / self.ids[i])

  def check_headers(self, indices, threads: int = 8) -> None:
    """Reads the header of each image of `indices` (no pixels): a file that is not an image is a
    DataError naming it (the first in item order) before a streaming stage writes anything. A file
    whose header is fine but whose body is truncated is found only when it is decoded."""
    from PIL import Image, UnidentifiedImageError

    def problem(i):
      path = self.root / self.ids[i]
      try:
        with path.open("rb") as f, Image.open(f) as image:
          image.size  # noqa: B018 (the header is parsed on open; size is part of it)
      except (OSError, UnidentifiedImageError) as e:
        return path, e
      return None

    indices = list(indices)
    with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
      for lo in range(0, len(indices), 4096):  # a bounded number of futures for a million images
        for found in pool.map(problem, indices[lo : lo + 4096]):
          if found is not None:
            raise DataError(found[0], f"cannot decode image ({found[1]})")

  def description(self) -> dict:
    """What the items are, independent of where the folder lies: the sha256 of the sorted listing."""
    return {
      "kind": "image_folder",
      "listing_sha256": hashlib.sha256("\n".join(self.ids).encode()).hexdigest(),
      "n_records": len(self),
    }


class TfdsSource:
  """A `tfds.data_source` split; item i is record i (the index AligNet files store), id = its file_name.

  A dataset without a `file_name` feature has no ids: it is refused, unless `ids="index"` names record
  i "i" (stated, never a fallback: such ids match no other copy of the images)."""

  def __init__(self, name: str, split: str, data_dir: str = "", ids: str = "file_name"):
    import tensorflow_datasets as tfds

    if ids not in TFDS_IDS:
      raise ValueError(f"tfds ids {ids!r}: expected one of {TFDS_IDS}")
    if data_dir:
      require_local(
        data_dir, "tfds.data_source reads array_record files through C++, which opens local files only"
      )
    try:
      self.source = tfds.data_source(name, split=split, data_dir=data_dir or None)
    except Exception as e:  # tfds raises many types for a missing or unprepared dataset
      raise DataError(data_dir or "~/tensorflow_datasets", f"cannot open tfds {name}/{split}: {e}") from None
    self.dataset, self.split, self.name, self.id_kind = name, split, f"{name}/{split}", ids
    if len(self.source) == 0:
      raise DataError(data_dir, f"tfds {self.name} is empty")
    if ids == "file_name" and "file_name" not in self.source.dataset_info.features:
      raise DataError(
        data_dir or "~/tensorflow_datasets",
        f"tfds {self.name} has no file_name feature, so its records have no ids; name them by record "
        "index with tfds_ids=index",
      )

  def __len__(self) -> int:
    return len(self.source)

  def record(self, i: int) -> tuple[str, np.ndarray]:
    example = self.source[i]
    name = str(i) if self.id_kind == "index" else example["file_name"]
    return (name.decode() if isinstance(name, bytes) else str(name)), np.asarray(example["image"])

  def description(self) -> dict:
    """What the items are, independent of the data_dir: dataset, version, split and record count."""
    version = str(self.source.dataset_info.version)  # another version may hold other records in another order
    description = {
      "kind": "tfds",
      "name": self.dataset,
      "version": version,
      "split": self.split,
      "n_records": len(self),
    }
    if self.id_kind == "index":  # other ids than file names (file names: the key stays absent, as before)
      description["ids"] = "index"
    return description


class TextItems:
  """Texts tokenised once (fixed length); lookups are array indexing."""

  kind = "text"

  def __init__(self, texts: list[str], encoder):
    tokens = encoder.tokenize(texts)
    # Right padding: cut to the longest text rounded up to 8 (a mask-weighted mean pool is unchanged).
    length = -(-int(tokens["attention_mask"].sum(1).max()) // 8) * 8
    self.tokens = {k: np.ascontiguousarray(v[:, :length]) for k, v in tokens.items()}
    self.n = len(texts)

  def __len__(self) -> int:
    return self.n

  def load(self, items: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[items] for k, v in self.tokens.items()}


class ImageItems:
  """Records of a record source (item i = record i), decoded and resized by host threads.

  `resized=True`: the records are already uint8 [size, size, 3] from `resize_for_model` (an image cache,
  `aligned.data.image_cache`); only `scale_and_normalize` is applied, and the arrays are identical to
  the decode path's `preprocess` of the original records."""

  kind = "image"

  def __init__(self, source, size: int, normalization: str = "none", workers: int = 8, resized: bool = False):
    self.source, self.size, self.normalization, self.resized = source, size, normalization, resized
    self.workers = max(1, workers)
    self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

  # Picklable (the grain loader's worker processes): the thread pool is made again on arrival.
  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k != "pool"}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self.pool = concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="decode")

  def __len__(self) -> int:
    return len(self.source)

  def _one(self, i: int) -> np.ndarray:
    return preprocess(self.source.record(int(i))[1], self.size, self.normalization)

  def _resized_one(self, out: np.ndarray, i: int) -> None:
    image = self.source.record(int(i))[1]
    if image.shape != out.shape or image.dtype != np.uint8:
      raise DataError(
        getattr(self.source, "root", None),
        f"record {i} is {image.dtype} {image.shape}, not a resized uint8 {list(out.shape)} image",
      )
    scale_and_normalize(image, self.normalization, out=out)

  def load(self, items: np.ndarray) -> dict[str, np.ndarray]:
    if not self.resized:
      return {"image": np.stack(list(self.pool.map(self._one, items)))}
    images = np.empty((len(items), self.size, self.size, 3), np.float32)
    list(self.pool.map(self._resized_one, images, items))  # each thread writes its own rows
    return {"image": images}


class SyntheticImages:
  """A learnable synthetic task: item i has a latent z_i ~ N(0, I_k) and its image is a fixed smooth
  function of it (`tanh` of a random linear map, [size, size, 3] in [0, 1]); the "teacher" similarity
  of two items is `scale * z_i . z_j`."""

  kind = "image"

  def __init__(
    self, n_items: int = 256, size: int = 16, latent_dim: int = 4, seed: int = 0, scale: float = 3.0
  ):
    rng = np.random.default_rng(seed)
    self.latents = rng.normal(size=(n_items, latent_dim)).astype(np.float32)
    mixing = rng.normal(size=(latent_dim, size * size * 3)).astype(np.float32) / np.sqrt(latent_dim)
    self.images = (0.5 + 0.5 * np.tanh(self.latents @ mixing)).reshape(n_items, size, size, 3)
    self.scale, self.size = scale, size

  def __len__(self) -> int:
    return len(self.latents)

  def load(self, items: np.ndarray) -> dict[str, np.ndarray]:
    return {"image": self.images[items]}

  def write_alignet(
    self, root: str | os.PathLike, n_train: int, n_val: int, seed: int = 0
  ) -> dict[str, epath.Path]:
    """Writes `root/uncertainty_distillation/{train,val}_synthetic.npz` (release format)."""
    rng = np.random.default_rng([seed, 1])
    n = len(self)
    triplets = np.stack([rng.choice(n, 3, replace=False) for _ in range(n_train + n_val)])
    z = self.latents[triplets]
    sims = self.scale * np.stack(
      [(z[:, 0] * z[:, 1]).sum(-1), (z[:, 0] * z[:, 2]).sum(-1), (z[:, 1] * z[:, 2]).sum(-1)], axis=1
    )
    names = np.asarray([f"synthetic_{i:05d}.png" for i in range(n)])
    paths = {}
    for split, rows in (("val", slice(0, n_val)), ("train", slice(n_val, None))):
      paths[split] = alignet_path(root, "uncertainty_distillation", split, "synthetic")
      paths[split].parent.mkdir(parents=True, exist_ok=True)
      write_alignet(paths[split], names[triplets[rows]], sims[rows], triplets[rows], n_images=n)
    return paths
