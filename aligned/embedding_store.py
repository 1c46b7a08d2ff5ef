"""An embedding store: a folder of fixed-size shards written atomically, resumable, self-describing.

    STORE/metadata.json            backbone, checkpoint, layer, preprocessing, dtype, dim, n_items,
                                   shard_size, source (written first; a rerun must match it)
    STORE/shard_00000.npy          [<= shard_size, dim] embeddings: float32, or bfloat16 stored as its
                                   uint16 bit pattern (plain .npy readers can open it)
    STORE/shard_00000.ids.npy      [<= shard_size] item ids (str)
    STORE/shard_00000.json         {"count", "sha256": {file: digest}}: written last, so a shard
                                   exists only when this file does, and it is checked on every read

Shard k holds items [k * shard_size, (k + 1) * shard_size) of the source's fixed item order, so a
killed extraction rerun with the same settings skips the complete shards and produces the same
store: nothing duplicated, nothing missing.
"""

from __future__ import annotations

import json
import os

import ml_dtypes
import numpy as np
from etils import epath

from aligned import artifacts
from aligned.artifacts import sha256_of
from aligned.errors import DataError
from aligned.paths import as_path, load_npy


class EmbeddingStore:
  def __init__(self, root: str | os.PathLike):
    self.root = as_path(root)

  # -- Writing ----------------------------------------------------------------------------------

  def open(self, metadata: dict) -> None:
    """Creates the store, or checks that an existing one was made with the same settings."""
    path = self.root / "metadata.json"
    if self.root.exists():
      artifacts.remove_stale_temporaries(self.root)  # left by a killed extraction
    if path.exists():
      existing = json.loads(path.read_text())
      if existing != json.loads(json.dumps(metadata)):
        changed = sorted(k for k in set(existing) | set(metadata) if existing.get(k) != metadata.get(k))
        raise DataError(
          path, f"the store was made with other settings ({', '.join(changed)}); use a new workdir"
        )
      return
    artifacts.write_json(path, metadata)

  def _paths(self, shard: int) -> tuple[epath.Path, epath.Path, epath.Path]:
    stem = self.root / f"shard_{shard:05d}"
    return stem.with_suffix(".npy"), stem.with_suffix(".ids.npy"), stem.with_suffix(".json")

  def write_shard(self, shard: int, ids: np.ndarray, embeddings: np.ndarray) -> None:
    """Writes one shard atomically: data files first, the record that marks it complete last."""
    if len(ids) != len(embeddings):
      raise ValueError(f"shard {shard}: {len(ids)} ids but {len(embeddings)} embeddings")
    data_path, ids_path, record_path = self._paths(shard)
    if self.metadata["dtype"] == "bfloat16":
      embeddings = np.asarray(embeddings, np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    else:
      embeddings = np.asarray(embeddings, np.float32)
    artifacts.save_npy(data_path, embeddings)
    artifacts.save_npy(ids_path, np.asarray(ids, dtype=str))
    artifacts.write_json(
      record_path,
      {"count": len(ids), "sha256": {p.name: sha256_of(p) for p in (data_path, ids_path)}},
    )

  # -- Reading ----------------------------------------------------------------------------------

  @property
  def metadata(self) -> dict:
    path = self.root / "metadata.json"
    if not path.exists():
      raise FileNotFoundError(f"{path} not found: not an embedding store")
    try:
      return json.loads(path.read_text())
    except json.JSONDecodeError as e:
      raise DataError(path, f"not valid JSON ({e})") from None

  @property
  def n_shards(self) -> int:
    meta = self.metadata
    return -(-meta["n_items"] // meta["shard_size"])

  def is_complete(self, shard: int) -> bool:
    return self._paths(shard)[2].exists()

  def missing_shards(self) -> list[int]:
    return [k for k in range(self.n_shards) if not self.is_complete(k)]

  def read_shard(self, shard: int, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(ids, embeddings) of one complete shard, its checksums verified (a corrupt shard raises)."""
    data_path, ids_path, record_path = self._paths(shard)
    if not record_path.exists():
      raise DataError(self.root, f"shard {shard} is not complete (extraction unfinished?)")
    record = json.loads(record_path.read_text())
    for path in (data_path, ids_path):
      if sha256_of(path) != record["sha256"][path.name]:
        raise DataError(path, "sha256 differs from the shard record: the shard is corrupt")
    embeddings = load_npy(data_path, mmap=mmap)  # memory-mapped only on a local disk
    if self.metadata["dtype"] == "bfloat16":
      embeddings = embeddings.view(ml_dtypes.bfloat16)  # still memory-mapped when mmap=True
    ids = load_npy(ids_path)
    if len(ids) != record["count"] or len(embeddings) != record["count"]:
      raise DataError(data_path, f"expected {record['count']} rows")
    return ids, embeddings

  def read(self) -> tuple[np.ndarray, np.ndarray]:
    """All (ids [n], float32 embeddings [n, dim]) in item order; every shard complete and intact."""
    missing = self.missing_shards()
    if missing:
      raise DataError(self.root, f"{len(missing)} of {self.n_shards} shards missing (first: {missing[0]})")
    parts = [self.read_shard(k) for k in range(self.n_shards)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]).astype(np.float32)
