"""The student's input pipeline: AligNet triplets -> items (images or texts) -> sharded batches.

Order. Training rows are the concatenation of the configured `train_{sampling}.npz` files. Epoch e
visits them in the permutation `default_rng([seed, e]).permutation(n)`, and global step t takes the
rows at positions `[t * B, (t + 1) * B)` of the endless sequence of epochs. So the batch of a step is a
function of (seed, step) alone: a resumed run sees exactly the batches it would have seen, and
process k of P reads rows `[k * B / P, (k + 1) * B / P)` of each batch.

Items. An item source (`aligned.data.items`: `ImageItems`, `TextItems`, `SyntheticImages`) turns item
indices (the `indices` column of the files) into model inputs; `load_batch` decodes each item of a
batch once, and a `Prefetcher` thread (or, with `GrainPrefetcher`, grain worker processes) decodes
batches ahead of the device.
"""

from __future__ import annotations

import gc
import os
import queue
import threading

import numpy as np
from etils import epath

from aligned.data.alignet_files import alignet_path, read_alignet
from aligned.errors import DataError


class TripletRows:
  """Indices and similarity targets of one or more AligNet files, concatenated (row = global row)."""

  def __init__(self, paths: list[epath.Path], n_items: int | None = None, limit: int = 0):
    if not paths:
      raise ValueError("no AligNet files given")
    indices, sims, self.paths, self.offsets = [], [], list(paths), [0]
    for path in self.paths:
      if not path.exists():
        raise DataError(path, "missing AligNet file (see aligned-generate)")
      triplets = read_alignet(path, n_images=n_items, filenames=False)
      n = min(len(triplets), limit) if limit else len(triplets)
      indices.append(triplets.indices[:n])
      sims.append(triplets.similarities[:n])
      self.offsets.append(self.offsets[-1] + n)
    self.indices = np.concatenate(indices)
    self.similarities = np.concatenate(sims)

  def __len__(self) -> int:
    return len(self.indices)

  def locate(self, row: int) -> tuple[epath.Path, int]:
    """(file, 0-based row in that file) of a global row: for error messages."""
    k = int(np.searchsorted(self.offsets, row, side="right")) - 1
    return self.paths[k], row - self.offsets[k]


def alignet_files(root: str | os.PathLike, transform: str, split: str, samplings) -> list[epath.Path]:
  return [alignet_path(root, transform, split, s) for s in samplings]


class BatchOrder:
  """Which rows step t trains on: a function of (seed, step) only (see the module docstring)."""

  def __init__(self, n_rows: int, batch_size: int, seed: int):
    if n_rows < 1:
      raise ValueError("no training triplets")
    self.n, self.batch_size, self.seed = n_rows, batch_size, seed
    self._epoch, self._perm = -1, None

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._epoch:
      self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
    return self._perm

  def rows(self, step: int) -> np.ndarray:
    positions = np.arange(step * self.batch_size, (step + 1) * self.batch_size, dtype=np.int64)
    epochs, offsets = positions // self.n, positions % self.n
    out = np.empty(self.batch_size, np.int64)
    for epoch in np.unique(epochs):
      at = epochs == epoch
      out[at] = self._permutation(int(epoch))[offsets[at]]
    return out


# ------------------------------------------------------------------------------------------------
# Batches
# ------------------------------------------------------------------------------------------------


def load_batch(rows: TripletRows, items, row_ids: np.ndarray) -> dict:
  """Host arrays of the given rows: inputs `[b, 3, ...]`, target similarities `[b, 3]`, row ids."""
  triplets = rows.indices[row_ids]
  unique, inverse = np.unique(triplets.reshape(-1), return_inverse=True)  # decode each item once
  loaded = items.load(unique)
  inputs = {k: v[inverse].reshape(len(row_ids), 3, *v.shape[1:]) for k, v in loaded.items()}
  return {"inputs": inputs, "targets": rows.similarities[row_ids], "rows": row_ids}


