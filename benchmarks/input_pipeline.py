"""Benchmark: the student's input path, decode path against image cache, threads against grain processes.

  python -m benchmarks.input_pipeline [--images 256] [--batch 16] [--seconds 4] [--max-workers N]

On a folder of synthetic ImageNet-like JPEGs (500 x 375, written to a temporary folder), images/s
delivered as student batches (`load_batch` of `BatchOrder` rows: inputs [b, 3, 224, 224, 3] float32)
by
  (a) the decode path: JPEG decode + AligNet cubic resize to 224 + /255 (`ImageItems`), and
  (b) the cache path: the same images from an image cache (`aligned.data.image_cache`), /255 only,
each through the threads loader (`Prefetcher`, k decoding threads) and the grain loader
(`GrainPrefetcher`, k worker processes of one thread each), k = 1, 2, 4, ... up to the core count.
Item indices run over a million items (item i is image i mod --images), so batches hardly repeat an
item. Per core = images/s / k; the target is 1,000 images/s per core on the cache path at 224. The
machine's memory bandwidth (a large numpy copy, one thread) is printed beside the cache path's bytes/s
(uint8 read + float32 written per image). Prints only; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

import numpy as np

from aligned.data.alignet_files import write_alignet
from aligned.data.image_cache import ImageCache, build_image_cache
from aligned.data.items import ImageFolderSource, ImageItems
from aligned.student import data as student_data
from benchmarks.extraction import synthetic_jpegs

SIZE = 224
TARGET_PER_CORE = 1_000  # images/s per core on the cache path
VIRTUAL_ITEMS = 1_000_000


class Repeated:
  """A record source of `n` records over a smaller one: record i is record i mod len(source)."""

  def __init__(self, source, n: int):
    self.source, self.n = source, n

  def __len__(self) -> int:
    return self.n

  def record(self, i: int):
    return self.source.record(int(i) % len(self.source))


def host_bandwidth(megabytes: int = 1024) -> float:
  """Host memory bytes/s moved (read + written) by one numpy copy of a large array, best of three (the
  input pipeline's floor; `benchmarks.floors.bandwidth` is the device's)."""
  src = np.ones(megabytes << 18, np.float32)
  dst = np.empty_like(src)
  best = float("inf")
  for _ in range(3):
    start = time.perf_counter()
    np.copyto(dst, src)
    best = min(best, time.perf_counter() - start)
  return 2 * src.nbytes / best


def triplet_rows(folder: str, batch: int) -> student_data.TripletRows:
  """AligNet rows over VIRTUAL_ITEMS items: enough for the timed steps, random triplets."""
  rng = np.random.default_rng(0)
  n = 64 * batch
  indices = np.stack([rng.choice(VIRTUAL_ITEMS, 3, replace=False) for _ in range(n)])
  path = pathlib.Path(folder) / "train_benchmark.npz"
  names = np.asarray([f"item_{i}" for i in range(VIRTUAL_ITEMS)])
  write_alignet(path, names[indices], rng.normal(size=(n, 3)), indices, n_images=VIRTUAL_ITEMS)
  return student_data.TripletRows([path], n_items=VIRTUAL_ITEMS)


def loader_rate(loader: str, rows, items, batch: int, workers: int, seconds: float) -> float:
  """Images/s (3 x triplets) of a loader after its first batches (threads or process start-up)."""
  order = student_data.BatchOrder(len(rows), batch, seed=0)
  prefetch = student_data.make_prefetcher(
    loader, rows, items, order, 0, 10**6, grain_workers=workers, depth=2
  )
  try:
    # Not timed: start-up, then the batches buffered meanwhile (grain: up to `depth` a worker + 1).
    for _ in range(3 * workers + 2 if loader == "grain" else 4):
      prefetch.next()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
      prefetch.next()
      steps += 1
    return 3 * batch * steps / (time.perf_counter() - start)
  finally:
    prefetch.close()


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--images", type=int, default=256, help="distinct JPEGs written")
  parser.add_argument("--batch", type=int, default=16, help="triplets per batch")
  parser.add_argument("--seconds", type=float, default=4.0, help="timed per measurement")
  parser.add_argument("--max-workers", type=int, default=os.cpu_count())
  args = parser.parse_args()
  cores = os.cpu_count()
  counts = sorted({*(2**k for k in range(10) if 2**k < args.max_workers), args.max_workers})
  bandwidth = host_bandwidth()
  print(
    f"{cores} cores; host memory bandwidth (one-thread numpy copy, read + write): {bandwidth / 1e9:.1f} GB/s"
  )

  with tempfile.TemporaryDirectory() as folder:
    os.makedirs(f"{folder}/images")
    synthetic_jpegs(f"{folder}/images", args.images)
    source = ImageFolderSource(f"{folder}/images")
    size_kb = np.mean([os.path.getsize(source.root / p) for p in source.ids]) / 1e3
    start = time.perf_counter()
    build_image_cache(source, f"{folder}/cache", SIZE, shard_size=64, workers=cores, progress=False)
    built = args.images / (time.perf_counter() - start)
    print(
      f"{args.images} JPEGs 500x375 ({size_kb:.0f} kB each); cache build with {cores} processes: "
      f"{built:.0f} images/s (with process start-up)"
    )
    cache = ImageCache(f"{folder}/cache")
    cache.verify(progress=False)
    rows = triplet_rows(folder, args.batch)
    paths = {
      "decode": lambda threads: ImageItems(Repeated(source, VIRTUAL_ITEMS), SIZE, "none", threads),
      "cache": lambda threads: ImageItems(
        Repeated(cache, VIRTUAL_ITEMS), SIZE, "none", threads, resized=True
      ),
    }
    # Per image: the cache reads S*S*3 uint8 and writes S*S*3 float32 (then load_batch gathers them).
    bytes_per_image = SIZE * SIZE * 3 * (1 + 4)
    print(
      f"\nimages/s delivered in batches of {args.batch} triplets ([{args.batch}, 3, {SIZE}, {SIZE}, 3] "
      f"float32); k threads (threads loader) or k processes of one thread (grain loader)"
    )
    columns = ("images/s", 10), ("per core", 9), ("scaling", 8), ("vs target", 10)
    print(f"{'path':8} {'loader':8} {'k':>3} " + " ".join(f"{c:>{w}}" for c, w in columns) + "  bytes/s")
    for path, make_items in paths.items():
      for loader in ("threads", "grain"):
        first = None
        for k in counts:
          items = make_items(k if loader == "threads" else 1)
          rate = loader_rate(loader, rows, items, args.batch, k, args.seconds)
          first = first or rate
          per_core = rate / min(k, cores)
          moved = rate * bytes_per_image
          moved = f"{moved / 1e9:.2f} GB/s ({moved / bandwidth:.0%} of the copy)" if path == "cache" else ""
          print(
            f"{path:8} {loader:8} {k:>3} {rate:>10.0f} {per_core:>9.0f} {rate / first:>7.2f}x "
            f"{per_core / TARGET_PER_CORE:>9.2f}x  {moved}",
            flush=True,
          )


if __name__ == "__main__":
  main()
