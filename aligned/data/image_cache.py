"""An image cache: the images of a record source, resized for the model once, read back as bytes.

    CACHE/metadata.json               source (its description: tfds name, version, split and count, or an
                                      image folder's listing sha256 and count), image_size, shard_size,
                                      n_records, pixel layout (written first; a rerun must match it)
    CACHE/shard_00000.array_record    one record per image: uint8 [S, S, 3] RGB, row-major, raw bytes
                                      (array_record, group size 1, uncompressed: one read per image)
    CACHE/shard_00000.ids.npy         [<= shard_size] the images' ids (str), the source's ids
    CACHE/shard_00000.json            {"count", "sha256": {file: digest}}: written last, so a shard
                                      exists only when this file does; checked once per shard opened

Record i of the cache is record i of the source after `resize_for_model` (the AligNet cubic resize on
uint8, rounded to uint8): the decode path's `preprocess(image, S, normalization)` is
`scale_and_normalize(resize_for_model(image, S), normalization)`, so `scale_and_normalize` of a cached
record gives arrays identical to the decode path's, with no JPEG decode and no resize per read.

Shard k holds records [k * shard_size, (k + 1) * shard_size), so a killed build rerun with the same
settings skips the complete shards and produces the same cache; a rerun with other settings is refused.
An `ImageCache` is itself a record source (`len`, `record(i) -> (id, uint8 [S, S, 3])`).
"""

from __future__ import annotations

import concurrent.futures
import json
import multiprocessing
import os
import pathlib
import threading
import time

import numpy as np
from array_record.python.array_record_data_source import ArrayRecordDataSource
from array_record.python.array_record_module import ArrayRecordWriter

from aligned import artifacts
from aligned.artifacts import sha256_of
from aligned.backbones.preprocessing import resize_for_model
from aligned.data.items import ImageFolderSource, TfdsSource
from aligned.errors import DataError
from aligned.paths import load_npy, require_local
from aligned.progress import Progress

FORMAT = 1  # bump when the layout or the resize changes, so an old cache is not taken for a new one
PIXELS = "uint8 [image_size, image_size, 3] RGB, row-major, one record per image"
WRITER_OPTIONS = "group_size:1,uncompressed"  # random access: each image is one read, nothing to inflate
_LOCAL_ONLY = (
  "an image cache's array_record shards are read by C++ (ArrayRecordDataSource), which opens local files only"
)


def describe_source(source) -> dict:
  """What a record source holds, as metadata: its `description()` (tfds name/split, an image folder's
  listing sha256), or its type and record count."""
  if hasattr(source, "description"):
    return source.description()
  return {"kind": type(source).__name__, "n_records": len(source)}


def _describe(description: dict) -> str:
  if description.get("kind") == "tfds":
    name = f"{description['name']}:{description.get('version', '?')}/{description['split']}"
    return f"tfds {name} ({description['n_records']} records)"
  if description.get("kind") == "image_folder":
    return (
      f"an image folder of {description['n_records']} images "
      f"(listing sha256 {description['listing_sha256'][:12]}...)"
    )
  return json.dumps(description, sort_keys=True)


def _shard_paths(root: pathlib.Path, shard: int) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
  stem = root / f"shard_{shard:05d}"
  return stem.with_suffix(".array_record"), stem.with_suffix(".ids.npy"), stem.with_suffix(".json")


# -- Reading ------------------------------------------------------------------------------------------