class StepBatches:
  """This process's part of the batch of any step: `batches(step)` is `load_batch` of the rows
  `[k * B / P, (k + 1) * B / P)` of `order.rows(step)`. Picklable, so worker processes can load it."""

  def __init__(
    self, rows: TripletRows, items, order: BatchOrder, process_index: int = 0, process_count: int = 1
  ):
    if order.batch_size % process_count:
      raise ValueError(f"batch size {order.batch_size} is not a multiple of {process_count} processes")
    self.rows, self.items, self.order = rows, items, order
    self.local = order.batch_size // process_count
    self.offset = process_index * self.local

  def local_rows(self, step: int) -> np.ndarray:
    return self.order.rows(step)[self.offset : self.offset + self.local]

  def __call__(self, step: int) -> dict:
    return load_batch(self.rows, self.items, self.local_rows(step))

  def numbered(self, step: int) -> tuple[int, dict]:
    return step, self(step)


class Prefetcher:
  """Decodes this process's part of the batches of steps start, start + 1, ... in a background
  thread, `depth` steps ahead of the consumer. Deterministic: step t is always the same batch."""

  def __init__(
    self,
    rows: TripletRows,
    items,
    order: BatchOrder,
    start: int,
    stop: int,
    process_index: int = 0,
    process_count: int = 1,
    depth: int = 2,
  ):
    self.batches = StepBatches(rows, items, order, process_index, process_count)
    self.queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
    self.stop_event = threading.Event()
    self.thread = threading.Thread(target=self._run, args=(start, stop), daemon=True, name="prefetch")
    self.thread.start()

  def local_rows(self, step: int) -> np.ndarray:
    return self.batches.local_rows(step)

  def _run(self, start: int, stop: int) -> None:
    try:
      for step in range(start, stop):
        batch = self.batches(step)
        while not self.stop_event.is_set():
          try:
            self.queue.put((step, batch), timeout=0.1)
            break
          except queue.Full:
            continue
        if self.stop_event.is_set():
          return
    except BaseException as e:  # handed to the consumer, raised there
      self.queue.put((None, e))

  def next(self) -> tuple[int, dict]:
    step, batch = self.queue.get()
    if step is None:
      raise batch
    return step, batch

  def close(self) -> None:
    self.stop_event.set()
    self.thread.join(timeout=5)


class GrainPrefetcher:
  """The same batches as `Prefetcher`, loaded by `workers` grain worker processes (no GIL between
  them): a grain `MapDataset` of step numbers mapped through `StepBatches`. Worker w loads steps
  start + w, start + w + workers, ... and grain hands them back in step order, so step t is still
  the batch of (seed, t), identical to the threads path's."""

  def __init__(
    self,
    rows: TripletRows,
    items,
    order: BatchOrder,
    start: int,
    stop: int,
    process_index: int = 0,
    process_count: int = 1,
    depth: int = 2,
    workers: int = 8,
  ):
    import grain
    from absl import flags

    if not flags.FLAGS.is_parsed():  # grain reads its absl flags; outside an absl app, their defaults
      flags.FLAGS.mark_as_parsed()
    batches = StepBatches(rows, items, order, process_index, process_count)
    steps = grain.MapDataset.range(start, stop).map(batches.numbered)
    options = grain.multiprocessing.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=depth)
    self.iterator = iter(steps.to_iter_dataset().mp_prefetch(options))

  def next(self) -> tuple[int, dict]:
    step, batch = next(self.iterator)
    return int(step), _plain_arrays(batch)

  def close(self) -> None:
    self.iterator.close()
    # grain's reader thread ends on a StopIteration whose traceback holds the last batches (shared
    # memory): dropped with the iterator, that cycle is freed by a collection, not at exit with a warning
    self.iterator = None
    gc.collect()


def _plain_arrays(tree):
  """numpy arrays for grain's shared-memory arrays: views, which keep the shared memory alive."""
  if isinstance(tree, dict):
    return {k: _plain_arrays(v) for k, v in tree.items()}
  return np.asarray(tree)


LOADERS = ("threads", "grain")


def make_prefetcher(loader: str, *args, grain_workers: int = 8, **kwargs) -> Prefetcher | GrainPrefetcher:
  """`Prefetcher` (loader = threads) or `GrainPrefetcher` (grain, `grain_workers` processes); the
  arguments are `Prefetcher`'s."""
  if loader == "threads":
    return Prefetcher(*args, **kwargs)
  if loader == "grain":
    return GrainPrefetcher(*args, workers=grain_workers, **kwargs)
  raise ValueError(f"unknown data.loader {loader!r}; expected one of {LOADERS}")