class ImageCache:
  """A built cache: `len`, `record(i) -> (id, uint8 [size, size, 3])`, `.size`, `.metadata`.

  A shard's sha256 is checked the first time it is opened in a process (`verify()` checks all now); a
  pickled cache (e.g. sent to loader worker processes) remembers which shards were checked."""

  def __init__(self, root: str | os.PathLike):
    self.root = require_local(root, _LOCAL_ONLY)
    path = self.root / "metadata.json"
    if not path.exists():
      raise DataError(self.root, "not an image cache (no metadata.json); build it with aligned-cache-images")
    self.metadata = json.loads(path.read_text())
    if self.metadata.get("format") != FORMAT:
      raise DataError(
        path, f"cache format {self.metadata.get('format')}, this code reads {FORMAT}; rebuild it"
      )
    self.size, self.shard_size = self.metadata["image_size"], self.metadata["shard_size"]
    self.n = self.metadata["n_records"]
    self.n_shards = -(-self.n // self.shard_size)
    missing = [k for k in range(self.n_shards) if not _shard_paths(self.root, k)[2].exists()]
    if missing:
      raise DataError(
        self.root,
        f"{len(missing)} of {self.n_shards} shards missing (first: {missing[0]}): the build did not finish; "
        "rerun it to complete the cache",
      )
    self._verified: set[int] = set()
    self._reset()

  def _reset(self) -> None:
    self._open_shards: list[tuple[ArrayRecordDataSource, np.ndarray] | None] = [None] * self.n_shards
    self._lock = threading.Lock()

  def __getstate__(self) -> dict:
    return {k: v for k, v in self.__dict__.items() if k not in ("_open_shards", "_lock")}

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._reset()

  def __len__(self) -> int:
    return self.n

  def _shard(self, k: int) -> tuple[ArrayRecordDataSource, np.ndarray]:
    shard = self._open_shards[k]
    if shard is None:
      with self._lock:
        shard = self._open_shards[k]
        if shard is None:
          shard = self._open_shards[k] = self._open(k)
    return shard

  def _open(self, k: int) -> tuple[ArrayRecordDataSource, np.ndarray]:
    data_path, ids_path, record_path = _shard_paths(self.root, k)
    record = json.loads(record_path.read_text())
    if k not in self._verified:
      for path in (data_path, ids_path):
        if not path.exists() or sha256_of(path) != record["sha256"][path.name]:
          raise DataError(
            path,
            f"missing, or its sha256 differs from {record_path.name}: the shard is corrupt (delete "
            f"{record_path.name} and rerun the build to rewrite it)",
          )
      self._verified.add(k)
    data, ids = ArrayRecordDataSource([str(data_path)]), load_npy(ids_path)
    expected = min(self.shard_size, self.n - k * self.shard_size)
    if not len(data) == len(ids) == record["count"] == expected:
      raise DataError(data_path, f"{len(data)} images and {len(ids)} ids; expected {expected}")
    return data, ids

  def record(self, i: int) -> tuple[str, np.ndarray]:
    """(id, uint8 [size, size, 3]) of record i, as the source's record i after `resize_for_model`."""
    i = int(i)
    if not 0 <= i < self.n:
      raise IndexError(f"record {i} outside the cache's {self.n} records")
    k, j = divmod(i, self.shard_size)
    data, ids = self._shard(k)
    return str(ids[j]), np.frombuffer(data[j], np.uint8).reshape(self.size, self.size, 3)

  def verify(self, progress: bool = True) -> None:
    """Checks every shard's sha256 now (and opens it), with progress lines: a DataError if one is corrupt."""
    report = Progress(self.n_shards, "shards checked", enabled=progress and self.n_shards > 1)
    for k in range(self.n_shards):
      self._shard(k)
      report.update(k + 1)


def check_image_cache(cache: ImageCache, description: dict, image_size: int) -> None:
  """Refuses a cache not built from the source `description` (same kind, name, split or listing, and
  record count) at `image_size`: a DataError naming what differs."""
  problems = []
  if cache.metadata["source"] != json.loads(json.dumps(description)):
    problems.append(f"it holds {_describe(cache.metadata['source'])}, not {_describe(description)}")
  if cache.size != image_size:
    problems.append(f"its images are {cache.size}x{cache.size}, not {image_size}x{image_size}")
  if problems:
    raise DataError(
      cache.root / "metadata.json",
      f"{'; '.join(problems)} (build a cache of this source at this size with aligned-cache-images)",
    )


# -- Building -----------------------------------------------------------------------------------------


def _resize_range(source, size: int, lo: int, hi: int) -> tuple[list[str], np.ndarray]:
  """(ids, uint8 [hi - lo, size, size, 3]) of records lo..hi, resized as the decode path does."""
  ids, images = [], np.empty((hi - lo, size, size, 3), np.uint8)
  for j, i in enumerate(range(lo, hi)):
    item_id, image = source.record(i)
    ids.append(item_id)
    images[j] = resize_for_model(image, size)
  return ids, images


def _build_shard(source, root: pathlib.Path, size: int, shard_size: int, k: int) -> tuple[int, int]:
  """Decodes, resizes and writes shard k; returns (images, bytes) written."""
  lo, hi = k * shard_size, min((k + 1) * shard_size, len(source))
  ids, images = _resize_range(source, size, lo, hi)
  return hi - lo, _write_shard(root, k, ids, images)


_WORKER: tuple | None = None  # (source, root, size, shard_size) in a build process, set when it starts


def _start_worker(*settings) -> None:
  global _WORKER
  _WORKER = settings


def _build_shard_in_worker(k: int) -> tuple[int, int]:
  return _build_shard(*_WORKER, k)


def _open_metadata(root: pathlib.Path, metadata: dict) -> None:
  """Creates the cache folder's metadata.json, or checks that the existing one has the same settings."""
  path = root / "metadata.json"
  if root.exists():
    artifacts.remove_stale_temporaries(root)  # left by a killed build
  if not path.exists():
    artifacts.write_json(path, metadata)
    return
  existing, metadata = json.loads(path.read_text()), json.loads(json.dumps(metadata))
  changed = [
    f"{key}: {existing.get(key)!r} -> {metadata.get(key)!r}"
    for key in sorted(set(existing) | set(metadata))
    if existing.get(key) != metadata.get(key)
  ]
  if changed:
    raise DataError(path, f"the cache was built with other settings ({'; '.join(changed)}); use a new folder")


def _write_shard(root: pathlib.Path, shard: int, ids: list[str], images: list[np.ndarray]) -> int:
  """Writes one shard: images and ids first, the record that marks it complete last; returns bytes."""
  data_path, ids_path, record_path = _shard_paths(root, shard)
  with artifacts.atomic_path(data_path) as tmp:
    writer = ArrayRecordWriter(str(tmp), WRITER_OPTIONS)
    for image in images:
      writer.write(image.tobytes())
    writer.close()
  artifacts.save_npy(ids_path, np.asarray(ids, dtype=str))
  artifacts.write_json(
    record_path, {"count": len(ids), "sha256": {p.name: sha256_of(p) for p in (data_path, ids_path)}}
  )
  return data_path.stat().st_size


def build_image_cache(
  source,
  root: str | os.PathLike,
  image_size: int = 224,
  shard_size: int = 1024,
  workers: int = 0,
  progress: bool = True,
) -> dict:
  """Writes (or completes) the cache of a record source in `root`; returns what was done.

  Args:
    source: `len(source)` and `source.record(i) -> (id, uint8 image)`, e.g. `TfdsSource`; picklable
      when `workers` > 0 (each process receives it once).
    workers: processes that decode and write shards (0: all in this process).
  Returns:
    {n_records, shards, shards_written, shards_skipped, images_written, bytes_written, seconds}.
  """
  if image_size < 1 or shard_size < 1:
    raise ValueError(f"image_size and shard_size must be >= 1, got {image_size} and {shard_size}")
  root, n = require_local(root, _LOCAL_ONLY), len(source)
  if n == 0:
    raise DataError(root, "the source has no records")
  metadata = {
    "format": FORMAT,
    "source": describe_source(source),
    "n_records": n,
    "image_size": image_size,
    "shard_size": shard_size,
    "pixels": PIXELS,
    "resize": "aligned.backbones.preprocessing.resize_for_model (AligNet cubic, uint8)",
  }
  n_shards = -(-n // shard_size)
  missing = [k for k in range(n_shards) if not _shard_paths(root, k)[2].exists()]
  if hasattr(source, "check_headers"):  # an image folder: a file that is no image, refused before any write
    source.check_headers([i for k in missing for i in range(k * shard_size, min((k + 1) * shard_size, n))])
  _open_metadata(root, metadata)
  report = Progress(sum(min(shard_size, n - k * shard_size) for k in missing), "images", enabled=progress)
  start, done, written = time.perf_counter(), 0, 0
  workers = min(workers, len(missing))
  if workers == 0:
    for k in missing:
      images, size = _build_shard(source, root, image_size, shard_size, k)
      done, written = done + images, written + size
      report.update(done)
  else:
    # Each process decodes and writes whole shards (the pixels never cross a pipe); shards complete
    # in any order, each on its own, so a killed build loses only the shards in progress.
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold JAX's threads
    settings = (source, root, image_size, shard_size)
    pool = concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_start_worker, initargs=settings
    )
    try:
      for future in concurrent.futures.as_completed(
        [pool.submit(_build_shard_in_worker, k) for k in missing]
      ):
        images, size = future.result()
        done, written = done + images, written + size
        report.update(done)
    finally:
      pool.shutdown(cancel_futures=True)
  return {
    "n_records": n,
    "shards": n_shards,
    "shards_written": len(missing),
    "shards_skipped": n_shards - len(missing),
    "images_written": done,
    "bytes_written": written,
    "seconds": time.perf_counter() - start,
  }


# -- The command --------------------------------------------------------------------------------------

SOURCES = ("tfds", "image_folder")


def open_source(config) -> TfdsSource | ImageFolderSource:
  """The record source a cache config names: `tfds` (tfds_name, split, data_dir) or `image_folder` (root)."""
  if config.source == "tfds":
    return TfdsSource(
      config.tfds_name, config.split, config.data_dir, ids=config.get("tfds_ids", "file_name")
    )
  if config.source == "image_folder":
    if not config.root:
      raise ValueError("source = image_folder needs --config.root (a folder of images)")
    return ImageFolderSource(config.root)
  raise ValueError(f"unknown source {config.source!r}; expected one of {SOURCES}")


def cache_images(config, workdir: str | os.PathLike) -> dict:
  """Builds (or completes) `workdir/cache` from the configured source; writes `workdir/results.json`."""
  workdir = require_local(workdir, _LOCAL_ONLY)  # before any image is decoded
  source = open_source(config)
  workers = os.cpu_count() if config.workers < 0 else config.workers
  done = build_image_cache(source, workdir / "cache", config.image_size, config.shard_size, workers)
  seconds = done["seconds"]
  results = {
    "cache": str(workdir / "cache"),
    "source": describe_source(source),
    "image_size": config.image_size,
    "workers": workers,
    **done,
    "images_per_s": done["images_written"] / seconds if seconds > 0 else 0.0,
  }
  artifacts.write_json(workdir / "results.json", results)
  return results


def format_results(results: dict) -> str:
  r = results
  what = f"cache of {_describe(r['source'])} at {r['image_size']}x{r['image_size']} -> {r['cache']}"
  if not r["shards_written"]:
    return f"{what}: complete already ({r['shards']} shards), nothing written"
  by = f"{r['workers']} processes" if r["workers"] else "this process"
  return (
    f"{what}: {r['shards_written']} shards written ({r['images_written']} images, "
    f"{r['bytes_written'] / 1e9:.2f} GB, {r['images_per_s']:.0f} images/s by {by}), "
    f"{r['shards_skipped']} complete already"
  )
